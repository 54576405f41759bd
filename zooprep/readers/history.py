"""Where a source's light curve comes from: its alert packet, the APDB, or its row.

- **ZTF alerts**: the ``candidate`` and its ``prv_candidates``; an entry with
  ``magpsf`` is a detection (`zooprep.photometry.ztf_flux`: flux in nJy,
  negative when ``isdiffpos`` is ``'f'``), an entry with only ``diffmaglim``
  an upper limit.
- **Rubin alerts**: ``diaSource``, ``prvDiaSources`` (detections) and
  ``prvDiaForcedSources`` (forced photometry), ``psfFlux`` / ``psfFluxErr``.
- **Alert brokers and streams** (Lasair, Fink, ALeRCE, Lasair's Kafka
  topics): the object's history that select wrote into the run
  (``RUN/history/<broker>-<id>.json``, named by the row's ``_history_path``);
  alerts read from a stream keep theirs in the alert written into the run.
- **APDB**: the ``DiaSource`` rows (and ``DiaForcedSource`` rows, when that
  table exists) of the source's ``diaObjectId``, one query per chunk of
  objects (`APDB_CHUNK`), never one per source.
- **TAP** (the Rubin Science Platform): the object's ``DiaSource`` rows and
  its ``ForcedSourceOnDiaObject`` rows (``psfDiffFlux``) joined with
  ``Visit`` for their times (``expMidptMJD``), one query per table per chunk
  of objects (`TapHistory`); a chunk the service's row limit would cut is
  asked again in halves.

Each history reader has one method, ``light_curves(rows)``, yielding
``(source_id, LightCurve or the reason there is none)``; `history_source`
picks the one of a run from its ``[select]`` settings.  A source with no
history gets a light curve of its own point.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zooprep.avro import read_records
from zooprep.lightcurves import DETECTION, FORCED, LIMIT, LightCurve, LightCurveBuilder
from zooprep.options import SelectOptions
from zooprep.photometry import mag_to_njy, ztf_flux
from zooprep.readers.apdb import ApdbReader, parse_description
from zooprep.readers.tap import release_schema, tap_session
from zooprep.vocabulary import BROKER_KINDS, ZTF_BANDS, finite_number

__all__ = [
    "APDB_CHUNK",
    "AlertHistory",
    "ApdbHistory",
    "BrokerHistory",
    "RowHistory",
    "TapHistory",
    "history_source",
    "light_curves_for",
    "record_light_curve",
    "row_light_curve",
    "rubin_light_curve",
    "ztf_light_curve",
]

log = logging.getLogger(__name__)

#: Objects per APDB query.
APDB_CHUNK = 500
#: JD of MJD 0.
_MJD0 = 2400000.5


def _ztf_flux(entry: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Flux and error (nJy) of a ZTF detection, or ``(None, None)``."""
    return ztf_flux(entry.get("magpsf"), entry.get("sigmapsf"), entry.get("isdiffpos"))


def _ztf_band(fid: Any) -> Any:
    """The band of a ZTF filter id (g, r, i), or the id itself."""
    return ZTF_BANDS.get(fid, fid) if isinstance(fid, int) else fid


def ztf_light_curve(source_id: int, record: Mapping[str, Any]) -> LightCurve:
    """The light curve of one ZTF alert: candidate, prior detections and limits."""
    b = LightCurveBuilder(source_id)
    cand = record.get("candidate") or {}
    flux, err = _ztf_flux(cand)
    jd = finite_number(cand.get("jd"))
    b.add(
        None if jd is None else jd - _MJD0,
        flux,
        err,
        _ztf_band(cand.get("fid")),
        DETECTION,
        current=True,
    )
    for entry in record.get("prv_candidates") or []:
        if not isinstance(entry, Mapping):
            b.malformed += 1
            continue
        jd = finite_number(entry.get("jd"))
        mjd = None if jd is None else jd - _MJD0
        band = _ztf_band(entry.get("fid"))
        flux, err = _ztf_flux(entry)
        if flux is not None:
            b.add(mjd, flux, err, band, DETECTION)
            continue
        limit = finite_number(entry.get("diffmaglim"))
        b.add(mjd, None if limit is None else mag_to_njy(limit), None, band, LIMIT)
    return b.build(record.get("objectId"))


def rubin_light_curve(source_id: int, record: Mapping[str, Any]) -> LightCurve:
    """The light curve of one Rubin alert: diaSource, prvDiaSources, prvDiaForcedSources."""
    b = LightCurveBuilder(source_id)
    src = record.get("diaSource") or {}
    b.add(
        src.get("midpointMjdTai"),
        src.get("psfFlux"),
        src.get("psfFluxErr"),
        src.get("band"),
        DETECTION,
        current=True,
    )
    for key, kind in (("prvDiaSources", DETECTION), ("prvDiaForcedSources", FORCED)):
        for entry in record.get(key) or []:
            if not isinstance(entry, Mapping):
                b.malformed += 1
                continue
            if kind == DETECTION and entry.get("diaSourceId") == src.get("diaSourceId"):
                continue  # the source itself, already added
            b.add(
                entry.get("midpointMjdTai"),
                entry.get("psfFlux"),
                entry.get("psfFluxErr"),
                entry.get("band"),
                kind,
            )
    return b.build(src.get("diaObjectId"))


def row_light_curve(source_id: int, row: Mapping[str, Any]) -> LightCurve:
    """The one-point light curve of a source without history (its own row)."""
    b = LightCurveBuilder(source_id)
    mjd = row.get("midpointMjdTai")
    if mjd is None and finite_number(row.get("jd")) is not None:
        mjd = float(row["jd"]) - _MJD0
    b.add(
        mjd,
        row.get("psfFlux"),
        row.get("psfFluxErr"),
        row.get("band"),
        DETECTION,
        current=True,
    )
    return b.build(row.get("diaObjectId") or row.get("objectId"))


class AlertHistory:
    """Light curves from the alert packets the sources were selected from."""

    def light_curves(
        self, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> Iterator[tuple[int, LightCurve | str]]:
        """``(source_id, light curve or why not)`` per row, each file read once."""
        by_path: dict[str, dict[int, list[int]]] = {}
        rows_by_id = dict(rows)
        for sid, row in rows:
            try:
                index = int(row["_alert_index"])
            except (KeyError, TypeError, ValueError):
                yield sid, row_light_curve(sid, row)
                continue
            by_path.setdefault(str(row.get("_alert_path")), {}).setdefault(
                index, []
            ).append(sid)
        for path, wanted in by_path.items():
            done: set[int] = set()
            try:
                last = max(wanted)
                for index, record in enumerate(read_records(path)):
                    if index in wanted:
                        for sid in wanted[index]:
                            yield sid, record_light_curve(sid, record)
                        done.add(index)
                    if index >= last:
                        break
            except Exception as exc:  # one unreadable file fails its rows only
                reason = f"light curve: {type(exc).__name__}: {exc}"
                for index, sids in wanted.items():
                    if index not in done:
                        for sid in sids:
                            yield sid, reason
                continue
            for index, sids in wanted.items():
                if index not in done:
                    for sid in sids:
                        yield sid, row_light_curve(sid, rows_by_id[sid])


def record_light_curve(source_id: int, record: Mapping[str, Any]) -> LightCurve:
    """The light curve of a decoded alert (ZTF or Rubin schema)."""
    if "candidate" in record:
        return ztf_light_curve(source_id, record)
    return rubin_light_curve(source_id, record)


@dataclass
class ApdbHistory:
    """Light curves from the APDB the sources were selected from.

    Parameters
    ----------
    url : str
        The SQLAlchemy URL (passwords come from the environment, e.g.
        ``PGPASSWORD``, never from the run's settings).
    schema : str or None
        The APDB's schema (PostgreSQL namespace).
    chunk : int
        Objects per query.
    """

    url: str
    schema: str | None = None
    chunk: int = APDB_CHUNK
    queries: int = field(default=0, compare=False)

    def light_curves(
        self, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> Iterator[tuple[int, LightCurve | str]]:
        """``(source_id, light curve or why not)`` per row; one query per chunk."""
        import sqlalchemy as sa

        reader = ApdbReader(self.url, schema=self.schema)
        engine = sa.create_engine(reader.engine_url())
        try:
            with engine.connect() as conn:
                meta = sa.MetaData(schema=self.schema)
                inspector = sa.inspect(conn)
                tables = set(inspector.get_table_names(schema=self.schema))
                source = sa.Table("DiaSource", meta, autoload_with=conn)
                forced = (
                    sa.Table("DiaForcedSource", meta, autoload_with=conn)
                    if "DiaForcedSource" in tables
                    else None
                )
                objects: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}
                for sid, row in rows:
                    oid = row.get("diaObjectId")
                    if isinstance(oid, int) and oid > 0:
                        objects.setdefault(oid, []).append((sid, row))
                    else:
                        yield sid, row_light_curve(sid, row)
                ids = list(objects)
                for start in range(0, len(ids), self.chunk):
                    part = ids[start : start + self.chunk]
                    yield from self._chunk(conn, source, forced, part, objects)
        finally:
            engine.dispose()

    def _chunk(
        self,
        conn: Any,
        source: Any,
        forced: Any,
        ids: list[int],
        objects: Mapping[int, list[tuple[int, Mapping[str, Any]]]],
    ) -> Iterator[tuple[int, LightCurve]]:
        """One query (per table) for a chunk of objects."""
        import sqlalchemy as sa

        found: dict[int, list[tuple[Any, ...]]] = {i: [] for i in ids}
        stmt = sa.select(source.c.diaSourceId, *_history_columns(source)).where(
            source.c.diaObjectId.in_(ids)
        )
        self.queries += 1
        for r in conn.execute(stmt):
            found[int(r[1])].append((DETECTION, int(r[0]), *r[2:]))
        if forced is not None:
            stmt = sa.select(*_history_columns(forced)).where(
                forced.c.diaObjectId.in_(ids)
            )
            self.queries += 1
            for r in conn.execute(stmt):
                found[int(r[0])].append((FORCED, None, *r[1:]))
        yield from _object_curves(ids, objects, found)


def _object_curves(
    ids: Sequence[int],
    objects: Mapping[int, Sequence[tuple[int, Mapping[str, Any]]]],
    found: Mapping[int, Sequence[tuple[Any, ...]]],
) -> Iterator[tuple[int, LightCurve]]:
    """Each source's curve from its object's points (``found``), itself marked.

    ``found`` holds ``(kind, diaSourceId or None, mjd, flux, err, band)``
    per object; a source whose own detection is not among them (not yet in
    the table) is added from its row.
    """
    for oid in ids:
        for sid, row in objects[oid]:
            b = LightCurveBuilder(sid)
            seen_self = False
            for kind, dia_id, mjd, flux, err, band in found[oid]:
                is_self = kind == DETECTION and dia_id == sid
                seen_self = seen_self or is_self
                b.add(mjd, flux, err, band, kind, current=is_self)
            if not seen_self:
                b.add(
                    row.get("midpointMjdTai"),
                    row.get("psfFlux"),
                    row.get("psfFluxErr"),
                    row.get("band"),
                    DETECTION,
                    current=True,
                )
            yield sid, b.build(oid)


def _history_columns(table: Any) -> list[Any]:
    """diaObjectId, time, flux, error and band columns of an APDB table.

    Older APDB schemas name the time ``midPointTai`` and the band
    ``filterName``; a table without a band column gives NULL bands.
    """
    import sqlalchemy as sa

    def first(*names: str) -> Any:
        for name in names:
            if name in table.c:
                return table.c[name]
        return sa.null()

    return [
        table.c.diaObjectId,
        first("midpointMjdTai", "midPointTai"),
        first("psfFlux"),
        first("psfFluxErr"),
        first("band", "filterName"),
    ]


class RowHistory:
    """One-point light curves from the rows alone (catalog runs)."""

    def light_curves(
        self, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> Iterator[tuple[int, LightCurve | str]]:
        """Each row's own point."""
        for sid, row in rows:
            yield sid, row_light_curve(sid, row)


class BrokerHistory:
    """Light curves from the object histories a broker select wrote in the run."""

    def light_curves(
        self, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> Iterator[tuple[int, LightCurve | str]]:
        """``(source_id, light curve or why not)`` per row; each file read once.

        Rows of alerts read from a stream (``_alert_path``) get theirs from
        the alert itself (`~zooprep.lightcurves.AlertHistory`).
        """
        alerts = [(sid, row) for sid, row in rows if row.get("_alert_path")]
        if alerts:
            yield from AlertHistory().light_curves(alerts)
        histories: dict[str, dict[str, Any] | str] = {}
        for sid, row in rows:
            if row.get("_alert_path"):
                continue
            path = row.get("_history_path")
            if not path:
                yield sid, row_light_curve(sid, row)
                continue
            path = str(path)
            if path not in histories:
                try:
                    with open(path, encoding="utf-8") as f:
                        histories[path] = json.load(f)
                except (OSError, ValueError) as exc:
                    histories[path] = f"light curve: cannot read {path} ({exc})"
            doc = histories[path]
            if isinstance(doc, str):
                yield sid, doc
                continue
            sources = [s for s in doc.get("sources") or [] if isinstance(s, Mapping)]
            own = next(
                (s for s in sources if s.get("diaSourceId") == sid),
                {
                    k: row.get(k)
                    for k in (
                        "diaSourceId",
                        "midpointMjdTai",
                        "band",
                        "psfFlux",
                        "psfFluxErr",
                    )
                },
            )
            record = {
                "diaSource": {**own, "diaObjectId": doc.get("diaObjectId")},
                "prvDiaSources": sources,
                "prvDiaForcedSources": doc.get("forced") or [],
            }
            yield sid, rubin_light_curve(sid, record)


@dataclass
class TapHistory:
    """Light curves from the TAP service (DP1 tables) the sources were selected from.

    Parameters
    ----------
    url : str
        The TAP service.
    schema : str
        The release's schema (``dp1``): ``dp1.DiaSource``,
        ``dp1.ForcedSourceOnDiaObject`` and ``dp1.Visit`` are read.
    chunk : int
        Objects per query.
    """

    url: str
    schema: str = "dp1"
    chunk: int = APDB_CHUNK
    queries: int = field(default=0, compare=False)

    def light_curves(
        self, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> Iterator[tuple[int, LightCurve | str]]:
        """``(source_id, light curve or why not)`` per row; one query per table per chunk."""
        import pyvo

        objects: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}
        for sid, row in rows:
            oid = row.get("diaObjectId")
            if isinstance(oid, int) and oid > 0:
                objects.setdefault(oid, []).append((sid, row))
            else:
                yield sid, row_light_curve(sid, row)
        if not objects:
            return
        with tap_session() as session:
            service = pyvo.dal.TAPService(self.url, session=session)
            try:
                limit = int(service.hardlimit or 0) or None
            except Exception:  # capabilities unreadable: the default limit
                limit = None
            ids = list(objects)
            for start in range(0, len(ids), self.chunk):
                yield from self._chunk(
                    service, limit, ids[start : start + self.chunk], objects
                )

    def _ask(self, service: Any, adql: str, limit: int | None) -> Any:
        """One sync query; None when the row limit cut it."""
        import warnings

        import pyvo

        self.queries += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pyvo.dal.DALOverflowWarning)
            result = service.run_sync(adql, maxrec=limit)
        return None if result.query_status == "OVERFLOW" else result.to_table()

    def _chunk(
        self,
        service: Any,
        limit: int | None,
        ids: list[int],
        objects: Mapping[int, list[tuple[int, Mapping[str, Any]]]],
    ) -> Iterator[tuple[int, LightCurve | str]]:
        import pyvo

        listed = ", ".join(str(int(i)) for i in ids)
        s = self.schema
        try:
            detections = self._ask(
                service,
                "SELECT diaSourceId, diaObjectId, midpointMjdTai, psfFlux, "
                f"psfFluxErr, band FROM {s}.DiaSource WHERE diaObjectId IN ({listed})",
                limit,
            )
            forced = None
            if detections is not None:
                forced = self._ask(
                    service,
                    "SELECT f.diaObjectId, v.expMidptMJD, f.psfDiffFlux, "
                    f"f.psfDiffFluxErr, f.band FROM {s}.ForcedSourceOnDiaObject AS f "
                    f"JOIN {s}.Visit AS v ON f.visit = v.visit "
                    f"WHERE f.diaObjectId IN ({listed})",
                    limit,
                )
        except (pyvo.dal.DALServiceError, pyvo.dal.DALQueryError) as exc:
            text = " ".join(str(exc).split())[:200]
            for oid in ids:
                for sid, _ in objects[oid]:
                    yield sid, f"history from TAP {self.url}: {text}"
            return
        if detections is None or forced is None:
            if len(ids) == 1:
                for sid, _ in objects[ids[0]]:
                    yield sid, f"history from TAP {self.url}: over the row limit"
                return
            half = len(ids) // 2
            yield from self._chunk(service, limit, ids[:half], objects)
            yield from self._chunk(service, limit, ids[half:], objects)
            return
        found: dict[int, list[tuple[Any, ...]]] = {i: [] for i in ids}
        for r in detections:
            found[int(r["diaObjectId"])].append(
                (DETECTION, int(r["diaSourceId"]), *_cells(r, _TAP_DETECTION))
            )
        for r in forced:
            found[int(r["diaObjectId"])].append((FORCED, None, *_cells(r, _TAP_FORCED)))
        yield from _object_curves(ids, objects, found)


_TAP_DETECTION = ("midpointMjdTai", "psfFlux", "psfFluxErr", "band")
_TAP_FORCED = ("expMidptMJD", "psfDiffFlux", "psfDiffFluxErr", "band")


def _cells(row: Any, names: Sequence[str]) -> list[Any]:
    """Plain Python values of a result row (None where masked)."""
    import numpy as np

    out: list[Any] = []
    for n in names:
        v = row[n]
        if v is np.ma.masked:
            out.append(None)
        elif isinstance(v, bytes):
            out.append(v.decode())
        elif isinstance(v, np.generic):
            out.append(v.item())
        else:
            out.append(v)
    return out


def history_source(
    select: SelectOptions | None,
) -> AlertHistory | ApdbHistory | BrokerHistory | RowHistory | TapHistory:
    """Where the histories of a run's sources come from (its select settings)."""
    kind = select.kind if select is not None else None
    if select is not None and kind == "tap" and select.tap:
        return TapHistory(select.tap, release_schema(select.table or select.query))
    if kind == "alerts":
        return AlertHistory()
    if kind in BROKER_KINDS:
        return BrokerHistory()
    if select is not None and kind == "apdb" and select.source:
        url, schema = parse_description(str(select.source))
        return ApdbHistory(url, select.schema or schema)
    return RowHistory()


def light_curves_for(
    history: Any, rows: Iterable[tuple[int, Mapping[str, Any]]]
) -> dict[int, LightCurve | str]:
    """Every row's light curve (or why not) from ``history``, as a dict."""
    return dict(history.light_curves(list(rows)))
