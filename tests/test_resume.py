"""kill -9 of select and manifest at random moments, then the same command again."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.catalogs import write_big_apdb, write_big_catalog
from tests.killing import kill_at_random, timed_run
from zooprep.run import Run
from zooprep.stages.review import read_reviewed

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00"
    b"\x00\x00\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _state(run: Path) -> list[tuple]:
    with Run.open(run, lock=False) as r:
        return [(s.seq, s.id, s.status, s.reason, s.row) for s in r.iter_sources()]


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "diasources.csv"
    return write_big_catalog(path, 60_000, seed=11)


@pytest.mark.parametrize("seed", [1, 2])
def test_select_killed_at_random_then_rerun_gives_the_uninterrupted_selection(
    tmp_path: Path, big_catalog: Path, seed: int
) -> None:
    def cmd(run: Path) -> list[str]:
        return [
            *(sys.executable, "-m", "zooprep", "-q", "select", str(run)),
            *("--catalog", str(big_catalog), "--where", "reliability > 0.3"),
        ]

    reference, run = tmp_path / "reference", tmp_path / "victim"
    duration = timed_run(cmd(reference))
    kills = kill_at_random(cmd(run), seed, rounds=5, duration=duration)
    done = subprocess.run(cmd(run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert kills > 0
    assert _state(run) == _state(reference)


def _rendered_run(path: Path, n: int) -> Path:
    with Run.create(path) as run:
        run.add_sources(
            (
                {
                    "diaSourceId": 10**17 + i,
                    "visit": i % 7,
                    "band": "r",
                    "reliability": (i % 100) / 100,
                }
                for i in range(n)
            ),
            "diaSourceId",
        )
        with run.transaction():
            for src in run.iter_sources():
                rel = run.cutout_path(src)
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                (path / rel).write_bytes(PNG)
                run.update(src.id, status="rendered", files=[rel])
    return path


def test_manifest_killed_at_random_is_whole_or_absent_and_rerun_is_identical(
    tmp_path: Path,
) -> None:
    n = 10_000
    reference = _rendered_run(tmp_path / "reference", n)
    run = _rendered_run(tmp_path / "victim", n)
    manifest = run / "manifest.csv"

    def whole_or_absent() -> None:
        if manifest.exists():
            with Run.open(run, lock=False) as r:
                assert len(read_reviewed(r, manifest).rows) == n

    def cmd(path: Path) -> list[str]:
        return [sys.executable, "-m", "zooprep", "-q", "manifest", str(path)]

    duration = timed_run(cmd(reference))
    kills = kill_at_random(
        cmd(run), 5, rounds=4, duration=duration, check=whole_or_absent
    )
    done = subprocess.run(cmd(run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert kills > 0
    assert manifest.read_bytes() == (reference / "manifest.csv").read_bytes()


@pytest.fixture(scope="module")
def big_apdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    real = Path(__file__).parent / "data" / "apdb" / "ci_dc2_apdb.sqlite3"
    path = tmp_path_factory.mktemp("apdb") / "apdb.sqlite3"
    return write_big_apdb(path, real, 150_000)


@pytest.mark.parametrize("seed", [3])
def test_apdb_select_killed_at_random_then_rerun_gives_the_uninterrupted_selection(
    tmp_path: Path, big_apdb: Path, seed: int
) -> None:
    # The APDB's rows are copied by SQLite into a row block beside the state:
    # a kill while copying or while recording leaves nothing half done.
    def cmd(run: Path) -> list[str]:
        return [
            *(sys.executable, "-m", "zooprep", "-q", "select", str(run)),
            *("--apdb", f"sqlite:///{big_apdb}", "--where", "reliability > 0.3"),
        ]

    def readable() -> None:
        if (run / "state.sqlite").exists():
            assert len(_state(run)) >= 0  # every recorded source's row reads

    reference, run = tmp_path / "reference", tmp_path / "victim"
    duration = timed_run(cmd(reference))
    kills = kill_at_random(cmd(run), seed, rounds=5, duration=duration, check=readable)
    done = subprocess.run(cmd(run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert kills > 0
    assert _state(run) == _state(reference)
    with sqlite3.connect(f"file:{run / 'state.sqlite'}?mode=ro", uri=True) as db:
        used = {b for (b,) in db.execute("SELECT DISTINCT block FROM sources")}
    files = {p.name for p in (run / "rows").iterdir()}
    assert files == {f"{b}.sqlite" for b in used}  # nothing left from a killed copy
