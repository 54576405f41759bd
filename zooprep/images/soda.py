"""Cutouts from the Rubin Science Platform's image services: SIAv2, DataLink, SODA.

`SodaImages` is the image source of ``zooprep render`` on a run selected by
TAP (``select --tap``), or of ``render --soda SIA_URL`` on any run whose
sources have ``ra``/``dec`` and ``visit``.  For each source it

1. finds its three images with an SIAv2 query (pyvo's ``SIA2Service``,
   ``POS=CIRCLE``, ``CALIB``, ``TIME``) and keeps the ObsCore rows whose
   ``dataproduct_subtype`` is ``lsst.visit_image`` (science),
   ``lsst.template_coadd`` (template) and ``lsst.difference_image``
   (difference), of the source's ``visit`` (and ``detector``) where the
   rows say (``lsst_visit``, ``lsst_detector``);
2. reads each image's DataLink document (its ``access_url``) once per
   process, and takes its ``cutout-sync`` service descriptor: the SODA
   ``accessURL`` and the ``ID`` to send;
3. asks SODA sync for ``ID`` and a ``CIRCLE`` around the source just large
   enough for the largest cutout, and cuts the FITS it gets (image in the
   ``IMAGE`` HDU) exactly as a local file is cut (`zooprep.images.cutting`),
   placing the source by ``ra``/``dec`` through the cutout's own WCS.

The three cutouts of all rows of a group are fetched concurrently
(``concurrency`` at a time); a 429, a 5xx answer or a time-out is retried
with exponential back-off (tenacity, honouring ``Retry-After``).  A source
whose image cannot be had is `~zooprep.images.base.Failed` with one line
naming the image kind and its DID: not found by SIA, 401/403/404 from
DataLink or SODA, a SODA error document instead of FITS, a corrupt FITS.

Credentials: the RSP token of ``RSP_TOKEN`` as a bearer token
(`zooprep.readers.tap.tap_session`), read in each worker process; never kept
in the object, a file or a message.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from zooprep.deadlines import host_deadline
from zooprep.errors import InputError
from zooprep.images.base import Cutouts, Failed, column_listing, consecutive_groups
from zooprep.images.cutting import cut_group
from zooprep.images.fitsimage import FitsImage, image_hdu
from zooprep.readers.tap import release_schema, tap_session

__all__ = ["KINDS", "SodaImages", "default_sia_url"]

log = logging.getLogger(__name__)

#: ObsCore ``dataproduct_subtype`` of each role, and its calibration level.
KINDS = {
    "science": ("lsst.visit_image", 2),
    "template": ("lsst.template_coadd", 3),
    "difference": ("lsst.difference_image", 2),
}
#: Pixel scale (arcsec) when the SIA rows give none (LSSTCam, LSSTComCam).
DEFAULT_PIXEL_SCALE = 0.2
#: Seconds per HTTP request, attempts and back-off base.
TIMEOUT = 60.0
ATTEMPTS = 5
BACKOFF = 0.5
#: SODA requests in flight at once, per process.
CONCURRENCY = 8
#: Search radius (degrees) for the images covering a source.
SEARCH_RADIUS = 1.0 / 3600


def default_sia_url(tap_url: str, table_or_query: str | None) -> str:
    """The SIAv2 endpoint next to a TAP service, for the release a TAP run read.

    Examples
    --------
    >>> default_sia_url("https://data.lsst.cloud/api/tap", "dp1.DiaSource")
    'https://data.lsst.cloud/api/sia/dp1/query'
    """
    base = tap_url.rstrip("/")
    if base.endswith("/tap"):
        base = base[: -len("/tap")]
    return f"{base}/sia/{release_schema(table_or_query).lower()}/query"


@dataclass(frozen=True)
class _Found:
    """One image: its DID, DataLink URL, footprint and pixel scale."""

    did: str
    links: str
    region: tuple[tuple[float, float], ...]
    pixel_scale: float


@dataclass(frozen=True)
class _Soda:
    """What a DataLink document says about cutting one image."""

    url: str  # the SODA sync endpoint
    ident: str  # the ID to send


class _Refused(Exception):
    """An answer that will not get better by asking again (one line)."""


class _Transient(Exception):
    """An answer worth asking again (429, 5xx, time-out)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def _inside(ra: float, dec: float, region: Sequence[tuple[float, float]]) -> bool:
    """Whether a point lies in a small sky polygon (tangent plane at the point)."""
    if len(region) < 3:
        return True
    cos = math.cos(math.radians(dec))
    pts = [(((a - ra + 180) % 360 - 180) * cos, d - dec) for a, d in region]
    inside = False
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
        if (y1 > 0) != (y2 > 0) and x1 + (0 - y1) * (x2 - x1) / (y2 - y1) > 0:
            inside = not inside
    return inside


def _region(text: Any) -> tuple[tuple[float, float], ...]:
    """The corners of an ObsCore ``s_region`` (``POLYGON ICRS ra dec ...``)."""
    words = str(text or "").replace("(", " ").replace(")", " ").split()
    numbers = []
    for w in words:
        try:
            numbers.append(float(w))
        except ValueError:
            continue
    return tuple(zip(numbers[0::2], numbers[1::2], strict=False))


class SodaImages:
    """Science, template and difference cutouts through SIAv2, DataLink and SODA.

    Parameters
    ----------
    sia_url : str
        The SIAv2 query endpoint, e.g. ``https://data.lsst.cloud/api/sia/dp1/query``.
    concurrency : int
        SODA requests in flight at once.
    pixel_scale : float
        Arcsec per pixel when the SIA answer gives no ``s_pixel_scale``.

    Examples
    --------
    >>> images = SodaImages("https://data.lsst.cloud/api/sia/dp1/query")
    >>> images.group_key({"visit": 2024110800245, "detector": 4, "ra": 53.1})
    (2024110800245, 4)
    """

    def __init__(
        self,
        sia_url: str,
        *,
        concurrency: int = CONCURRENCY,
        pixel_scale: float = DEFAULT_PIXEL_SCALE,
    ) -> None:
        self.sia_url = sia_url
        self.concurrency = int(concurrency)
        self.pixel_scale = float(pixel_scale)
        self._state: dict[str, Any] | None = None
        #: Requests made by this process, by kind (sia, datalink, soda).
        self.requests: dict[str, int] = {"sia": 0, "datalink": 0, "soda": 0}
        #: Bytes of SODA answers read by this process.
        self.bytes_read = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = None  # sessions, caches and threads stay in their process
        return state

    # -- the process's session and caches -----------------------------------------

    @property
    def _s(self) -> dict[str, Any]:
        if self._state is None or self._state["pid"] != os.getpid():
            session = tap_session()
            adapter_size = max(self.concurrency, 10)
            import requests.adapters

            adapter = requests.adapters.HTTPAdapter(
                pool_connections=adapter_size, pool_maxsize=adapter_size
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._state = {
                "pid": os.getpid(),
                "session": session,
                "lock": threading.Lock(),
                "template_lock": threading.Lock(),
                "found": {},  # (visit, detector) -> {role: _Found | str}
                "templates": [],  # _Found of templates seen
                "links": {},  # DID -> _Soda | str (the reason it failed)
                "pool": ThreadPoolExecutor(
                    self.concurrency, thread_name_prefix="zooprep-soda"
                ),
            }
        return self._state

    def close(self) -> None:
        """Close the HTTP session and the thread pool of this process."""
        if self._state is not None:
            self._state["pool"].shutdown(wait=True)
            self._state["session"].close()
            self._state = None

    # -- ImageSource ----------------------------------------------------------------

    def check(self, columns: Sequence[str]) -> None:
        """Raise InputError unless the rows have ``ra``, ``dec`` and ``visit``."""
        missing = [c for c in ("ra", "dec", "visit") if c not in set(columns)]
        if missing:
            raise InputError(
                f"--soda needs columns ra, dec and visit; missing "
                f"{', '.join(missing)}; available columns: {column_listing(columns)}"
            )
        try:
            import pyvo  # noqa: F401
        except ImportError:
            raise InputError("--soda needs pyvo: pip install 'zooprep[rsp]'") from None

    def group_key(self, row: Mapping[str, Any]) -> Hashable:
        """``(visit, detector)``: the rows of one visit image."""
        return (row.get("visit"), row.get("detector"))

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        """Yield one `Cutouts` or `Failed` per ``(source_id, row)``, in order."""
        sizes = tuple(sizes) or (30,)
        for _, batch in consecutive_groups(rows, self.group_key):
            yield from self._group(batch, sizes, use_footprint)

    # -- finding the images ---------------------------------------------------------

    def _sia(self, **params: Any) -> list[dict[str, Any]]:
        import pyvo

        self.requests["sia"] += 1
        service = pyvo.dal.SIA2Service(
            self.sia_url, session=self._s["session"], check_baseurl=False
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = service.search(**params).to_table()
        except (pyvo.dal.DALServiceError, pyvo.dal.DALQueryError) as exc:
            code = getattr(exc, "code", None)
            if code in (401, 403):
                raise _Refused(
                    f"SIA {self.sia_url}: access refused ({code}); check RSP_TOKEN"
                ) from None
            raise _Refused(f"SIA {self.sia_url}: {_line(exc)}") from None
        names = list(table.colnames)
        out = []
        for row in table:
            out.append({n: _plain(row[n]) for n in names})
        return out

    def _found(self, row: Mapping[str, Any]) -> dict[str, _Found | str]:
        """The three images of a row (or why each could not be found)."""
        ra, dec = float(row["ra"]), float(row["dec"])
        key = (row.get("visit"), row.get("detector"))
        known = self._once("found", key, lambda: self._visit_images(row, ra, dec))
        out = dict(known)
        out["template"] = self._template(ra, dec, row.get("band"))
        return out

    def _once(self, cache: str, key: Any, make: Any) -> Any:
        """``make()`` once per key in this process, even when threads ask together."""
        from concurrent.futures import Future

        with self._s["lock"]:
            future = self._s[cache].get(key)
            mine = future is None
            if mine:
                future = self._s[cache][key] = Future()
        if mine:
            try:
                future.set_result(make())
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()

    def _visit_images(
        self, row: Mapping[str, Any], ra: float, dec: float
    ) -> dict[str, _Found | str]:
        """Science and difference images of a row's visit (one SIA query)."""
        known: dict[str, _Found | str] = {}
        mjd = row.get("midpointMjdTai")
        params: dict[str, Any] = {"pos": (ra, dec, SEARCH_RADIUS), "calib_level": 2}
        if mjd is not None:
            from astropy.time import Time

            params["time"] = (
                Time(float(mjd) - 0.05, format="mjd"),
                Time(float(mjd) + 0.05, format="mjd"),
            )
        rows = self._sia(**params)
        for role in ("science", "difference"):
            subtype = KINDS[role][0]
            match = [
                r
                for r in rows
                if r.get("dataproduct_subtype") == subtype
                and _same(r.get("lsst_visit"), row.get("visit"))
                and _same(r.get("lsst_detector"), row.get("detector"))
            ]
            known[role] = (
                self._image(match[0])
                if match
                else f"no {subtype} of visit {row.get('visit')} at RA {ra:.6f} "
                f"Dec {dec:.6f} in SIA {self.sia_url}"
            )
        return known

    def _template(self, ra: float, dec: float, band: Any) -> _Found | str:
        with self._s["template_lock"]:  # one search at a time: footprints cover
            for t in self._s["templates"]:
                if _inside(ra, dec, t.region):
                    return t
            return self._find_template(ra, dec, band)

    def _find_template(self, ra: float, dec: float, band: Any) -> _Found | str:
        subtype = KINDS["template"][0]
        rows = self._sia(pos=(ra, dec, SEARCH_RADIUS), calib_level=3)
        match = [
            r
            for r in rows
            if r.get("dataproduct_subtype") == subtype
            and (band is None or r.get("lsst_band") in (None, band))
        ]
        if not match:
            return f"no {subtype} at RA {ra:.6f} Dec {dec:.6f} in SIA {self.sia_url}"
        found = self._image(match[0])
        self._s["templates"].append(found)
        return found

    def _image(self, row: Mapping[str, Any]) -> _Found:
        scale = row.get("s_pixel_scale")
        return _Found(
            did=str(row.get("obs_publisher_did")),
            links=str(row.get("access_url")),
            region=_region(row.get("s_region")),
            pixel_scale=float(scale) if scale else self.pixel_scale,
        )

    def _soda(self, image: _Found) -> _Soda:
        """The image's cutout service, from its DataLink document (read once)."""

        def read() -> _Soda | str:
            try:
                return self._read_links(image)
            except _Refused as exc:
                return str(exc)

        known = self._once("links", image.did, read)
        if isinstance(known, str):
            raise _Refused(known)
        return known

    def _read_links(self, image: _Found) -> _Soda:
        import pyvo

        self.requests["datalink"] += 1
        content = self._get(image.links, {}, f"DataLink of {image.did}")
        try:
            from astropy.io.votable import parse

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                votable = parse(io.BytesIO(content), verify="ignore")
            links = pyvo.dal.adhoc.DatalinkResults(votable, url=image.links)
            service = links.get_adhocservice_by_id("cutout-sync")
        except Exception as exc:  # no document, or none of a cutout service
            raise _Refused(
                f"DataLink of {image.did}: no cutout-sync service ({_line(exc)})"
            ) from None
        url = ident = None
        for param in service.params:
            if param.name == "accessURL":
                url = str(param.value)
        for group in service.groups:
            for param in group.entries:
                if param.name == "ID" and param.value:
                    ident = str(param.value)
        if not url:
            raise _Refused(f"DataLink of {image.did}: cutout-sync has no accessURL")
        return _Soda(url=url, ident=ident or image.did)

    # -- HTTP ---------------------------------------------------------------------------

    def _get(self, url: str, params: Mapping[str, str], what: str) -> bytes:
        """GET with retries on 429/5xx/time-outs; _Refused with one line otherwise."""
        import requests
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.wait is not None:
                return exc.wait
            return float(tenacity.wait_exponential(multiplier=BACKOFF, max=10.0)(state))

        # A hung request costs a multiple of what this host has taken so far,
        # not the whole TIMEOUT (`zooprep.deadlines`); TIMEOUT is the bound.
        deadline = host_deadline(url, TIMEOUT)
        tries = 0

        def call() -> bytes:
            nonlocal tries
            tries += 1
            seconds = TIMEOUT
            try:
                with (
                    deadline.timed(attempt=tries) as seconds,
                    self._s["session"].get(url, params=params, timeout=seconds) as r,
                ):
                    status, content = r.status_code, r.content
                    retry_after = r.headers.get("Retry-After")
            except requests.Timeout:
                raise _Transient(f"{what}: timed out after {seconds:g} s") from None
            except requests.ConnectionError as exc:
                raise _Transient(f"{what}: connection failed ({_line(exc)})") from None
            if status == 429 or status >= 500:
                delay = None
                if retry_after and retry_after.strip().isdigit():
                    delay = float(retry_after)
                raise _Transient(f"{what}: HTTP {status}", delay)
            if status in (401, 403):
                raise _Refused(
                    f"{what}: access refused (HTTP {status}); check RSP_TOKEN"
                )
            if status == 404:
                raise _Refused(f"{what}: not found (HTTP 404)")
            if status >= 400:
                text = content.decode("utf-8", "replace")
                raise _Refused(f"{what}: HTTP {status}: {_first(text)}")
            return bytes(content)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return retrying(call)
        except _Transient as exc:
            raise _Refused(f"{exc} after {ATTEMPTS} attempts") from None

    def _cutout(
        self, role: str, image: _Found, ra: float, dec: float, size: int
    ) -> FitsImage:
        """One SODA cutout as an image to cut from."""
        from astropy.io import fits

        soda = self._soda(image)
        radius = (size / 2 * math.sqrt(2) + 2) * image.pixel_scale / 3600.0
        what = f"{role} image {image.did}"
        self.requests["soda"] += 1
        content = self._get(
            soda.url,
            {"ID": soda.ident, "CIRCLE": f"{ra!r} {dec!r} {radius!r}"},
            f"SODA cutout of the {what}",
        )
        self.bytes_read += len(content)
        if not content.startswith(b"SIMPLE"):
            raise _Refused(
                f"SODA cutout of the {what}: error document: {_first(content)}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(io.BytesIO(content), memmap=False) as hdul:
                    index, hdu, header = image_hdu(hdul, what)
                    pixels = np.asarray(hdu.data, dtype=np.float32)
        except InputError as exc:
            raise _Refused(f"SODA cutout of the {what}: {exc}") from None
        except Exception as exc:  # astropy raises many kinds on a bad file
            raise _Refused(
                f"SODA cutout of the {what}: corrupt FITS ({_line(exc)})"
            ) from None
        if pixels.ndim != 2:
            raise _Refused(f"SODA cutout of the {what}: not a 2-D image")
        for key in ("BSCALE", "BZERO", "BLANK"):
            header.remove(key, ignore_missing=True)  # applied by astropy already
        return FitsImage(f"the {what}", index, header, pixels)

    # -- cutting ------------------------------------------------------------------------

    def _group(
        self,
        batch: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: tuple[int, ...],
        use_footprint: bool,
    ) -> Iterator[Cutouts | Failed]:
        """Find the images (SIA, cached), then fetch every cutout concurrently."""
        pool = self._s["pool"]
        plans: list[dict[str, Any] | str] = []
        for _, row in batch:
            plans.append(self._plan(row, sizes, use_footprint))
        for plan in plans:
            if isinstance(plan, dict):
                plan["futures"] = {
                    role: pool.submit(self._fetch, role, image, plan)
                    for role, image in plan["images"].items()
                }
        for (source_id, row), plan in zip(batch, plans, strict=True):
            if isinstance(plan, str):
                yield Failed(source_id, plan)
                continue
            got: dict[str, FitsImage] = {}
            reason = None
            for role in ("science", "template", "difference"):
                value = plan["futures"][role].result()
                if isinstance(value, str):
                    reason = reason or value
                else:
                    got[f"<{role}>"] = value
            if reason is not None:
                yield Failed(source_id, reason)
                continue
            yield from cut_group(
                _Opened(got),
                ("<science>", "<template>", "<difference>"),
                [(source_id, row)],
                sizes,
                use_footprint,
                "radec",
                None,
            )

    def _plan(
        self, row: Mapping[str, Any], sizes: tuple[int, ...], use_footprint: bool
    ) -> dict[str, Any] | str:
        """A row's position, cutout size and three images, or why there are none."""
        try:
            ra, dec = float(row["ra"]), float(row["dec"])
        except (KeyError, TypeError, ValueError):
            return "no ra/dec to find its images by"
        size = max(sizes)
        footprint = row.get("bboxSize")
        if use_footprint and footprint:
            size = max(size, int(footprint))
        try:
            found = self._found(row)
        except _Refused as exc:
            return str(exc)
        for role in ("science", "template", "difference"):
            if isinstance(found[role], str):
                return str(found[role])
        return {"ra": ra, "dec": dec, "size": size, "images": found}

    def _fetch(
        self, role: str, image: _Found, plan: Mapping[str, Any]
    ) -> FitsImage | str:
        """One cutout, or the reason it could not be had."""
        try:
            return self._cutout(role, image, plan["ra"], plan["dec"], plan["size"])
        except _Refused as exc:
            return str(exc)


class _Opened:
    """An `~zooprep.images.cutting.ImageOpener` over cutouts already fetched."""

    def __init__(self, images: Mapping[str, FitsImage]) -> None:
        self.images = images

    def get_many(self, paths: Sequence[str]) -> list[FitsImage]:
        return [self.images[p] for p in paths]


def _same(a: Any, b: Any) -> bool:
    """Equal ids, or one side not given."""
    if a is None or b is None:
        return True
    try:
        return int(a) == int(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ma.core.MaskedConstant):
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _first(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text[:2000].decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else "empty answer")[:200]


def _line(exc: BaseException) -> str:
    token = os.environ.get("RSP_TOKEN")
    text = _first(str(exc)) if str(exc) else type(exc).__name__
    return text.replace(token, "***") if token else text
