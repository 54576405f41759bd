"""Time zooprep's renderers against one-matplotlib-figure-per-source, in one run.

Cutouts are cut from the real DECam triplet in ``tests/data`` around
deterministic random positions; rows are real DiaSources from the ci_dc2 APDB
(so the annotation text varies from source to source).  Both implementations
draw the same sources in the same process, one core; the ratio of their
sources per second is printed.

With ``--whole N`` the whole ``zooprep render RUN --jobs 1`` process is timed
too (start-up, reading the state, opening and cutting the FITS files, drawing,
writing the PNGs atomically, recording progress): N sources at the same kind
of positions, in image groups of ``--group`` sources (each group its own
symlinked copy of the triplet, as one visit/detector each), selected from a
catalogue CSV beforehand (not timed).  Printed beside the in-process drawing
of the same N sources, timed just before and just after it, and matplotlib:
wall-clock rates and CPU seconds per source (user + system, of the
subprocess; of this process for the drawing), and the whole process's
start-up alone (a run whose sources are all done).

    python benchmarks/bench_render.py [--n 400] [--n-mpl 20] [--sizes 30]
        [--data tests/data] [--profile] [--whole 10000] [--group 400]
        [--tree CHECKOUT] [--rounds 1]

``--rounds R`` repeats the whole-process measurement R times (a new run each
time, plain and annotated alternating) and prints the median of each column.
``--tree`` times another checkout's ``zooprep`` package as the whole process
(e.g. a ``git archive`` of the commit before a change).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.mpl_reference import render_mpl  # noqa: E402
from zooprep.images.base import Cutouts, Triplet  # noqa: E402
from zooprep.renderers import AnnotatedRenderer, PlainRenderer  # noqa: E402

#: The DECam triplet: science, template, difference.
TRIPLET = ("DEC-OBS18a.mini.fits", "DEC-OBS04a.mini.fits", "FinalDifference.fits")


def _positions(n: int, big: int, shape: tuple[int, int], seed: int):
    """``n`` deterministic (x, y) pixel positions at least ``big // 2`` inside."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    for _ in range(n):
        y = int(rng.integers(big // 2, ny - big // 2))
        x = int(rng.integers(big // 2, nx - big // 2))
        yield x, y


def _apdb_rows(shared: Path):
    """The ci_dc2 APDB's DiaSource rows and its instrument."""
    uri = f"file:{shared / 'apdb' / 'ci_dc2_apdb.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as con:
        table = pd.read_sql("SELECT * FROM DiaSource", con)
        instrument = con.execute(
            "SELECT value FROM metadata WHERE name = 'instrument'"
        ).fetchone()[0]
    return table.to_dict("records"), instrument


#: The first id of the sources of `make_run`.
FIRST_ID = 506428274000265570


def as_run_row(row: dict, i: int, group: int, x: int, y: int) -> dict:
    """Source ``i``'s row as `make_run` stores it: its own id, its group as visit."""
    return {**row, "diaSourceId": FIRST_ID + i, "visit": i // group, "x": x, "y": y}


def load_sources(shared: Path, n: int, sizes: list[int], seed: int = 1):
    """``n`` (Cutouts, row) pairs from the DECam triplet and the APDB."""
    d = shared / "decam_sfft"
    science, template, difference = (
        fits.getdata(d / name).astype(np.float32) for name in TRIPLET
    )
    rows, instrument = _apdb_rows(shared)
    big = max(sizes)
    out = []
    for i, (x, y) in enumerate(_positions(n, big, difference.shape, seed)):
        triplets = []
        for s in sizes:
            y0, x0 = y - s // 2, x - s // 2
            cut = (slice(y0, y0 + s), slice(x0, x0 + s))
            triplets.append(Triplet(template[cut], science[cut], difference[cut]))
        row = dict(rows[i % len(rows)])
        row["instrument"] = instrument
        out.append((Cutouts(int(row["diaSourceId"]), triplets, pixel_scale=0.263), row))
    return out


def rates(ours, ref, sources, n_ref: int, rounds: int = 5):
    """Sources/s and mean PNG bytes of ``ours`` and ``ref``, timed interleaved.

    The two are timed in alternating rounds so that a change of machine load
    during the run affects both alike.
    """
    t_ours = t_ref = 0.0
    n_ours = n_done = bytes_ours = bytes_ref = 0
    chunk = max(1, len(sources) // rounds)
    ref_chunk = max(1, n_ref // rounds)
    for r in range(rounds):
        batch = sources[r * chunk : (r + 1) * chunk]
        start = time.perf_counter()
        for cutouts, row in batch:
            bytes_ours += len(ours(cutouts, row))
        t_ours += time.perf_counter() - start
        n_ours += len(batch)
        batch = sources[r * ref_chunk : (r + 1) * ref_chunk]
        start = time.perf_counter()
        for cutouts, row in batch:
            bytes_ref += len(ref(cutouts, row))
        t_ref += time.perf_counter() - start
        n_done += len(batch)
    return n_ours / t_ours, bytes_ours // n_ours, n_done / t_ref, bytes_ref // n_done


def make_run(shared: Path, where: Path, n: int, group: int, big: int) -> Path:
    """A selected run of ``n`` sources, ``group`` per symlinked copy of the triplet.

    Positions and rows are those `load_sources` draws (same seed), with new ids
    and the group as ``visit``.
    """
    d = shared / "decam_sfft"
    shape = fits.getdata(d / TRIPLET[2]).shape
    rows, _ = _apdb_rows(shared)
    out = []
    for i, (x, y) in enumerate(_positions(n, big, shape, 1)):
        if i % group == 0:
            folder = where / "img" / str(i // group)
            folder.mkdir(parents=True)
            for role, name in zip(("sci", "tmpl", "diff"), TRIPLET, strict=True):
                (folder / f"{role}.fits").symlink_to((d / name).resolve())
        out.append(as_run_row(rows[i % len(rows)], i, group, x, y))
    pd.DataFrame(out).to_csv(where / "catalog.csv", index=False)
    run = where / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "zooprep",
            "-q",
            "select",
            str(run),
            "--catalog",
            str(where / "catalog.csv"),
        ],
        check=True,
        env=ENV,
    )
    return run


#: The processes' environment: bytecode cached as after ``pip install`` (a
#: ``PYTHONDONTWRITEBYTECODE`` set here would compile every module at each start).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def zooprep_command(tree: Path | None) -> list[str]:
    """``python -m zooprep``, or the same from another checkout's package."""
    if tree is None:
        return [sys.executable, "-m", "zooprep"]
    code = (
        f"import sys; sys.path.insert(0, {str(tree.resolve())!r}); "
        "sys.meta_path[:] = [f for f in sys.meta_path "
        "if 'editable' not in type(f).__module__]; "
        "import runpy; runpy.run_module('zooprep', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def render_process(
    run: Path, sizes: list[int], cmap: str, annotate: bool, tree: Path | None = None
):
    """Wall and CPU seconds (user + system) of one ``zooprep render --jobs 1``."""
    img = run.parent / "img"
    cmd = [
        *zooprep_command(tree), "-q", "render", str(run),
        "--science", f"{img}/{{visit}}/sci.fits",
        "--template", f"{img}/{{visit}}/tmpl.fits",
        "--difference", f"{img}/{{visit}}/diff.fits",
        "--jobs", "1", "--sizes", ",".join(map(str, sizes)), "--cmap", cmap,
    ]  # fmt: skip
    if annotate:
        cmd.append("--annotate")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def whole_process(args, sizes: list[int], renderers) -> None:
    """Time the whole render process against in-process drawing and matplotlib."""
    sources = load_sources(args.data, args.whole, sizes)
    # The in-process drawing draws the process's pictures: the same rows, each
    # with its own id (repeated ids would let the text of 290 rows hit the
    # typesetter's cache, ~14 % faster than the process's unique ones).
    shape = fits.getdata(args.data / "decam_sfft" / TRIPLET[2]).shape
    where = _positions(args.whole, max(sizes), shape, 1)
    sources = [
        (cutouts, as_run_row(row, i, args.group, *xy))
        for i, ((cutouts, row), xy) in enumerate(zip(sources, where, strict=True))
    ]
    print(
        f"\nwhole process: zooprep render --jobs 1, {args.whole} sources in groups "
        f"of {args.group}; drawing in-process: the same sources, timed half "
        "before and half after"
    )
    print(
        f"{'picture':16} {'process/s':>9} {'draw/s':>8} {'mpl/s':>7} "
        f"{'wall x':>7} {'cpu ms':>7} {'draw ms':>8} {'cpu x':>6} "
        f"{'start s':>7} {'process/mpl':>11} {'draw/mpl':>8}"
    )
    # The runs are removed only at the end: on an ext4 without a journal (this
    # VM's), each new inode skips those deleted in the last minutes, so
    # deleting one run's 10,000 files slows the next run's file creation.
    results: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as keep:
        for _ in range(args.rounds):
            for name, ours, annotate in renderers:
                tmp = keep.enter_context(tempfile.TemporaryDirectory(dir=args.tmp))
                r = _whole_one(args, sizes, sources, ours, annotate, Path(tmp))
                results.setdefault(name, []).append(r)
                _print_whole(name, r)
    if args.rounds > 1:
        for name, rs in results.items():
            median = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
            _print_whole(f"{name}, median", median)


def _whole_one(args, sizes, sources, ours, annotate, tmp: Path) -> dict[str, float]:
    """One whole-process measurement of one renderer, its run made in ``tmp``."""
    run = make_run(args.data, tmp, args.whole, args.group, max(sizes))
    half = len(sources) // 2
    draw_wall = draw_cpu = 0.0
    for part in (sources[:half], None, sources[half:]):
        if part is None:
            os.sync()
            wall, cpu = render_process(run, sizes, args.cmap, annotate, args.tree)
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        for cutouts, row in part:
            ours(cutouts, row)
        draw_wall += time.perf_counter() - w0
        draw_cpu += time.process_time() - c0
    # Start-up and the walk over a run whose sources are all done.
    start, _ = render_process(run, sizes, args.cmap, annotate, args.tree)
    t0 = time.perf_counter()
    for cutouts, row in sources[: args.n_mpl]:
        render_mpl(cutouts, row, annotate=annotate, cmap=args.cmap)
    mpl = args.n_mpl / (time.perf_counter() - t0)
    n = len(sources)
    return {
        "process/s": n / wall,
        "draw/s": n / draw_wall,
        "mpl/s": mpl,
        "wall x": wall / draw_wall,
        "cpu ms": 1000 * cpu / n,
        "draw ms": 1000 * draw_cpu / n,
        "cpu x": cpu / draw_cpu,
        "start s": start,
        "process/mpl": n / wall / mpl,
        "draw/mpl": n / draw_wall / mpl,
    }


def _print_whole(name: str, r: dict[str, float]) -> None:
    """One line of the whole-process table."""
    print(
        f"{name:16} {r['process/s']:9.1f} {r['draw/s']:8.1f} {r['mpl/s']:7.2f} "
        f"{r['wall x']:7.2f} {r['cpu ms']:7.3f} {r['draw ms']:8.3f} "
        f"{r['cpu x']:6.2f} {r['start s']:7.2f} {r['process/mpl']:11.1f} "
        f"{r['draw/mpl']:8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="sources for zooprep")
    parser.add_argument("--n-mpl", type=int, default=20, help="sources for matplotlib")
    parser.add_argument("--sizes", default="30")
    parser.add_argument("--cmap", default="gray")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--profile", action="store_true", help="cProfile zooprep")
    parser.add_argument(
        "--whole", type=int, default=0, help="also time the whole process on N"
    )
    parser.add_argument("--group", type=int, default=400, help="sources per image")
    parser.add_argument(
        "--rounds", type=int, default=1, help="--whole measurements (and their median)"
    )
    parser.add_argument("--tmp", default=None, help="where the runs are made")
    parser.add_argument(
        "--tree", type=Path, help="run another checkout's zooprep for --whole"
    )
    parser.add_argument(
        "--only-whole", action="store_true", help="skip the in-process table"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sources = load_sources(args.data, args.n, sizes)
    plain = PlainRenderer(cmap=args.cmap)
    annotated = AnnotatedRenderer(cmap=args.cmap)
    # Warm up: fonts, glyphs, colour tables, title canvases (once per process).
    plain.render(*sources[0])
    annotated.render(*sources[0])
    render_mpl(*sources[0], annotate=True, cmap=args.cmap)

    print(f"sizes={sizes} cmap={args.cmap} n={args.n} n_mpl={args.n_mpl}, one core")
    if not args.only_whole:
        print(
            f"{'picture':10} {'zooprep/s':>10} {'mpl/s':>8} {'ratio':>7} "
            f"{'zooprep kB':>10} {'mpl kB':>7}"
        )
    renderers = (
        ("plain", plain.render, False),
        ("annotated", annotated.render, True),
    )
    for name, ours, annotate in () if args.only_whole else renderers:

        def ref(c, r, annotate=annotate):
            return render_mpl(c, r, annotate=annotate, cmap=args.cmap)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for cutouts, row in sources:
                ours(cutouts, row)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        fast, size, slow, ref_size = rates(ours, ref, sources, args.n_mpl)
        print(
            f"{name:10} {fast:10.1f} {slow:8.2f} {fast / slow:7.1f} "
            f"{size / 1000:10.1f} {ref_size / 1000:7.1f}"
        )
    if args.whole:
        whole_process(args, sizes, renderers)


if __name__ == "__main__":
    main()
