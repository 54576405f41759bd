"""Drawing a `~zooprep.lightcurves.LightCurve` as a PNG, with Pillow.

A fixed-size canvas per curve (no matplotlib figure per source): days since
the first detection on x, flux in nJy or AB magnitude on y, one colour and
marker per band (`zooprep.lightcurves.style`), limits as downward triangles,
forced photometry hollow, the classified source ringed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zooprep.lightcurves import DETECTION, FORCED, LIMIT, LightCurve, style
from zooprep.renderers._draw import encode_png, font_path

__all__ = ["LightCurveRenderer", "nice_ticks"]


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
            font = self._fonts[size] = ImageFont.truetype(font_path(False), size)
        return font

    def render(self, lc: LightCurve, title: str = "") -> bytes:
        """The light curve's PNG bytes (identical for identical input)."""
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
