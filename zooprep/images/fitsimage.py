"""One image HDU of a FITS file, local or remote, as the cutting code sees it.

`FitsImage` holds the header (and the WCS and LSST ``XY0`` read from it) and
the pixels: a memory map (`zooprep.images.fits`), a decompressed array, or an
object read by byte ranges (`zooprep.images.remote`).  `image_hdu`
picks the image HDU of a file the same way for local and remote files.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from zooprep.errors import InputError

if TYPE_CHECKING:
    from astropy.wcs import WCS

__all__ = ["FitsImage", "image_hdu", "log_warnings"]

log = logging.getLogger(__name__)


@dataclass
class FitsImage:
    """One image HDU of a FITS file, ready for cutting.

    Parameters
    ----------
    path : str
        The file.
    hdu : int
        Index of the image HDU in the file.
    header : astropy.io.fits.Header
        Its header (for compressed HDUs, the image header).
    pixels : numpy.ndarray or array-like
        Either a read-only memory map of the raw (big-endian, unscaled) data,
        the whole image as ``float32`` (compressed and gzipped files), or, for
        URLs, an object read by byte ranges when indexed ``[ys, xs]``
        (`zooprep.images.remote`).
    scaled : bool
        True when ``pixels`` still needs ``BSCALE``/``BZERO``/``BLANK``.
    """

    path: str
    hdu: int
    header: fits.Header
    pixels: Any
    scaled: bool = False
    _wcs: WCS | None = field(default=None, repr=False)
    _wcs_done: bool = field(default=False, repr=False)
    _origin: tuple[float, float] | None = field(default=None, repr=False)
    _scaling: tuple[float, float, int | None] | None = field(default=None, repr=False)
    _plain: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the image."""
        ny, nx = self.pixels.shape
        return int(ny), int(nx)

    @property
    def nbytes(self) -> int:
        """Size of the pixel data in bytes (the cache cost)."""
        return int(self.pixels.nbytes)

    @property
    def origin(self) -> tuple[float, float]:
        """The LSST ``XY0`` of the image, from its ``LINEAR`` WCS ``A``; else 0, 0."""
        if self._origin is None:
            self._origin = _origin(self.header)
        return self._origin

    @property
    def wcs(self) -> WCS | None:
        """The celestial WCS of the image, or None when it has none."""
        if not self._wcs_done:
            self._wcs_done = True
            from astropy.wcs import WCS  # on first use: ~0.5 s to import

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    wcs = WCS(self.header, naxis=2)
                except Exception as exc:  # astropy raises many kinds on bad WCS
                    log.debug("no usable WCS in %s: %s", self.path, exc)
                    wcs = None
            log_warnings(caught, self.path)
            if wcs is not None and wcs.has_celestial:
                self._wcs = wcs.celestial
        return self._wcs

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        """Return the pixels ``[ys, xs]`` as ``float32`` with NaN for blanks."""
        pixels = self._plain
        if pixels is None:
            # A memory map sliced as a plain array: the same bytes, without
            # numpy.memmap's per-slice bookkeeping.
            pixels = self.pixels
            if isinstance(pixels, np.memmap):
                pixels = pixels.view(np.ndarray)
            self._plain = pixels
        raw = pixels[ys, xs]
        if not self.scaled:
            return np.array(raw, dtype=np.float32)
        if self._scaling is None:
            h = self.header
            blank = h.get("BLANK")
            self._scaling = (
                float(h.get("BSCALE", 1.0)),
                float(h.get("BZERO", 0.0)),
                None if blank is None else int(blank),
            )
        bscale, bzero, blank = self._scaling
        out = raw.astype(np.float64)
        if blank is not None and raw.dtype.kind in "iu":
            out[raw == blank] = np.nan
        return (out * bscale + bzero).astype(np.float32)


def _origin(h: fits.Header) -> tuple[float, float]:
    """Return ``XY0`` from the ``LINEAR`` alternate WCS ``A`` of an LSST header."""
    if str(h.get("CTYPE1A", "")).strip().upper() != "LINEAR":
        return 0.0, 0.0
    try:
        return (
            float(h.get("CRVAL1A", 0.0)) - (float(h.get("CRPIX1A", 1.0)) - 1.0),
            float(h.get("CRVAL2A", 0.0)) - (float(h.get("CRPIX2A", 1.0)) - 1.0),
        )
    except (TypeError, ValueError):
        return 0.0, 0.0


def log_warnings(caught: list[warnings.WarningMessage], path: str) -> None:
    """Log warnings astropy raised while reading ``path``."""
    for w in caught:
        log.debug("%s: %s: %s", path, w.category.__name__, w.message)


def image_hdu(hdul: fits.HDUList, path: str) -> tuple[int, Any, fits.Header]:
    """Return the image HDU's index, the HDU, and its header.

    The header gains the PRIMARY header's ``INSTRUME`` when it has none (LSST
    multi-extension files keep the instrument there).  It is the HDU's own
    parsed header, not a copy (copying costs more than parsing it): the
    HDU list is read once and closed by the caller.
    """
    index = _find_image_hdu(hdul, path)
    hdu = hdul[index]
    header = hdu.header
    primary = hdul[0].header
    if "INSTRUME" not in header and "INSTRUME" in primary:
        header["INSTRUME"] = primary["INSTRUME"]
    return index, hdu, header


def _find_image_hdu(hdul: fits.HDUList, path: str) -> int:
    """Return the index of the image HDU: EXTNAME ``IMAGE``, else the first 2-D image."""
    first = None
    for i, hdu in enumerate(hdul):
        if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
            continue
        if str(hdu.header.get("EXTNAME", "")).strip().upper() == "IMAGE":
            return i
        if first is None and hdu.header.get("NAXIS", 0) == 2:
            first = i
    if first is None:
        raise InputError(f"{path}: no 2-D image HDU")
    return first
