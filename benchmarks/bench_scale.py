"""Scale benchmarks for the render stage (issue: parallel render, Dask, flat memory).

Run by hand, not in CI::

    python benchmarks/bench_scale.py /tmp/zp-scale            # everything
    python benchmarks/bench_scale.py /tmp/zp-scale --only jobs

Each part prints ratios measured in this one run on generated LSST-like data
(2k x 4k float32 MEF exposures, 400 DiaSources per detector):

jobs       render throughput with --jobs N (all cores) vs --jobs 1
dask       Dask LocalCluster (N workers) vs the local process pool, same work
flat       render time per source at 1k, 10k and --flat-max sources
rss        peak RSS of the driver with 100k and 1M selected sources (select,
           then stream every row through the render task planner), and the
           peak RSS of one render worker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lsstgen

import zooprep

TEMPLATES = {
    "science": "{root}/images/{{visit}}/{{detector}}/science.fits",
    "template": "{root}/images/{{visit}}/{{detector}}/template.fits",
    "difference": "{root}/images/{{visit}}/{{detector}}/difference.fits",
}


def _images(root: Path) -> dict[str, str]:
    return {k: v.format(root=root) for k, v in TEMPLATES.items()}


def _quiet_disk() -> None:
    """Let the file system finish writing back earlier runs before timing."""
    os.sync()
    time.sleep(2)


class _PeakWorkerRSS:
    """Sample the resident memory of every child process while a render runs."""

    def __init__(self, every: float = 0.2) -> None:
        import threading

        self.peak_mb = 0.0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak_mb = max(self.peak_mb, rss)
            self._stop.wait(self._every)

    def __enter__(self) -> _PeakWorkerRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_render(work: Path, catalog: Path, name: str, n: int, **kw: object) -> float:
    run = work / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    zooprep.select(run, catalog=catalog, limit=n)
    _quiet_disk()
    t0 = time.perf_counter()
    with _PeakWorkerRSS() as rss:
        res = zooprep.render(run, images=_images(work), **kw)
    dt = time.perf_counter() - t0
    print(
        f"  {name}: {res.rendered} rendered in {dt:.1f} s ({res.rendered / dt:.0f}/s),"
        f" peak worker RSS {rss.peak_mb:.0f} MB",
        flush=True,
    )
    return dt


def _alternate(
    work: Path,
    catalog: Path,
    n: int,
    repeat: int,
    a: dict[str, object],
    b: dict[str, object],
) -> tuple[float, float]:
    """Time two render set-ups in alternating rounds; return the median of each.

    Disk write-back on a shared VM makes single timings vary by 10-20%;
    alternating rounds expose both set-ups to the same conditions.
    """
    ta, tb = [], []
    for k in range(repeat):
        ta.append(_run_render(work, catalog, f"a{k}", n, **a))
        tb.append(_run_render(work, catalog, f"b{k}", n, **b))
    return statistics.median(ta), statistics.median(tb)


def bench_jobs(work: Path, catalog: Path, n: int, repeat: int) -> dict[str, float]:
    cores = len(os.sched_getaffinity(0))
    t1, tn = _alternate(work, catalog, n, repeat, {"jobs": 1}, {"jobs": cores})
    ratio = t1 / tn
    print(
        f"jobs: --jobs {cores} is {ratio:.2f}x --jobs 1 (medians of {repeat}; "
        "target >= 1.8x on 2 cores)"
    )
    return {"jobs_ratio": ratio, "cores": cores}


def _dask_startup() -> float:
    """Seconds to start (and stop) the LocalCluster that ``--executor dask`` uses."""
    from zooprep.executors import DaskExecutor

    t0 = time.perf_counter()
    DaskExecutor(jobs=len(os.sched_getaffinity(0))).close()
    return time.perf_counter() - t0


def bench_dask(work: Path, catalog: Path, n: int, repeat: int) -> dict[str, float]:
    cores = len(os.sched_getaffinity(0))
    tl, td = _alternate(
        work, catalog, n, repeat, {"jobs": cores}, {"jobs": cores, "executor": "dask"}
    )
    startup = statistics.median(_dask_startup() for _ in range(repeat))
    overhead = td / tl - 1
    steady = (td - startup) / tl - 1
    print(
        f"dask: LocalCluster takes {100 * overhead:+.1f}% vs local with its "
        f"{startup:.1f} s start-up, {100 * steady:+.1f}% without it (medians of "
        f"{repeat}; target <= 15%)"
    )
    return {"dask_overhead": overhead, "dask_overhead_after_startup": steady}


def bench_flat(work: Path, catalog: Path, sizes: list[int]) -> dict[str, float]:
    cores = len(os.sched_getaffinity(0))
    per = {}
    for n in sizes:
        dt = _run_render(work, catalog, f"flat{n}", n, jobs=cores)
        per[n] = dt / n * 1000
        print(f"flat: {n} sources: {per[n]:.2f} ms per source")
    first, last = per[sizes[0]], per[sizes[-1]]
    print(f"flat: time per source at {sizes[-1]} / at {sizes[0]} = {last / first:.2f}")
    return {f"ms_per_source_{n}": v for n, v in per.items()}


RSS_CHILD = """
import json, resource, sys, time
import zooprep
from zooprep.run import Run
from zooprep.stages.render import _tasks, _resolve_options
from zooprep.images.fits import FitsImages
from zooprep.options import RenderOptions
from zooprep.renderers import make_renderer
run, catalog = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
zooprep.select(run, catalog=catalog)
t1 = time.perf_counter()
with Run.open(run) as r:
    opts = _resolve_options(r, RenderOptions(), None)
    images = FitsImages("{visit}/s.fits", "{visit}/t.fits", "{visit}/d.fits")
    n = sum(len(t.rows) for t in _tasks(r, images, make_renderer(opts), opts, ["selected"]))
t2 = time.perf_counter()
print(json.dumps({"rows": n, "select_s": t1 - t0, "plan_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_rss(work: Path, counts: list[int]) -> dict[str, float]:
    out = {}
    for n in counts:
        cat = work / f"rss{n}.parquet"
        if not cat.exists():
            src = pd.read_parquet(work / "catalog.parquet")
            reps = -(-n // len(src))
            big = pd.concat([src] * reps, ignore_index=True).iloc[:n].copy()
            big["diaSourceId"] = big["diaSourceId"].iloc[0] + pd.RangeIndex(n)
            big.to_parquet(cat)
        run = work / f"rss{n}"
        shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, str(run), str(cat)],
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"rss: {n} sources: select {info['select_s']:.0f} s, plan "
            f"{info['plan_s']:.0f} s, driver peak RSS {info['peak_rss_mb']:.0f} MB "
            "(target < 1024 MB at 1M)"
        )
        out[f"driver_rss_mb_{n}"] = info["peak_rss_mb"]
        shutil.rmtree(run, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path)
    parser.add_argument(
        "--only", choices=["jobs", "dask", "flat", "rss"], action="append"
    )
    parser.add_argument("--sources", type=int, default=4000)
    parser.add_argument(
        "--dask-sources",
        type=int,
        default=40_000,
        help="sources for the dask part (enough to amortise the cluster start-up)",
    )
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--flat-max", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    parts = args.only or ["jobs", "dask", "flat", "rss"]
    work = args.work
    catalog = work / "catalog.parquet"
    total = max(
        args.sources,
        args.dask_sources if "dask" in parts else 0,
        args.flat_max if "flat" in parts else 0,
    )
    if not catalog.exists() or len(pd.read_parquet(catalog, columns=["x"])) < total:
        print(
            f"generating {total} sources on {args.images} image triplets ...",
            flush=True,
        )
        lsstgen.generate(work, total, n_images=args.images)
    results: dict[str, float] = {}
    if "jobs" in parts:
        results |= bench_jobs(work, catalog, args.sources, args.repeat)
    if "dask" in parts:
        results |= bench_dask(work, catalog, args.dask_sources, args.repeat)
    if "flat" in parts:
        sizes = [s for s in (1000, 10_000, args.flat_max) if s <= args.flat_max]
        results |= bench_flat(work, catalog, sorted(set(sizes)))
    if "rss" in parts:
        results |= bench_rss(work, [100_000, 1_000_000])
    print(json.dumps(results, indent=2))
    shutil.rmtree(work / "runs", ignore_errors=True)


if __name__ == "__main__":
    main()
