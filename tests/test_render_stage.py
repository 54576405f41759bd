"""The render stage: rows in, PNGs out, state recorded, resumable, parallel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import zooprep
from tests.killing import kill_at_random, timed_run
from zooprep.errors import SettingsMismatch
from zooprep.images.base import Cutouts, Failed
from zooprep.images.fits import FitsImages
from zooprep.run import Run

N = 40


@pytest.fixture
def decam(test_data: Path) -> dict[str, str]:
    base = test_data / "decam_sfft"
    return {
        "science": str(base / "Stack-DEC-OBS04.fits"),
        "template": str(base / "Stack-DEC-OBS18.fits"),
        "difference": str(base / "FinalDifference.fits"),
    }


def _catalog(path: Path, n: int = N, seed: int = 0) -> Path:
    """A DiaSource-like catalog on the 256x256 DECam triplet (0-based x/y)."""
    rng = np.random.default_rng(seed)
    ids = 506428274000265570 + np.arange(n, dtype=np.int64) * 7919
    table = pd.DataFrame(
        {
            "diaSourceId": ids,
            "visit": 943296,
            "detector": 37,
            "band": "i",
            "x": rng.uniform(20, 235, n),
            "y": rng.uniform(20, 235, n),
            "reliability": rng.uniform(0, 1, n),
        }
    )
    table.loc[1, ["x", "y"]] = [2.0, 128.0]  # near the edge: padded
    table.loc[2, ["x", "y"]] = [900.0, 900.0]  # off the image: fails
    table.to_csv(path, index=False)
    return path


def _select(tmp_path: Path, name: str = "run", n: int = N) -> Path:
    run = tmp_path / name
    zooprep.select(run, catalog=_catalog(tmp_path / f"{name}.csv", n))
    return run


def _state(run: Path) -> list[tuple[Any, ...]]:
    with Run.open(run, lock=False) as r:
        return [
            (s.id, s.status, s.stage, s.reason, tuple(s.files), s.padded)
            for s in r.iter_sources()
        ]


def _pngs(run: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted((run / "cutouts").rglob("*.png"))
    }


def test_render_writes_one_png_per_source_named_by_id_in_chunk_folders(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    run = _select(tmp_path)
    result = zooprep.render(run, images=decam, chunk_size=10, jobs=1)
    assert (result.rendered, result.failed, result.padded) == (N - 1, 1, 1)
    state = {s[0]: s for s in _state(run)}
    with Run.open(run, lock=False) as r:
        for src in r.iter_sources(["rendered"]):
            assert src.files == [f"cutouts/{(src.seq // 10) * 10}/{src.id}.png"]
            png = run / src.files[0]
            assert png.stat().st_size < 1_000_000
            with Image.open(png) as im:
                assert im.format == "PNG"
    assert sorted(p.name for p in (run / "cutouts").iterdir()) == [
        "0",
        "10",
        "20",
        "30",
    ]
    off = state[506428274000265570 + 2 * 7919]
    assert off[1:3] == ("failed", "render")
    assert "Stack-DEC-OBS04.fits" in off[3] or "off" in off[3].lower()
    assert state[506428274000265570 + 7919][5] is True  # padded at the edge


def test_render_twice_renders_nothing_new_and_changed_settings_need_force(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    run = _select(tmp_path)
    zooprep.render(run, images=decam, jobs=1)
    before = _pngs(run)
    again = zooprep.render(run, jobs=1)  # images remembered in zooprep.toml
    assert again.rendered == 0
    assert again.skipped == N - 1
    assert _pngs(run) == before
    with pytest.raises(SettingsMismatch, match="--force"):
        zooprep.render(run, sizes=(32, 64), jobs=1)
    forced = zooprep.render(run, sizes=(32, 64), jobs=1, force=True)
    assert forced.rendered == N - 1


def test_numpy_cutouts_are_saved_beside_the_png(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    run = _select(tmp_path, n=5)
    zooprep.render(run, images=decam, numpy=True, sizes=(30,), jobs=1)
    with Run.open(run, lock=False) as r:
        src = next(r.iter_sources(["rendered"]))
    png, npy = src.files
    assert png.endswith(".png")
    cube = np.load(run / npy)
    assert cube.shape == (3, 30, 30)
    assert cube.dtype == np.float32


def test_two_processes_give_byte_identical_pngs_and_state(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    one, two = _select(tmp_path, "one"), _select(tmp_path, "two")
    zooprep.render(one, images=decam, jobs=1)
    zooprep.render(two, images=decam, jobs=2)
    assert _pngs(one) == _pngs(two)
    assert _state(one) == _state(two)


def test_cli_render_resumes_after_kill_9_and_never_redraws_recorded_rows(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    n = 300

    def cmd(path: Path) -> list[str]:
        return [
            *(sys.executable, "-m", "zooprep", "-q", "render", str(path)),
            *("--jobs", "1", "--science", decam["science"]),
            *("--template", decam["template"], "--difference", decam["difference"]),
        ]

    ref = _select(tmp_path, "reference", n)
    duration = timed_run(cmd(ref), ok=(1,))  # the off-image row fails
    run = _select(tmp_path, "victim", n)
    kills = kill_at_random(cmd(run), 7, rounds=6, duration=duration)
    recorded = {s[0]: s for s in _state(run) if s[1] == "rendered"}
    stamps = {i: (run / s[4][0]).stat().st_mtime_ns for i, s in recorded.items()}
    final = subprocess.run(cmd(run), capture_output=True, text=True)
    assert final.returncode == 1  # the off-image row failed
    assert kills > 0
    assert _state(run) == _state(ref)
    assert _pngs(run) == _pngs(ref)
    for i, s in recorded.items():
        assert (run / s[4][0]).stat().st_mtime_ns == stamps[i]


class _Flaky:
    """An image source that misbehaves on chosen sources (picklable, for workers)."""

    def __init__(
        self,
        inner: FitsImages,
        raise_on: int | None = None,
        die_on: int | None = None,
        marker: str | None = None,
    ) -> None:
        self.inner, self.raise_on, self.die_on, self.marker = (
            inner,
            raise_on,
            die_on,
            marker,
        )

    def check(self, columns: Sequence[str]) -> None:
        self.inner.check(columns)

    def group_key(self, row: Mapping[str, Any]) -> Any:
        return self.inner.group_key(row)

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        for sid, row in rows:
            if sid == self.raise_on:
                raise RuntimeError(f"decoder crashed on {sid}")
            if sid == self.die_on and self.marker and not os.path.exists(self.marker):
                Path(self.marker).write_text("died once")
                os.kill(os.getpid(), signal.SIGKILL)
            yield from self.inner.cutouts([(sid, row)], sizes, use_footprint)


def test_an_error_on_one_source_fails_that_row_only(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    run = _select(tmp_path)
    bad = 506428274000265570 + 5 * 7919
    flaky = _Flaky(
        FitsImages(decam["science"], decam["template"], decam["difference"]),
        raise_on=bad,
    )
    result = zooprep.render(run, images=flaky, jobs=2)
    state = {s[0]: s for s in _state(run)}
    assert state[bad][1] == "failed"
    assert "decoder crashed" in state[bad][3]
    assert result.rendered == N - 2


def test_a_killed_worker_process_is_replaced_and_its_rows_rendered(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    run = _select(tmp_path)
    victim = 506428274000265570 + 9 * 7919
    flaky = _Flaky(
        FitsImages(decam["science"], decam["template"], decam["difference"]),
        die_on=victim,
        marker=str(tmp_path / "died"),
    )
    result = zooprep.render(run, images=flaky, jobs=2)
    assert (tmp_path / "died").exists()
    assert result.rendered == N - 1
    assert dict((s[0], s[1]) for s in _state(run))[victim] == "rendered"


@pytest.mark.slow
def test_dask_local_cluster_matches_local_processes_and_survives_a_dead_worker(
    tmp_path: Path, decam: dict[str, str]
) -> None:
    pytest.importorskip("distributed")  # the dask extra
    local, dask = _select(tmp_path, "local"), _select(tmp_path, "dask")
    zooprep.render(local, images=decam, jobs=2)
    victim = 506428274000265570 + 9 * 7919
    flaky = _Flaky(
        FitsImages(decam["science"], decam["template"], decam["difference"]),
        die_on=victim,
        marker=str(tmp_path / "died"),
    )
    zooprep.render(dask, images=flaky, jobs=2, executor="dask")
    assert (tmp_path / "died").exists()
    assert _pngs(local) == _pngs(dask)
    assert _state(local) == _state(dask)


def _worker_settings(_: int) -> tuple[str | None, bool, float]:
    import dask
    from dask.utils import parse_timedelta

    return (
        os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        dask.config.get("distributed.worker.profile.enabled"),
        parse_timedelta(dask.config.get("distributed.admin.tick.interval")),
    )


def test_dask_workers_started_by_zooprep_skip_the_settings_that_slow_rendering() -> (
    None
):
    pytest.importorskip("distributed")  # the dask extra
    from zooprep.executors import DaskExecutor

    ex = DaskExecutor(jobs=2)
    try:
        results = [r for _, r in ex.run(_worker_settings, [0, 1, 2, 3])]
    finally:
        ex.close()
    assert results == [(None, False, 1.0)] * 4


def test_a_picture_over_zooniverse_1mb_limit_fails_its_row_with_the_reason(
    tmp_path: Path,
) -> None:
    from astropy.io import fits

    rng = np.random.default_rng(1)
    noise = {}
    for role in ("science", "template", "difference"):
        noise[role] = str(tmp_path / f"{role}.fits")
        fits.writeto(noise[role], rng.normal(size=(300, 300)).astype(np.float32))
    pd.DataFrame(
        {
            "diaSourceId": [1, 2],
            "visit": 1,
            "detector": 1,
            "x": [150.0, 149.0],
            "y": [150.0, 151.0],
        }
    ).to_csv(tmp_path / "cat.csv", index=False)
    run = tmp_path / "run"
    zooprep.select(run, catalog=tmp_path / "cat.csv")
    result = zooprep.render(
        run,
        images=noise,
        sizes=(250, 250, 250),
        scale=2,
        cmap="bone",
        jobs=1,
    )
    assert (result.rendered, result.failed) == (0, 2)
    with Run.open(run, lock=False) as r:
        reasons = [s.reason for s in r.iter_sources(["failed"])]
    assert all(
        "over Zooniverse's 1000000-byte limit; use smaller --sizes or --scale" in why
        for why in reasons
    ), reasons
    assert not list(run.rglob("*.png"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_render_worker_reuses_one_pictures_memory_for_the_next() -> None:
    # Each annotated picture allocates and frees ~0.76 MB arrays; without the
    # setting every one is faulted in page by page again (~185 faults each).
    code = """
import resource, numpy as np
from zooprep.stages.render import keep_freed_memory
def faults(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        canvas = np.full((370, 682, 3), 255, np.uint8)
        rows = np.empty((370, 682 * 3 + 1), np.uint8)
        rows[:, 1:] = canvas.reshape(370, -1)
        del canvas, rows
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(5)
print(faults(200), keep_freed_memory(), (faults(5), faults(200))[1])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    default, kept, after = done.stdout.split()
    assert kept == "True"
    assert int(default) > 200 * 100, done.stdout
    assert int(after) < 200, done.stdout
