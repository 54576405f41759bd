"""One reader for every wrapping a cutout stamp arrives in.

Brokers and alert packets hand out the same FITS stamps wrapped differently:

* raw FITS bytes (Rubin alert packets, Lasair's ``imageUrls``, Fink's
  ``/api/v1/cutouts?output-format=FITS``);
* gzipped FITS (ZTF alert packets' ``stampData``, ALeRCE's stamps API);
* a ZTF cutout record ``{"fileName": ..., "stampData": ...}``;
* base64 text of any of these, alone or as a field of a JSON document
  (``{"stampData": "H4sI..."}``, ``{"b:cutoutScience": {"stampData": ...}}``);
* a JSON document holding the pixels as nested lists (Fink's
  ``output-format=array``: ``{"b:cutoutScience": [[...], ...]}``).

`read_cutout` recognises each by its first bytes, unwraps it and returns the
image of the first HDU that has one (float32, ``[y, x]``) with its header.
Anything else (an HTML error page, an empty body, a PNG, truncated FITS)
raises `CutoutError` with one line saying what it is instead, so the row
fails with that reason and the rest of the run carries on.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import logging
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

__all__ = ["CutoutError", "cutout_kind", "fits_bytes", "read_cutout"]

log = logging.getLogger(__name__)

#: How deep wrappers may nest (base64 of JSON of gzip of FITS is three).
_MAX_DEPTH = 4
_GZIP = b"\x1f\x8b"
_FITS = b"SIMPLE  ="
_PNG = b"\x89PNG"


class CutoutError(ValueError):
    """A cutout that is not (or does not wrap) a FITS image; one line why."""


def cutout_kind(data: bytes) -> str:
    """What ``data`` looks like, by its first bytes (for messages and dispatch).

    Examples
    --------
    >>> cutout_kind(b"SIMPLE  =                    T")
    'FITS'
    >>> cutout_kind(b"")
    'an empty body'
    """
    head = data[:64].lstrip()
    if not data:
        return "an empty body"
    if data.startswith(_FITS):
        return "FITS"
    if data.startswith(_GZIP):
        return "gzip"
    if data.startswith(_PNG):
        return "a PNG image"
    if head[:1] in (b"{", b"["):
        return "JSON"
    lower = head.lower()
    if lower.startswith((b"<!doctype html", b"<html")) or b"<html" in lower:
        return "an HTML page"
    if head[:1] == b"<":
        return "XML"
    return "other"


def _b64(text: bytes) -> bytes | None:
    """Decode base64 text, or None when it is not base64."""
    compact = b"".join(text.split())
    if len(compact) < 8:
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def _from_json(doc: Any, depth: int) -> bytes | np.ndarray:
    """The stamp inside a decoded JSON document (bytes to unwrap, or pixels)."""
    if isinstance(doc, Mapping):
        for key in ("stampData", "data", "cutout"):
            if key in doc:
                return _unwrap(doc[key], depth + 1)
        stamps = [k for k in doc if str(k).removeprefix("b:").startswith("cutout")]
        if len(stamps) == 1:
            return _unwrap(doc[stamps[0]], depth + 1)
        keys = ", ".join(map(str, doc))[:80]
        detail = next(
            (str(doc[k])[:80] for k in ("error", "detail", "message") if k in doc), ""
        )
        said = f": {' '.join(detail.split())}" if detail else ""
        raise CutoutError(f"JSON with no single stamp field (keys: {keys}){said}")
    if isinstance(doc, list):
        try:
            array = np.asarray(doc, dtype=np.float32)
        except (TypeError, ValueError):
            raise CutoutError("JSON list that is not an image array") from None
        if array.ndim != 2:
            raise CutoutError(f"JSON array has {array.ndim} dimensions, not 2")
        return array
    if isinstance(doc, str):
        return _unwrap(doc, depth + 1)
    raise CutoutError(f"JSON {type(doc).__name__} is not a stamp")


def _unwrap(value: Any, depth: int = 0) -> bytes | np.ndarray:
    """Peel wrappers off ``value`` until FITS bytes (or a pixel array) remain."""
    if depth > _MAX_DEPTH:
        raise CutoutError("stamp wrapped too deeply to be a cutout")
    if value is None:
        raise CutoutError("no stamp (null)")
    if isinstance(value, Mapping | list):
        return _from_json(value, depth)
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise CutoutError(f"a {type(value).__name__} is not a stamp")
    kind = cutout_kind(value)
    if kind == "FITS":
        return value
    if kind == "gzip":
        try:
            return _unwrap(gzip.decompress(value), depth + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise CutoutError(f"damaged gzip ({exc})") from None
    if kind == "JSON":
        try:
            doc = json.loads(value)
        except ValueError:
            raise CutoutError("damaged JSON") from None
        return _from_json(doc, depth)
    if kind == "other":
        decoded = _b64(value)
        if decoded is not None:
            return _unwrap(decoded, depth + 1)
        shown = value[:16].decode("latin-1").encode("unicode_escape").decode()
        raise CutoutError(f"not FITS (starts with {shown!r})")
    raise CutoutError(f"not FITS: {kind}")


def fits_bytes(value: Any) -> bytes:
    """The FITS file inside ``value`` (any wrapping `read_cutout` knows).

    Raises
    ------
    CutoutError
        When ``value`` wraps no FITS file (pixel arrays included).
    """
    found = _unwrap(value)
    if isinstance(found, np.ndarray):
        raise CutoutError("a pixel array, not a FITS file")
    return found


def read_cutout(value: Any) -> tuple[np.ndarray, fits.Header]:
    """The image and header of a stamp, whatever its wrapping.

    Parameters
    ----------
    value : bytes, str, mapping or list
        FITS bytes, gzipped FITS, base64 text, a ZTF cutout record, a JSON
        document (bytes or decoded) holding one stamp, or nested pixel lists.

    Returns
    -------
    image : numpy.ndarray
        The first 2-D image of the file, float32, indexed ``[y, x]``.
    header : astropy.io.fits.Header
        Its header (an empty header for pixel arrays).

    Raises
    ------
    CutoutError
        One line naming what was found instead of a FITS image.

    Examples
    --------
    >>> import gzip, io
    >>> buf = io.BytesIO()
    >>> fits.PrimaryHDU(np.ones((3, 3), dtype=np.float32)).writeto(buf)
    >>> read_cutout(gzip.compress(buf.getvalue()))[0].shape
    (3, 3)
    """
    found = _unwrap(value)
    if isinstance(found, np.ndarray):
        return found, fits.Header()
    # ZTF stamps have a non-standard SIMPLE card: astropy warns (VerifyWarning)
    # but reads them fine, so the warnings are logged, not raised.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(found), ignore_missing_simple=True) as hdul:
                for hdu in hdul:
                    if hdu.data is not None and np.ndim(hdu.data) == 2:
                        image = np.array(hdu.data, dtype=np.float32)
                        header = hdu.header.copy()
                        break
                else:
                    raise CutoutError("FITS file with no 2-D image")
        except CutoutError:
            raise
        except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
            detail = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise CutoutError(f"damaged FITS ({detail})") from None
    for w in caught:
        log.debug("cutout: %s: %s", w.category.__name__, w.message)
    return image, header
