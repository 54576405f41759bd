"""Cutouts from FITS files named by path templates over the sources' columns.

`FitsImages` is the image source of ``zooprep render --science T --template T
--difference T``: each template is a Python format string over a source's
columns, e.g. ``data/{visit}/{detector}/diff.fits``.

Files
-----
Three kinds of files are read, and the image HDU is chosen by name:

* single-HDU FITS (the primary HDU holds the image);
* Rubin/LSST multi-extension exposures: the HDU whose ``EXTNAME`` is ``IMAGE``
  (``MASK`` and ``VARIANCE`` are ignored); otherwise the first HDU with a 2-D
  image;
* tile-compressed FITS (fpack, RICE/GZIP/HCOMPRESS tiles), read with
  astropy's `~astropy.io.fits.CompImageHDU`.

Uncompressed images are memory-mapped and only the section under each cutout
is read; compressed (and gzipped) images are decompressed once.  ``BSCALE``,
``BZERO`` and integer ``BLANK`` are applied, to the cutout only.  (astropy's
``section`` and ``Cutout2D`` do the same work 26-43 and 5-9 times slower:
``benchmarks/bench_fits_read.py``.)

Templates may be URLs (``s3://``, ``https://``, ``gs://``...): such images are
read by byte ranges, only the rows or tiles under the cutouts
(`zooprep.images.remote`, optional extra ``cloud``).  ``{env:NAME}`` in a
template is the environment variable NAME, read in each process that reads
images (`~zooprep.vocabulary.expand_env`): a signed URL's token stays out of
the run's settings (``...fits?{env:AZURE_SAS}``).

Positions
---------
``position='xy'`` takes the source's 0-based pixel position from its ``x`` and
``y`` columns, on the pixel grid shared by the three images (as for Rubin
templates warped to the science frame).  An LSST exposure whose origin ``XY0``
is not 0 (written as the ``LINEAR`` alternate WCS ``A``: ``CTYPE1A``,
``CRVAL1A``, ``CRPIX1A``) is offset accordingly, as ``x``/``y`` of a
DiaSource are in that parent frame; IRAF ``LTV1``/``LTV2`` are ignored.
``position='radec'`` converts the source's ``ra``/``dec`` (degrees, ICRS)
through each image's own celestial WCS.  ``position='auto'`` (the default)
uses ``x``/``y`` when the row has finite values and ``ra``/``dec`` otherwise.

Centring: a cutout of size ``N`` puts the source's pixel (nearest pixel
centre, halves rounding up) at index ``N // 2`` on both axes, so for even
``N`` the source is on the pixel just after the middle
(see `zooprep.images.cutout`).

Placing the sources and cutting is `zooprep.images.cutting`, shared with the
Butler source; the image model is `zooprep.images.fitsimage`.  This module
opens local FITS files and keeps images in a per-process cache.

Failures of single sources are returned as `~zooprep.images.base.Failed`:
a source off the image, a missing, unreadable, corrupt or truncated file, an
image without a celestial WCS when ``ra``/``dec`` is needed, template or
difference not oriented like the science image (checked on the WCS when
``ra``/``dec`` is used), an all-NaN cutout.

Efficiency
----------
Rows arrive grouped by `FitsImages.group_key` (the three formatted paths), so
each image is opened once per group, and a per-process cache bounded by bytes
(``cache_bytes``) keeps recently used images across groups.  The cost of a
cached image is its pixel data size (for a memory-mapped file, the most it can
pin in memory).
"""

from __future__ import annotations

import collections
import gzip
import logging
import os
import string
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from zooprep.errors import InputError
from zooprep.images.base import (
    Cutouts,
    Failed,
    column_listing,
    consecutive_groups,
)
from zooprep.images.cutting import (
    POSITIONS,
    ROLES,
    Position,
    check_position_columns,
    cut_group,
)
from zooprep.images.fitsimage import FitsImage, image_hdu, log_warnings
from zooprep.images.injected import Injection
from zooprep.images.remote import is_url, open_remote, pool, require
from zooprep.vocabulary import expand_env

__all__ = ["FitsImage", "FitsImages", "ImageCache", "open_image"]

log = logging.getLogger(__name__)

#: Default bound of the image cache: 1 GiB.
DEFAULT_CACHE_BYTES = 1 << 30
#: Cache cost charged for remembering that a file could not be read.
FAILURE_COST = 1024


def open_image(path: str | os.PathLike[str]) -> FitsImage:
    """Open the image HDU of a FITS file for cutting.

    Parameters
    ----------
    path : str or os.PathLike
        A single-HDU, multi-extension (``IMAGE`` extension) or tile-compressed
        FITS file, optionally gzipped.

    Returns
    -------
    FitsImage
        The image, memory-mapped when uncompressed.

    Raises
    ------
    InputError
        When the file is missing, unreadable, not FITS, truncated or has no image.
    """
    path = os.fspath(path)
    if is_url(path):
        return open_remote(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                index, hdu, header = image_hdu(hdul, path)
                if isinstance(hdu, fits.CompImageHDU) or gzipped:
                    pixels = np.asarray(hdu.data, dtype=np.float32)
                    image = FitsImage(path, index, header, pixels)
                else:
                    # the HDU's own fileinfo: the HDUList's writes out every
                    # header again to see whether one was resized
                    image = _memmap_hdu(path, index, header, hdu.fileinfo())
        log_warnings(caught, path)
    except InputError:
        raise
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        EOFError,
        gzip.BadGzipFile,
    ) as exc:
        raise InputError(f"{path}: unreadable FITS file ({exc})") from exc
    if image.pixels.ndim != 2:
        raise InputError(f"{path}: HDU {index} is not a 2-D image")
    return image


def _memmap_hdu(
    path: str, index: int, header: fits.Header, info: Mapping[str, Any]
) -> FitsImage:
    """Memory-map the raw data of an uncompressed image HDU, checking its length."""
    bitpix = int(header["BITPIX"])
    dtypes = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
    if bitpix not in dtypes or int(header.get("NAXIS", 0)) != 2:
        raise InputError(f"{path}: HDU {index} is not a 2-D image (BITPIX={bitpix})")
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    dtype = np.dtype(dtypes[bitpix])
    offset = int(info["datLoc"])
    need = offset + dtype.itemsize * shape[0] * shape[1]
    size = os.path.getsize(path)
    if size < need:
        raise InputError(
            f"{path}: truncated FITS file ({size} bytes, HDU {index} needs {need})"
        )
    pixels = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    scaled = (
        "BSCALE" in header or "BZERO" in header or ("BLANK" in header and bitpix > 0)
    )
    return FitsImage(path, index, header, pixels, scaled=scaled)


class ImageCache:
    """Opened images, least recently used first out, bounded by bytes.

    Parameters
    ----------
    max_bytes : int
        Upper bound of the summed `FitsImage.nbytes` kept (an image larger
        than the bound is used but not kept).

    Attributes
    ----------
    opens : collections.Counter
        How many times each path was opened (instrumentation for tests and
        benchmarks).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.opens: collections.Counter[str] = collections.Counter()
        self._entries: collections.OrderedDict[str, tuple[FitsImage | InputError, int]]
        self._entries = collections.OrderedDict()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Summed cost of the entries kept now."""
        return self._bytes

    def get_many(self, paths: Sequence[str]) -> list[FitsImage]:
        """Return the images at ``paths``, opening the uncached URLs concurrently.

        Raises
        ------
        InputError
            The first path's failure, in order.
        """
        todo = [p for p in dict.fromkeys(paths) if p not in self._entries and is_url(p)]
        if len(todo) > 1:
            futures = {p: pool("open").submit(open_image, p) for p in todo}
            for p, future in futures.items():
                self.opens[p] += 1
                value: FitsImage | InputError
                try:
                    value = image = future.result()
                    cost = image.nbytes
                except InputError as exc:
                    value, cost = exc, FAILURE_COST
                self._put(p, value, cost)
        return [self.get(p) for p in paths]

    def get(self, path: str) -> FitsImage:
        """Return the image at ``path``, opening it only when not cached.

        Raises
        ------
        InputError
            When the file cannot be read (the failure is remembered too).
        """
        entry = self._entries.get(path)
        if entry is None:
            self.opens[path] += 1
            value: FitsImage | InputError
            try:
                value = image = open_image(path)
                cost = image.nbytes
            except InputError as exc:
                value, cost = exc, FAILURE_COST
            self._put(path, value, cost)
        else:
            self._entries.move_to_end(path)
            value = entry[0]
        if isinstance(value, InputError):
            raise value
        return value

    def _put(self, path: str, value: FitsImage | InputError, cost: int) -> None:
        """Insert an entry and evict the oldest ones beyond the bound."""
        if cost > self.max_bytes:
            return
        while self._entries and self._bytes + cost > self.max_bytes:
            _, (_, old_cost) = self._entries.popitem(last=False)
            self._bytes -= old_cost
        self._entries[path] = (value, cost)
        self._bytes += cost

    def clear(self) -> None:
        """Forget every image (memory maps close when no cutout refers to them)."""
        self._entries.clear()
        self._bytes = 0


def template_fields(template: str) -> list[str]:
    """Return the column names a path template refers to (``{env:NAME}`` aside).

    Examples
    --------
    >>> template_fields("s3://b/{visit}/{detector:03d}.fits?{env:SAS}")
    ['visit', 'detector']
    """
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"bad path template {template!r}: {exc}") from exc
    for _, name, spec, _ in parsed:
        if name is None or (name == "env" and spec):
            continue
        root = name.split(".")[0].split("[")[0]
        if not root or root.isdigit():
            raise InputError(
                f"path template {template!r} has a positional field; name a column,"
                " e.g. {visit}"
            )
        names.append(root)
    return names


class CachedImages:
    """Mixin: a per-process `ImageCache` of ``cache_bytes``, dropped when pickled.

    Every worker process that unpickles an image source starts its own cache.
    """

    cache_bytes: int
    _cache: ImageCache | None = None
    #: Fakes to add to the science and difference images of the group being
    #: cut (set by render for each group that has them).
    injection: Injection | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None  # each process keeps its own cache
        return state

    @property
    def cache(self) -> ImageCache:
        """The cache of opened images of this process (created on first use)."""
        if self._cache is None:
            self._cache = ImageCache(self.cache_bytes)
        return self._cache


class FitsImages(CachedImages):
    """Science, template and difference images named by path templates.

    Parameters
    ----------
    science, template, difference : str
        Python format strings over a source's columns giving each file,
        e.g. ``data/{visit}/{detector}/diff.fits``.
    position : {'auto', 'xy', 'radec'}
        Place sources by ``x``/``y`` on the shared pixel grid, by ``ra``/``dec``
        through each image's WCS, or ``auto``: ``x``/``y`` when the row has them.
    cache_bytes : int
        Bound (bytes) of the per-process cache of opened images.
    root : str or None
        Directory that relative paths are taken from (the working directory
        when None).

    Examples
    --------
    >>> source = FitsImages("s/{visit}.fits", "t/{visit}.fits", "d/{visit}.fits")
    >>> source.group_key({"visit": 7})
    ('s/7.fits', 't/7.fits', 'd/7.fits')
    """

    def __init__(
        self,
        science: str,
        template: str,
        difference: str,
        position: Position = "auto",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if position not in POSITIONS:
            raise InputError(f"position must be one of {POSITIONS}, got {position!r}")
        self.science = science
        self.template = template
        self.difference = difference
        self.position: Position = position
        self.cache_bytes = int(cache_bytes)
        self.root = None if root is None else os.fspath(root)
        self._templates = (science, template, difference)
        for t in self._templates:
            template_fields(t)

    def check(self, columns: Sequence[str]) -> None:
        """Raise InputError when the rows lack a column the templates or position need.

        Parameters
        ----------
        columns : sequence of str
            The columns of the rows to render.

        Raises
        ------
        InputError
            Naming the missing column and listing the available ones.
        """
        have = set(columns)
        listing = column_listing(columns)
        for role, t in zip(ROLES, self._templates, strict=True):
            for name in template_fields(t):
                if name not in have:
                    raise InputError(
                        f"--{role} template {t!r} names column {name!r}, which the"
                        f" sources lack; available columns: {listing}"
                    )
        check_position_columns(self.position, columns)
        for role, t in zip(ROLES, self._templates, strict=True):
            expand_env(t, f"--{role}")  # every variable named is set
            if is_url(t):
                require(t)

    def paths(self, row: Mapping[str, Any]) -> tuple[str, str, str]:
        """Return the science, template and difference paths of a row.

        Raises
        ------
        InputError
            When a template cannot be filled from the row.
        """
        out = []
        for role, t in zip(ROLES, self._templates, strict=True):
            try:
                path = expand_env(t, f"--{role}").format_map(row)
            except (KeyError, AttributeError, IndexError, ValueError) as exc:
                raise InputError(f"cannot fill path template {t!r}: {exc!r}") from exc
            if self.root is not None:
                path = os.path.join(self.root, path)
            out.append(path)
        return out[0], out[1], out[2]

    def group_key(self, row: Mapping[str, Any]) -> Hashable:
        """Return the three formatted paths (an error text when they cannot be made)."""
        try:
            return self.paths(row)
        except InputError as exc:
            return ("<error>", str(exc))

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        """Yield one `Cutouts` or `Failed` per ``(source_id, row)``, in order.

        Consecutive rows sharing a group key are cut from images opened once.

        Parameters
        ----------
        rows : sequence of (int, mapping)
            ``(source_id, row)`` pairs, best grouped by `group_key`.
        sizes : sequence of int
            Cutout sizes in pixels; empty means 30.
        use_footprint : bool
            Grow each size to the row's ``bboxSize`` when that is larger.

        Yields
        ------
        Cutouts or Failed
        """
        for key, batch in consecutive_groups(rows, self.group_key):
            yield from self._cut(key, batch, sizes, use_footprint)

    def _cut(
        self,
        key: Hashable,
        batch: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool,
    ) -> Iterator[Cutouts | Failed]:
        """Cut one group, or fail it when its paths could not be made."""
        assert isinstance(key, tuple)
        if key[0] == "<error>":
            for source_id, _ in batch:
                yield Failed(source_id, key[1])
            return
        yield from cut_group(
            self.cache, key, batch, sizes, use_footprint, self.position, self.injection
        )
