"""Drawing a `~zooprep.lightcurves.LightCurve` as a PNG, with Pillow.

A fixed-size canvas per curve (no matplotlib figure per source), drawing what
`zooprep.lightcurves.light_curve_plot` decides, exactly as the classifier
draws the same curve's JSON: days since the first detection on x, flux in the
unit chosen for the curve (nJy, µJy, mJy: ticks of at most three digits
before the point, never an exponent) or AB magnitude (brighter up) on y; one
colour per band; the classifier's glyph shapes for the kinds of point (d3's
circle for detections, plus sign for forced photometry, a "Y" with its stem
down for upper limits) and its star for the classified source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zooprep.lightcurves import (
    CURRENT_GLYPH,
    DETECTION,
    FORCED,
    GLYPHS,
    LIMIT,
    X_LABEL,
    LightCurve,
    light_curve_plot,
)
from zooprep.renderers._draw import encode_png, font_path

__all__ = [
    "LightCurveRenderer",
    "glyph_polygon",
    "nice_ticks",
    "png_size",
    "tick_label",
]

#: The PNG's glyphs are this many times the classifier's area (its pixels are
#: seen at thumbnail size on Talk).
_GLYPH_SCALE = 1.5


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of PNG bytes, read from its header.

    Raises
    ------
    ValueError
        ``data`` is not a PNG.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


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


def tick_label(v: float, step: float) -> str:
    """A tick value with as many decimals as its step needs, never an exponent.

    >>> tick_label(200.0, 100.0), tick_label(0.25, 0.05), tick_label(1500.0, 500.0)
    ('200', '0.25', '1,500')
    """
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    text = f"{v:,.{decimals}f}"
    return "0" if text.lstrip("-").strip("0.,") == "" else text


def glyph_polygon(glyph: str, size: float) -> list[tuple[float, float]]:
    """Corners of d3's symbol ``glyph`` of area ``size`` around (0, 0), y down.

    The classifier draws its glyphs with ``@visx/glyph`` (d3-shape's
    ``symbolCross``, ``symbolStar``, ``symbolWye``...); the PNG draws the
    same shapes.  A circle is given as a 24-gon.
    """
    if glyph == "cross":
        r = math.sqrt(size / 5) / 2
        return [(-3 * r, -r), (-r, -r), (-r, -3 * r), (r, -3 * r), (r, -r),
                (3 * r, -r), (3 * r, r), (r, r), (r, 3 * r), (-r, 3 * r),
                (-r, r), (-3 * r, r)]  # fmt: skip
    if glyph == "wye":
        c, s, k = -0.5, math.sqrt(3) / 2, 1 / math.sqrt(12)
        r = math.sqrt(size / ((k / 2 + 1) * 3))
        x0, y0 = r / 2, r * k
        x1, y1 = x0, r * k + r
        x2, y2 = -x1, y1
        return [(x0, y0), (x1, y1), (x2, y2),
                (c * x0 - s * y0, s * x0 + c * y0),
                (c * x1 - s * y1, s * x1 + c * y1),
                (c * x2 - s * y2, s * x2 + c * y2),
                (c * x0 + s * y0, c * y0 - s * x0),
                (c * x1 + s * y1, c * y1 - s * x1),
                (c * x2 + s * y2, c * y2 - s * x2)]  # fmt: skip
    if glyph == "star":
        ka = 0.8908130915292852
        kr = math.sin(math.pi / 10) / math.sin(7 * math.pi / 10)
        kx, ky = math.sin(2 * math.pi / 10) * kr, -math.cos(2 * math.pi / 10) * kr
        r = math.sqrt(size * ka)
        x, y = kx * r, ky * r
        pts = [(0.0, -r), (x, y)]
        for i in range(1, 5):
            a = 2 * math.pi * i / 5
            ca, sa = math.cos(a), math.sin(a)
            pts += [(sa * r, -ca * r), (ca * x - sa * y, sa * x + ca * y)]
        return pts
    if glyph == "square":
        h = math.sqrt(size) / 2
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    r = math.sqrt(size / math.pi)
    return [
        (r * math.cos(2 * math.pi * i / 24), r * math.sin(2 * math.pi * i / 24))
        for i in range(24)
    ]


def _glyph(draw: Any, glyph: str, x: float, y: float, size: float, colour: str) -> None:
    """A filled glyph centred at ``(x, y)``, outlined in black like the viewer's."""
    pts = [(x + dx, y + dy) for dx, dy in glyph_polygon(glyph, size * _GLYPH_SCALE)]
    draw.polygon(pts, fill=colour, outline=(0, 0, 0))


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

    def render(
        self, lc: LightCurve, title: str = "", size: tuple[int, int] | None = None
    ) -> bytes:
        """The light curve's PNG bytes (identical for identical input).

        ``size`` (width, height) replaces the renderer's, e.g. to match the
        triplet the light curve is blinked with.
        """
        width, height = size or (self.width, self.height)
        img = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(img)
        small = self._font(12)
        shown = light_curve_plot(lc, self.mode)
        legend_width = 110 if width >= 400 else 0
        left, right = 62, width - 10 - legend_width
        top, bottom = 24, height - 34
        if shown.points:
            xs = np.concatenate([s.x for s in shown.series])
            ys = np.concatenate([s.y for s in shown.series])
            es = np.nan_to_num(np.concatenate([s.err for s in shown.series]))
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
        flip = shown.inverted

        def px(v: np.ndarray | float) -> Any:
            return left + (np.asarray(v) - x_lo) / (x_hi - x_lo) * (right - left)

        def py(v: np.ndarray | float) -> Any:
            frac = (np.asarray(v) - y_lo) / (y_hi - y_lo)
            if flip:
                frac = 1 - frac
            return bottom - frac * (bottom - top)

        # Axes, ticks, labels.
        draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        target = max(2, min(5, (bottom - top) // 30))
        for t in (ticks := nice_ticks(x_lo, x_hi)):
            x = float(px(t))
            draw.line([x, bottom, x, bottom + 4], fill=(0, 0, 0))
            step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
            draw.text((x, bottom + 6), tick_label(t, step), fill=(0, 0, 0),
                      font=small, anchor="mt")  # fmt: skip
        for t in (ticks := nice_ticks(y_lo, y_hi, target)):
            yy = float(py(t))
            draw.line([left - 4, yy, left, yy], fill=(0, 0, 0))
            step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
            draw.text((left - 6, yy), tick_label(t, step), fill=(0, 0, 0),
                      font=small, anchor="rm")  # fmt: skip
        if self.mode == "flux" and y_lo < 0 < y_hi:
            zero = float(py(0.0))
            draw.line([left, zero, right, zero], fill=(190, 190, 190))
        draw.text(((left + right) / 2, height - 3), X_LABEL,
                  fill=(0, 0, 0), font=small, anchor="mb")  # fmt: skip
        draw.text((4, top - 6), shown.y_label, fill=(0, 0, 0), font=small, anchor="lb")
        if title:
            draw.text((right, top - 6), title, fill=(0, 0, 0), font=small, anchor="rb")
        # Points, series by series (the classified source's last, on top).
        for s in shown.series:
            for d, v, e in zip(s.x, s.y, s.err, strict=True):
                x, yy = float(px(d)), float(py(v))
                if math.isfinite(float(e)):
                    y1, y2 = float(py(v - e)), float(py(v + e))
                    draw.line([x, y1, x, y2], fill=s.colour, width=1)
                _glyph(draw, s.glyph, x, yy, s.size, s.colour)
        if legend_width:
            self._legend(draw, shown, right + 12, top, height)
        return encode_png(np.asarray(img))

    def _legend(self, draw: Any, shown: Any, lx: int, top: int, height: int) -> None:
        """Bands by colour, then kinds of point by glyph, right of the plot."""
        small = self._font(11)
        entries: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for s in shown.series:
            if s.band not in seen:
                seen.add(s.band)
                label = s.band if len(s.band) <= 10 else s.band[:9] + "…"
                entries.append((label, GLYPHS[DETECTION], s.colour))
        kinds = {s.kind for s in shown.series if not s.current}
        for kind, word in ((FORCED, "forced"), (LIMIT, "limit")):
            if kind in kinds:
                entries.append((word, GLYPHS[kind], "#777777"))
        if any(s.current for s in shown.series):
            entries.append(("this source", CURRENT_GLYPH, "#777777"))
        step = 15
        room = max(1, (height - 4 - top) // step)
        if len(entries) > room:
            entries = [*entries[: room - 1], ("…", "", "")]
        ly = top + 4
        for label, glyph, colour in entries:
            if glyph:
                _glyph(draw, glyph, lx + 6, ly + 6, 30 if glyph == CURRENT_GLYPH else 20,
                       colour)  # fmt: skip
            draw.text((lx + 16, ly + 6), label, fill=(0, 0, 0), font=small, anchor="lm")
            ly += step
