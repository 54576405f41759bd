"""A source's light curve: its object's points in time, flux or magnitude.

`LightCurve` holds the points as numpy arrays (time in MJD, difference flux in
nJy, band, kind: `DETECTION`, `FORCED` photometry or upper `LIMIT`) and gives
them in flux or AB magnitude (`LightCurve.values`); `LightCurveBuilder`
collects them one by one.  Where the points come from is
`zooprep.readers.history`; the picture is drawn by
`zooprep.renderers.lightcurve` and the Zooniverse viewer's JSON written by
`zooprep.scatterplot`.  Both show each band in the same colour and marker
(`style`).

Points whose flux (or time) is missing or NaN are left out and counted in
`LightCurve.dropped`; entries of a history that are not records at all are
counted in `LightCurve.malformed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from zooprep.photometry import ab_magnitudes, magnitude_errors
from zooprep.vocabulary import finite_number

__all__ = [
    "DETECTION",
    "FORCED",
    "LIMIT",
    "PALETTE",
    "LightCurve",
    "LightCurveBuilder",
    "style",
]

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
