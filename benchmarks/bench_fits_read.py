"""zooprep's memory-mapped FITS reads against astropy's ``section`` and ``Cutout2D``.

Run by hand::

    python benchmarks/bench_fits_read.py                 # 4096x4096, 2000 cutouts
    python benchmarks/bench_fits_read.py --size 2048 -n 500 --rounds 5

`zooprep.images.fits` reads cutouts from an uncompressed image through a
raw ``numpy.memmap`` of the HDU's data and applies ``BSCALE``/``BZERO``/
``BLANK`` itself, on the cutout only.  The obvious alternatives are astropy's
own: ``hdu.section[ys, xs]`` (reads only the section, applies the scaling) and
``astropy.nddata.Cutout2D`` on ``hdu.data`` (``mode='partial'``, NaN fill).
This script does the same work three ways and checks they give the same
pixels: open the file, then cut ``-n`` cutouts of 30x30 pixels at random
positions (some hanging over the edge, NaN-padded), as float32 with NaN for
blank pixels.  Two images are written to a temporary folder: a scaled 16-bit
integer image (``BSCALE``, ``BZERO``, ``BLANK``: the case where the reads
differ most) and a float32 image.  Each way is timed ``--rounds`` times in
alternation, each round in a fresh process (so no file pages are shared with
a previous way's mapping of the same round beyond the OS page cache, which
all three use alike); the median is reported with the ratio to zooprep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

SIZE = 30


def _memmap(path: str) -> bool:
    """astropy cannot memory-map scaled images (it says: set memmap=False)."""
    header = fits.getheader(path)
    return not any(k in header for k in ("BSCALE", "BZERO", "BLANK"))


WAYS = ("zooprep", "section", "cutout2d")


def write_images(folder: Path, size: int) -> dict[str, Path]:
    """A scaled int16 image with blanks, and a float32 one."""
    rng = np.random.default_rng(1)
    raw = rng.integers(-30000, 30000, size=(size, size), dtype=np.int16)
    raw[rng.random((size, size)) < 0.01] = -32768
    header = fits.Header()
    header["BSCALE"] = 0.5
    header["BZERO"] = 100.0
    header["BLANK"] = -32768
    scaled = fits.PrimaryHDU(header=header)
    scaled.data = raw  # raw values: astropy keeps BSCALE/BZERO in the header
    scaled.header["BSCALE"], scaled.header["BZERO"] = 0.5, 100.0
    scaled.header["BLANK"] = -32768
    paths = {"int16-scaled": folder / "scaled.fits", "float32": folder / "float.fits"}
    scaled.writeto(paths["int16-scaled"], output_verify="silentfix")
    fits.PrimaryHDU(rng.normal(size=(size, size)).astype(np.float32)).writeto(
        paths["float32"]
    )
    return paths


def positions(size: int, n: int) -> list[tuple[float, float]]:
    """Random source positions, a tenth of them within a cutout of the edge."""
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, size - 1, size=(n, 2))
    edge = rng.random(n) < 0.1
    xy[edge, 0] = rng.uniform(-10, 10, size=int(edge.sum()))
    return [(float(x), float(y)) for x, y in xy]


def run_way(way: str, path: str, xy: list[tuple[float, float]]) -> tuple[float, str]:
    """Open and cut; return seconds and a checksum of the cutouts."""
    from zooprep.images.cutout import cut_around, pixel_index

    t0 = time.perf_counter()
    out: list[np.ndarray] = []
    if way == "zooprep":
        from zooprep.images.fits import open_image

        image = open_image(path)
        for x, y in xy:
            out.append(cut_around(image.read, image.shape, x, y, SIZE)[0])
    elif way == "section":
        with fits.open(path, memmap=_memmap(path)) as hdul:
            hdu = hdul[0]
            shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
            blank = hdu.header.get("BLANK")
            section = hdu.section

            def read(ys: slice, xs: slice) -> np.ndarray:
                cut = np.asarray(section[ys, xs], dtype=np.float32)
                if blank is not None:
                    # section scales but does not blank: find the raw blanks
                    bscale = hdu.header.get("BSCALE", 1.0)
                    bzero = hdu.header.get("BZERO", 0.0)
                    cut[cut == np.float32(blank * bscale + bzero)] = np.nan
                return cut

            for x, y in xy:
                out.append(cut_around(read, shape, x, y, SIZE)[0])
    else:
        from astropy.nddata import Cutout2D

        with fits.open(path, memmap=_memmap(path)) as hdul:
            data = hdul[0].data  # scaled (and blanked) as a whole float array
            data = data.astype(np.float32, copy=False)
            for x, y in xy:
                centre = (pixel_index(x), pixel_index(y))
                cut = Cutout2D(
                    data,
                    centre,
                    (SIZE, SIZE),
                    mode="partial",
                    fill_value=np.nan,
                    copy=True,
                ).data
                out.append(np.asarray(cut, dtype=np.float32))
    seconds = time.perf_counter() - t0
    digest = float(np.nansum([np.nansum(c) for c in out]))
    nans = int(sum(np.isnan(c).sum() for c in out))
    return seconds, f"{digest:.6e}/{nans}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side")
    parser.add_argument("-n", type=int, default=2000, help="cutouts per image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, path, n = args.child
        size = fits.getheader(path)["NAXIS1"]
        seconds, check = run_way(way, path, positions(size, int(n)))
        print(json.dumps({"seconds": seconds, "check": check}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.size)
        print(f"{args.size}x{args.size} images, {args.n} cutouts of {SIZE} px each")
        print(f"{'image':<14} {'way':<9} {'median s':>9} {'ratio':>7}  check")
        for kind, path in paths.items():
            times: dict[str, list[float]] = {w: [] for w in WAYS}
            checks: dict[str, set[str]] = {w: set() for w in WAYS}
            for _ in range(args.rounds):
                for way in WAYS:
                    proc = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            way,
                            str(path),
                            str(args.n),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    got = json.loads(proc.stdout)
                    times[way].append(got["seconds"])
                    checks[way].add(got["check"])
            base = statistics.median(times["zooprep"])
            for way in WAYS:
                med = statistics.median(times[way])
                print(
                    f"{kind:<14} {way:<9} {med:9.3f} {med / base:6.1f}x  "
                    f"{', '.join(sorted(checks[way]))}"
                )


if __name__ == "__main__":
    main()
