"""FITS images in object stores and on HTTP servers, read by byte ranges.

Path templates (and the URIs a Butler gives) may be URLs: ``s3://``,
``gs://``, ``https://`` (signed URLs included), or anything else
`fsspec <https://filesystem-spec.readthedocs.io>`_ knows.  They need the
optional ``cloud`` extra (``pip install 'zooprep[cloud]'``: fsspec, s3fs,
aiohttp); ``gs://`` also needs ``gcsfs``.

What is read
------------
The headers are read with astropy through an fsspec file (small blocks), so
the image HDU is found as for local files (`zooprep.images.fits`).  Pixels are
then fetched by exact byte ranges:

* uncompressed images: for each row of a cutout, the chunks of
  `CHUNK_BYTES` that hold its columns;
* tile-compressed images (RICE, GZIP, ...): the binary-table rows of the
  needed tiles, then those tiles' compressed bytes from the heap; tiles are
  decompressed with astropy's own tile decoder (``decompress_image_data_section``
  of the private ``astropy.io.fits.hdu.compressed._tiled_compression``, fed
  only the fetched rows), so the pixels are identical to decompressing the
  whole file.

Each image keeps its header and WCS and a bounded cache of recently read
chunks or tiles (`BLOCK_CACHE_BYTES`), never the whole file.  The ranges a
group of sources needs are fetched concurrently by a pool of threads
(`FETCH_THREADS`), so the latency of an object store is paid once per group
rather than once per source.

Credentials come from each store's standard places (``AWS_*`` variables and
``~/.aws`` for S3, ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS, ...), never
from zooprep's flags or run directory.  An S3-compatible endpoint is taken
from ``AWS_ENDPOINT_URL`` (botocore) or ``S3_ENDPOINT_URL`` (lsst.resources).

Failures
--------
Transient errors (timeouts, dropped connections, HTTP 429/5xx) are retried
with exponential backoff (tenacity), `ATTEMPTS` times in all.  Each byte-range
read of an object store that fsspec drives asynchronously (HTTP(S), S3, GCS)
is given a deadline learned from the reads of the same host so far
(`zooprep.deadlines.Deadline`: ten times their recent 99th percentile, scaled
by the range's size, at least 2 s, doubled on each retry), so a hung read
costs seconds and is retried; `TIMEOUT` seconds is the upper bound of every
request, header reads included.  A missing object, a refusal (403: no
permission, or a signed URL that has expired) or a truncated file fail the
rows of that image with a one-line reason naming the URL *without* its query
string, as signed URLs carry their signature there.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import gzip
import io
import logging
import os
import re
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from zooprep.deadlines import Deadline, host_deadline
from zooprep.errors import InputError
from zooprep.images.fitsimage import FitsImage, image_hdu, log_warnings

__all__ = [
    "ATTEMPTS",
    "BLOCK_CACHE_BYTES",
    "TIMEOUT",
    "deadline",
    "is_url",
    "open_remote",
    "redact",
    "redact_text",
    "require",
]

log = logging.getLogger(__name__)

#: Seconds allowed for one request (connect and read).
TIMEOUT = 30.0
#: Attempts per request, the first one included.
ATTEMPTS = 4
#: First wait between attempts in seconds (doubling, at most 10 s).
BACKOFF = 0.5
#: Uncompressed rows are read in chunks of this many bytes.
CHUNK_BYTES = 2048
#: Ranges closer than this are fetched in one request (the rows of a cutout
#: of a 4k-wide float32 image become one request; the tiles of different
#: sources stay apart, so bytes stay near what the cutouts need).
MERGE_GAP = 16 << 10
#: Bytes of chunks or tiles each open remote image keeps.
BLOCK_CACHE_BYTES = 32 << 20
#: fsspec block size used while reading headers.
HEADER_BLOCK = 16 << 10
#: Threads fetching ranges concurrently in one process.
FETCH_THREADS = 16

INSTALL_HINT = (
    "reading images from URLs needs the optional 'cloud' extra:"
    " pip install 'zooprep[cloud]' (fsspec, s3fs, aiohttp)"
)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s?#'\"]*)[?#][^\s'\"]*")


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(path))


def redact(url: str) -> str:
    """Return ``url`` without user info, query string and fragment.

    Examples
    --------
    >>> redact("https://user:pw@host/a/b.fits?X-Amz-Signature=abc#x")
    'https://host/a/b.fits'
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str) -> str:
    """Strip the query strings of every URL in ``text``."""
    return _QUERY.sub(r"\1", text)


# -- file systems -------------------------------------------------------------


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as exc:
        raise InputError(f"{INSTALL_HINT}; import failed: {exc}") from exc
    return fsspec


def _storage_options(protocol: str) -> dict[str, Any]:
    """Timeouts (and an S3 endpoint from the environment) for one protocol."""
    if protocol in ("http", "https"):
        import aiohttp

        return {
            "client_kwargs": {"timeout": aiohttp.ClientTimeout(total=TIMEOUT)},
            # URLs are used as given: re-encoding would break a signature
            "encoded": True,
        }
    if protocol in ("s3", "s3a"):
        opts: dict[str, Any] = {
            "config_kwargs": {
                "connect_timeout": TIMEOUT,
                "read_timeout": TIMEOUT,
                "retries": {"max_attempts": 1},  # tenacity retries
            }
        }
        # passed explicitly so that fsspec's cached instances follow the variable
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(
            "S3_ENDPOINT_URL"
        )
        if endpoint:
            opts["endpoint_url"] = endpoint
        return opts
    return {}


def require(url: str) -> None:
    """Raise InputError now when ``url``'s protocol cannot be read here.

    Raises
    ------
    InputError
        When fsspec (extra ``cloud``) or the protocol's package is missing, or
        the protocol is unknown.
    """
    fsspec = _fsspec()
    protocol = url.split("://", 1)[0].lower()
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise InputError(
            f"{redact(url)}: the {protocol}:// protocol needs another package:"
            f" {redact_text(str(exc).splitlines()[0])} ({INSTALL_HINT})"
        ) from exc
    except ValueError as exc:
        raise InputError(f"{redact(url)}: unknown protocol {protocol!r}") from exc


def filesystem(url: str) -> tuple[Any, str]:
    """Return the fsspec file system of ``url`` and the path inside it.

    Raises
    ------
    InputError
        When fsspec or the protocol's package is missing, or the protocol is
        unknown.
    """
    fsspec = _fsspec()
    protocol = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url, **_storage_options(protocol))
    except ImportError as exc:
        raise InputError(
            f"{redact(url)}: the {protocol}:// protocol needs a package fsspec"
            f" names: {redact_text(str(exc))} ({INSTALL_HINT})"
        ) from exc
    except ValueError as exc:
        raise InputError(
            f"{redact(url)}: unknown protocol {protocol!r} ({redact_text(str(exc))})"
        ) from exc


# -- errors and retries ---------------------------------------------------------


class _Truncated(Exception):
    """A range came back shorter than asked: the object is shorter than its HDUs."""


def _status(exc: BaseException | None) -> int | None:
    """The HTTP status of an aiohttp or botocore error or its causes, if any.

    (fsspec's HTTP file system reports a 403 on its first request as
    FileNotFoundError raised from the aiohttp error.)
    """
    seen = 0
    while exc is not None and seen < 5:
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            return status
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(code, int):
                return code
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _transient(exc: BaseException) -> bool:
    """Whether a failed request is worth retrying."""
    status = _status(exc)
    if isinstance(exc, FileNotFoundError | PermissionError | _Truncated | InputError):
        return status is not None and (status == 429 or status >= 500)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, OSError | TimeoutError | ConnectionError) or (
        type(exc).__module__.split(".")[0] in ("aiohttp", "botocore", "aiobotocore")
    )


def _reason(url: str, exc: BaseException) -> str:
    """One line saying why ``url`` could not be read, without secrets."""
    where = redact(url)
    status = _status(exc)
    if isinstance(exc, PermissionError) or status in (401, 403):
        return (
            f"{where}: access denied (HTTP 403): no permission with the"
            " credentials found, or the signed URL has expired"
        )
    if isinstance(exc, FileNotFoundError) or status == 404:
        return f"{where}: no such object"
    if isinstance(exc, _Truncated):
        return f"{where}: truncated file ({exc})"
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return (
            f"{where}: timed out after {ATTEMPTS} attempts (each given a deadline"
            f" learned from this host's reads, at most {TIMEOUT:g} s)"
        )
    if status is not None:
        return f"{where}: HTTP {status} after {ATTEMPTS} attempts"
    text = redact_text(str(exc).splitlines()[0] if str(exc) else "")
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    tries = f" after {ATTEMPTS} attempts" if _transient(exc) else ""
    return f"{where}: read failed{tries} ({detail})"


def _with_retries(
    url: str,
    call: Callable[..., Any],
    deadline: Deadline | None = None,
    size: int = 0,
) -> Any:
    """Run ``call`` with tenacity's retries; raise InputError with a clean reason.

    With a ``deadline``, each try is ``call(seconds)``: the time it may take
    (see `zooprep.deadlines.Deadline`, for a request of ``size`` bytes; a try
    after a timeout gets twice the time of the one before), and the time an
    answer took is observed.
    """
    import tenacity

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=BACKOFF, max=10.0),
        retry=tenacity.retry_if_exception(_transient),
        reraise=True,
    )
    tries = 0

    def attempt() -> Any:
        nonlocal tries
        tries += 1
        if deadline is None:
            return call()
        with deadline.timed(size, tries) as seconds:
            return call(seconds)

    try:
        return retrying(attempt)
    except InputError:
        raise
    except Exception as exc:  # classified into one clean line
        reason = _reason(url, exc)
        log.debug("%s", reason)
        raise InputError(reason) from None


_pools: dict[tuple[int, str], concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def deadline(url: str) -> Deadline:
    """The per-request deadline of ``url``'s host in this process, at most `TIMEOUT`."""
    return host_deadline(url, TIMEOUT)


def pool(name: str = "fetch") -> concurrent.futures.ThreadPoolExecutor:
    """Return the thread pool ``name`` of this process (``fetch``: ranges, ``open``).

    Keyed by process id too: a forked worker process must not use its
    parent's pool, whose threads it did not inherit.
    """
    key = (os.getpid(), name)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = concurrent.futures.ThreadPoolExecutor(
                FETCH_THREADS, thread_name_prefix=f"zooprep-{name}"
            )
        return _pools[key]


class RangeReader:
    """Concurrent, retried byte-range reads of one object.

    Parameters
    ----------
    url : str
        The object (kept whole for requests, shown redacted).
    fs : fsspec.AbstractFileSystem
        Its file system.
    path : str
        Its path in ``fs``.
    size : int
        Its size in bytes.
    """

    def __init__(self, url: str, fs: Any, path: str, size: int) -> None:
        self.url = url
        self.fs = fs
        self.path = path
        self.size = size

    def _one(self, start: int, end: int) -> bytes:
        def call(seconds: float | None = None) -> bytes:
            # fsspec's sync wrapper takes ``timeout`` and cancels the request
            kw = {} if seconds is None else {"timeout": seconds}
            data = bytes(self.fs.cat_file(self.path, start=start, end=end, **kw))
            if len(data) != end - start:
                raise _Truncated(
                    f"bytes {start}-{end} gave {len(data)} of {end - start}"
                )
            return data

        if end > self.size:
            raise InputError(
                _reason(
                    self.url,
                    _Truncated(f"{self.size} bytes, the image needs {end}"),
                )
            )
        if not getattr(self.fs, "async_impl", False):
            return _with_retries(self.url, call)  # no per-request timeout there
        return _with_retries(self.url, call, deadline(self.url), end - start)

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the bytes of each ``(start, end)`` range, fetched concurrently.

        Raises
        ------
        InputError
            When a range cannot be read (after retries), naming the URL.
        """
        merged = _merge(ranges)
        if len(merged) == 1:
            blobs = [self._one(*merged[0])]
        else:
            futures = [pool("fetch").submit(self._one, a, b) for a, b in merged]
            blobs = [f.result() for f in futures]
        starts = [a for a, _ in merged]
        out = []
        for a, b in ranges:
            k = bisect.bisect_right(starts, a) - 1
            base = merged[k][0]
            out.append(blobs[k][a - base : b - base])
        return out


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges, those closer than `MERGE_GAP` joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a - out[-1][1] <= MERGE_GAP:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# -- pixels -------------------------------------------------------------------


class _Blocks:
    """A least-recently-used store of blocks bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        self._bytes = 0
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            value = self._d.get(key)
            if value is not None:
                self._d.move_to_end(key)
            return value

    def put(self, key: Any, value: Any, cost: int) -> None:
        with self.lock:
            if key in self._d:
                return
            while self._d and self._bytes + cost > self.max_bytes:
                _, old = self._d.popitem(last=False)
                self._bytes -= old[1]
            self._d[key] = (value, cost)
            self._bytes += cost

    def value(self, key: Any) -> Any:
        entry = self.get(key)
        return None if entry is None else entry[0]

    def keys(self) -> set[Any]:
        with self.lock:
            return set(self._d)


Section = tuple[slice, slice]


class RangedPixels:
    """An uncompressed image HDU read by byte ranges, indexable as ``[ys, xs]``.

    Returns raw (big-endian, unscaled) values, like a memory map of the file.
    """

    def __init__(
        self,
        reader: RangeReader,
        shape: tuple[int, int],
        dtype: np.dtype[Any],
        offset: int,
        max_bytes: int | None = None,
    ) -> None:
        max_bytes = BLOCK_CACHE_BYTES if max_bytes is None else max_bytes
        self.reader = reader
        self.shape = shape
        self.dtype = dtype
        self.offset = offset
        self.ndim = 2
        self.nbytes = max_bytes
        self.chunk = max(CHUNK_BYTES // dtype.itemsize, 1)
        self._blocks = _Blocks(max_bytes)

    def _keys(self, ys: slice, xs: slice) -> list[tuple[int, int]]:
        c0, c1 = xs.start // self.chunk, (xs.stop - 1) // self.chunk
        return [(y, c) for y in range(ys.start, ys.stop) for c in range(c0, c1 + 1)]

    def _range(self, key: tuple[int, int]) -> tuple[int, int]:
        y, c = key
        nx = self.shape[1]
        item = self.dtype.itemsize
        a = self.offset + (y * nx + c * self.chunk) * item
        return a, a + (min((c + 1) * self.chunk, nx) - c * self.chunk) * item

    def _gather(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        """Return these chunks, fetching (concurrently) those not cached."""
        got = {k: self._blocks.value(k) for k in keys}
        missing = sorted(k for k, v in got.items() if v is None)
        if missing:
            blobs = self.reader.fetch([self._range(k) for k in missing])
            for key, data in zip(missing, blobs, strict=True):
                got[key] = np.frombuffer(data, dtype=self.dtype)
                self._blocks.put(key, got[key], len(data))
        return got

    def prefetch(self, sections: Iterable[Section]) -> None:
        """Fetch, concurrently, every chunk of these sections not cached yet."""
        self._gather({k for ys, xs in sections for k in self._keys(ys, xs)})

    def __getitem__(self, index: Section) -> np.ndarray:
        ys, xs = index
        out = np.empty((ys.stop - ys.start, xs.stop - xs.start), dtype=self.dtype)
        for (y, c), block in self._gather(self._keys(ys, xs)).items():
            x0 = c * self.chunk
            a, b = max(xs.start, x0), min(xs.stop, x0 + len(block))
            out[y - ys.start, a - xs.start : b - xs.start] = block[a - x0 : b - x0]
        return out


class TiledPixels:
    """A tile-compressed image HDU read tile by tile, indexable as ``[ys, xs]``.

    Returns ``float32`` values (scaled, blanks as NaN), like astropy's
    ``CompImageHDU.data``.
    """

    def __init__(
        self,
        reader: RangeReader,
        hdu: fits.CompImageHDU,
        data_offset: int,
        max_bytes: int | None = None,
    ) -> None:
        max_bytes = BLOCK_CACHE_BYTES if max_bytes is None else max_bytes
        bintable = hdu._bintable
        self.reader = reader
        self.header = bintable.header.copy()
        self.image_header = hdu.header.copy()
        self.columns = bintable.columns
        self.compression_type = hdu.compression_type
        self.shape = (int(hdu.shape[0]), int(hdu.shape[1]))
        self.tile_shape = (int(hdu.tile_shape[0]), int(hdu.tile_shape[1]))
        self.ntiles = tuple(
            -(-n // t) for n, t in zip(self.shape, self.tile_shape, strict=True)
        )
        self.ndim = 2
        self.nbytes = max_bytes
        self.data_offset = data_offset
        self.row_bytes = int(self.header["NAXIS1"])
        nrows = int(self.header["NAXIS2"])
        self.heap_offset = data_offset + int(
            self.header.get("THEAP", self.row_bytes * nrows)
        )
        fields = self.columns.dtype.fields
        assert fields is not None
        self.row_dtype = np.dtype(
            {
                "names": list(fields),
                "formats": [
                    np.dtype((f[0].base.newbyteorder(">"), f[0].shape))
                    for f in fields.values()
                ],
                "offsets": [f[1] for f in fields.values()],
                "itemsize": self.row_bytes,
            }
        )
        self.heap_columns = [
            n
            for n in fields
            if "P" in self.columns[n].format.upper()[:2]
            or "Q" in self.columns[n].format.upper()[:2]
        ]
        scale = not hdu._do_not_scale_image_data and (
            "BSCALE" in hdu.header or "BZERO" in hdu.header
        )
        self._scale: Callable[[np.ndarray], np.ndarray] | None = (
            hdu._scale_data if scale else None
        )
        self._blocks = _Blocks(max_bytes)

    def _tiles(self, ys: slice, xs: slice) -> list[tuple[int, int]]:
        ty, tx = self.tile_shape
        return [
            (r, c)
            for r in range(ys.start // ty, (ys.stop - 1) // ty + 1)
            for c in range(xs.start // tx, (xs.stop - 1) // tx + 1)
        ]

    def _block(self, ys: slice, xs: slice) -> tuple[int, int, int, int]:
        """The tile rows and columns ``(r0, r1, c0, c1)`` under a section."""
        ty, tx = self.tile_shape
        return ys.start // ty, (ys.stop - 1) // ty, xs.start // tx, (xs.stop - 1) // tx

    def prefetch(self, sections: Iterable[Section]) -> None:
        """Fetch and decompress, concurrently, the tiles of these sections not cached.

        Each section's tiles are decoded in one call (astropy checks the
        header once per call, which would dominate tile by tile).
        """
        blocks = set()
        for ys, xs in sections:
            if any(self._blocks.get(t) is None for t in self._tiles(ys, xs)):
                blocks.add(self._block(ys, xs))
        if blocks:
            self._load(blocks)

    def _load(
        self, blocks: set[tuple[int, int, int, int]]
    ) -> dict[tuple[int, int], np.ndarray]:
        """Fetch and decode these blocks of tiles; cache and return the tiles."""
        ty, tx = self.tile_shape
        index = sorted(
            {
                r * self.ntiles[1] + c
                for r0, r1, c0, c1 in blocks
                for r in range(r0, r1 + 1)
                for c in range(c0, c1 + 1)
            }
        )
        rows = self.reader.fetch(
            [
                (
                    self.data_offset + i * self.row_bytes,
                    self.data_offset + (i + 1) * self.row_bytes,
                )
                for i in index
            ]
        )
        records = {
            i: np.frombuffer(b, dtype=self.row_dtype)[0]
            for i, b in zip(index, rows, strict=True)
        }
        wanted: list[tuple[int, int]] = []
        for rec in records.values():
            for name in self.heap_columns:
                count, off = (int(v) for v in rec[name])
                if count:
                    size = count * _heap_itemsize(self.columns[name].format)
                    start = self.heap_offset + off
                    wanted.append((start, start + size))
        blobs = _Heap(
            self.heap_offset, dict(zip(wanted, self.reader.fetch(wanted), strict=True))
        )
        table = _Rows(self.columns, self.row_dtype, records)
        out: dict[tuple[int, int], np.ndarray] = {}
        for r0, r1, c0, c1 in sorted(blocks):
            data = self._decode(table, blobs, (r0, c0), (r1, c1))
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    tile = np.ascontiguousarray(
                        data[
                            (r - r0) * ty : (r - r0 + 1) * ty,
                            (c - c0) * tx : (c - c0 + 1) * tx,
                        ]
                    )
                    out[(r, c)] = tile
                    self._blocks.put((r, c), tile, tile.nbytes)
        return out

    def _decode(
        self,
        table: _Rows,
        heap: _Heap,
        first: tuple[int, int],
        last: tuple[int, int],
    ) -> np.ndarray:
        """Decompress the tiles ``first`` to ``last`` with astropy's tile decoder."""
        try:  # astropy's own tile decoder (a private module, stable since 6.0)
            from astropy.io.fits.hdu.compressed._tiled_compression import (
                decompress_image_data_section,
            )
        except ImportError as exc:
            raise InputError(
                f"{redact(self.reader.url)}: this astropy has no tile decoder"
                f" zooprep knows ({exc}); remote tile-compressed images need"
                " astropy 6 or 7"
            ) from exc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = decompress_image_data_section(
                table,
                self.compression_type,
                self.header,
                heap,
                self.image_header,
                np.array(first),
                np.array(last),
            )
        if self._scale is not None:
            data = self._scale(data)
        return np.asarray(data, dtype=np.float32)

    def __getitem__(self, index: Section) -> np.ndarray:
        ys, xs = index
        ty, tx = self.tile_shape
        out = np.empty((ys.stop - ys.start, xs.stop - xs.start), dtype=np.float32)
        tiles = {t: self._blocks.value(t) for t in self._tiles(ys, xs)}
        if any(tile is None for tile in tiles.values()):
            tiles = self._load({self._block(ys, xs)})
        for (r, c), tile in tiles.items():
            y0, x0 = r * ty, c * tx
            ya, yb = max(ys.start, y0), min(ys.stop, y0 + tile.shape[0])
            xa, xb = max(xs.start, x0), min(xs.stop, x0 + tile.shape[1])
            out[ya - ys.start : yb - ys.start, xa - xs.start : xb - xs.start] = tile[
                ya - y0 : yb - y0, xa - x0 : xb - x0
            ]
        return out


def _heap_itemsize(tform: str) -> int:
    """Bytes per element of a variable-length column (``1PB(n)``, ``1QI``...)."""
    code = tform.upper().lstrip("0123456789")[1]
    return {"B": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8}[code]


class _Rows:
    """What astropy's tile decoder reads of the table: the fetched rows' columns."""

    def __init__(
        self, columns: Any, row_dtype: np.dtype[Any], records: dict[int, np.void]
    ) -> None:
        self._coldefs = columns
        self.dtype = row_dtype
        self._records = records
        self._n = max(records) + 1
        self._columns: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._columns:
            first = np.asarray(next(iter(self._records.values()))[name])
            out = np.zeros((self._n, *first.shape), dtype=first.dtype.newbyteorder("="))
            for i, rec in self._records.items():
                out[i] = rec[name]
            self._columns[name] = out
        return self._columns[name]


class _Heap:
    """What astropy's tile decoder reads of the heap: the prefetched blobs."""

    _data_offset = 0
    _theap = 0

    def __init__(self, heap_offset: int, blobs: dict[tuple[int, int], bytes]) -> None:
        self._blobs = {a - heap_offset: b for (a, _), b in blobs.items()}

    def _get_raw_data(self, size: int, dtype: Any, offset: int) -> np.ndarray:
        return np.frombuffer(self._blobs[offset], dtype=dtype, count=size)


# -- opening ------------------------------------------------------------------


def open_remote(url: str) -> Any:
    """Open the image HDU of a FITS object at ``url`` for ranged reading.

    Parameters
    ----------
    url : str
        An fsspec URL (``s3://``, ``https://``, ``gs://``, ...).

    Returns
    -------
    zooprep.images.fits.FitsImage
        The image: header and WCS in memory, pixels read by ranges on use.
        Its ``path`` is the URL without query string.

    Raises
    ------
    InputError
        When the object is missing, refused, truncated, not FITS or has no
        image, naming the URL without its query string.
    """
    fs, path = filesystem(url)
    where = redact(url)

    def read_headers() -> FitsImage:
        with fs.open(path, "rb", block_size=HEADER_BLOCK, cache_type="blockcache") as f:
            size = int(f.size)
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if gzipped:  # no ranged reads into a gzip stream: read it whole
                return _open_bytes(url, f.read())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    image = _parse(f, url, fs, path, size)
                except (ValueError, TypeError, KeyError, IndexError, EOFError) as exc:
                    raise InputError(f"{where}: unreadable FITS file ({exc})") from exc
                except OSError as exc:
                    if type(exc) is not OSError:  # a network error: retried
                        raise
                    # astropy's "Empty or corrupt FITS file"
                    raise InputError(f"{where}: unreadable FITS file ({exc})") from exc
            log_warnings(caught, where)
            return image

    return _with_retries(url, read_headers)


def _parse(f: Any, url: str, fs: Any, path: str, size: int) -> Any:
    """Find the image HDU in the open object ``f``; return its FitsImage."""
    where = redact(url)
    with fits.open(f, memmap=False, lazy_load_hdus=True) as hdul:
        index, hdu, header = image_hdu(hdul, where)
        # not hdul.fileinfo(): it reads every header of the file
        table = getattr(hdu, "_bintable", None)
        data_offset = int((hdu if table is None else table)._data_offset)
        reader = RangeReader(url, fs, path, size)
        if isinstance(hdu, fits.CompImageHDU):
            if hdu.header.get("NAXIS", 0) != 2:
                raise InputError(f"{where}: HDU {index} is not a 2-D image")
            return FitsImage(
                where, index, header, TiledPixels(reader, hdu, data_offset)
            )
    return _ranged(reader, index, header, data_offset)


def _ranged(reader: RangeReader, index: int, header: fits.Header, offset: int) -> Any:
    """A FitsImage of an uncompressed HDU whose pixels are read by ranges."""
    where = redact(reader.url)
    bitpix = int(header["BITPIX"])
    dtypes = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
    if bitpix not in dtypes or int(header.get("NAXIS", 0)) != 2:
        raise InputError(f"{where}: HDU {index} is not a 2-D image (BITPIX={bitpix})")
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    dtype = np.dtype(dtypes[bitpix])
    need = offset + dtype.itemsize * shape[0] * shape[1]
    if reader.size < need:
        raise InputError(
            f"{where}: truncated FITS file ({reader.size} bytes, HDU {index}"
            f" needs {need})"
        )
    scaled = (
        "BSCALE" in header or "BZERO" in header or ("BLANK" in header and bitpix > 0)
    )
    pixels = RangedPixels(reader, shape, dtype, offset)
    return FitsImage(where, index, header, pixels, scaled=scaled)


def _open_bytes(url: str, data: bytes) -> Any:
    """Open a whole (gzipped) FITS object from memory."""
    where = redact(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = gzip.decompress(data)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                index, hdu, header = image_hdu(hdul, where)
                pixels = np.asarray(hdu.data, dtype=np.float32)
    except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError) as exc:
        raise InputError(f"{where}: unreadable FITS file ({exc})") from exc
    if pixels.ndim != 2:
        raise InputError(f"{where}: HDU {index} is not a 2-D image")
    return FitsImage(where, index, header, pixels)
