"""Cutouts from images in object stores: byte ranges against whole-file downloads.

Starts on 127.0.0.1 the range-honouring HTTP server (in this process) and
moto's S3 server (in a child process, ``python -m tests.objectstores``) of
``tests/objectstores.py``, both adding ``--latency`` seconds (50 ms) to every
request; ``--bandwidth`` MB/s caps each HTTP response.

1. Bytes per cutout: one 30x30 cutout (science = template = difference) from
   a 4096x4096 float32 LSST-style exposure (IMAGE/MASK/VARIANCE), plain and
   RICE-compressed; bytes the server sent against the file size.
2. Sources per second: ``--n`` sources (1,000) over ``--images`` visits (20),
   each visit a science/template/difference triplet of RICE-compressed
   4096x4096 exposures, cut (30 px) by `FitsImages` over URL templates, against
   the previous behaviour: download each of the group's three files whole
   (concurrently), then cut the local copies.

    python benchmarks/bench_remote.py [--n 1000] [--images 20] [--latency 0.05]
        [--bandwidth MB/s] [--stores http,s3] [--data /tmp/zooprep-bench-remote]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.imagegen import tan_wcs, write_exposure  # noqa: E402
from tests.objectstores import RangeServer, RemoteStats, s3_client, s3_environ  # noqa: E402
from zooprep.images import Cutouts, FitsImages  # noqa: E402
from zooprep.images.remote import filesystem  # noqa: E402

N = 4096


def make_data(data: Path, images: int) -> None:
    """The 4k exposures (plain, RICE) and ``images`` RICE triplets, written once."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 10, size=(N, N)).astype(np.float32)
    for name, compress in (("plain.fits", False), ("rice.fits", True)):
        if not (data / name).exists():
            write_exposure(data / name, image, tan_wcs(N, N), compress=compress)
    distinct = data / "distinct"
    distinct.mkdir(exist_ok=True)
    for k in range(images):
        path = distinct / f"{k}.fits"
        if not path.exists():
            img = rng.normal(1000 + k, 10, size=(N, N)).astype(np.float32)
            write_exposure(path, img, tan_wcs(N, N), compress=True)
            print(f"  wrote {path}", flush=True)
    for visit in range(images):
        for j, role in enumerate(("sci", "tmpl", "diff")):
            path = data / "visits" / str(visit) / f"{role}.fits"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(distinct / f"{(visit + j) % images}.fits", path)


def rows(n: int, images: int) -> list[tuple[int, dict[str, float]]]:
    rng = np.random.default_rng(1)
    out = [
        (i, {"visit": i % images, "x": float(x), "y": float(y)})
        for i, (x, y) in enumerate(rng.uniform(20, N - 20, size=(n, 2)))
    ]
    return sorted(out, key=lambda r: (r[1]["visit"], r[0]))


def templates(base: str) -> tuple[str, str, str]:
    sci, tmpl, diff = (
        f"{base}/visits/{{visit}}/{r}.fits" for r in ("sci", "tmpl", "diff")
    )
    return sci, tmpl, diff


def ranged(base: str, work: list[tuple[int, dict[str, float]]]) -> int:
    source = FitsImages(*templates(base))
    return sum(isinstance(c, Cutouts) for c in source.cutouts(work, (30,)))


def whole_files(base: str, work: list[tuple[int, dict[str, float]]]) -> int:
    """The previous behaviour: fetch each group's files whole, cut local copies."""
    t = templates(base)
    done = 0
    pool = concurrent.futures.ThreadPoolExecutor(3)
    with tempfile.TemporaryDirectory() as tmp:
        groups: dict[int, list[tuple[int, dict[str, float]]]] = {}
        for sid, row in work:
            groups.setdefault(int(row["visit"]), []).append((sid, row))
        for visit, batch in groups.items():
            local = []
            for role, template in zip(("sci", "tmpl", "diff"), t, strict=True):
                url = template.format(visit=visit)
                fs, path = filesystem(url)
                dest = Path(tmp) / f"{visit}_{role}.fits"
                local.append((fs, path, dest))
            list(pool.map(lambda a: a[0].get_file(a[1], str(a[2])), local))
            source = FitsImages(*(str(d) for _, _, d in local))
            done += sum(isinstance(c, Cutouts) for c in source.cutouts(batch, (30,)))
            for _, _, d in local:
                d.unlink()
    return done


def bytes_per_cutout(store: str, base: str, server: object, data: Path) -> None:
    for name in ("plain.fits", "rice.fits"):
        size = (data / name).stat().st_size
        url = f"{base}/{name}"
        server.stats.reset()  # type: ignore[attr-defined]
        source = FitsImages(url, url, url)
        got = list(source.cutouts([(1, {"x": 2047.0, "y": 3001.0})], (30,)))
        assert isinstance(got[0], Cutouts)
        served = server.stats.bytes  # type: ignore[attr-defined]
        requests = server.stats.requests  # type: ignore[attr-defined]
        print(
            f"| {store} | {name} | {size / 1e6:.1f} MB | {served / 1e3:.1f} kB |"
            f" {100 * served / size:.2f} % | {requests} |",
            flush=True,
        )


def throughput(store: str, base: str, server: object, work: list, repeat: int) -> None:
    for label, fn in (("byte ranges", ranged), ("whole files first", whole_files)):
        best = None
        for _ in range(repeat):
            server.stats.reset()  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            done = fn(base, work)
            dt = time.perf_counter() - t0
            served = server.stats.bytes  # type: ignore[attr-defined]
            requests = server.stats.requests  # type: ignore[attr-defined]
            if best is None or dt < best[0]:
                best = (dt, served, done, requests)
        dt, served, done, requests = best  # type: ignore[misc]
        print(
            f"| {store} | {label} | {done} | {dt:.1f} s | {len(work) / dt:.1f} |"
            f" {served / 1e6:.1f} MB | {requests} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--bandwidth", type=float, default=None, help="MB/s per response")
    ap.add_argument("--stores", default="http,s3")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--data", type=Path, default=Path("/tmp/zooprep-bench-remote"))
    args = ap.parse_args()
    make_data(args.data, args.images)
    work = rows(args.n, args.images)
    bandwidth = None if args.bandwidth is None else args.bandwidth * 1e6
    stores = args.stores.split(",")
    print("\n| store | file | size | served | of file | requests |")
    print("|---|---|---:|---:|---:|---:|")
    servers: dict[str, tuple[str, object]] = {}
    if "http" in stores:
        http = RangeServer(args.data, latency=args.latency, bandwidth=bandwidth)
        http.__enter__()
        servers["http"] = (http.url, http)
    moto = None
    if "s3" in stores:
        if bandwidth:
            print("(--bandwidth applies to the HTTP server only)")
        # moto in its own process, so that it does not share this one's GIL
        moto = subprocess.Popen(
            [sys.executable, "-m", "tests.objectstores"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert moto.stdout is not None
        url = moto.stdout.readline().strip()
        os.environ.update(s3_environ(url))
        client = s3_client(url)
        client.create_bucket(Bucket="bench")
        for path in sorted(args.data.rglob("*.fits")):
            if "distinct" not in path.parts:
                key = path.relative_to(args.data).as_posix()
                client.upload_file(str(path), "bench", key)
        stats = RemoteStats(url)
        stats.latency(args.latency)
        servers["s3"] = ("s3://bench", types.SimpleNamespace(stats=stats))
    for store, (base, server) in servers.items():
        bytes_per_cutout(store, base, server, args.data)
    print(
        f"\n{args.n} sources over {args.images} triplets, 30 px,"
        f" {args.latency * 1e3:.0f} ms per request, one process:\n"
    )
    print("| store | method | cut | wall | sources/s | served | requests |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for store, (base, server) in servers.items():
        throughput(store, base, server, work, args.repeat)
    if "http" in servers:
        servers["http"][1].__exit__(None, None, None)  # type: ignore[attr-defined]
    if moto is not None:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    main()
