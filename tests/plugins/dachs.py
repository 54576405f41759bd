"""A real TAP service on 127.0.0.1: GAVO DaCHS serving Rubin's DP1 tables.

``dachs_tap`` (session scope) runs the DaCHS of the Debian package
``python3-gavo`` (with ``postgresql-*-pgsphere`` and ``postgresql-*-q3c``;
never the ``gavodachs2-server`` package, whose install scripts start a system
service) as subprocesses of the system ``python3``:

1. a new database on the tests' own PostgreSQL server (``postgres_url`` of
   ``tests/plugins/postgres.py``), and a DaCHS root in a temporary directory
   with its ``gavo.rc`` (``GAVOSETTINGS``): loopback address, the current
   user and group, a free port;
2. ``dachs init -d DSN`` (roles, pgsphere, q3c, the system tables);
3. the RD ``tests/rsp_standin/dp1.rd`` (dp1.DiaSource, DiaObject,
   ForcedSourceOnDiaObject, Visit with DP1's column names and types) and its
   rows from the test data (``tests/rsp_standin/rows.py``), ``dachs imp``;
4. ``dachs serve debug`` in the foreground on that port (another port if it
   was taken meanwhile), until ``/tap/capabilities`` answers.

At the end of the session the server's process group is stopped; nothing is
left running.  The service's row limit (``[async] hardMAXREC``) is
`HARD_LIMIT`, lower than the rows of dp1.DiaSource, so that the tests can see
what a truncated answer does.
"""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins.postgres import create_database, free_port
from tests.rsp_standin.rows import write_tables

#: The TAP service's hard row limit (MAXREC and TOP cannot go beyond it).
HARD_LIMIT = 250
RD = Path(__file__).resolve().parent.parent / "rsp_standin" / "dp1.rd"


@dataclass(frozen=True)
class DachsTap:
    """A running DaCHS: its TAP URL and what it serves."""

    url: str  # the TAP service (…/tap)
    root: Path  # DaCHS's root directory
    counts: dict[str, int]  # rows per dp1 table
    hard_limit: int


def _dachs() -> list[str]:
    """The DaCHS command line: ``dachs``, or the module under the system python."""
    found = shutil.which("dachs")
    if found:
        return [found]
    if Path("/usr/bin/python3").exists():
        return ["/usr/bin/python3", "-m", "gavo.user.cli"]
    pytest.fail("GAVO DaCHS not found (apt-get install python3-gavo)")


def _settings(root: Path, port: int) -> None:
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    (root / "gavo.rc").write_text(
        "[general]\n"
        f"rootDir: {root}\n"
        f"group: {group}\n"
        f"gavoGroup: {group}\n"
        "logLevel: warning\n"
        "[web]\n"
        f"serverURL: http://127.0.0.1:{port}\n"
        "bindAddress: 127.0.0.1\n"
        f"serverPort: {port}\n"
        f"user: {user}\n"
        "[async]\n"
        "defaultMAXREC: 100\n"
        f"hardMAXREC: {HARD_LIMIT}\n"
        "maxTAPRunning: 4\n"
        "[ivoa]\n"
        "dalDefaultLimit: 100\n"
        f"dalHardLimit: {HARD_LIMIT}\n"
    )


def _env(root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "GAVO"))
    }
    env.update(
        GAVOSETTINGS=str(root / "gavo.rc"),
        GAVOCUSTOM=str(root / "no-gavorc"),
        HOME=str(root),
        PATH="/usr/bin:/bin",
    )
    return env


def _run(args: list[str], root: Path, timeout: float = 300) -> None:
    proc = subprocess.run(
        [*_dachs(), *args],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"dachs {' '.join(args[:1])} failed ({proc.returncode}): "
            f"{proc.stdout[-1500:]} {proc.stderr[-1500:]}"
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and anything it started (its process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``dachs serve debug``; retry on another port if the port is taken."""
    log = root / "serve.log"
    for _attempt in range(5):
        port = free_port()
        _settings(root, port)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*_dachs(), "serve", "debug"],
                cwd=root,
                env=_env(root),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}/tap"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/capabilities", timeout=5) as r:
                    if r.status == 200:
                        return proc, url
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        _stop(proc)
        text = log.read_text(errors="replace")
        if "Address already in use" not in text and "CannotListen" not in text:
            pytest.fail(f"dachs serve debug did not start: {text[-2000:]}")
    pytest.fail("dachs serve debug: no free port after 5 attempts")


@pytest.fixture(scope="session")
def dachs_tap(postgres_url: str, test_data: Path) -> Iterator[DachsTap]:
    """A DaCHS TAP service on 127.0.0.1 serving dp1.* from the test data."""
    import sqlalchemy as sa

    db = sa.engine.make_url(create_database(postgres_url))
    dsn = (
        f"host={db.host} port={db.port} dbname={db.database} "
        f"user={db.username} password={db.password}"
    )
    root = Path(tempfile.mkdtemp(prefix="zooprep-dachs-"))
    proc = None
    try:
        _settings(root, free_port())
        _run(["init", "-d", dsn], root)
        resdir = root / "inputs" / "dp1"
        resdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RD, resdir / "q.rd")
        counts = write_tables(RD, resdir, test_data)
        _run(["imp", "dp1/q"], root)
        proc, url = _serve(root)
        yield DachsTap(url=url, root=root, counts=counts, hard_limit=HARD_LIMIT)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)
