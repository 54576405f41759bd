"""The plain picture: template | science | difference, one row per size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from zooprep.images.base import Cutouts, Triplet
from zooprep.renderers import _draw
from zooprep.renderers.scaling import (
    STRETCHES,
    colorize,
    colormap_lut,
    minmax_asinh,
    parse_color,
)

__all__ = ["PlainRenderer"]

TITLES = ("Template", "Science", "Difference")
#: File-name words of the frames, in their fixed order within one size.
FRAME_NAMES = ("template", "science", "difference")
#: Cached title canvases kept per renderer (distinct cutout shapes are few).
_MAX_BASES = 64


class PlainRenderer:
    """Template, science and difference side by side, as in the seed.

    Template and science are shown with a min/max interval and an asinh
    stretch (a=0.1); the difference with a zscale interval and a linear
    stretch (or ``difference_stretch='asinh-central'``).  Each cutout pixel
    becomes a ``scale`` x ``scale`` block (nearest neighbour), row 0 of the
    array at the bottom; pixels without data are drawn in ``nan_color``.
    With several sizes, each size is one row of three panels, all panels as
    wide as the widest row needs.

    Parameters
    ----------
    cmap : str, optional
        A matplotlib colour map name (``gray``; the seed uses ``bone``).
    scale : int or None, optional
        Screen pixels per cutout pixel; None picks ``round(200 / n)`` (at least
        1) for a cutout ``n`` pixels wide, so that a panel is about 200 pixels.
    nan_color : str, optional
        Colour of pixels with no data (matplotlib colour name or ``#rrggbb``).
    difference_stretch : {'zscale', 'asinh-central'}, optional
        Normalisation of the difference panel.

    Raises
    ------
    ValueError
        For an unknown colour map, colour, stretch or a scale below 1.
    """

    def __init__(
        self,
        cmap: str = "gray",
        scale: int | None = None,
        nan_color: str = "#ff00ff",
        difference_stretch: str = "zscale",
    ) -> None:
        if difference_stretch not in ("zscale", "asinh-central"):
            raise ValueError(
                f"difference_stretch must be 'zscale' or 'asinh-central', "
                f"not {difference_stretch!r}"
            )
        if scale is not None and int(scale) < 1:
            raise ValueError(f"scale must be at least 1, not {scale!r}")
        self.cmap = cmap
        self.scale = None if scale is None else int(scale)
        self.nan_color = nan_color
        self.difference_stretch = difference_stretch
        # Fail early (in the parent process) on a bad colour map or colour.
        colormap_lut(cmap)
        self._nan_rgb = parse_color(nan_color)
        self._reset_caches()

    def _reset_caches(self) -> None:
        """Forget lazily built fonts, glyphs, colour table and canvases."""
        self._typesetter_: _draw.Typesetter | None = None
        self._lut_: np.ndarray | None = None
        self._bases: dict[Any, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_typesetter_", "_lut_", "_bases"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cmap={self.cmap!r}, scale={self.scale!r}, "
            f"nan_color={self.nan_color!r}, "
            f"difference_stretch={self.difference_stretch!r})"
        )

    @property
    def _typesetter(self) -> _draw.Typesetter:
        """Fonts and glyph masks, built on first use."""
        if self._typesetter_ is None:
            self._typesetter_ = _draw.Typesetter()
        return self._typesetter_

    @property
    def _lut(self) -> np.ndarray:
        """The colour map as a lookup table, built on first use."""
        if self._lut_ is None:
            self._lut_ = colormap_lut(self.cmap)
        return self._lut_

    @property
    def _grey_lut(self) -> bool:
        """Whether every colour of the colour map is a grey (r == g == b)."""
        lut = self._lut
        return bool((lut == lut[:, :1]).all())

    @property
    def _grey_nan(self) -> bool:
        """Whether the no-data colour is a grey."""
        r, g, b = self._nan_rgb
        return r == g == b

    def _base(
        self, key: Any, layout: _draw.Layout, titles: tuple[str, ...]
    ) -> np.ndarray:
        """A copy of the cached background (white + titles) for ``key``."""
        base = self._bases.get(key)
        if base is None:
            if len(self._bases) >= _MAX_BASES:
                self._bases.clear()
            base = self._new_base(layout, titles)
            self._bases[key] = base
        return base.copy()

    def _new_base(self, layout: _draw.Layout, titles: tuple[str, ...]) -> np.ndarray:
        """A new background: white with the panel titles."""
        return _draw.base_canvas(layout, titles, self._typesetter)

    def normalize(self, triplet: Triplet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three normalised panels (values in [0, 1], NaN = no data).

        Parameters
        ----------
        triplet : `~zooprep.images.Triplet`
            Cutouts of one size.

        Returns
        -------
        tuple of `~numpy.ndarray`
            Template, science, difference, each computed once.
        """
        diff = STRETCHES[self.difference_stretch]
        return (
            minmax_asinh(triplet.template),
            minmax_asinh(triplet.science),
            diff(triplet.difference),
        )

    def _draw_panels(
        self, canvas: np.ndarray, layout: _draw.Layout, cutouts: Cutouts
    ) -> bool:
        """Paste every row's three coloured panels; True if all pixels are grey."""
        lut = self._lut
        grey = self._grey_lut
        for row, triplet in zip(layout.rows, cutouts.rows, strict=True):
            for x, normed in zip(layout.panel_x, self.normalize(triplet), strict=True):
                rgb = colorize(normed, lut, self._nan_rgb)
                if grey and not self._grey_nan and not np.isfinite(normed).all():
                    grey = False
                _draw.paste_panel(canvas, rgb, x, row, layout.panel_width)
        return grey

    def render(self, cutouts: Cutouts, row: Mapping[str, Any]) -> bytes:
        """Draw one source's cutouts as PNG bytes.

        Parameters
        ----------
        cutouts : `~zooprep.images.Cutouts`
            One triplet per size.
        row : mapping
            The source's catalogue row (unused by the plain picture).

        Returns
        -------
        bytes
            The PNG file, identical for identical input.

        Raises
        ------
        ValueError
            When ``cutouts`` has no rows.
        """
        shapes = _draw.shapes_of(cutouts)
        key = tuple(shapes)
        layout = _draw.make_layout(shapes, self.scale)
        canvas = self._base(key, layout, TITLES)
        # Titles are black on white: a grey colour map gives a grey picture.
        grey = self._draw_panels(canvas, layout, cutouts)
        return _draw.encode_png(canvas, grey=grey)

    def frame_layout(self, cutouts: Cutouts) -> _draw.Layout:
        """The triplet's layout, whose panel boxes the frames reuse."""
        return _draw.make_layout(_draw.shapes_of(cutouts), self.scale)

    def _frame_canvases(
        self, cutouts: Cutouts, layout: _draw.Layout, top: int
    ) -> list[tuple[np.ndarray, _draw.PanelRow, bool]]:
        """One white canvas per frame with its coloured panel pasted at ``top``.

        Every frame of a source has the same pixel size: the panel width by
        the tallest row's height (plus ``top``); a shorter panel sits at the
        top, white below.  The flag says whether the frame is all grey.
        """
        lut = self._lut
        grey_lut = self._grey_lut
        height = top + max(r.height for r in layout.rows)
        out = []
        for row, triplet in zip(layout.rows, cutouts.rows, strict=True):
            frame_row = _draw.PanelRow(top=top, height=row.height, ny=row.ny, nx=row.nx)
            for normed in self.normalize(triplet):
                canvas = np.full((height, layout.panel_width, 3), 255, dtype=np.uint8)
                rgb = colorize(normed, lut, self._nan_rgb)
                _draw.paste_panel(canvas, rgb, 0, frame_row, layout.panel_width)
                grey = grey_lut and (self._grey_nan or bool(np.isfinite(normed).all()))
                out.append((canvas, frame_row, grey))
        return out

    def render_frames(self, cutouts: Cutouts, row: Mapping[str, Any]) -> list[bytes]:
        """Draw each panel of the triplet as its own PNG (a flipbook's frames).

        The frames are, in this order, template, science and difference of
        the first size, then of the next size, and so on.  Each frame is the
        triplet's panel pixel for pixel (same stretch, same upscaling), and
        all frames of a source have the same pixel size.

        Parameters
        ----------
        cutouts : `~zooprep.images.Cutouts`
            One triplet per size.
        row : mapping
            The source's catalogue row (unused by plain frames).

        Returns
        -------
        list of bytes
            ``3 * len(cutouts.rows)`` PNG files.
        """
        layout = self.frame_layout(cutouts)
        return [
            _draw.encode_png(canvas, grey=grey)
            for canvas, _, grey in self._frame_canvases(cutouts, layout, 0)
        ]
