"""Cutouts through the RSP's SODA service against downloading whole images.

Run by hand (needs the extra ``rsp``)::

    python benchmarks/bench_soda.py [-n 200] [--latency 0.05] [--threads 8] [--mbit 100]

Starts the RSP stand-in of the tests (``tests/rsp_standin/server.py``: SIAv2,
DataLink and SODA over the real 256x256 DECam triplet of ``tests/data``) on
127.0.0.1 with ``--latency`` seconds added to every answer (and, with
``--mbit``, each answer sent no faster than that), and puts ``-n``
sources at random places of the images.  Then, each timed from a cold start
(no cache), the same sources' 30-pixel cutouts of the three images:

* **soda**: `zooprep.images.soda.SodaImages` (one SIA query for the visit and
  one for the template, each DataLink document once, then a SODA cutout per
  image and source, ``--threads`` at a time);
* **whole**: the same SIA and DataLink lookups, then each source downloads
  its three whole files (the DataLink ``#this`` link) and cuts them locally
  (`zooprep.images.fits.FitsImages`), ``--threads`` sources at a time: what
  a notebook that fetches the image of each source does;
* **whole, cached**: each whole file downloaded once and cut for every
  source (the best case for whole files: all sources on one visit);
* **render**: ``zooprep render --soda`` end to end (PNG files included) on a
  run of the same sources, one process.

Prints sources per second and bytes read per source for each, and the ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rsp_standin.rows import (  # noqa: E402
    DECAM_BAND,
    DECAM_DETECTOR,
    DECAM_MJD,
    DECAM_VISIT,
)
from tests.rsp_standin.server import RspStandin  # noqa: E402

TOKEN = "gt-bench.0123456789"
SIZE = 30


def _rows(standin: RspStandin, n: int, seed: int) -> list[tuple[int, dict]]:
    image = standin.image("lsst.visit_image")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        x, y = rng.uniform(20, 235, 2)
        ra, dec = (float(v) for v in image.wcs.pixel_to_world_values(x, y))
        sid = 4611686018427400000 + k
        out.append(
            (
                sid,
                {
                    "diaSourceId": sid,
                    "diaObjectId": sid + 10**6,
                    "visit": DECAM_VISIT,
                    "detector": DECAM_DETECTOR,
                    "band": DECAM_BAND,
                    "midpointMjdTai": DECAM_MJD,
                    "ra": ra,
                    "dec": dec,
                    "x": float(x),
                    "y": float(y),
                },
            )
        )
    return out


def _soda(standin: RspStandin, rows: list, threads: int) -> tuple[float, int]:
    from zooprep.images.soda import SodaImages

    images = SodaImages(standin.sia_url, concurrency=threads)
    start = time.perf_counter()
    out = list(images.cutouts(rows, (SIZE,)))
    elapsed = time.perf_counter() - start
    images.close()
    assert all(type(o).__name__ == "Cutouts" for o in out), out[:3]
    return elapsed, sum(standin.bytes_sent.values())


def _whole(
    standin: RspStandin, rows: list, threads: int, cached: bool
) -> tuple[float, int]:
    """SIA + DataLink as SODA does, then whole files per source (or once)."""
    import pyvo
    from astropy.io.votable import parse

    from zooprep.images.fits import FitsImages
    from zooprep.readers.tap import tap_session

    session = tap_session(TOKEN)
    folder = Path(tempfile.mkdtemp(prefix="zooprep-bench-"))
    start = time.perf_counter()
    sia = pyvo.dal.SIA2Service(standin.sia_url, session=session, check_baseurl=False)
    _, row = rows[0]
    found = {}
    for calib in (2, 3):
        for r in sia.search(pos=(row["ra"], row["dec"], 1 / 3600), calib_level=calib):
            found[str(r["dataproduct_subtype"])] = str(r["access_url"])
    files = {}
    for kind, links in found.items():
        with session.get(links) as answer:
            doc = pyvo.dal.adhoc.DatalinkResults(parse(io.BytesIO(answer.content)))
        # (pyvo's bysemantics reads a vocabulary from the network: look ourselves)
        files[kind] = next(str(r.access_url) for r in doc if r.semantics == "#this")

    def fetch(kind: str, name: str) -> str:
        path = folder / name
        with session.get(files[kind]) as answer:
            path.write_bytes(answer.content)
        return str(path)

    def one(item: tuple[int, tuple[int, dict]]) -> object:
        k, (sid, row) = item
        if cached:
            paths = shared
        else:
            paths = [fetch(kind, f"{k}-{kind}.fits") for kind in KINDS]
        source = FitsImages(*paths, position="radec")
        (cut,) = source.cutouts([(sid, row)], (SIZE,))
        if not cached:
            for p in paths:
                os.remove(p)
        return cut

    shared = [fetch(kind, f"shared-{kind}.fits") for kind in KINDS] if cached else []
    with ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(one, enumerate(rows)))
    elapsed = time.perf_counter() - start
    session.close()
    shutil.rmtree(folder, ignore_errors=True)
    assert all(type(o).__name__ == "Cutouts" for o in out)
    return elapsed, sum(standin.bytes_sent.values())


KINDS = ("lsst.visit_image", "lsst.template_coadd", "lsst.difference_image")


def _render(standin: RspStandin, rows: list) -> float:
    import pandas as pd

    import zooprep

    folder = Path(tempfile.mkdtemp(prefix="zooprep-bench-"))
    catalog = folder / "sources.csv"
    pd.DataFrame([r for _, r in rows]).to_csv(catalog, index=False)
    run = folder / "run"
    zooprep.select(run, catalog=catalog)
    start = time.perf_counter()
    result = zooprep.render(run, images={"soda": standin.sia_url}, sizes=[SIZE], jobs=1)
    elapsed = time.perf_counter() - start
    assert result.rendered == len(rows), result
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--mbit", type=float, help="limit each answer to this many Mbit/s"
    )
    args = parser.parse_args()
    os.environ["RSP_TOKEN"] = TOKEN
    decam = ROOT / "tests" / "data" / "decam_sfft"
    results = {}
    for name in ("soda", "whole", "whole, cached", "render"):
        bandwidth = args.mbit * 1e6 / 8 if args.mbit else None
        with RspStandin(
            decam, token=TOKEN, latency=args.latency, bandwidth=bandwidth
        ) as standin:
            rows = _rows(standin, args.n, args.seed)
            if name == "soda":
                results[name] = _soda(standin, rows, args.threads)
            elif name == "render":
                results[name] = (
                    _render(standin, rows),
                    sum(standin.bytes_sent.values()),
                )
            else:
                results[name] = _whole(standin, rows, args.threads, name != "whole")
    print(
        f"{args.n} sources, {SIZE}-pixel cutouts of 3 images, latency {args.latency} s,"
    )
    print(f"{args.threads} threads; load: {os.getloadavg()[0]:.2f}")
    print(f"{'way':<15} {'wall s':>8} {'sources/s':>10} {'bytes/source':>13}")
    for name, (elapsed, sent) in results.items():
        print(
            f"{name:<15} {elapsed:8.2f} {args.n / elapsed:10.1f} {sent / args.n:13.0f}"
        )
    soda, whole = results["soda"], results["whole"]
    print(
        f"soda vs whole: {whole[0] / soda[0]:.2f}x the speed, "
        f"{whole[1] / soda[1]:.1f}x fewer bytes"
    )


if __name__ == "__main__":
    main()
