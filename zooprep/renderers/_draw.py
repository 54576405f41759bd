"""Private drawing helpers: layout, cached glyphs, panels, scale bars, PNG.

Everything here works on a ``(height, width, 3)`` uint8 numpy canvas.  Text is
set from per-glyph alpha masks of matplotlib's DejaVu Sans, rendered once by
Pillow and cached on the `Typesetter` (one per renderer instance, built lazily
so renderers stay picklable).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

try:  # Intel ISA-L's deflate: ~6x zlib's fastest level on RGB pictures
    from isal.isal_zlib import compress as deflate_rgb
except ImportError:  # a platform without isal's wheels (see pyproject.toml)
    from zlib import compress as deflate_rgb

from zooprep.images.base import Cutouts

#: Outer margin, in screen pixels (the seed's tight bounding box pad).
MARGIN = 10
#: Font sizes in pixels (12 pt and 10 pt at 100 dpi, as in the seed).
TITLE_PX = 17
TEXT_PX = 14
#: Distance between text rows of the annotation.
LINE_PITCH = 20
#: Vertical gap between rows of panels.
ROW_GAP = 24
#: Space from the title line to the panels.
TITLE_BLOCK = 20
#: Width of the annotation text block when the panels are narrower (the seed's
#: 6.4-inch figure at 100 dpi); positions of text are fractions of it.
TEXT_WIDTH = 640
#: Target on-screen width of a panel when no scale is given.
PANEL_TARGET = 200
#: Whole-string masks kept per typesetter (labels and repeated values hit).
_MAX_MASKS = 4096
#: PNG deflate level (ISA-L's 0-3, zlib's 0-9): measured in benchmarks/README.md
#: (size against speed).  Greyscale pictures go through zlib: ISA-L is 3x faster
#: on them too but makes files 1.7x larger (14 kB instead of 8.4 kB), while on
#: RGB pictures it costs 12 % in size for 6x the speed.
PNG_LEVEL = 1

WHITE = (255, 255, 255)
BAR_YELLOW = (255, 255, 0)
BAR_BLUE = (0, 0, 255)


def font_path(bold: bool) -> str:
    """Path of matplotlib's DejaVu Sans (regular or bold) TrueType file."""
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


@dataclass(frozen=True)
class _Glyph:
    """One character's alpha mask and metrics at one font size."""

    mask: np.ndarray
    left: int
    top: int
    advance: float


class Typesetter:
    """DejaVu Sans text drawn onto numpy canvases from cached glyph masks."""

    def __init__(self) -> None:
        self._fonts: dict[tuple[bool, int], ImageFont.FreeTypeFont] = {}
        self._glyphs: dict[tuple[bool, int, str], _Glyph] = {}
        self._masks: dict[
            tuple[str, bool, int], tuple[np.ndarray, int, int, float]
        ] = {}
        self._tints: dict[tuple[int, int, int], np.ndarray] = {}

    def font(self, bold: bool, size: int) -> ImageFont.FreeTypeFont:
        """The Pillow font object (loaded once)."""
        key = (bold, size)
        font = self._fonts.get(key)
        if font is None:
            font = ImageFont.truetype(
                font_path(bold), size, layout_engine=ImageFont.Layout.BASIC
            )
            self._fonts[key] = font
        return font

    def _glyph(self, char: str, bold: bool, size: int) -> _Glyph:
        """Render (once) the mask of one character."""
        key = (bold, size, char)
        glyph = self._glyphs.get(key)
        if glyph is None:
            font = self.font(bold, size)
            left, top, right, bottom = (int(v) for v in font.getbbox(char, anchor="ls"))
            w, h = max(0, right - left), max(0, bottom - top)
            img = Image.new("L", (max(w, 1), max(h, 1)), 0)
            if w and h:
                ImageDraw.Draw(img).text(
                    (-left, -top), char, fill=255, font=font, anchor="ls"
                )
            mask = np.asarray(img)[:h, :w].copy()
            glyph = _Glyph(mask, left, top, float(font.getlength(char)))
            self._glyphs[key] = glyph
        return glyph

    def width(self, text: str, bold: bool = False, size: int = TEXT_PX) -> int:
        """Advance width of ``text`` in pixels."""
        return round(sum(self._glyph(c, bold, size).advance for c in text))

    def _mask(
        self, text: str, bold: bool, size: int
    ) -> tuple[np.ndarray, int, int, float]:
        """Alpha mask of a string, its top and left (from the pen origin), advance."""
        key = (text, bold, size)
        cached = self._masks.get(key)
        if cached is not None:
            return cached
        glyphs = [self._glyph(c, bold, size) for c in text]
        ascent, descent = self.font(bold, size).getmetrics()
        pens = []
        pen = 0.0
        for g in glyphs:
            pens.append(round(pen) + g.left)
            pen += g.advance
        lo = min([0, *pens])
        hi = max(
            [
                round(pen),
                *(p + g.mask.shape[1] for p, g in zip(pens, glyphs, strict=True)),
            ]
        )
        top = min([-ascent, *(g.top for g in glyphs)])
        bottom = max([descent, *(g.top + g.mask.shape[0] for g in glyphs)])
        mask = np.zeros((bottom - top, hi - lo), dtype=np.uint8)
        for p, g in zip(pens, glyphs, strict=True):
            h, w = g.mask.shape
            if h and w:
                y0, x0 = g.top - top, p - lo
                np.maximum(mask[y0 : y0 + h, x0 : x0 + w], g.mask,
                           out=mask[y0 : y0 + h, x0 : x0 + w])  # fmt: skip
        if len(self._masks) >= _MAX_MASKS:
            self._masks.clear()
        result = (mask, top, lo, pen)
        self._masks[key] = result
        return result

    def _tint(self, rgb: tuple[int, int, int]) -> np.ndarray:
        """Colour of each alpha level of ``rgb`` text over white, (256, 3) uint8."""
        table = self._tints.get(rgb)
        if table is None:
            alpha = np.arange(256, dtype=np.int32)[:, None]
            ink = 255 - np.asarray(rgb, dtype=np.int32)[None, :]
            table = (255 - (alpha * ink + 127) // 255).astype(np.uint8)
            self._tints[rgb] = table
        return table

    def draw(
        self,
        canvas: np.ndarray,
        x: float,
        baseline: int,
        text: str,
        rgb: tuple[int, int, int],
        bold: bool = False,
        size: int = TEXT_PX,
        align: Literal["left", "right", "center"] = "left",
    ) -> None:
        """Draw ``text`` on white with its baseline at row ``baseline``.

        Glyphs are blended as if over white and combined with what is below
        by a per-channel minimum, so text may touch text but must not sit on
        panels.
        """
        if not text:
            return
        mask, top, left, advance = self._mask(text, bold, size)
        if align == "right":
            x -= advance
        elif align == "center":
            x -= advance / 2
        x0, y0 = round(x) + left, baseline + top
        h, w = mask.shape
        height, width = canvas.shape[:2]
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + w, width), min(y0 + h, height)
        if xa >= xb or ya >= yb:
            return
        # np.take: the same pixels as table[mask], 2-3x faster
        ink = np.take(
            self._tint(rgb), mask[ya - y0 : yb - y0, xa - x0 : xb - x0], axis=0
        )
        region = canvas[ya:yb, xa:xb]
        np.minimum(region, ink, out=region)


@dataclass(frozen=True)
class PanelRow:
    """Where one row of three panels goes, and how its pixels are resampled."""

    top: int
    height: int
    ny: int
    nx: int


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of one picture.

    ``panel_x`` are the left edges of the three panels; all panels are
    ``panel_width`` wide.  ``text_left``/``text_width`` is the annotation
    block (annotated pictures only), whose x positions are fractions of
    ``text_width``.
    """

    width: int
    height: int
    panel_width: int
    panel_x: tuple[int, int, int]
    rows: tuple[PanelRow, ...]
    title_baseline: int
    title_size: int
    text_left: int
    text_width: int
    text_top: int


def panel_width(shapes: Sequence[tuple[int, int]], scale: int | None) -> int:
    """On-screen width shared by all panels: the widest row at its own scale."""
    widths = []
    for _, nx in shapes:
        s = scale if scale is not None else max(1, round(PANEL_TARGET / nx))
        widths.append(nx * max(1, int(s)))
    return max(widths)


def make_layout(
    shapes: Sequence[tuple[int, int]], scale: int | None, text_lines: int = 0
) -> Layout:
    """Geometry for rows of cutouts of ``shapes`` (ny, nx), with text lines on top."""
    w = panel_width(shapes, scale)
    gap = max(4, round(0.075 * w))
    span = 3 * w + 2 * gap
    title_size = TITLE_PX if w >= 120 else max(8, (TITLE_PX * w) // 120)
    if text_lines:
        text_width = max(TEXT_WIDTH, span)
        offset = (text_width - span) // 2
        text_top = MARGIN
        panels_top = MARGIN + text_lines * LINE_PITCH + 2 * TITLE_BLOCK
    else:
        text_width = span
        offset = 0
        text_top = MARGIN
        panels_top = MARGIN + TITLE_BLOCK * title_size // TITLE_PX
    rows = []
    top = panels_top
    for ny, nx in shapes:
        h = max(1, round(ny * w / nx))
        rows.append(PanelRow(top=top, height=h, ny=ny, nx=nx))
        top += h + ROW_GAP
    height = top - ROW_GAP + MARGIN
    x0 = MARGIN + offset
    return Layout(
        width=2 * MARGIN + text_width,
        height=height,
        panel_width=w,
        panel_x=(x0, x0 + w + gap, x0 + 2 * (w + gap)),
        rows=tuple(rows),
        title_baseline=panels_top - 6 * title_size // TITLE_PX - 2,
        title_size=title_size,
        text_left=MARGIN,
        text_width=text_width,
        text_top=text_top,
    )


def base_canvas(
    layout: Layout, titles: Sequence[str], typesetter: Typesetter
) -> np.ndarray:
    """White canvas with the three panel titles above the first row."""
    canvas = np.full((layout.height, layout.width, 3), 255, dtype=np.uint8)
    for x, title in zip(layout.panel_x, titles, strict=True):
        size = layout.title_size
        # Shrink a long title (e.g. with a note) until it fits over its panel.
        while size > 8 and typesetter.width(title, size=size) > layout.panel_width:
            size -= 1
        typesetter.draw(
            canvas,
            x + layout.panel_width / 2,
            layout.title_baseline,
            title,
            (0, 0, 0),
            size=size,
            align="center",
        )
    return canvas


def resample_index(n_in: int, n_out: int) -> np.ndarray:
    """Nearest-neighbour source index of each of ``n_out`` output pixels."""
    return (np.arange(n_out) * n_in) // n_out


def paste_panel(
    canvas: np.ndarray, rgb: np.ndarray, x: int, row: PanelRow, width: int
) -> None:
    """Upscale ``rgb`` (ny, nx, 3) nearest-neighbour into its panel box.

    The image's first row is drawn at the bottom (``origin='lower'``, as
    astronomers and the seed show images).
    """
    ny, nx = rgb.shape[:2]
    region = canvas[row.top : row.top + row.height, x : x + width]
    flipped = rgb[::-1]
    fy, ry = divmod(row.height, ny)
    fx, rx = divmod(width, nx)
    if ry == 0 and rx == 0:
        # Integer factors: widen each row once, then copy it to fy screen rows
        # through a (ny, fy, width, 3) view of the panel box.
        wide = flipped.repeat(fx, axis=1)
        blocks = region.view()
        blocks.shape = (ny, fy, width, 3)
        blocks[...] = wide[:, None]
    else:
        yi = resample_index(ny, row.height)
        xi = resample_index(nx, width)
        region[...] = flipped[yi[:, None], xi]


#: Lengths a scale bar may have, in arcsec.
SCALE_BAR_ARCSEC = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
#: The fraction of the panel width a scale bar may cover.
SCALE_BAR_FRACTION = (0.10, 0.35)


def scale_bar_arcsec(panel_px: int, screen_px_per_arcsec: float) -> float | None:
    """The round length (arcsec) of a panel's scale bar, or None when none fits.

    The bar covers 10-35 % of the panel: 1 arcsec when that fits (the
    seed's bar), else the round length (0.2", 0.5", 1", 2", 5", 10", ...)
    closest to a fifth of the panel.
    """
    lo, hi = SCALE_BAR_FRACTION
    fits = [
        (a, a * screen_px_per_arcsec / panel_px)
        for a in SCALE_BAR_ARCSEC
        if lo <= a * screen_px_per_arcsec / panel_px <= hi
    ]
    if not fits:
        return None
    for a, _ in fits:
        if a == 1.0:
            return a
    return min(fits, key=lambda af: abs(af[1] - 0.2))[0]


def arcsec_label(arcsec: float) -> str:
    """``0.5"``, ``1"``, ``10"``."""
    return f'{arcsec:g}"'


def draw_scale_bar(
    canvas: np.ndarray,
    x: int,
    row: PanelRow,
    width: int,
    pixel_scale: float,
    typesetter: Typesetter | None = None,
) -> float | None:
    """A labelled scale bar, yellow over a thicker blue line, in the panel's lower left.

    Its length is a round number of arcsec (see `scale_bar_arcsec`) covering
    10-35 % of the panel.  The yellow line starts one cutout pixel in from
    the left edge and is centred one cutout pixel up from the bottom edge;
    it is ``round(arcsec * f / pixel_scale)`` screen pixels long and 3
    thick, where ``f`` is the screen pixels per cutout pixel.  The blue line
    extends 3 pixels beyond it on every side.  With a ``typesetter``, the
    length (``1"``) is written above the bar in yellow on blue.  All is
    clipped to the panel.  Returns the length in arcsec (None: no bar).
    """
    if not (pixel_scale > 0 and math.isfinite(pixel_scale)):
        return None
    f = width / row.nx
    arcsec = scale_bar_arcsec(width, f / pixel_scale)
    if arcsec is None:
        return None
    length = round(arcsec * f / pixel_scale)
    if length < 1:
        return None
    left = x + round(f)
    centre = row.top + row.height - round(f)
    x_lo, x_hi = x, x + width
    y_lo, y_hi = row.top, row.top + row.height

    def fill(x0: int, x1: int, y0: int, y1: int, rgb: tuple[int, int, int]) -> None:
        x0, x1 = max(x0, x_lo), min(x1, x_hi)
        y0, y1 = max(y0, y_lo), min(y1, y_hi)
        if x0 < x1 and y0 < y1:
            canvas[y0:y1, x0:x1] = rgb

    fill(left - 3, left + length + 3, centre - 4, centre + 4, BAR_BLUE)
    fill(left, left + length, centre - 1, centre + 2, BAR_YELLOW)
    if typesetter is not None:
        size = max(8, min(TEXT_PX, width // 12))
        label = arcsec_label(arcsec)
        mask, top, _, _ = typesetter._mask(label, True, size)
        h, w = mask.shape
        x0, base = left, centre - 6
        y0 = base + top
        if y0 - 2 >= y_lo and x0 + w + 2 <= x_hi:
            fill(x0 - 2, x0 + w + 2, y0 - 1, y0 + h + 1, BAR_BLUE)
            region = canvas[y0 : y0 + h, x0 : x0 + w].astype(np.uint16)
            alpha = mask.astype(np.uint16)[..., None]
            ink = np.asarray(BAR_YELLOW, dtype=np.uint16)
            blended = (region * (255 - alpha) + ink * alpha + 127) // 255
            canvas[y0 : y0 + h, x0 : x0 + w] = blended.astype(np.uint8)
    return arcsec


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(canvas: np.ndarray, level: int = PNG_LEVEL, grey: bool = False) -> bytes:
    """PNG bytes of an RGB canvas: IHDR, IDAT, IEND and nothing else.

    Every row uses PNG's "Up" filter (difference with the row above), which
    turns the repeated rows of nearest-neighbour upscaled panels into zeros
    that deflate compresses quickly and well; no timestamps or text chunks,
    so the same canvas always gives the same bytes.  With ``grey`` (the
    caller knows every pixel has r == g == b) the file is 8-bit greyscale
    (deflated by zlib, RGB by ISA-L: see `PNG_LEVEL`),
    a third of the data to compress.
    """
    height, width = canvas.shape[:2]
    if grey:
        rows = np.ascontiguousarray(canvas[..., 0])
        colour_type, channels = 0, 1
    else:
        rows = np.ascontiguousarray(canvas).reshape(height, width * 3)
        colour_type, channels = 2, 3
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[0, 0] = 0
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(
                b"IDAT", (zlib.compress if grey else deflate_rgb)(filtered.data, level)
            ),
            _chunk(b"IEND", b""),
        )
    )


def shapes_of(cutouts: Cutouts) -> list[tuple[int, int]]:
    """The (ny, nx) of each row of a source's cutouts."""
    if not cutouts.rows:
        raise ValueError(f"source {cutouts.source_id}: no cutouts to draw")
    return [tuple(t.shape) for t in cutouts.rows]  # type: ignore[misc]
