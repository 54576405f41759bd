"""Loopback stand-ins of the Lasair, Fink and ALeRCE web APIs.

One threaded HTTP server on 127.0.0.1 (a free port) answers the three
brokers' routes, so that each broker's own Python client (``lasair``,
``alerce``) or plain ``requests`` (Fink has no REST client) can be pointed
at it.  Written from the brokers' server code and documentation:

Lasair (lsst-uk/lasair-lsst ``webserver/lasairapi``, ``docs/.../rest-api.md``)
  ``POST /api/<method>/`` form- or JSON-encoded, ``Authorization: Token T``
  (DRF TokenAuthentication: no or unknown token -> 401 ``{"detail": ...}``).
  Throttled per user with DRF's sliding-window ``UserRateThrottle``: at most
  ``rate`` calls in ``period`` seconds; the next gets 429 with
  ``{"message": "Request limit exceeded. ..."}`` and ``Retry-After``;
  refused calls do not count.  A result dict holding ``error`` is answered
  400 (``views.retcode``); faults can make it a 200 (``error_200``) or a
  200 that is not JSON (``garbage_200``, which the client turns into
  ``{"error": "Cannot parse Json ..."}``).  ``object`` returns the
  ``reformat``-ed object: ``diaObject``, ``diaSourcesList``,
  ``diaForcedSourcesList`` and ``lasairData.imageUrls`` (``Science``,
  ``Template``, ``Difference`` URLs and ``diaSourceId``) only for sources
  younger than ``MAX_CUTOUT_DAYS`` (365) before ``now_mjd``; an unknown
  object is 404.  ``query`` runs ``SELECT selected FROM tables WHERE
  conditions LIMIT limit OFFSET offset`` (tables ``objects`` and
  ``watchlist:<id>``); an SQL error is ``{"error": ...}`` (400).
  ``GET /fits/<diaSourceId>_cutout<Type>/`` is outside the API (no token, not
  throttled) and answers the plain single-HDU FITS, or an empty 200 body when
  the cutout store has none (``lasair.utils.fits``).

Fink (astrolabsoftware/fink-object-api ``apps/routes/v1/lsst``)
  ``/api/v1/sources`` and ``/api/v1/fp`` (``diaObjectId``, ``columns``,
  ``output-format`` json) answer a list of rows keyed ``r:<column>``;
  ``/api/v1/objects`` one row per object; ``/api/v1/cutouts`` (``diaSourceId``,
  ``kind`` Science|Template|Difference, ``output-format`` FITS|array) the
  FITS file (``application/octet-stream``) or ``{"b:cutout<Kind>": [[...]]}``;
  a diaSource with no cutout gives an empty 200 body.  GET with arguments in
  the query string or POST with a JSON body, as the Flask views allow.

ALeRCE (alercebroker/web-services ``multisurveys-apis``)
  ``GET /lightcurve_api/detections`` and ``/lightcurve_api/forced-photometry``
  (``oid``, ``survey_id=lsst``) answer lists of LSST detections
  (``measurement_id``, ``band`` as a number with ``band_map``, ``has_stamp``,
  ``mjd``, ``psfFlux`` ...); an unknown object is an empty list.
  ``GET /stamps_api/stamp`` (``oid``, ``measurement_id``, ``stamp_type``
  cutoutScience|..., ``file_format=fits``, ``survey_id``) answers the gzipped
  FITS (``application/gzip``); a missing stamp is a 500.

Confluent schema registry (for Rubin's alert stream)
  ``GET /schemas/ids/<id>`` answers ``{"schema": "<the schema as JSON text>"}``
  for the ids in `BrokerStandin.schemas`, else 404 with ``error_code`` 40403.

Every request is recorded in `BrokerStandin.calls` (method, path, token).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from astropy.io import fits

from tests.brokers.stamps import KINDS, rubin_alerts, rubin_stamp

#: Lasair keeps cutouts this many days (deploy/common/settings.py.j2).
MAX_CUTOUT_DAYS = 365
THROTTLE_MESSAGE = (
    "Request limit exceeded. Either wait an hour, or see API documentation to "
    "increase your limits."
)
#: ALeRCE's LSST band numbers (lightcurve_api/models/detections.py).
ALERCE_BANDS = {6: "u", 1: "g", 2: "r", 3: "i", 4: "z", 5: "y"}
_BAND_NUMBER = {v: k for k, v in ALERCE_BANDS.items()}


def plain_fits(stamp: bytes) -> bytes:
    """The image HDU of a Rubin stamp alone, as Lasair's cutout store serves it."""
    with fits.open(io.BytesIO(stamp)) as hdul:
        out = io.BytesIO()
        fits.PrimaryHDU(np.asarray(hdul[0].data), header=hdul[0].header).writeto(out)
    return out.getvalue()


@dataclass
class BrokerObject:
    """One diaObject: its sources, forced photometry and the sources' stamps."""

    id: int
    sources: list[dict[str, Any]]
    forced: list[dict[str, Any]]
    #: diaSourceId -> kind -> FITS bytes (Rubin stamps: image, variance, PSF).
    stamps: dict[int, dict[str, bytes]] = field(default_factory=dict)

    @property
    def ra(self) -> float:
        return float(self.sources[-1]["ra"])

    @property
    def dec(self) -> float:
        return float(self.sources[-1]["dec"])


def objects_from_alerts(
    alerts: Iterable[Mapping[str, Any]] | None = None, *, history: int | None = None
) -> dict[int, BrokerObject]:
    """Broker objects from real Rubin alerts: each alert's diaSource and history.

    Every source of an object gets the stamps of the real alert (the only
    stamps there are); ``history`` keeps only that many of the newest earlier
    sources (all when None).
    """
    out: dict[int, BrokerObject] = {}
    for alert in alerts if alerts is not None else rubin_alerts():
        src = dict(alert["diaSource"])
        oid = int(src.get("diaObjectId") or 0)
        if oid <= 0:
            continue
        prv = sorted(
            (dict(p) for p in alert.get("prvDiaSources") or []),
            key=lambda p: p["midpointMjdTai"],
        )
        if history is not None:
            prv = prv[-history:] if history else []
        sources = [p for p in prv if p["diaSourceId"] != src["diaSourceId"]] + [src]
        obj = out.setdefault(oid, BrokerObject(oid, [], []))
        known = {s["diaSourceId"] for s in obj.sources}
        obj.sources.extend(s for s in sources if s["diaSourceId"] not in known)
        obj.sources.sort(key=lambda s: s["midpointMjdTai"])
        obj.forced.extend(dict(f) for f in alert.get("prvDiaForcedSources") or [])
        stamps = {k: rubin_stamp(dict(alert), k) for k in KINDS}
        for s in obj.sources:
            obj.stamps.setdefault(int(s["diaSourceId"]), stamps)
    return out


def _jsonable(value: Any) -> Any:
    """Cassandra rows as DRF would render them (NaN as null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return None
    return value


class BrokerStandin:
    """The three brokers' HTTP APIs on one loopback server.

    Parameters
    ----------
    objects : dict of int to BrokerObject
        The objects every broker knows.
    tokens : iterable of str
        Lasair tokens that authenticate.
    rate, period : int, float
        Lasair's throttle: ``rate`` calls per ``period`` seconds per token.
    now_mjd : float or None
        Lasair's "now" for cutout expiry (default: 10 days after the newest source).
    latency : float
        Seconds each answer waits (to model a network).
    """

    def __init__(
        self,
        objects: Mapping[int, BrokerObject] | None = None,
        *,
        tokens: Iterable[str] = ("test-token",),
        rate: int = 100,
        period: float = 3600.0,
        now_mjd: float | None = None,
        latency: float = 0.0,
    ) -> None:
        self.objects = dict(objects if objects is not None else objects_from_alerts())
        self.tokens = set(tokens)
        self.rate, self.period = rate, period
        newest = max(
            (s["midpointMjdTai"] for o in self.objects.values() for s in o.sources),
            default=61000.0,
        )
        self.now_mjd = newest + 10 if now_mjd is None else now_mjd
        self.latency = latency
        self.calls: list[tuple[str, str, str | None]] = []
        #: Lasair calls answered 429 (over the rate).
        self.refused = 0
        #: Fink tags: tag -> object ids; ALeRCE classes: object id -> class.
        self.tags: dict[str, set[int]] = {}
        self.classes: dict[int, str] = {}
        #: Schema registry: id -> schema (a mapping).
        self.schemas: dict[int, Any] = {}
        #: Fault injection: name -> set of object ids (or diaSourceIds).
        self.faults: dict[str, set[int]] = {}
        self._history: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._db = self._database()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle --------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def lasair_endpoint(self) -> str:
        return f"{self.url}/api"

    def __enter__(self) -> BrokerStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def alerce_config(self) -> dict[str, Any]:
        """An ``ALERCE_CONFIG_PATH`` document pointing the alerce client here."""
        return {
            "multisurvey": {
                "URL_MS": f"{self.url}/",
                "ROUTES_MS": {
                    "objects": "object_api/list_objects",
                    "single_object": "object_api/object",
                    "detections": "lightcurve_api/detections",
                    "forced_photometry": "lightcurve_api/forced-photometry",
                    "non_detections": "lightcurve_api/non_detections",
                    "lightcurve": "lightcurve_api/lightcurve",
                    "probabilities": "probability_api/probability",
                },
            },
            "stamps": {
                "STAMP_URL": f"{self.url}/stamps_api",
                "AVRO_ROUTES": {"get_stamp": "/stamp", "get_avro": "/get_avro"},
            },
            "ztf": {"ZTF_API_URL": f"{self.url}/ztf", "ZTF_ROUTES": {}},
            "stamps_ztf": {"AVRO_URL": f"{self.url}/avro", "AVRO_ROUTES": {}},
        }

    def count(self, prefix: str) -> int:
        """Requests whose path starts with ``prefix``."""
        return sum(1 for _, path, _ in self.calls if path.startswith(prefix))

    # -- Lasair -----------------------------------------------------------------

    def _database(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute(
            "CREATE TABLE objects (diaObjectId INTEGER PRIMARY KEY, ra REAL, "
            "decl REAL, nDiaSources INTEGER, firstDiaSourceMjdTai REAL, "
            "lastDiaSourceMjdTai REAL)"
        )
        db.execute("CREATE TABLE watchlist_hits (wl_id INTEGER, diaObjectId INTEGER)")
        for o in self.objects.values():
            mjd = [s["midpointMjdTai"] for s in o.sources]
            db.execute(
                "INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?)",
                (o.id, o.ra, o.dec, len(o.sources), min(mjd), max(mjd)),
            )
        return db

    def watch(self, wl_id: int, object_ids: Iterable[int]) -> None:
        """Put objects on a Lasair watchlist (rows of ``watchlist_hits``)."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO watchlist_hits VALUES (?, ?)",
                [(wl_id, int(i)) for i in object_ids],
            )

    def throttled(self, token: str) -> float | None:
        """Seconds to wait when ``token`` is over its rate, else None (and count it)."""
        with self._lock:
            now = time.monotonic()
            history = [t for t in self._history.get(token, []) if t > now - self.period]
            if len(history) >= self.rate:
                self._history[token] = history
                self.refused += 1
                return max(0.0, history[0] + self.period - now)
            history.append(now)
            self._history[token] = history
            return None

    def lasair_object(self, params: Mapping[str, str]) -> tuple[int, Any]:
        try:
            oid = int(params.get("objectId", ""))
        except ValueError:
            return 400, {"objectId": ["A valid integer is required."]}
        if oid in self.faults.get("error_200", set()):
            return 200, {"error": f"Cassandra timeout reading object {oid}"}
        if oid in self.faults.get("garbage_200", set()):
            return 200, "<html><body>Bad gateway</body></html>"
        obj = self.objects.get(oid)
        if obj is None:
            return 404, {"detail": "Not found."}
        lite = str(params.get("lite", "False")).lower() in ("true", "1")
        added = str(params.get("lasair_added", "True")).lower() in ("true", "1")
        lite_cols = ("diaSourceId", "midpointMjdTai", "band", "psfFlux", "psfFluxErr")
        sources, urls = [], []
        for s in obj.sources:
            row = {k: _jsonable(v) for k, v in s.items()}
            if lite:
                row = {k: row.get(k) for k in (*lite_cols, "reliability")}
            sources.append(row)
            if self.now_mjd - s["midpointMjdTai"] > MAX_CUTOUT_DAYS:
                continue
            sid = int(s["diaSourceId"])
            urls.append(
                {k: f"{self.url}/fits/{sid}_cutout{k}/" for k in KINDS}
                | {"diaSourceId": sid}
            )
        forced = [{k: _jsonable(v) for k, v in f.items()} for f in obj.forced]
        if lite:
            forced = [{k: f.get(k) for k in lite_cols[1:]} for f in forced]
        mjd = [s["midpointMjdTai"] for s in obj.sources]
        out: dict[str, Any] = {
            "diaObjectId": oid,
            "diaObject": {
                "ra": obj.ra,
                "decl": obj.dec,
                "firstDiaSourceMjdTai": min(mjd),
                "lastDiaSourceMjdTai": max(mjd),
            },
            "diaSourcesList": sources,
            "diaForcedSourcesList": forced,
        }
        if added:
            out["lasairData"] = {
                "nDiaSources": len(sources),
                "sherlock": {},
                "TNS": {},
                "annotations": [],
                "imageUrls": urls,
            }
        return 200, out

    def lasair_query(self, params: Mapping[str, str]) -> tuple[int, Any]:
        selected = params.get("selected", "")
        tables = [t.strip() for t in params.get("tables", "").split(",") if t.strip()]
        conditions = params.get("conditions", "")
        limit = min(int(params.get("limit") or 1000), 10000)
        offset = int(params.get("offset") or 0)
        frm, where = [], []
        for t in tables:
            if t == "objects":
                frm.append("objects")
            elif t.startswith("watchlist:"):
                frm.append("watchlist_hits")
                where.append(
                    f"watchlist_hits.wl_id = {int(t.split(':')[1])} AND "
                    "watchlist_hits.diaObjectId = objects.diaObjectId"
                )
            else:
                return 400, {"error": f"Unknown table {t}"}
        if conditions.strip():
            where.append(f"({conditions})")
        sql = f"SELECT {selected} FROM {', '.join(frm)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" LIMIT {limit} OFFSET {offset}"
        try:
            with self._lock:
                cur = self._db.execute(sql)
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        except sqlite3.Error as exc:
            return 400, {
                "error": f"Your query:<br/><b>{sql}</b><br/>returned the error<br/>"
                f"<i>{exc}</i>"
            }
        return 200, rows

    def lasair_fits(self, name: str) -> tuple[int, bytes, str]:
        sid_text, _, kind = name.partition("_cutout")
        try:
            sid = int(sid_text)
        except ValueError:
            return 200, b"", "image/fits"
        if sid in self.faults.get("html_cutout", set()):
            return 200, b"<!DOCTYPE html><html>Service unavailable</html>", "text/html"
        for o in self.objects.values():
            if sid in o.stamps and kind in o.stamps[sid]:
                return 200, plain_fits(o.stamps[sid][kind]), "image/fits"
        return 200, b"", "image/fits"

    # -- Fink -------------------------------------------------------------------

    def _object_ids(self, params: Mapping[str, Any]) -> list[int]:
        out = []
        for part in str(params.get("diaObjectId", "")).split(","):
            try:
                out.append(int(part.strip()))
            except ValueError:
                continue
        return out

    def fink_rows(self, which: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        if "diaObjectId" not in params:
            return 400, str({"status": "error", "text": "diaObjectId is required"})
        cols = [c.strip() for c in str(params.get("columns", "")).split(",") if c]
        rows = []
        for oid in self._object_ids(params):
            obj = self.objects.get(oid)
            if obj is None:
                continue
            if which == "sources":
                entries = obj.sources
            elif which == "fp":
                entries = obj.forced
            else:
                last = obj.sources[-1]
                entries = [
                    {
                        "diaObjectId": oid,
                        "ra": obj.ra,
                        "dec": obj.dec,
                        "nDiaSources": len(obj.sources),
                        "lastDiaSourceMjdTai": last["midpointMjdTai"],
                    }
                ]
            for e in entries:
                row = {f"r:{k}": _jsonable(v) for k, v in e.items()}
                if which == "sources":
                    row["f:xm_simbad_otype"] = "Fail"
                if cols:
                    row = {k: row.get(k) for k in cols}
                rows.append(row)
        return 200, rows

    def fink_tag(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        """The latest alerts (newest source of each object) of a tag."""
        tag = params.get("tag")
        if tag not in self.tags:
            return 400, str({"status": "error", "text": f"{tag} is not a valid tag"})
        n = int(params.get("n") or 100)
        rows = []
        for oid in sorted(self.tags[str(tag)]):
            last = self.objects[oid].sources[-1]
            rows.append({"r:diaObjectId": oid, "r:diaSourceId": last["diaSourceId"],
                         "r:midpointMjdTai": last["midpointMjdTai"]})  # fmt: skip
        rows.sort(key=lambda r: -r["r:midpointMjdTai"])
        cols = [c for c in str(params.get("columns", "")).split(",") if c]
        return 200, [{k: r[k] for k in cols} if cols else r for r in rows[:n]]

    def alerce_objects(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        """``list_objects``: objects of a class (`classes`), paged."""
        if params.get("survey") != "lsst":
            return 400, {"detail": "survey must be lsst"}
        wanted = params.get("class_name")
        oids = sorted(
            o for o in self.objects if wanted is None or self.classes.get(o) == wanted
        )
        page, size = int(params.get("page") or 1), int(params.get("page_size") or 10)
        items = [{"oid": o, "class_name": self.classes.get(o)} for o in oids]
        part = items[(page - 1) * size : page * size]
        return 200, {"items": part, "total": len(items), "page": page}

    def fink_cutout(self, params: Mapping[str, Any]) -> tuple[int, Any, str]:
        kind = params.get("kind")
        fmt = params.get("output-format", "PNG")
        if kind not in (*KINDS, "All"):
            return 400, str({"status": "error", "text": "bad kind"}), "text/plain"
        try:
            sid = int(str(params.get("diaSourceId")))
        except ValueError:
            return 200, b"", "image/png"
        stamps = next(
            (o.stamps[sid] for o in self.objects.values() if sid in o.stamps), None
        )
        if stamps is None or sid in self.faults.get("fink_missing_cutout", set()):
            return 200, b"", "image/png"
        if fmt == "FITS":
            return 200, stamps[str(kind)], "application/octet-stream"
        if fmt == "array":
            kinds = KINDS if kind == "All" else (str(kind),)
            doc = {}
            for k in kinds:
                with fits.open(io.BytesIO(stamps[k])) as hdul:
                    doc[f"b:cutout{k}"] = np.nan_to_num(hdul[0].data).tolist()
            return 200, doc, "application/json"
        return 400, "PNG is not served by this stand-in", "text/plain"

    # -- ALeRCE -----------------------------------------------------------------

    def alerce_rows(self, which: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        if params.get("survey_id") not in ("lsst", "ztf"):
            return 400, {"detail": "survey_id must be lsst or ztf"}
        try:
            oid = int(params.get("oid", ""))
        except ValueError:
            return 400, {"detail": "oid must be an integer"}
        obj = self.objects.get(oid)
        if obj is None:
            return 200, []
        entries = obj.sources if which == "detections" else obj.forced
        rows = []
        for e in entries:
            row = {k: _jsonable(v) for k, v in e.items() if k != "band"}
            row["oid"] = oid
            row["survey_id"] = "lsst"
            row["measurement_id"] = int(e.get("diaSourceId") or 0)
            row["mjd"] = e["midpointMjdTai"]
            row["band"] = _BAND_NUMBER.get(str(e.get("band")), 0)
            row["band_map"] = {str(k): v for k, v in ALERCE_BANDS.items()}
            if which == "detections":
                row["has_stamp"] = int(e["diaSourceId"]) in obj.stamps
            rows.append(row)
        return 200, rows

    def alerce_stamp(self, params: Mapping[str, Any]) -> tuple[int, bytes, str]:
        try:
            oid, mid = int(params["oid"]), int(params["measurement_id"])
            kind = str(params["stamp_type"]).removeprefix("cutout")
        except (KeyError, ValueError):
            return 422, b'{"detail": "missing parameter"}', "application/json"
        obj = self.objects.get(oid)
        stamps = obj.stamps.get(mid) if obj else None
        if stamps is None or kind not in stamps:
            return 500, b"Internal Server Error", "text/plain"
        if params.get("file_format") != "fits":
            return 500, b"Internal Server Error", "text/plain"
        return 200, gzip.compress(stamps[kind]), "application/gzip"


def _handler(standin: BrokerStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _params(self) -> dict[str, Any]:
            url = urllib.parse.urlsplit(self.path)
            params: dict[str, Any] = {
                k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()
            }
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if body:
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    try:
                        params.update(json.loads(body))
                    except ValueError:
                        params["_bad_body"] = True
                else:
                    params.update(
                        {
                            k: v[-1]
                            for k, v in urllib.parse.parse_qs(body.decode()).items()
                        }
                    )
            return params

        def _send(
            self,
            status: int,
            body: Any,
            ctype: str = "application/json",
            headers: Mapping[str, str] | None = None,
        ) -> None:
            if not isinstance(body, bytes):
                body = (body if isinstance(body, str) else json.dumps(body)).encode()
                if ctype == "application/json" and body.lstrip()[:1] not in (
                    b"{",
                    b"[",
                ):
                    ctype = "text/html"
            if standin.latency:
                time.sleep(standin.latency)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            path = urllib.parse.urlsplit(self.path).path
            params = self._params()
            auth = self.headers.get("Authorization", "")
            token = auth[6:].strip() if auth.startswith("Token ") else None
            token = token or params.get("token")
            with standin._lock:
                standin.calls.append((method, path, token))
            if params.pop("_bad_body", False):
                self._send(400, {"detail": "JSON parse error"})
                return
            if path.startswith("/api/") and path.rstrip("/").count("/") == 2:
                self._lasair(path.strip("/").split("/")[1], params, token)
            elif path.startswith("/fits/"):
                self._send(*standin.lasair_fits(path.strip("/").split("/")[1]))
            elif path == "/api/v1/tags":
                self._send(*standin.fink_tag(params))
            elif path == "/object_api/list_objects":
                self._send(*standin.alerce_objects(params))
            elif path in ("/api/v1/sources", "/api/v1/fp", "/api/v1/objects"):
                self._send(*standin.fink_rows(path.rsplit("/", 1)[1], params))
            elif path == "/api/v1/cutouts":
                status, body, ctype = standin.fink_cutout(params)
                self._send(status, body, ctype)
            elif path == "/lightcurve_api/detections":
                self._send(*standin.alerce_rows("detections", params))
            elif path == "/lightcurve_api/forced-photometry":
                self._send(*standin.alerce_rows("forced", params))
            elif path.startswith("/schemas/ids/"):
                try:
                    schema = standin.schemas[int(path.rsplit("/", 1)[1])]
                except (KeyError, ValueError):
                    self._send(
                        404, {"error_code": 40403, "message": "Schema not found"}
                    )
                else:
                    self._send(200, {"schema": json.dumps(schema)})
            elif path == "/stamps_api/stamp":
                status, body, ctype = standin.alerce_stamp(params)
                self._send(status, body, ctype)
            else:
                self._send(404, {"detail": "Not found."})

        def _lasair(
            self, method: str, params: dict[str, Any], token: str | None
        ) -> None:
            if not token:
                self._send(
                    401, {"detail": "Authentication credentials were not provided."}
                )
                return
            if token not in standin.tokens:
                self._send(401, {"detail": "Invalid token."})
                return
            wait = standin.throttled(token)
            if wait is not None:
                self._send(
                    429,
                    {"message": THROTTLE_MESSAGE},
                    headers={"Retry-After": str(math.ceil(wait))},
                )
                return
            if method == "object":
                status, body = standin.lasair_object(params)
            elif method == "query":
                status, body = standin.lasair_query(params)
            else:
                status, body = 404, {"detail": "Not found."}
            self._send(status, body)

    return Handler


def lasair_objects(standin: BrokerStandin) -> Iterator[int]:
    """The object ids the stand-in knows, ascending."""
    yield from sorted(standin.objects)
