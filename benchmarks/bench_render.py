"""Time zooprep's renderers against one-matplotlib-figure-per-source, in one run.

Cutouts are cut from the real DECam triplet in ``tests/data`` around
deterministic random positions; rows are real DiaSources from the ci_dc2 APDB
(so the annotation text varies from source to source).  Both implementations
draw the same sources in the same process, one core; the ratio of their
sources per second is printed.

    python benchmarks/bench_render.py [--n 400] [--n-mpl 20] [--sizes 30]
        [--data tests/data] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sqlite3
import sys
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


def load_sources(shared: Path, n: int, sizes: list[int], seed: int = 1):
    """``n`` (Cutouts, row) pairs from the DECam triplet and the APDB."""
    d = shared / "decam_sfft"
    template = fits.getdata(d / "DEC-OBS04a.mini.fits").astype(np.float32)
    science = fits.getdata(d / "DEC-OBS18a.mini.fits").astype(np.float32)
    difference = fits.getdata(d / "FinalDifference.fits").astype(np.float32)
    uri = f"file:{shared / 'apdb' / 'ci_dc2_apdb.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as con:
        table = pd.read_sql("SELECT * FROM DiaSource", con)
        instrument = con.execute(
            "SELECT value FROM metadata WHERE name = 'instrument'"
        ).fetchone()[0]
    rows = table.to_dict("records")
    rng = np.random.default_rng(seed)
    big = max(sizes)
    ny, nx = difference.shape
    out = []
    for i in range(n):
        y = int(rng.integers(big // 2, ny - big // 2))
        x = int(rng.integers(big // 2, nx - big // 2))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="sources for zooprep")
    parser.add_argument("--n-mpl", type=int, default=20, help="sources for matplotlib")
    parser.add_argument("--sizes", default="30")
    parser.add_argument("--cmap", default="gray")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--profile", action="store_true", help="cProfile zooprep")
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
    print(
        f"{'picture':10} {'zooprep/s':>10} {'mpl/s':>8} {'ratio':>7} "
        f"{'zooprep kB':>10} {'mpl kB':>7}"
    )
    for name, ours, annotate in (
        ("plain", plain, False),
        ("annotated", annotated, True),
    ):

        def ref(c, r, annotate=annotate):
            return render_mpl(c, r, annotate=annotate, cmap=args.cmap)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for cutouts, row in sources:
                ours.render(cutouts, row)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        fast, size, slow, ref_size = rates(ours.render, ref, sources, args.n_mpl)
        print(
            f"{name:10} {fast:10.1f} {slow:8.2f} {fast / slow:7.1f} "
            f"{size / 1000:10.1f} {ref_size / 1000:7.1f}"
        )


if __name__ == "__main__":
    main()
