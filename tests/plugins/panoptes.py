"""Fixtures for the local Panoptes stand-in (``tests/panoptes_standin``).

``panoptes_standin``
    A fresh, running `PanoptesStandin` per test: user ``standin.username`` /
    ``standin.password`` (id ``standin.user_id``), OAuth client
    ``standin.client_id`` / ``standin.client_secret``, project ``"1"``
    (``standin.project_id``) and an empty subject set
    (``standin.subject_set_id``). Endpoint: ``standin.url``. In this process
    ``PANOPTES_ENDPOINT`` points at it and ``NO_PROXY`` covers loopback, so a
    panoptes-client created without ``endpoint=`` still cannot reach
    zooniverse.org.
``panoptes_standin_factory``
    Build more stand-ins with custom settings,
    ``panoptes_standin_factory(subject_limit=5, latency=0.05)``; each is
    stopped after the test.
``panoptes_subprocess``
    A `StandinSubprocess` for running commands (zooprep, panoptes-cli) against
    ``panoptes_standin`` with credentials in the environment and a private
    ``HOME``: ``panoptes_subprocess.run(["zooprep", "upload", ...])``,
    ``.popen(...)`` for kill tests, ``.env()`` for your own launcher, and
    ``.write_cli_config()`` for panoptes-cli's ``~/.panoptes/config.yml``.
``fast_client_retries``
    Shrinks panoptes-client's retry waits (module constants read at call
    time: 1 s back-off, 2 attempts) so tests that make it retry stay fast;
    its behaviour is otherwise unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.killing import kill_at_random, timed_run
from tests.panoptes_standin import PanoptesStandin

_CREDENTIAL_VARS = (
    "PANOPTES_USERNAME",
    "PANOPTES_PASSWORD",
    "PANOPTES_CLIENT_ID",
    "PANOPTES_CLIENT_SECRET",
    "PANOPTES_ENDPOINT",
)
_LOOPBACK = "127.0.0.1,localhost,::1"


class StandinSubprocess:
    """Run commands in subprocesses pointed at a stand-in.

    Parameters
    ----------
    standin : PanoptesStandin
        The running stand-in.
    home : pathlib.Path
        Directory used as ``HOME`` (panoptes-cli reads ``~/.panoptes``).
    """

    def __init__(self, standin: PanoptesStandin, home: Path) -> None:
        self.standin = standin
        self.home = home

    def env(
        self, credentials: str = "password", extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment for a subprocess.

        Parameters
        ----------
        credentials : {'password', 'client', 'none'}
            ``PANOPTES_USERNAME``/``PANOPTES_PASSWORD``,
            ``PANOPTES_CLIENT_ID``/``PANOPTES_CLIENT_SECRET``, or no credentials.
        extra : mapping, optional
            More variables (override the others).

        Returns
        -------
        dict
            ``os.environ`` without proxies or real Panoptes credentials, plus
            ``PANOPTES_ENDPOINT``, the chosen credentials, ``HOME``,
            ``NO_PROXY`` and ``PYTHONPATH`` (so ``tests`` is importable).
        """
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _CREDENTIAL_VARS and not k.lower().endswith("_proxy")
        }
        env.update(self.standin.client_env(credentials))
        env["HOME"] = str(self.home)
        env["NO_PROXY"] = env["no_proxy"] = _LOOPBACK
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH", "")) if p
        )
        env.update(extra or {})
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        credentials: str = "password",
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion and capture its output (text).

        ``args[0]`` of ``"python"`` is replaced by the running interpreter, and
        console scripts (``panoptes``, ``zooprep``) are looked up beside it.
        """
        return subprocess.run(
            self._argv(args),
            env=self.env(credentials, extra_env),
            cwd=cwd,
            timeout=timeout,
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )

    def popen(
        self,
        args: Sequence[str],
        *,
        credentials: str = "password",
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[str]:
        """Start a command without waiting (e.g. to SIGKILL it mid-upload)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            self._argv(args),
            env=self.env(credentials, extra_env),
            cwd=cwd,
            text=True,
            **kwargs,
        )

    def write_cli_config(self) -> Path:
        """Write panoptes-cli's ``~/.panoptes/config.yml`` for the stand-in.

        ``panoptes configure`` refuses non-HTTPS endpoints, so the file is
        written directly (same keys the command writes).
        """
        config_dir = self.home / ".panoptes"
        config_dir.mkdir(parents=True, exist_ok=True)
        path = config_dir / "config.yml"
        path.write_text(
            f"endpoint: {self.standin.url}\n"
            f"username: {self.standin.username}\n"
            f"password: {self.standin.password}\n"
        )
        return path

    @staticmethod
    def _argv(args: Sequence[str]) -> list[str]:
        """Resolve python and console scripts to this interpreter's."""
        argv = list(args)
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        elif argv:
            candidate = Path(sys.executable).parent / argv[0]
            if candidate.exists():
                argv[0] = str(candidate)
        return argv


def upload_command(
    standin: PanoptesStandin, run: Path, *extra: str, quiet: bool = False
) -> list[str]:
    """``zooprep upload RUN`` to the stand-in's project and subject set."""
    return [
        *(sys.executable, "-m", "zooprep", *(("-q",) if quiet else ())),
        *("upload", str(run), "--project", standin.project_id),
        *("--subject-set-id", standin.subject_set_id, "--endpoint", standin.url),
        *extra,
    ]


def upload_killed_then_resumed(
    factory: Callable[..., PanoptesStandin],
    tmp_path: Path,
    make_run: Callable[[Path, int], Path],
    n: int,
    seed: int,
    windows: Sequence[tuple[float, float]],
) -> tuple[PanoptesStandin, Path]:
    """kill -9 an upload of ``n`` sources once per window, then let it finish.

    An uninterrupted upload to a stand-in of its own is timed first; each
    window ``(lo, hi)`` is a fraction of that time.  Returns the stand-in and
    the run, for the caller's checks.
    """
    workers = ("--workers", "4", "--timeout", "2")
    (tmp_path / "home-ref").mkdir()
    other = factory(latency=0.01)
    duration = timed_run(
        upload_command(other, make_run(tmp_path / "reference", n), *workers),
        env=StandinSubprocess(other, tmp_path / "home-ref").env(),
    )
    standin = factory(latency=0.01)
    (tmp_path / "home").mkdir()
    runner = StandinSubprocess(standin, tmp_path / "home")
    run = make_run(tmp_path / "run", n)
    args = upload_command(standin, run, *workers)
    kills = sum(
        kill_at_random(args, seed * 10 + k, 1, duration, lo, hi, env=runner.env())
        for k, (lo, hi) in enumerate(windows)
    )
    assert kills > 0
    done = runner.run(args, timeout=120)
    assert done.returncode == 0, done.stderr
    return standin, run


@pytest.fixture
def panoptes_standin_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., PanoptesStandin]]:
    """Build running stand-ins with custom settings; all stop after the test."""
    monkeypatch.setenv("NO_PROXY", _LOOPBACK)
    monkeypatch.setenv("no_proxy", _LOOPBACK)
    started: list[PanoptesStandin] = []

    def make(**kwargs: Any) -> PanoptesStandin:
        standin = PanoptesStandin.with_defaults(**kwargs).start()
        started.append(standin)
        return standin

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def panoptes_standin(
    panoptes_standin_factory: Callable[..., PanoptesStandin],
    monkeypatch: pytest.MonkeyPatch,
) -> PanoptesStandin:
    """A fresh running Panoptes stand-in with the standard test world."""
    standin = panoptes_standin_factory()
    monkeypatch.setenv("PANOPTES_ENDPOINT", standin.url)
    return standin


@pytest.fixture
def panoptes_subprocess(
    panoptes_standin: PanoptesStandin, tmp_path: Path
) -> StandinSubprocess:
    """Run subprocesses against ``panoptes_standin`` (private HOME, credentials)."""
    home = tmp_path / "home"
    home.mkdir()
    return StandinSubprocess(panoptes_standin, home)


@pytest.fixture
def fast_client_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make panoptes-client retry after ~1 s, at most twice (default 5 s, 5 times)."""
    import panoptes_client.panoptes
    import panoptes_client.subject

    monkeypatch.setattr(panoptes_client.subject, "RETRY_BACKOFF_INTERVAL", 1)
    monkeypatch.setattr(panoptes_client.subject, "UPLOAD_RETRY_LIMIT", 2)
    monkeypatch.setattr(panoptes_client.panoptes, "RETRY_BACKOFF_INTERVAL", 1)
    monkeypatch.setattr(panoptes_client.panoptes, "HTTP_RETRY_LIMIT", 2)
