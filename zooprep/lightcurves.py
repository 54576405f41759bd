"""A source's light curve: its object's points in time, flux or magnitude.

`LightCurve` holds the points as numpy arrays (time in MJD, difference flux in
nJy, band, kind: `DETECTION`, `FORCED` photometry or upper `LIMIT`) and gives
them in flux or AB magnitude (`LightCurve.values`); `LightCurveBuilder`
collects them one by one.  Where the points come from is
`zooprep.readers.history`; the picture is drawn by
`zooprep.renderers.lightcurve` and the Zooniverse viewer's JSON written by
`zooprep.scatterplot`.  Both draw what `plot` decides: the same series,
colours, glyphs, unit and axes.

Points whose flux (or time) is missing or NaN are left out and counted in
`LightCurve.dropped`; entries of a history that are not records at all are
counted in `LightCurve.malformed`.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from zooprep.photometry import ab_magnitudes, flux_unit, magnitude_errors
from zooprep.vocabulary import finite_number

__all__ = [
    "CURRENT_GLYPH",
    "DETECTION",
    "FORCED",
    "GLYPHS",
    "LIMIT",
    "PALETTE",
    "VIEWER_X_LABEL",
    "X_LABEL",
    "LightCurve",
    "LightCurveBuilder",
    "Plot",
    "Series",
    "band_colours",
    "light_curve_plot",
]

#: Colour-blind-safe colours (Okabe & Ito 2008) of the usual bands.
PALETTE: dict[str, str] = {
    "u": "#CC79A7",
    "g": "#009E73",
    "r": "#D55E00",
    "i": "#E69F00",
    "z": "#0072B2",
    "y": "#000000",
}
#: Colours of other bands, in the order they appear (Okabe & Ito, then Tol).
_SPARE = (
    "#56B4E9",
    "#F0E442",
    "#999999",
    "#882255",
    "#44AA99",
    "#332288",
    "#DDCC77",
    "#117733",
    "#88CCEE",
    "#AA4499",
)
_BAND_ORDER = ("u", "g", "r", "i", "z", "y")

#: Kinds of point.
DETECTION, FORCED, LIMIT = 0, 1, 2


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
        return days, ab_magnitudes(flux), magnitude_errors(flux, self.flux_err)

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


#: The classifier's glyph of each kind of point (the PNG draws the same
#: shapes): detections filled circles, forced photometry plus signs, upper
#: limits a "Y" whose stem points down, to fainter; never the upward triangle.
GLYPHS = {DETECTION: "circle", FORCED: "cross", LIMIT: "wye"}
#: The glyph of the source being classified: its own series, drawn last.
CURRENT_GLYPH = "star"
#: Glyph areas in px² (the classifier's ``pointSize``, d3's symbol size).
POINT_SIZES = {DETECTION: 36.0, FORCED: 25.0, LIMIT: 36.0}
CURRENT_SIZE = 100.0
#: How a series' label names its kind after the band.
KIND_WORDS = {DETECTION: "", FORCED: " forced", LIMIT: " limit"}
#: The x axis' title in the PNG.
X_LABEL = "Days since first detection"
#: The same in the classifier's chart, which centres the title on the axis'
#: left end (``Axis.jsx``: ``dx = -range / 2`` with visx's middle anchor) inside
#: a 70 px margin (``DataImageViewer.jsx``), upper-cased and letter-spaced: a
#: title wider than 140 px loses its start (measured in Chromium: "Days since
#: first detection" showed as "SINCE FIRST DETECTION").
VIEWER_X_LABEL = "Days"


def band_colours(bands: Sequence[str]) -> dict[str, str]:
    """One colour per band, all different: `PALETTE`, then spare colours.

    >>> band_colours(["g", "r", "VR", "N708"])
    {'g': '#009E73', 'r': '#D55E00', 'VR': '#56B4E9', 'N708': '#F0E442'}
    """
    out: dict[str, str] = {}
    spare = [c for c in _SPARE if c not in PALETTE.values()]
    n = 0
    for band in bands:
        colour = PALETTE.get(band)
        if colour is None:
            if n < len(spare):
                colour = spare[n]
            else:  # beyond the named colours: hues a golden angle apart
                h = ((n - len(spare)) * 0.381966) % 1.0
                r, g, b = colorsys.hls_to_rgb(h, 0.45, 0.75)
                colour = (
                    f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}"
                )
            n += 1
        out[band] = colour
    return out


@dataclass(frozen=True)
class Series:
    """One series of a light-curve plot: one band's points of one kind.

    ``x`` days since the first detection, ``y`` flux in the plot's unit or AB
    magnitude, ``err`` its error (NaN: none; limits have none).  ``current``
    marks the series of the classified source's own point.
    """

    label: str
    band: str
    kind: int
    colour: str
    glyph: str
    size: float
    x: np.ndarray
    y: np.ndarray
    err: np.ndarray
    current: bool = False


@dataclass(frozen=True)
class Plot:
    """What a light curve shows, decided once for the PNG and the viewer JSON.

    Attributes
    ----------
    series : list of Series
        Only series with points: per band (wavelength order) detections,
        forced photometry and limits, then the classified source's point.
    mode : {'flux', 'mag'}
    unit : str
        ``'mag'`` or the flux unit's symbol (`zooprep.photometry.flux_unit`).
    y_label : str
        The y axis' title in the PNG (``Flux (µJy)``).
    viewer_y_label : str
        The same for the classifier, whose axis titles are upper-cased (so
        the unit is spelt out: an upper-case micro sign reads as an M).
    inverted : bool
        Brighter up: the y axis runs downwards (magnitudes).
    digits : int
        Decimals the values and errors are rounded to (`_digits`).
    """

    series: list[Series]
    mode: str
    unit: str
    y_label: str
    viewer_y_label: str
    inverted: bool
    digits: int = 3

    @property
    def points(self) -> int:
        """How many points the plot draws."""
        return sum(len(s.x) for s in self.series)


def light_curve_plot(curve: LightCurve, mode: str) -> Plot:
    """The series, unit and axes of ``curve`` drawn in ``mode`` ('flux' or 'mag').

    Values are rounded once here, for the picture and the chart alike: to
    0.01 mag, or to three significant digits of the largest flux.

    Every series has its own colour-and-glyph pair: the colour says the band
    (`band_colours`), the glyph the kind of point (`GLYPHS`); the classified
    source's point is taken out of its band's series into one of its own
    (`CURRENT_GLYPH`, larger, labelled ``this source (<band>)``).  Points
    without a finite value are not drawn.  Fluxes are shown in the unit
    `zooprep.photometry.flux_unit` picks for the largest of them.
    """
    if mode not in ("flux", "mag"):
        raise ValueError(f"light curve mode must be 'flux' or 'mag', not {mode!r}")
    days, y, err = curve.values(mode)
    kinds = curve.mag_kinds() if mode == "mag" else curve.kind
    ok = np.isfinite(y) & np.isfinite(days)
    err = np.where(np.isfinite(err) & (err > 0) & (kinds != LIMIT), err, np.nan)
    if mode == "flux":
        reach = np.abs(y[ok]) + np.nan_to_num(err[ok])
        unit = flux_unit(float(reach.max()) if reach.size else 0.0)
        y, err = y / unit.njy, err / unit.njy
        symbol, y_label = unit.symbol, f"Flux ({unit.symbol})"
        viewer_label = f"Flux ({unit.name})"
    else:
        symbol, y_label = "mag", "AB magnitude"
        viewer_label = y_label
    colours = band_colours(curve.bands())
    current = np.zeros(len(y), dtype=bool)
    if 0 <= curve.current < len(y) and ok[curve.current]:
        current[curve.current] = True
    series: list[Series] = []
    for band in curve.bands():
        for kind in (DETECTION, FORCED, LIMIT):
            pick = ok & ~current & (curve.band == band) & (kinds == kind)
            if pick.any():
                series.append(
                    Series(
                        band + KIND_WORDS[kind],
                        band,
                        kind,
                        colours[band],
                        GLYPHS[kind],
                        POINT_SIZES[kind],
                        days[pick],
                        y[pick],
                        err[pick],
                    )
                )
    if current.any():
        n = curve.current
        band, kind = str(curve.band[n]), int(kinds[n])
        series.append(
            Series(
                f"this source ({band}{KIND_WORDS[kind]})",
                band,
                kind,
                colours[band],
                CURRENT_GLYPH,
                CURRENT_SIZE,
                days[current],
                y[current],
                err[current],
                current=True,
            )
        )
    labels = [s.label for s in series]
    for n, s in enumerate(series):  # band names that read like another label
        if labels.count(s.label) > 1:
            series[n] = replace(s, label=f"{s.label} [{n + 1}]")
    digits = _digits(mode, series)
    series = [
        replace(s, y=np.round(s.y, digits) + 0.0, err=np.round(s.err, digits) + 0.0)
        for s in series
    ]
    return Plot(series, mode, symbol, y_label, viewer_label, mode == "mag", digits)


def _digits(mode: str, series: Sequence[Series]) -> int:
    """Decimals of the y values: 0.01 mag, or three significant digits of flux.

    Ticks (the classifier's: d3's, ten over the points' extent) get as many
    decimals as their step needs; values this coarse keep the step at least
    a thousandth of the largest value, so a label is at most six characters
    (``-850.1``, ``21.451``) and fits the ``dataImage`` chart's margin.
    """
    if mode == "mag":
        return 2
    top = max((float(np.abs(s.y).max()) for s in series), default=0.0)
    return 2 - math.floor(math.log10(top)) if top > 0 else 3


class LightCurveBuilder:
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
