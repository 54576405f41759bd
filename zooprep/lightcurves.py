"""Light curves: each source's object history, as a PNG and as viewer JSON.

The history comes from what the run's source already holds:

- **ZTF alerts**: the ``candidate`` and its ``prv_candidates``; an entry with
  ``magpsf`` is a detection (flux in nJy from ``magpsf``, negative when
  ``isdiffpos`` is ``'f'``), an entry with only ``diffmaglim`` an upper limit.
- **Rubin alerts**: ``diaSource``, ``prvDiaSources`` (detections) and
  ``prvDiaForcedSources`` (forced photometry), ``psfFlux`` / ``psfFluxErr``.
- **APDB**: the ``DiaSource`` rows (and ``DiaForcedSource`` rows, when that
  table exists) of the source's ``diaObjectId``, one query per chunk of
  objects (`APDB_CHUNK`), never one per source.

A `LightCurve` holds the points as numpy arrays; `LightCurveRenderer` draws it
with Pillow on a fixed-size canvas (no matplotlib figure per source) and
`LightCurve.viewer_json` writes the JSON of Zooniverse's scatter-plot /
light-curve viewer (``{"data": [{"seriesData": [...], "seriesOptions":
{...}}, ...], "chartOptions": {...}}``, one series per band, see
zooniverse/front-end-monorepo ``ScatterPlotViewer/README.md``), which must
follow a PNG in the subject's locations.

Points whose flux (or time) is missing or NaN are left out and counted in
`LightCurve.dropped`; entries of a history that are not records at all are
counted in `LightCurve.malformed`.  A source with no history gets a light
curve of its own point.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zooprep.avro import read_records
from zooprep.options import SelectOptions
from zooprep.vocabulary import ZTF_BANDS, finite_number

__all__ = [
    "APDB_CHUNK",
    "PALETTE",
    "AlertHistory",
    "ApdbHistory",
    "LightCurve",
    "LightCurveRenderer",
    "history_source",
]

log = logging.getLogger(__name__)

#: Objects per APDB query.
APDB_CHUNK = 500
#: AB magnitude of 1 nJy.
NJY_ZEROPOINT = 31.4
#: JD of MJD 0.
_MJD0 = 2400000.5
#: Colour-blind-safe colours (Okabe & Ito 2008), by band, then in this order.
PALETTE: dict[str, str] = {
    "u": "#CC79A7",
    "g": "#009E73",
    "r": "#D55E00",
    "i": "#E69F00",
    "z": "#0072B2",
    "y": "#000000",
}
_SPARE = ("#56B4E9", "#F0E442", "#999999", "#882255")
#: Marker shapes (Pillow) and the viewer's glyph names, in band order.
_MARKERS = ("circle", "square", "diamond", "triangle", "cross", "star", "wye")
_BAND_ORDER = ("u", "g", "r", "i", "z", "y")

#: Kinds of point.
DETECTION, FORCED, LIMIT = 0, 1, 2


def mag_to_njy(mag: float) -> float:
    """An AB magnitude as a flux in nJy."""
    return float(10.0 ** (-0.4 * (mag - NJY_ZEROPOINT)))


@dataclass
class LightCurve:
    """The history of one source's object.

    Attributes
    ----------
    source_id : int
        The source being classified.
    mjd, flux, flux_err : numpy.ndarray
        Time (MJD) and difference flux in nJy (for limits: the limiting
        flux, ``flux_err`` NaN).
    band : numpy.ndarray of str
        Band of each point.
    kind : numpy.ndarray of int8
        `DETECTION`, `FORCED` or `LIMIT`.
    current : int
        Index of the classified source's own point (-1 when it has none).
    dropped : int
        Points left out because their flux or time was missing or NaN.
    malformed : int
        History entries left out because they were not records.
    object_id : int or str or None
        The object (``diaObjectId`` / ``objectId``), when known.
    had_history : bool
        False when the source had no history at all (only its own point).
    """

    source_id: int
    mjd: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    band: np.ndarray
    kind: np.ndarray
    current: int = -1
    dropped: int = 0
    malformed: int = 0
    object_id: Any = None
    had_history: bool = True

    def counts(self) -> dict[tuple[str, int], int]:
        """Points per ``(band, kind)``."""
        out: dict[tuple[str, int], int] = {}
        for b, k in zip(self.band.tolist(), self.kind.tolist(), strict=True):
            out[(b, k)] = out.get((b, k), 0) + 1
        return out

    def bands(self) -> list[str]:
        """Bands present, in wavelength order (unknown names last, sorted)."""
        present = set(self.band.tolist())
        known = [b for b in _BAND_ORDER if b in present]
        return known + sorted(present - set(known))

    def values(self, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(days, y, y_err)`` for ``mode`` ``'flux'`` or ``'mag'``.

        Days count from the first detection (or the first point).  In
        magnitude mode a non-positive detected flux becomes a limit at its
        error's 3-sigma flux when that is positive, else NaN (left out); see
        `mag_kinds` for the kinds of point to draw.
        """
        det = self.kind != LIMIT
        if not len(self.mjd):
            t0 = 0.0
        elif det.any():
            t0 = float(np.min(self.mjd[det]))
        else:
            t0 = float(np.min(self.mjd))
        days = self.mjd - t0
        if mode == "flux":
            return days, self.flux.copy(), self.flux_err.copy()
        flux = self.mag_limits()
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = NJY_ZEROPOINT - 2.5 * np.log10(flux)
            err = 2.5 / np.log(10) * self.flux_err / np.abs(flux)
        return days, mag, err

    def mag_kinds(self) -> np.ndarray:
        """Point kinds in magnitude mode: non-positive fluxes become limits."""
        kind = self.kind.copy()
        bad = (self.flux <= 0) & (kind != LIMIT)
        kind[bad] = LIMIT
        return kind

    def mag_limits(self) -> np.ndarray:
        """Flux used for each point in magnitude mode (3-sigma for non-positive)."""
        flux = self.flux.copy()
        bad = (flux <= 0) & (self.kind != LIMIT)
        flux[bad] = 3 * self.flux_err[bad]
        return flux

    def viewer_json(self, mode: str = "flux") -> bytes:
        """The scatter-plot / light-curve viewer JSON, one series per band and kind.

        Detections of a band are one series (``label`` the band), forced
        photometry another (``"<band> forced"``) and limits a third
        (``"<band> limit"``, triangles).  ``x`` is days since the first
        detection, ``y`` flux in nJy or AB magnitude, ``y_error`` the error
        when known.
        """
        days, y, err = self.values(mode)
        kinds = self.mag_kinds() if mode == "mag" else self.kind
        series = []
        for n, band in enumerate(self.bands()):
            colour, glyph = style(band, n)
            for kind, suffix, shape in (
                (DETECTION, "", glyph),
                (FORCED, " forced", glyph),
                (LIMIT, " limit", "triangle"),
            ):
                pick = (self.band == band) & (kinds == kind) & np.isfinite(y)
                if not pick.any():
                    continue
                points = []
                for d, v, e in zip(days[pick], y[pick], err[pick], strict=True):
                    point: dict[str, float] = {
                        "x": round(float(d), 5),
                        "y": round(float(v), 4),
                    }
                    if kind != LIMIT and math.isfinite(float(e)):
                        point["y_error"] = round(float(e), 4)
                    points.append(point)
                series.append(
                    {
                        "seriesData": points,
                        "seriesOptions": {
                            "color": colour,
                            "glyph": shape,
                            "label": band + suffix,
                        },
                    }
                )
        body = {
            "data": series,
            "chartOptions": {
                "xAxisLabel": "Days since first detection",
                "yAxisLabel": "AB magnitude" if mode == "mag" else "Flux (nJy)",
            },
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")


def style(band: str, n: int) -> tuple[str, str]:
    """Colour and marker of a band (``n``: its position among the bands shown)."""
    colour = PALETTE.get(band)
    if colour is None:
        colour = _SPARE[n % len(_SPARE)]
    marker = (
        _MARKERS[_BAND_ORDER.index(band) % 4]
        if band in _BAND_ORDER
        else _MARKERS[n % 4]
    )
    return colour, marker


# -- building light curves ---------------------------------------------------------


class _Builder:
    """Points collected one by one, turned into a `LightCurve`."""

    def __init__(self, source_id: int) -> None:
        self.source_id = source_id
        self.points: list[tuple[float, float, float, str, int]] = []
        self.dropped = 0
        self.malformed = 0
        self.current = -1
        self.history = 0

    def add(
        self,
        mjd: Any,
        flux: Any,
        err: Any,
        band: Any,
        kind: int,
        *,
        current: bool = False,
    ) -> None:
        """Add one point; a missing time or flux is counted, not added."""
        t, f = finite_number(mjd), finite_number(flux)
        if t is None or f is None:
            self.dropped += 1
            return
        e = finite_number(err)
        if current:
            self.current = len(self.points)
        else:
            self.history += 1
        self.points.append((t, f, math.nan if e is None else e, str(band or "?"), kind))

    def build(self, object_id: Any = None) -> LightCurve:
        """The light curve, points in time order."""
        order = sorted(range(len(self.points)), key=lambda i: self.points[i][0])
        pts = [self.points[i] for i in order]
        current = order.index(self.current) if self.current >= 0 else -1
        return LightCurve(
            source_id=self.source_id,
            mjd=np.array([p[0] for p in pts], dtype=float),
            flux=np.array([p[1] for p in pts], dtype=float),
            flux_err=np.array([p[2] for p in pts], dtype=float),
            band=np.array([p[3] for p in pts], dtype=object),
            kind=np.array([p[4] for p in pts], dtype=np.int8),
            current=current,
            dropped=self.dropped,
            malformed=self.malformed,
            object_id=object_id,
            had_history=self.history > 0,
        )


def _ztf_flux(entry: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Flux and error (nJy) of a ZTF detection, or ``(None, None)``."""
    mag, sigma = (
        finite_number(entry.get("magpsf")),
        finite_number(entry.get("sigmapsf")),
    )
    if mag is None:
        return None, None
    flux = mag_to_njy(mag)
    if entry.get("isdiffpos") in ("f", "0"):
        flux = -flux
    err = abs(flux) * sigma * math.log(10) / 2.5 if sigma is not None else None
    return flux, err


def _ztf_band(fid: Any) -> Any:
    """The band of a ZTF filter id (g, r, i), or the id itself."""
    return ZTF_BANDS.get(fid, fid) if isinstance(fid, int) else fid


def ztf_light_curve(source_id: int, record: Mapping[str, Any]) -> LightCurve:
    """The light curve of one ZTF alert: candidate, prior detections and limits."""
    b = _Builder(source_id)
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
    b = _Builder(source_id)
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
    b = _Builder(source_id)
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
                            yield sid, _record_light_curve(sid, record)
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


def _record_light_curve(source_id: int, record: Mapping[str, Any]) -> LightCurve:
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

        from zooprep.readers.apdb import ApdbReader

        reader = ApdbReader(self.url, schema=self.schema)
        engine = sa.create_engine(reader._engine_url())
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
        for oid in ids:
            for sid, row in objects[oid]:
                b = _Builder(sid)
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


def history_source(
    select: SelectOptions | None,
) -> AlertHistory | ApdbHistory | RowHistory:
    """Where the histories of a run's sources come from (its select settings)."""
    kind = select.kind if select is not None else None
    if kind == "alerts":
        return AlertHistory()
    if select is not None and kind == "apdb" and select.source:
        return ApdbHistory(str(select.source), select.schema)
    return RowHistory()


# -- drawing ---------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^n steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _tick_label(v: float, step: float) -> str:
    """A tick value with as many decimals as its step needs."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    if abs(v) >= 1e5:
        return f"{v:.2g}"
    return f"{v:.{decimals}f}"


@dataclass
class LightCurveRenderer:
    """Draws a `LightCurve` as a PNG of fixed size with Pillow.

    Days since the first detection on x; flux in nJy (``mode='flux'``) or AB
    magnitude (``mode='mag'``, brighter up, limits as downward triangles) on
    y; one colour (Okabe-Ito) and marker per band with a legend; forced
    photometry hollow; the classified source ringed in black with a dashed
    line at its time.

    Parameters
    ----------
    mode : {'flux', 'mag'}
    width, height : int
        Pixel size of every light curve.
    """

    mode: str = "flux"
    width: int = 600
    height: int = 360

    def __post_init__(self) -> None:
        if self.mode not in ("flux", "mag"):
            raise ValueError(
                f"light curve mode must be 'flux' or 'mag', not {self.mode!r}"
            )
        self._fonts: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fonts"] = {}
        return state

    def _font(self, size: int) -> Any:
        """A DejaVu Sans font of ``size`` pixels, cached."""
        font = self._fonts.get(size)
        if font is None:
            from PIL import ImageFont

            from zooprep.renderers._draw import font_path

            font = self._fonts[size] = ImageFont.truetype(font_path(False), size)
        return font

    def render(self, lc: LightCurve, title: str = "") -> bytes:
        """The light curve's PNG bytes (identical for identical input)."""
        from PIL import Image, ImageDraw

        from zooprep.renderers._draw import encode_png

        img = Image.new("RGB", (self.width, self.height), "white")
        draw = ImageDraw.Draw(img)
        small = self._font(12)
        left, right, top, bottom = 70, self.width - 110, 28, self.height - 42
        days, y, err = lc.values(self.mode)
        kinds = lc.mag_kinds() if self.mode == "mag" else lc.kind
        ok = np.isfinite(y)
        if ok.any():
            xs, ys = days[ok], y[ok]
            es = np.where(np.isfinite(err[ok]) & (kinds[ok] != LIMIT), err[ok], 0.0)
        else:  # nothing to plot: empty axes that say so
            xs, ys, es = np.zeros(1), np.zeros(1), np.zeros(1)
            draw.text(
                ((left + right) / 2, (top + bottom) / 2),
                "no photometry for this source",
                fill=(0, 0, 0),
                font=small,
                anchor="mm",
            )
        x_lo, x_hi = float(xs.min()), float(xs.max())
        y_lo, y_hi = float((ys - es).min()), float((ys + es).max())
        if self.mode == "flux":
            y_lo, y_hi = min(y_lo, 0.0), max(y_hi, 0.0)
        pad_x = (x_hi - x_lo) * 0.05 or 1.0
        pad_y = (y_hi - y_lo) * 0.08 or max(abs(y_hi) * 0.1, 1.0)
        x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y
        flip = self.mode == "mag"

        def px(v: np.ndarray | float) -> Any:
            return left + (np.asarray(v) - x_lo) / (x_hi - x_lo) * (right - left)

        def py(v: np.ndarray | float) -> Any:
            frac = (np.asarray(v) - y_lo) / (y_hi - y_lo)
            if flip:
                frac = 1 - frac
            return bottom - frac * (bottom - top)

        # Axes, ticks, labels.
        draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        for t in nice_ticks(x_lo, x_hi):
            x = float(px(t))
            draw.line([x, bottom, x, bottom + 4], fill=(0, 0, 0))
            step = (x_hi - x_lo) / 5
            draw.text((x, bottom + 6), _tick_label(t, step), fill=(0, 0, 0),
                      font=small, anchor="mt")  # fmt: skip
        for t in nice_ticks(y_lo, y_hi):
            yy = float(py(t))
            draw.line([left - 4, yy, left, yy], fill=(0, 0, 0))
            step = (y_hi - y_lo) / 5
            draw.text((left - 6, yy), _tick_label(t, step), fill=(0, 0, 0),
                      font=small, anchor="rm")  # fmt: skip
        if self.mode == "flux" and y_lo < 0 < y_hi:
            zero = float(py(0.0))
            draw.line([left, zero, right, zero], fill=(190, 190, 190))
        draw.text(((left + right) / 2, self.height - 4), "Days since first detection",
                  fill=(0, 0, 0), font=small, anchor="mb")  # fmt: skip
        ylabel = "AB magnitude" if flip else "Flux (nJy)"
        draw.text((4, top - 4), ylabel, fill=(0, 0, 0), font=small, anchor="lb")
        if title:
            draw.text((right, top - 4), title, fill=(0, 0, 0), font=small, anchor="rb")
        # The classified source: a dashed line at its time.
        if lc.current >= 0 and ok[lc.current]:
            cx = float(px(days[lc.current]))
            for y0 in range(top, bottom, 8):
                draw.line([cx, y0, cx, min(y0 + 4, bottom)], fill=(120, 120, 120))
        # Points, band by band.
        legend: list[tuple[str, str, str, bool]] = []
        for n, band in enumerate(lc.bands()):
            colour, marker = style(band, n)
            shown = False
            for kind in (LIMIT, FORCED, DETECTION):
                pick = ok & (lc.band == band) & (kinds == kind)
                if not pick.any():
                    continue
                shown = True
                for d, v, e in zip(days[pick], y[pick], err[pick], strict=True):
                    x, yy = float(px(d)), float(py(v))
                    if kind == LIMIT:
                        _triangle_down(draw, x, yy, 6, colour)
                        continue
                    if math.isfinite(float(e)) and e > 0:
                        y1, y2 = float(py(v - e)), float(py(v + e))
                        draw.line([x, y1, x, y2], fill=colour)
                    _marker(draw, marker, x, yy, 5, colour, hollow=kind == FORCED)
            if shown:
                legend.append((band, colour, marker, False))
        if lc.current >= 0 and ok[lc.current]:
            x, yy = float(px(days[lc.current])), float(py(y[lc.current]))
            draw.ellipse([x - 9, yy - 9, x + 9, yy + 9], outline=(0, 0, 0), width=2)
        # Legend, right of the plot.
        lx, ly = right + 12, top + 4
        for band, colour, marker, _ in legend:
            _marker(draw, marker, lx + 6, ly + 7, 5, colour, hollow=False)
            label = band if len(band) <= 10 else band[:9] + "…"
            draw.text((lx + 16, ly + 7), label, fill=(0, 0, 0), font=small, anchor="lm")
            ly += 18
        extras = []
        if (kinds == LIMIT).any():
            extras.append(("limit", "tri"))
        if (kinds == FORCED).any():
            extras.append(("forced", "hollow"))
        if lc.current >= 0:
            extras.append(("this source", "ring"))
        for label, what in extras:
            cx, cy = lx + 6, ly + 7
            if what == "tri":
                _triangle_down(draw, cx, cy, 6, "#555555")
            elif what == "hollow":
                _marker(draw, "circle", cx, cy, 5, "#555555", hollow=True)
            else:
                draw.ellipse(
                    [cx - 7, cy - 7, cx + 7, cy + 7], outline=(0, 0, 0), width=2
                )
            draw.text((lx + 16, cy), label, fill=(0, 0, 0), font=small, anchor="lm")
            ly += 18
        return encode_png(np.asarray(img))


def _marker(
    draw: Any, shape: str, x: float, y: float, r: float, colour: str, hollow: bool
) -> None:
    """One marker centred at ``(x, y)``."""
    fill = None if hollow else colour
    if shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=2)
    elif shape == "diamond":
        pts = [(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)]
        draw.polygon(pts, fill=fill, outline=colour, width=2)
    elif shape == "triangle":
        pts = [(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)]
        draw.polygon(pts, fill=fill, outline=colour, width=2)
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=2)


def _triangle_down(draw: Any, x: float, y: float, r: float, colour: str) -> None:
    """An upper limit: a hollow downward triangle."""
    pts = [(x - r, y - r), (x + r, y - r), (x, y + r)]
    draw.polygon(pts, outline=colour, width=2)


def light_curves_for(
    history: Any, rows: Iterable[tuple[int, Mapping[str, Any]]]
) -> dict[int, LightCurve | str]:
    """Every row's light curve (or why not) from ``history``, as a dict."""
    return dict(history.light_curves(list(rows)))
