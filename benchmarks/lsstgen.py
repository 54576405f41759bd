"""Generate LSST-like test data: 2k x 4k float32 MEF exposures and a DiaSource catalog.

Each (visit, detector) gets science, template and difference exposures in the
Rubin layout (empty PRIMARY + IMAGE / MASK / VARIANCE extensions, float32
image, a TAN WCS at 0.2"/px) with Gaussian sources on a noisy sky, and the
catalog holds the DiaSources on them (realistic density: a few hundred per
detector).  To keep disk use bounded for big catalogs, ``n_images`` distinct
triplets are written and further (visit, detector) pairs are symlinks to them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

NX, NY = 2048, 4096


def _wcs(ra: float, dec: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [NX / 2, NY / 2]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return w


def _exposure(path: Path, image: np.ndarray, wcs: WCS) -> None:
    header = wcs.to_header()
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(image.astype(np.float32), header=header, name="IMAGE"),
            fits.ImageHDU(np.zeros(image.shape, np.int32), header=header, name="MASK"),
            fits.ImageHDU(
                np.ones(image.shape, np.float32), header=header, name="VARIANCE"
            ),
        ]
    )
    hdus.writeto(path, overwrite=True)


def make_triplet(
    folder: Path, rng: np.random.Generator, n_sources: int, ra: float, dec: float
) -> pd.DataFrame:
    """Write one science/template/difference triplet and return its sources."""
    folder.mkdir(parents=True, exist_ok=True)
    wcs = _wcs(ra, dec)
    x = rng.uniform(-5, NX + 5, n_sources)  # a few fall past the edges
    y = rng.uniform(-5, NY + 5, n_sources)
    sky = rng.normal(100, 5, (NY, NX)).astype(np.float32)
    template = sky.copy()
    science = rng.normal(100, 5, (NY, NX)).astype(np.float32)
    yy, xx = np.mgrid[-7:8, -7:8]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2)).astype(np.float32)
    flux = rng.uniform(50, 2000, n_sources)
    for xi, yi, f in zip(x, y, flux, strict=True):
        ix, iy = round(xi), round(yi)
        if 7 <= ix < NX - 7 and 7 <= iy < NY - 7:
            science[iy - 7 : iy + 8, ix - 7 : ix + 8] += f * psf
            template[iy - 7 : iy + 8, ix - 7 : ix + 8] += 0.3 * f * psf
    _exposure(folder / "science.fits", science, wcs)
    _exposure(folder / "template.fits", template, wcs)
    _exposure(folder / "difference.fits", science - template, wcs)
    sky_pos = wcs.pixel_to_world_values(x, y)
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "ra": sky_pos[0],
            "dec": sky_pos[1],
            "psfFlux": flux,
            "psfFluxErr": np.sqrt(flux) + 5,
        }
    )


def generate(
    out: Path,
    n_sources: int,
    per_detector: int = 400,
    n_images: int = 20,
    seed: int = 1,
) -> Path:
    """Write images under ``out/images`` and the catalog ``out/catalog.parquet``."""
    rng = np.random.default_rng(seed)
    n_det = max(1, -(-n_sources // per_detector))
    frames = []
    for k in range(n_det):
        visit, detector = 2026000000 + k // 189, k % 189
        folder = out / "images" / str(visit) / str(detector)
        if k < n_images:
            cat = make_triplet(folder, rng, per_detector, 150.0 + k * 0.2, 2.0)
        else:
            src = (
                out
                / "images"
                / str(2026000000 + (k % n_images) // 189)
                / str((k % n_images) % 189)
            )
            folder.parent.mkdir(parents=True, exist_ok=True)
            if not folder.exists():
                os.symlink(src.resolve(), folder)
            cat = frames[k % n_images].drop(
                columns=["visit", "detector", "diaSourceId"]
            )
        cat = cat.copy()
        cat["visit"], cat["detector"] = visit, detector
        cat["diaSourceId"] = (
            np.int64(visit) * 10**8
            + detector * 10**5
            + np.arange(len(cat), dtype=np.int64)
        )
        frames.append(cat)
    catalog = pd.concat(frames, ignore_index=True).iloc[:n_sources]
    catalog["band"] = "r"
    catalog["reliability"] = rng.uniform(0, 1, len(catalog))
    catalog["snr"] = catalog["psfFlux"] / catalog["psfFluxErr"]
    path = out / "catalog.parquet"
    catalog.to_parquet(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sources", type=int, default=4000)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    print(generate(args.out, args.sources, n_images=args.images))
