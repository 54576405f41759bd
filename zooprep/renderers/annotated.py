"""The annotated picture: the seed's metadata block above the panels.

Five text rows (ids, position, fluxes, flags, reliability) over the plain
picture's panels, and a 1-arcsec scale bar in each panel.  What is written
where is decided by the pure function `annotation_items`, so it can be
checked without looking at pixels; `flag_labels` is the flag part of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from zooprep.images.base import Cutouts
from zooprep.photometry import njy_to_mag
from zooprep.renderers import _draw
from zooprep.renderers.plain import TITLES, PlainRenderer
from zooprep.renderers.scaling import parse_color
from zooprep.vocabulary import finite_number

__all__ = [
    "FLAG_RULES",
    "MEASUREMENT_RULES",
    "AnnotatedRenderer",
    "TextItem",
    "annotation_items",
    "flag_labels",
]

GREY = "grey"
BLACK = "black"
RB_GOOD = "#4daf4a"
RB_BAD = "#e41a1c"
#: Number of text rows above the panels.
TEXT_LINES = 5


#: Width of one digit as a fraction of the text block (DejaVu Sans digits are
#: 0.636 em; 14 px text in a 640 px block).
DIGIT_WIDTH = 0.014


@dataclass(frozen=True)
class TextItem:
    """One piece of text of the annotation.

    Parameters
    ----------
    line : int
        Text row, 0 (top) to 4.
    x : float
        Position as a fraction of the text block's width (the seed's figure
        fractions).
    text : str
        What is written.
    color : str
        A matplotlib colour (``grey`` labels, ``black`` values, flag colours).
    bold : bool
        Bold face (instrument, flags, reliability).
    align : {'left', 'right'}
        Which end of the text sits at ``x``.
    static : bool
        True for labels that every picture has, at the same place and colour.
    """

    line: int
    x: float
    text: str
    color: str = BLACK
    bold: bool = False
    align: Literal["left", "right"] = "left"
    static: bool = False


#: Flag labels: (label, text row, x, colour, columns; any true column shows it).
FLAG_RULES: tuple[tuple[str, int, float, str, tuple[str, ...]], ...] = (
    ("EDGE", 2, 0.55, "goldenrod", ("pixelFlags_edge",)),
    ("INTERP", 2, 0.62, "green",
     ("pixelFlags_interpolated", "pixelFlags_interpolatedCenter")),
    ("SAT", 2, 0.72, "green", ("pixelFlags_saturated", "pixelFlags_saturatedCenter")),
    ("CR", 2, 0.77, "magenta", ("pixelFlags_cr", "pixelFlags_crCenter")),
    ("BAD", 2, 0.81, "red", ("pixelFlags_bad",)),
    ("DIPOLE", 2, 0.87, "indigo", ("isDipole",)),
    ("SUS", 3, 0.55, "goldenrod", ("pixelFlags_suspect", "pixelFlags_suspectCenter")),
    ("CENTROID", 3, 0.60, "red", ("centroid_flag", "slot_Centroid_flag")),
    ("CEN+", 3, 0.73, "chocolate", ("slot_Centroid_pos_flag",)),
    ("CEN-", 3, 0.80, "blue", ("slot_Centroid_neg_flag",)),
    ("SHAPE", 3, 0.87, "red",
     ("shape_flag", "shape_flag_no_pixels", "shape_flag_not_contained",
      "shape_flag_parent_source")),
)  # fmt: skip

#: Flux rows: (label, text row, flux column, error column, flag columns).
MEASUREMENT_RULES: tuple[tuple[str, int, str, str, tuple[str, ...]], ...] = (
    ("PSF (nJy):", 2, "psfFlux", "psfFluxErr",
     ("psfFlux_flag", "psfFlux_flag_noGoodPixels", "psfFlux_flag_edge")),
    ("ap (nJy):", 3, "apFlux", "apFluxErr",
     ("apFlux_flag", "apFlux_flag_apertureTruncated")),
    ("total (nJy):", 4, "scienceFlux", "scienceFluxErr",
     ("forced_PsfFlux_flag", "forced_PsfFlux_flag_noGoodPixels",
      "forced_PsfFlux_flag_edge")),
)  # fmt: skip

_TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y"})


def _is_set(value: Any) -> bool:
    """Whether a flag value counts as set (None, NaN, 0, False, '' do not)."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    try:
        if isinstance(value, float | np.floating) and math.isnan(value):
            return False
        return bool(value)
    except (TypeError, ValueError):
        return False


def _any_set(row: Mapping[str, Any], columns: Sequence[str]) -> bool:
    """True when any of ``columns`` is set in ``row`` (missing counts as unset)."""
    return any(_is_set(row.get(c)) for c in columns)


def _integer_text(value: Any) -> str:
    """An id or count written as an exact integer ('' when missing)."""
    if value is None or isinstance(value, bool | np.bool_):
        return ""
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        return text if text.lstrip("+-").isdigit() else ""
    if isinstance(value, float | np.floating) and math.isfinite(value):
        # Already a float upstream: print what is there, without exponent.
        return f"{value:.0f}"
    return ""


def _text(value: Any) -> str:
    """A short string field ('' when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def _fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or '' for a missing value."""
    return "" if value is None else format(value, spec)


def flag_labels(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The flag labels drawn for a source, with their colours.

    Parameters
    ----------
    row : mapping
        The source's columns (Rubin APDB ``DiaSource`` names).

    Returns
    -------
    list of (str, str)
        ``(label, colour)`` for every flag label shown, in drawing order, then
        the reliability label (``RB:0.682``) when ``reliability`` is a number.
    """
    labels = [
        (label, color)
        for label, _, _, color, columns in FLAG_RULES
        if _any_set(row, columns)
    ]
    reliability = finite_number(row.get("reliability"))
    if reliability is not None:
        labels.append(
            (f"RB:{reliability:.3f}", RB_GOOD if reliability >= 0.5 else RB_BAD)
        )
    return labels


def annotation_items(
    row: Mapping[str, Any], instrument: str | None = None
) -> list[TextItem]:
    """Everything the annotation writes for one source, and where.

    Parameters
    ----------
    row : mapping
        The source's columns, Rubin APDB ``DiaSource`` names (``diaSourceId``,
        ``visit``, ``detector``, ``band``, ``ra``, ``dec``, ``snr``,
        ``psfFlux``/``psfFluxErr``, ``apFlux``/``apFluxErr``,
        ``scienceFlux``/``scienceFluxErr``, ``psfChi2``, ``psfNdata``,
        ``reliability``, flag columns) plus ``instrument``.  Missing, None or
        NaN values leave their field empty.
    instrument : str or None, optional
        Instrument name used when the row has none.

    Returns
    -------
    list of TextItem
        Labels (grey, or red for flagged measurements), values (black) and
        flag labels (bold, coloured), with the seed's formats: ra ``.8f``,
        dec ``+.8f``, detection S/N ``6.1f``, PSF chi2 (psfChi2 / psfNdata)
        ``6.2f``, fluxes ``8.1f``, S/N ``6.2f``, ABmag (of scienceFlux in nJy,
        `~zooprep.photometry.njy_to_mag`, positive flux only) ``.3f``,
        ``RB:`` ``.3f``.
    """
    items: list[TextItem] = []

    def label(
        line: int, x: float, text: str, color: str | None = None, moves: bool = False
    ) -> None:
        # Labels whose colour and place never change are static (drawn once
        # into a cached background); flux labels and moving labels are not.
        static = color is None and not moves
        items.append(TextItem(line, x, text, color or GREY, static=static))

    def value(line: int, x: float, text: str, **kw: Any) -> None:
        if text.strip():
            items.append(TextItem(line, x, text, **kw))

    # Row 1: ids.
    label(0, 0.0, "diaSourceId:")
    value(0, 0.145, _integer_text(row.get("diaSourceId")))
    name = _text(row.get("instrument")) or _text(instrument)
    value(0, 0.43, name, bold=True)
    # The seed leaves room for 6-digit visits; longer ones (Rubin's have 13
    # digits) move the detector and visit fields left so the band stays clear.
    visit = _integer_text(row.get("visit"))
    band = _text(row.get("band")) or _text(row.get("filterName"))
    # A band name longer than the seed's one letter (F200W, HSC-R2) ends at
    # the right edge of the text block, and pushes the fields before it left.
    long_band = len(band) > 2
    shift = max(0, len(visit) - 6) * DIGIT_WIDTH
    if long_band:
        shift += (len(band) - 1) * DIGIT_WIDTH
    # the detector field gives up some of its spare room before it moves
    near = max(0.0, shift - 0.01)
    label(0, 0.64 - near, "detector:", moves=True)
    value(0, 0.74 - near, _integer_text(row.get("detector")))
    label(0, 0.795 - shift, "visit:", moves=True)
    value(0, 0.85 - shift, visit)
    if long_band:
        value(0, 1.0, band, align="right")
    else:
        value(0, 0.95, band)

    # Row 2: position, detection S/N, reduced PSF chi2.
    label(1, 0.0, "ra:")
    value(1, 0.037, _fmt(finite_number(row.get("ra")), ".8f"))
    label(1, 0.21, "dec:")
    value(1, 0.265, _fmt(finite_number(row.get("dec")), "+.8f"))
    label(1, 0.50, "detection S/N:")
    value(1, 0.66, _fmt(finite_number(row.get("snr")), "6.1f"))
    label(1, 0.75, "PSF chi2:")
    chi2, ndata = finite_number(row.get("psfChi2")), finite_number(row.get("psfNdata"))
    value(1, 0.85, _fmt(chi2 / ndata if chi2 is not None and ndata else None, "6.2f"))

    # Rows 3-5: fluxes with errors and S/N; labels red when flagged.
    for text, line, flux_col, err_col, flags in MEASUREMENT_RULES:
        label(line, 0.0, text, "red" if _any_set(row, flags) else "grey")
        flux, err = finite_number(row.get(flux_col)), finite_number(row.get(err_col))
        value(line, 0.25, _fmt(flux, "8.1f"), align="right")
        label(line, 0.252, "+/-")
        value(line, 0.29, _fmt(err, "8.1f"))
        label(line, 0.40, "S/N:")
        snr = abs(flux / err) if flux is not None and err else None
        value(line, 0.45, _fmt(snr, "6.2f"))

    total = finite_number(row.get("scienceFlux"))
    label(4, 0.55, "ABmag:")
    abmag = njy_to_mag(total)
    value(4, 0.635, _fmt(abmag, ".3f"))

    # Flags at fixed places; reliability.
    for text, line, x, color, columns in FLAG_RULES:
        if _any_set(row, columns):
            items.append(TextItem(line, x, text, color, bold=True))
    reliability = finite_number(row.get("reliability"))
    if reliability is not None:
        items.append(
            TextItem(
                4,
                0.73,
                f"RB:{reliability:.3f}",
                RB_GOOD if reliability >= 0.5 else RB_BAD,
                bold=True,
            )
        )
    return items


def difference_note(notes: Mapping[str, Any]) -> str:
    """``ref - sci`` (say) when the difference is not science - template, else ''.

    Read from ``notes['difference_sign']`` (e.g. ``"ref-sci"``, as ZTF stores it).
    """
    sign = _text(notes.get("difference_sign")).replace(" ", "").lower()
    if not sign or sign in ("sci-ref", "science-template"):
        return ""
    parts = sign.split("-")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]} - {parts[1]}"
    return sign


def panel_titles(notes: Mapping[str, Any]) -> tuple[str, str, str]:
    """The three panel titles, with the cutouts' notes in brackets.

    ``notes['difference_sign']`` (see `difference_note`) and
    ``notes['resampled']`` (the roles resampled onto the science pixels, e.g.
    ``"template"``; `zooprep.images.cutting`) add to the titles they concern.

    Examples
    --------
    >>> panel_titles({})
    ('Template', 'Science', 'Difference')
    >>> panel_titles({"resampled": "template", "difference_sign": "ref-sci"})
    ('Template (resampled)', 'Science', 'Difference (ref - sci)')
    """
    resampled = {r.strip() for r in _text(notes.get("resampled")).split(",")}
    extra: list[list[str]] = [[], [], []]
    for k, role in enumerate(("template", "science", "difference")):
        if role in resampled:
            extra[k].append("resampled")
    note = difference_note(notes)
    if note:
        extra[2].insert(0, note)
    a, b, c = (
        f"{title} ({', '.join(more)})" if more else title
        for title, more in zip(TITLES, extra, strict=True)
    )
    return a, b, c


class AnnotatedRenderer(PlainRenderer):
    """The plain picture under the seed's metadata block, with scale bars.

    Parameters
    ----------
    cmap, scale, nan_color, difference_stretch
        As for `PlainRenderer`.
    pixel_scale : float or None, optional
        Arcsec per pixel for the 1-arcsec bar when the cutouts carry none.
        Without either, no bar is drawn.
    instrument : str or None, optional
        Instrument name shown when the row has no ``instrument``.
    """

    def __init__(
        self,
        cmap: str = "gray",
        scale: int | None = None,
        nan_color: str = "#ff00ff",
        difference_stretch: str = "zscale",
        pixel_scale: float | None = None,
        instrument: str | None = None,
    ) -> None:
        super().__init__(cmap, scale, nan_color, difference_stretch)
        self.pixel_scale = None if pixel_scale is None else float(pixel_scale)
        self.instrument = instrument
        self._colors: dict[str, tuple[int, int, int]] = {}

    def __repr__(self) -> str:
        return (
            super().__repr__()[:-1]
            + f", pixel_scale={self.pixel_scale!r}, instrument={self.instrument!r})"
        )

    def _rgb(self, color: str) -> tuple[int, int, int]:
        """A colour name as RGB, cached."""
        rgb = self._colors.get(color)
        if rgb is None:
            rgb = self._colors[color] = parse_color(color)
        return rgb

    def _draw_item(
        self, canvas: np.ndarray, layout: _draw.Layout, item: TextItem
    ) -> None:
        """Blend one text item onto the canvas."""
        x = layout.text_left + item.x * layout.text_width
        baseline = layout.text_top + _draw.TEXT_PX - 3 + item.line * _draw.LINE_PITCH
        self._typesetter.draw(
            canvas, x, baseline, item.text, self._rgb(item.color),
            bold=item.bold, align=item.align,
        )  # fmt: skip

    def _annotated_base(
        self, shapes: list[tuple[int, int]], titles: tuple[str, str, str]
    ) -> tuple[_draw.Layout, np.ndarray]:
        """Layout and a copy of the cached background: titles and static labels."""
        layout = _draw.make_layout(shapes, self.scale, text_lines=TEXT_LINES)
        return layout, self._base((tuple(shapes), titles), layout, titles)

    def _new_base(self, layout: _draw.Layout, titles: tuple[str, ...]) -> np.ndarray:
        """A new background: white, the panel titles and the static labels."""
        base = super()._new_base(layout, titles)
        for item in annotation_items({}):
            if item.static:
                self._draw_item(base, layout, item)
        return base

    def render(self, cutouts: Cutouts, row: Mapping[str, Any]) -> bytes:
        """Draw one source's cutouts and metadata as PNG bytes.

        Parameters
        ----------
        cutouts : `~zooprep.images.Cutouts`
            One triplet per size; ``pixel_scale`` (else the renderer's) sets
            the scale bar, ``notes['difference_sign']`` adds a note such as
            ``(ref - sci)`` to the difference title, ``notes['resampled']``
            ``(resampled)`` to those images' titles, ``notes['instrument']``
            names the instrument when the row does not.
        row : mapping
            The source's catalogue row; see `annotation_items`.

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
        layout, canvas = self._annotated_base(shapes, panel_titles(cutouts.notes))
        self._draw_panels(canvas, layout, cutouts)
        pixel_scale = cutouts.pixel_scale or self.pixel_scale
        if pixel_scale:
            for panel_row in layout.rows:
                for x in layout.panel_x:
                    _draw.draw_scale_bar(
                        canvas,
                        x,
                        panel_row,
                        layout.panel_width,
                        pixel_scale,
                        self._typesetter,
                    )
        instrument = _text(cutouts.notes.get("instrument")) or self.instrument
        for item in annotation_items(row, instrument):
            if not item.static:
                self._draw_item(canvas, layout, item)
        return _draw.encode_png(canvas)

    def render_frames(self, cutouts: Cutouts, row: Mapping[str, Any]) -> list[bytes]:
        """The frames of `PlainRenderer.render_frames` with a title and a scale bar.

        Each frame gets a small title above its panel (``Template``,
        ``Science``, ``Difference``, with the size when there are several) and
        the panel's scale bar; the text block stays on the triplet.
        """
        layout = self.frame_layout(cutouts)
        title_px = max(8, min(_draw.TITLE_PX, layout.panel_width // 10))
        top = title_px + 8
        titles = panel_titles(cutouts.notes)
        pixel_scale = cutouts.pixel_scale or self.pixel_scale
        several = len(cutouts.rows) > 1
        out = []
        for n, (canvas, frame_row, _) in enumerate(
            self._frame_canvases(cutouts, layout, top)
        ):
            title = titles[n % 3]
            if several:
                title += f" {frame_row.nx}px"
            size = title_px
            while (
                size > 8
                and self._typesetter.width(title, size=size) > layout.panel_width
            ):
                size -= 1
            self._typesetter.draw(
                canvas,
                layout.panel_width / 2,
                top - 5,
                title,
                (0, 0, 0),
                size=size,
                align="center",
            )
            if pixel_scale:
                _draw.draw_scale_bar(
                    canvas,
                    0,
                    frame_row,
                    layout.panel_width,
                    pixel_scale,
                    self._typesetter,
                )
            out.append(_draw.encode_png(canvas))
        return out
