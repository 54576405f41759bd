"""SIGTERM, SIGINT and SIGHUP at random moments: a clean stop, nothing left behind.

Each test times an uninterrupted run of a command, then sends each signal to
the running command at a random fraction of that time (`tests.killing`), and
checks what users rely on: the command ends with exit status 128 + signal and
the one line ``interrupted: N done; run the same command to continue``, no
process of zooprep's survives it (psutil), no temporary file is left behind,
and the same command run again gives exactly what an uninterrupted run gives.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.catalogs import write_big_catalog
from tests.killing import Stopped, signal_at_random, timed_run
from tests.plugins.panoptes import upload_command
from tests.test_render_stage import _catalog, _pngs
from tests.test_render_stage import _state as _render_state
from tests.test_resume import _rendered_run
from tests.test_resume import _state as _select_state

pytest.importorskip("psutil")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LINE = re.compile(r"interrupted: \d+ done.*; run the same command to continue")
ZOOPREP = (sys.executable, "-m", "zooprep", "-q")


def _stopped_cleanly(stopped: Stopped, signum: int) -> bool:
    """Check one signalled run; True when the signal reached the running stage.

    A signal sent before zooprep installed its handlers (interpreter start-up)
    ends the process the default way, and one sent after the work was done
    lets it finish normally; both leave nothing behind either.
    """
    assert stopped.survivors == [], stopped.survivors
    if stopped.returncode == 128 + signum:
        assert LINE.fullmatch(stopped.stderr.strip()), stopped.stderr  # one line
        return True
    assert stopped.returncode in (0, 1, -signum), stopped.stderr
    return False


def _no_temporary_files(run: Path) -> None:
    assert [p for p in run.rglob(".*.tmp")] == []


# -- select ---------------------------------------------------------------------


def test_select_stopped_by_each_signal_then_rerun_gives_the_same_selection(
    tmp_path: Path,
) -> None:
    catalog = write_big_catalog(tmp_path / "diasources.csv", 40_000, seed=3)

    def cmd(run: Path) -> list[str]:
        return [*ZOOPREP, "select", str(run), "--catalog", str(catalog)]

    duration = timed_run(cmd(tmp_path / "reference"))
    landed = 0
    for n, signum in enumerate(SIGNALS):
        stopped = signal_at_random(cmd(tmp_path / "victim"), signum, n, duration)
        landed += _stopped_cleanly(stopped, signum)
        _no_temporary_files(tmp_path / "victim")
    assert landed > 0
    done = subprocess.run(cmd(tmp_path / "victim"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _select_state(tmp_path / "victim") == _select_state(tmp_path / "reference")


# -- render: local process pool and Dask ------------------------------------------


@pytest.fixture
def decam_args(test_data: Path) -> list[str]:
    base = test_data / "decam_sfft"
    return [
        *("--science", str(base / "Stack-DEC-OBS04.fits")),
        *("--template", str(base / "Stack-DEC-OBS18.fits")),
        *("--difference", str(base / "FinalDifference.fits")),
    ]


def _selected(tmp_path: Path, name: str, n: int = 300) -> Path:
    import zooprep

    run = tmp_path / name
    zooprep.select(run, catalog=_catalog(tmp_path / f"{name}.csv", n))
    return run


def test_render_with_a_process_pool_stops_cleanly_on_each_signal(
    tmp_path: Path, decam_args: list[str]
) -> None:
    def cmd(run: Path) -> list[str]:
        return [*ZOOPREP, "render", str(run), "--jobs", "2", *decam_args]

    reference = _selected(tmp_path, "reference")
    duration = timed_run(cmd(reference), ok=(1,))  # one source is off the image
    run = _selected(tmp_path, "victim")
    landed = 0
    for n, signum in enumerate(SIGNALS):
        stopped = signal_at_random(cmd(run), signum, 10 + n, duration, 0.25, 0.6)
        landed += _stopped_cleanly(stopped, signum)
        _no_temporary_files(run)
    assert landed > 0
    done = subprocess.run(cmd(run), capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert _render_state(run) == _render_state(reference)
    assert _pngs(run) == _pngs(reference)


@pytest.mark.slow
def test_render_on_a_dask_local_cluster_stops_cleanly_and_leaves_no_worker(
    tmp_path: Path, decam_args: list[str]
) -> None:
    pytest.importorskip("distributed")  # the dask extra

    def cmd(run: Path) -> list[str]:
        return [*ZOOPREP, "render", str(run), "--jobs", "2", *decam_args]

    reference = _selected(tmp_path, "reference")
    duration = timed_run([*cmd(reference), "--executor", "dask"], ok=(1,))
    run = _selected(tmp_path, "victim")
    dask = [*cmd(run), "--executor", "dask"]
    # One signal only: Dask's start-up makes each run slow, and SIGINT and
    # SIGHUP take the same path in the driver (tested with the process pool).
    stopped = signal_at_random(dask, signal.SIGTERM, 20, duration, 0.5, 0.75)
    assert _stopped_cleanly(stopped, signal.SIGTERM)
    _no_temporary_files(run)
    done = subprocess.run(dask, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert _render_state(run) == _render_state(reference)
    assert _pngs(run) == _pngs(reference)


def _render_with_pool(run: Path, decam_args: list[str]) -> tuple[Any, list[Any]]:
    """Start a render with 2 worker processes; return it and its descendants."""
    import psutil

    proc = subprocess.Popen(
        [*ZOOPREP, "render", str(run), "--jobs", "2", *decam_args],
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = psutil.Process(proc.pid)
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    # resource tracker, fork server and a worker (all 300 rows are one task)
    while len(children) < 3 and time.monotonic() < deadline and proc.poll() is None:
        children = watched.children(recursive=True)
        time.sleep(0.05)
    if len(children) < 3:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the pool never started: {children}")
    return proc, children


def test_kill_9_of_render_leaves_no_worker_or_fork_server_behind(
    tmp_path: Path, decam_args: list[str]
) -> None:
    import psutil

    proc, children = _render_with_pool(_selected(tmp_path, "victim"), decam_args)
    proc.kill()
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []


def test_a_second_ctrl_c_ends_render_at_once_and_leaves_no_worker(
    tmp_path: Path, decam_args: list[str]
) -> None:
    import psutil

    run = _selected(tmp_path, "victim")
    proc, children = _render_with_pool(run, decam_args)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # the first one is handled (by the main thread) first
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    # Usually the second signal ends it; on a fast stop the first one already had.
    assert "second signal; stopping now" in stderr or LINE.search(stderr)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    # A run ended that abruptly still resumes and finishes.
    done = subprocess.run(
        [*ZOOPREP, "render", str(run), "--jobs", "2"], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr  # the off-image source
    _no_temporary_files(run)


# -- manifest --------------------------------------------------------------------


def test_manifest_stopped_by_each_signal_is_whole_or_absent_and_rerun_is_identical(
    tmp_path: Path,
) -> None:
    n = 10_000
    reference = _rendered_run(tmp_path / "reference", n)
    run = _rendered_run(tmp_path / "victim", n)

    def cmd(path: Path) -> list[str]:
        return [*ZOOPREP, "manifest", str(path)]

    duration = timed_run(cmd(reference))
    landed = 0
    # Most of a manifest's time is start-up and the writing is short, so a
    # round whose signal missed the writing is tried again (at most twice).
    for n_, signum in enumerate(SIGNALS * 3):
        if landed == len(SIGNALS) or (n_ >= len(SIGNALS) and landed):
            break
        stopped = signal_at_random(cmd(run), signum, 30 + n_, duration, 0.4, 0.95)
        if _stopped_cleanly(stopped, signum):
            landed += 1
            assert not (run / "manifest.csv").exists()
        _no_temporary_files(run)
        (run / "manifest.csv").unlink(missing_ok=True)
    assert landed > 0
    done = subprocess.run(cmd(run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (run / "manifest.csv").read_bytes() == (
        reference / "manifest.csv"
    ).read_bytes()


# -- upload ----------------------------------------------------------------------


def test_upload_stopped_by_each_signal_then_resumed_has_each_source_once(
    panoptes_standin_factory, tmp_path: Path
) -> None:
    from tests.plugins.panoptes import StandinSubprocess
    from tests.test_upload import assert_exactly_once, make_run

    def cmd(standin, run: Path) -> list[str]:
        return upload_command(
            standin, run, "--workers", "4", "--timeout", "2", quiet=True
        )

    other = panoptes_standin_factory(latency=0.02)
    (tmp_path / "home-ref").mkdir()
    duration = timed_run(
        cmd(other, make_run(tmp_path / "reference", 60)),
        env=StandinSubprocess(other, tmp_path / "home-ref").env(),
    )
    standin = panoptes_standin_factory(latency=0.02)
    (tmp_path / "home").mkdir()
    runner = StandinSubprocess(standin, tmp_path / "home")
    run = make_run(tmp_path / "run", 60)
    landed = 0
    for n, signum in enumerate(SIGNALS):
        stopped = signal_at_random(
            cmd(standin, run), signum, 40 + n, duration, 0.3, 0.7, env=runner.env()
        )
        landed += _stopped_cleanly(stopped, signum)
    assert landed > 0
    done = runner.run(cmd(standin, run), timeout=120)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(standin, run)
