"""A stand-in for the Rubin Science Platform's API gateway on 127.0.0.1.

What it serves follows the IVOA standards and the RSP's own documents:

* ``/api/tap/...``: the TAP service, passed through to the tests' DaCHS
  (``tests/plugins/dachs.py``) with DaCHS's URLs in the answers rewritten to
  the gateway's, so that job URLs of asynchronous queries also come back here;
* ``/api/sia/dp1/query``: SIAv2 (POS=CIRCLE, TIME, CALIB, MAXREC) over the
  DECam triplet of ``tests/data/decam_sfft``, answered with ObsCore columns
  as DP1's ObsCore has them (``dataproduct_subtype`` ``lsst.visit_image``,
  ``lsst.template_coadd``, ``lsst.difference_image``; ``lsst_visit``,
  ``lsst_detector``, ``lsst_band``; ``obs_publisher_did``
  ``ivo://org.rubinobs/usdac/lsst-dp1?repo=dp1&id=UUID``; ``access_url`` a
  DataLink links URL, ``access_format`` ``application/x-votable+xml;content=datalink``);
* ``/api/datalink/links?ID=``: DataLink 1.1 documents laid out as the RSP's
  datalinker writes them (a ``#this`` row with the whole file's URL, the
  ``#cutout`` row naming the ``cutout-sync`` service descriptor, whose
  ``accessURL`` is the SODA endpoint and whose ``ID`` parameter is the DID);
* ``/api/cutout/sync``: SODA 1.0 sync, ``ID`` and ``CIRCLE`` (or ``POLYGON``):
  the smallest whole-pixel box of the image holding the circle, as FITS with
  an empty primary HDU and the image in HDU 1 (``EXTNAME = 'IMAGE'``), its WCS
  shifted to the box and the parent position written as the LSST ``A``
  (``LINEAR``) WCS, as the RSP's cutout service does for ``CUTOUTDETAIL=Image``;
  errors as DALI text documents (``UsageError: ...``, ``NotFoundFault: ...``);
* ``/api/images/NAME``: the whole files (the ``#this`` link).

Every route wants ``Authorization: Bearer TOKEN`` and answers 401 with a
``WWW-Authenticate: Bearer`` challenge otherwise.  ``latency`` seconds are
added to each answer (and ``len / bandwidth`` seconds, when a bandwidth in
bytes per second is given); ``faults`` makes chosen images fail (see `Faults`).
"""

from __future__ import annotations

import io
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from tests.rsp_standin.rows import DECAM_BAND, DECAM_DETECTOR, DECAM_MJD, DECAM_VISIT

#: The three DP1 image kinds and the DECam files standing for them.
KINDS = {
    "lsst.visit_image": "Stack-DEC-OBS04.fits",
    "lsst.template_coadd": "Stack-DEC-OBS18.fits",
    "lsst.difference_image": "FinalDifference.fits",
}
CALIB = {"lsst.visit_image": 2, "lsst.template_coadd": 3, "lsst.difference_image": 2}
DID = "ivo://org.rubinobs/usdac/lsst-dp1?repo=dp1&id={}"


@dataclass
class Faults:
    """Answers to get wrong, by image kind (``lsst.visit_image`` ...).

    ``status``: kind -> HTTP status of every cutout of that kind;
    ``error_document``: kinds whose cutouts are a SODA error text with 200;
    ``corrupt``: kinds whose cutouts are cut-off FITS;
    ``transient``: the first N cutout requests answer 503 (then work);
    ``throttle``: the first N cutout requests answer 429 with Retry-After 0.
    """

    status: dict[str, int] = field(default_factory=dict)
    error_document: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    transient: int = 0
    throttle: int = 0


@dataclass
class Image:
    """One image the stand-in serves."""

    kind: str
    path: Path
    uuid: str
    data: np.ndarray
    header: Any
    wcs: Any

    @property
    def did(self) -> str:
        return DID.format(self.uuid)


class RspStandin:
    """The gateway: start with ``with RspStandin(...) as rsp:``; ``rsp.base`` is its URL."""

    def __init__(
        self,
        decam: Path,
        *,
        token: str,
        tap_upstream: str | None = None,
        latency: float = 0.0,
        faults: Faults | None = None,
        bandwidth: float | None = None,
    ) -> None:
        from astropy.io import fits
        from astropy.wcs import WCS

        self.token = token
        self.tap_upstream = tap_upstream.rstrip("/") if tap_upstream else None
        self.latency = latency
        self.bandwidth = bandwidth  # bytes per second of each answer, if limited
        self.faults = faults or Faults()
        self.requests: Counter[str] = Counter()
        self.queries: list[str] = []  # the ADQL of every TAP request
        self.bytes_sent: Counter[str] = Counter()
        self.images: dict[str, Image] = {}
        for kind, name in KINDS.items():
            with fits.open(decam / name) as hdus:
                header = hdus[0].header.copy()
                data = np.asarray(hdus[0].data)
            ident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"zooprep-test/{name}"))
            self.images[ident] = Image(
                kind, decam / name, ident, data, header, WCS(header)
            )
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def tap_url(self) -> str:
        """The TAP service behind the gateway."""
        return f"{self.base}/api/tap"

    @property
    def sia_url(self) -> str:
        """The SIAv2 query endpoint of DP1."""
        return f"{self.base}/api/sia/dp1/query"

    def __enter__(self) -> RspStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def image(self, kind: str) -> Image:
        """The image of one kind."""
        return next(i for i in self.images.values() if i.kind == kind)

    def take(self, name: str) -> bool:
        """Use up one of a counted fault (``transient``/``throttle``)."""
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False


# -- documents -------------------------------------------------------------------


def _votable(fields: list[tuple[str, str]], rows: list[list[Any]]) -> bytes:
    """A VOTable 1.4 (TABLEDATA) of char/double/long fields."""
    head = "".join(
        f'<FIELD name="{n}" datatype="{t}"'
        + (' arraysize="*"' if t == "char" else "")
        + "/>"
        for n, t in fields
    )
    body = "".join(
        "<TR>"
        + "".join("<TD/>" if v is None else f"<TD>{escape(str(v))}</TD>" for v in row)
        + "</TR>"
        for row in rows
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        '<RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/>'
        f"<TABLE>{head}<DATA><TABLEDATA>{body}</TABLEDATA></DATA></TABLE>"
        "</RESOURCE></VOTABLE>"
    ).encode()


OBSCORE = [
    ("obs_publisher_did", "char"),
    ("obs_id", "char"),
    ("dataproduct_type", "char"),
    ("dataproduct_subtype", "char"),
    ("calib_level", "long"),
    ("lsst_visit", "long"),
    ("lsst_detector", "long"),
    ("lsst_band", "char"),
    ("s_ra", "double"),
    ("s_dec", "double"),
    ("s_fov", "double"),
    ("s_region", "char"),
    ("s_pixel_scale", "double"),
    ("t_min", "double"),
    ("t_max", "double"),
    ("access_url", "char"),
    ("access_format", "char"),
    ("access_estsize", "long"),
]


def _footprint(image: Image) -> list[tuple[float, float]]:
    ny, nx = image.data.shape
    corners = [(-0.5, -0.5), (nx - 0.5, -0.5), (nx - 0.5, ny - 0.5), (-0.5, ny - 0.5)]
    return [
        tuple(float(v) for v in image.wcs.pixel_to_world_values(x, y))  # type: ignore[misc]
        for x, y in corners
    ]


def _inside(ra: float, dec: float, r: float, image: Image) -> bool:
    """Whether a circle touches the image (its pixel box, with the radius)."""
    x, y = (float(v) for v in image.wcs.world_to_pixel_values(ra, dec))
    scale = _scale(image)
    pad = r * 3600.0 / scale
    ny, nx = image.data.shape
    return -0.5 - pad <= x <= nx - 0.5 + pad and -0.5 - pad <= y <= ny - 0.5 + pad


def _scale(image: Image) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(image.wcs.celestial)) * 3600.0)


def sia_rows(standin: RspStandin, params: dict[str, list[str]]) -> list[list[Any]]:
    """The ObsCore rows an SIAv2 query finds."""
    pos = params.get("POS", [])
    calibs = {int(c) for c in params.get("CALIB", [])}
    times = params.get("TIME", [])
    rows = []
    for image in standin.images.values():
        if calibs and CALIB[image.kind] not in calibs:
            continue
        if pos:
            shape, *numbers = pos[0].split()
            if shape.upper() != "CIRCLE":
                raise ValueError("only POS=CIRCLE is served here")
            ra, dec, r = (float(v) for v in numbers)
            if not _inside(ra, dec, r, image):
                continue
        if times and image.kind != "lsst.template_coadd":
            low, high = (float(v) for v in times[0].split())
            if not low <= DECAM_MJD <= high:
                continue
        corners = _footprint(image)
        ny, nx = image.data.shape
        centre = [float(v) for v in image.wcs.pixel_to_world_values(nx / 2, ny / 2)]
        visit = None if image.kind == "lsst.template_coadd" else DECAM_VISIT
        detector = None if image.kind == "lsst.template_coadd" else DECAM_DETECTOR
        links = f"{standin.base}/api/datalink/links?" + urllib.parse.urlencode(
            {"ID": image.did}
        )
        rows.append(
            [
                image.did,
                f"{image.kind}-{image.uuid[:8]}",
                "image",
                image.kind,
                CALIB[image.kind],
                visit,
                detector,
                DECAM_BAND,
                centre[0],
                centre[1],
                nx * _scale(image) / 3600.0,
                "POLYGON ICRS " + " ".join(f"{a:.7f} {d:.7f}" for a, d in corners),
                _scale(image),
                DECAM_MJD - 0.002,
                DECAM_MJD + 0.002,
                links,
                "application/x-votable+xml;content=datalink",
                image.path.stat().st_size // 1024,
            ]
        )
    maxrec = params.get("MAXREC")
    return rows[: int(maxrec[0])] if maxrec else rows


def links_document(standin: RspStandin, did: str) -> bytes:
    """The DataLink document of one image, laid out as datalinker writes it."""
    image = next((i for i in standin.images.values() if i.did == did), None)
    fields = (
        '<FIELD ID="ID" arraysize="*" datatype="char" name="ID" ucd="meta.id;meta.main"/>'
        '<FIELD ID="access_url" arraysize="*" datatype="char" name="access_url" '
        'ucd="meta.ref.url"/>'
        '<FIELD ID="service_def" arraysize="*" datatype="char" name="service_def" '
        'ucd="meta.ref"/>'
        '<FIELD ID="error_message" arraysize="*" datatype="char" name="error_message" '
        'ucd="meta.code.error"/>'
        '<FIELD ID="description" arraysize="*" datatype="char" name="description" '
        'ucd="meta.note"/>'
        '<FIELD ID="semantics" arraysize="*" datatype="char" name="semantics" '
        'ucd="meta.code"/>'
        '<FIELD ID="content_type" arraysize="*" datatype="char" name="content_type" '
        'ucd="meta.code.mime"/>'
        '<FIELD ID="content_length" datatype="long" name="content_length" '
        'ucd="phys.size;meta.file" unit="byte"/>'
    )
    e = escape(did)
    if image is None:
        rows = (
            f"<TR><TD>{e}</TD><TD/><TD/><TD>NotFoundFault: {e}</TD><TD/>"
            "<TD>#this</TD><TD/><TD/></TR>"
        )
        service = ""
    else:
        whole = f"{standin.base}/api/images/{image.path.name}"
        rows = (
            f"<TR><TD>{e}</TD><TD><![CDATA[{whole}]]></TD><TD/><TD/>"
            "<TD>Primary image or observation data file</TD><TD>#this</TD>"
            f"<TD>application/fits</TD><TD>{image.path.stat().st_size}</TD></TR>"
            f"<TR><TD>{e}</TD><TD/><TD>cutout-sync</TD><TD/>"
            "<TD>Cutout service (SODA sync), only image pixels</TD><TD>#cutout</TD>"
            "<TD>application/fits</TD><TD/></TR>"
        )
        service = (
            '<RESOURCE ID="cutout-sync" type="meta" utype="adhoc:service">'
            '<GROUP name="inputParams">'
            '<PARAM arraysize="*" datatype="char" name="ID" ucd="meta.id;meta.dataset" '
            f'value="{e}"/>'
            '<PARAM arraysize="*" datatype="double" name="POLYGON" ucd="pos.outline;obs" '
            'unit="deg" value="" xtype="polygon"/>'
            '<PARAM arraysize="3" datatype="double" name="CIRCLE" ucd="pos.outline;obs" '
            'unit="deg" value="" xtype="circle"/>'
            '<PARAM arraysize="*" datatype="char" name="CUTOUTDETAIL" value="Image"/>'
            "</GROUP>"
            '<PARAM arraysize="*" datatype="char" name="accessURL" ucd="meta.ref.url" '
            f'value="{standin.base}/api/cutout/sync"/>'
            '<PARAM arraysize="*" datatype="char" name="standardID" '
            'value="ivo://ivoa.net/std/SODA#sync-1.0"/>'
            "</RESOURCE>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        '<RESOURCE type="results"><TABLE>'
        '<INFO name="standardID" value="ivo://ivoa.net/std/DataLink#links-1.1"/>'
        f"<DESCRIPTION>Links table for observation datasets</DESCRIPTION>{fields}"
        f"<DATA><TABLEDATA>{rows}</TABLEDATA></DATA></TABLE></RESOURCE>{service}"
        "</VOTABLE>"
    ).encode()


def cutout(image: Image, ra: float, dec: float, radius: float) -> bytes:
    """The SODA cutout: the whole-pixel box holding the circle, image in HDU 1."""
    from astropy.io import fits

    x, y = (float(v) for v in image.wcs.world_to_pixel_values(ra, dec))
    r = radius * 3600.0 / _scale(image)
    ny, nx = image.data.shape
    x0, x1 = max(0, math.floor(x - r + 0.5)), min(nx, math.ceil(x + r + 0.5))
    y0, y1 = max(0, math.floor(y - r + 0.5)), min(ny, math.ceil(y + r + 0.5))
    if x0 >= x1 or y0 >= y1:
        raise LookupError(f"the circle does not overlap {image.did}")
    header = image.wcs[y0:y1, x0:x1].to_header(relax=True)
    for key in ("MJD-OBS", "DATE-OBS", "FILTER", "EXPTIME", "GAIN", "CCDNUM"):
        if key in image.header:
            header[key] = image.header[key]
    header["EXTNAME"] = "IMAGE"
    # the parent's pixel origin (LSST XY0) as the LINEAR alternate WCS
    header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
    header["CRPIX1A"], header["CRPIX2A"] = 1.0, 1.0
    header["CRVAL1A"], header["CRVAL2A"] = float(x0), float(y0)
    header["CUNIT1A"], header["CUNIT2A"] = "PIXEL", "PIXEL"
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.asarray(image.data[y0:y1, x0:x1]), header=header),
        ]
    )
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


# -- HTTP ----------------------------------------------------------------------------


def _handler(standin: RspStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "text/plain",
            headers: dict[str, str] | None = None,
        ) -> None:
            if standin.latency:
                time.sleep(standin.latency)
            if standin.bandwidth:
                time.sleep(len(body) / standin.bandwidth)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            route = urllib.parse.urlsplit(self.path).path
            standin.bytes_sent[route] += len(body)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {standin.token}":
                return True
            self._send(
                401,
                b"Unauthorized: a valid access token is required\n",
                headers={"WWW-Authenticate": 'Bearer realm="rsp"'},
            )
            return False

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def do_DELETE(self) -> None:
            self._route()

        def _route(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            standin.requests[parts.path] += 1
            body = b""
            if self.command == "POST":
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._authorized():
                return
            params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
            if self.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                for k, v in urllib.parse.parse_qs(body.decode()).items():
                    params.setdefault(k, []).extend(v)
            params = {k.upper(): v for k, v in params.items()}
            path = parts.path
            if path.startswith("/api/tap"):
                standin.queries.extend(params.get("QUERY", []))
                self._tap(parts, body)
            elif path == "/api/sia/dp1/query":
                try:
                    rows = sia_rows(standin, params)
                except ValueError as exc:
                    self._send(400, f"UsageError: {exc}\n".encode())
                    return
                self._send(200, _votable(OBSCORE, rows), "application/x-votable+xml")
            elif path == "/api/datalink/links":
                did = (params.get("ID") or [""])[0]
                self._send(
                    200, links_document(standin, did), "application/x-votable+xml"
                )
            elif path == "/api/cutout/sync":
                self._cutout(params)
            elif path.startswith("/api/images/"):
                name = path.rsplit("/", 1)[-1]
                image = next(
                    (i for i in standin.images.values() if i.path.name == name), None
                )
                if image is None:
                    self._send(404, b"NotFoundFault: no such file\n")
                else:
                    self._send(200, image.path.read_bytes(), "application/fits")
            else:
                self._send(404, b"NotFoundFault: no such route\n")

        def _cutout(self, params: dict[str, list[str]]) -> None:
            did = (params.get("ID") or [""])[0]
            image = next((i for i in standin.images.values() if i.did == did), None)
            if image is None:
                self._send(404, f"NotFoundFault: {did}\n".encode())
                return
            if standin.take("throttle"):
                self._send(
                    429, b"TransientFault: slow down\n", headers={"Retry-After": "0"}
                )
                return
            if standin.take("transient"):
                self._send(503, b"TransientFault: try again\n")
                return
            status = standin.faults.status.get(image.kind)
            if status:
                self._send(status, f"Error: refused ({status})\n".encode())
                return
            if image.kind in standin.faults.error_document:
                self._send(200, b"UsageError: CUTOUTDETAIL not available here\n")
                return
            circle = params.get("CIRCLE")
            if not circle:
                self._send(400, b"UsageError: give CIRCLE ra dec radius\n")
                return
            try:
                ra, dec, radius = (float(v) for v in circle[0].split())
                data = cutout(image, ra, dec, radius)
            except (ValueError, LookupError) as exc:
                self._send(400, f"UsageError: {exc}\n".encode())
                return
            if image.kind in standin.faults.corrupt:
                data = data[: len(data) // 3]
            self._send(200, data, "application/fits")

        def _tap(self, parts: urllib.parse.SplitResult, body: bytes) -> None:
            if standin.tap_upstream is None:
                self._send(404, b"NotFoundFault: no TAP here\n")
                return
            mine = f"{standin.base}/api/tap"
            target = standin.tap_upstream + parts.path[len("/api/tap") :]
            if parts.query:
                target += "?" + parts.query
            request = urllib.request.Request(
                target,
                data=body if self.command == "POST" else None,
                method=self.command,
                headers={
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "accept")
                },
            )

            class NoRedirect(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                    return None

            opener = urllib.request.build_opener(NoRedirect)
            try:
                with opener.open(request, timeout=120) as answer:
                    status, headers, data = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as exc:
                with exc:
                    status, headers, data = exc.code, exc.headers, exc.read()
            data = data.replace(standin.tap_upstream.encode(), mine.encode())
            extra = {}
            if headers.get("Location"):
                extra["Location"] = headers["Location"].replace(
                    standin.tap_upstream, mine
                )
            self._send(status, data, headers.get("Content-Type", "text/plain"), extra)

    return Handler
