"""Writers of small LSST-style exposures for the image tests.

An LSST exposure file (as written by lsst.afw) is a multi-extension FITS
file: an empty PRIMARY HDU, then ``IMAGE`` (float32, with the celestial WCS and
the ``LINEAR`` alternate WCS ``A`` giving the origin ``XY0``), ``MASK`` (int32)
and ``VARIANCE`` (float32) extensions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def tan_wcs(
    ny: int,
    nx: int,
    ra: float = 150.0,
    dec: float = 2.0,
    scale: float = 0.2,
    rotation_deg: float = 0.0,
) -> fits.Header:
    """A TAN WCS header centred on (ra, dec), ``scale`` arcsec/px, rotated."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    t = np.radians(rotation_deg)
    s = scale / 3600.0
    w.wcs.cd = np.array(
        [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    )
    return w.to_header()


def write_exposure(
    path: Path,
    image: np.ndarray,
    wcs: fits.Header | None = None,
    xy0: tuple[int, int] = (0, 0),
    compress: bool = False,
    order: tuple[str, ...] = ("IMAGE", "MASK", "VARIANCE"),
    instrument: str | None = "LSSTCam",
) -> Path:
    """Write an LSST-style exposure (optionally RICE tile-compressed) to ``path``."""
    image = np.asarray(image, dtype=np.float32)
    header = fits.Header()
    if wcs is not None:
        header.update(wcs)
    header["CTYPE1A"] = "LINEAR"
    header["CTYPE2A"] = "LINEAR"
    header["CRPIX1A"] = 1.0
    header["CRPIX2A"] = 1.0
    header["CRVAL1A"] = float(xy0[0])
    header["CRVAL2A"] = float(xy0[1])
    header["LTV1"] = float(-xy0[0])
    header["LTV2"] = float(-xy0[1])
    planes = {
        "IMAGE": (image, header),
        "MASK": (np.zeros(image.shape, dtype=np.int32), fits.Header()),
        "VARIANCE": (np.full(image.shape, 4.0, dtype=np.float32), fits.Header()),
    }
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for name in order:
        data, h = planes[name]
        if compress:
            hdus.append(
                fits.CompImageHDU(data, header=h, name=name, compression_type="RICE_1")
            )
        else:
            hdus.append(fits.ImageHDU(data, header=h, name=name))
    primary = fits.PrimaryHDU()
    if instrument is not None:
        primary.header["INSTRUME"] = instrument  # as lsst.afw writes it: in PRIMARY
    fits.HDUList([primary, *hdus]).writeto(path, overwrite=True)
    return path


def write_simple(path: Path, image: np.ndarray, wcs: fits.Header | None = None) -> Path:
    """Write a single-HDU float32 FITS image."""
    fits.PrimaryHDU(np.asarray(image, dtype=np.float32), header=wcs).writeto(
        path, overwrite=True
    )
    return path


QUARTER = np.array([[0.0, -1.0], [1.0, 0.0]])  # what np.rot90 does
MIRROR = np.array([[-1.0, 0.0], [0.0, 1.0]])  # what np.fliplr does


def turned_copy(
    src: Path, dst: Path, turn: np.ndarray, pixels: np.ndarray | None = None
) -> Path:
    """Write ``src`` turned on the sky by the 2x2 pixel map ``turn``, WCS to match.

    A pixel ``p`` of the copy (0-based, about the centre ``c``) shows the
    original's ``c + turn @ (p - c)``: ``pixels`` when given (np.rot90 and
    np.fliplr do it exactly), else cubic interpolation (scipy).  The WCS
    follows: CD becomes CD @ turn, CRPIX moves so that every pixel keeps its
    sky position (the TPV distortion applies after CD, so it is kept exactly).
    """
    from scipy.ndimage import map_coordinates

    with fits.open(src) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float64)
        header = hdul[0].header.copy()
    ny, nx = data.shape
    c = np.array([(nx - 1) / 2, (ny - 1) / 2])
    if pixels is None:
        ys, xs = np.mgrid[0:ny, 0:nx].astype(np.float64)
        old = c[:, None] + turn @ (np.stack([xs.ravel(), ys.ravel()]) - c[:, None])
        pixels = map_coordinates(data, [old[1], old[0]], order=3, cval=np.nan).reshape(
            ny, nx
        )
    cd = np.array(
        [[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]]
    )
    new_cd = cd @ turn
    crpix = np.array([header["CRPIX1"], header["CRPIX2"]])
    new_crpix = (c + 1) + np.linalg.inv(turn) @ (crpix - (c + 1))
    for i in (1, 2):
        header[f"CRPIX{i}"] = float(new_crpix[i - 1])
        for j in (1, 2):
            header[f"CD{i}_{j}"] = float(new_cd[i - 1, j - 1])
    fits.PrimaryHDU(np.asarray(pixels, dtype=np.float32), header=header).writeto(dst)
    return dst
