"""The obvious way to draw the same pictures: one matplotlib figure per source.

This is the reference that ``bench_render.py`` times zooprep's renderers
against, and that ``tests/test_render.py`` uses as an independent drawing of
the layout.  It follows what lsst.analysis.ap does (a fresh figure per source,
``imshow`` with astropy's ``ImageNormalize``, ``fig.text`` for each field,
two ``plot`` lines for the scale bar, ``savefig(..., bbox_inches='tight')``),
written here from scratch with ``Figure`` + Agg instead of pyplot.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import astropy.visualization as aviz
import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from zooprep.images.base import Cutouts
from zooprep.renderers.annotated import annotation_items

TITLES = ("Template", "Science", "Difference")


def _norm(data, kind: str) -> aviz.ImageNormalize:
    if kind == "difference":
        return aviz.ImageNormalize(
            data,
            interval=aviz.ZScaleInterval(),
            stretch=aviz.LinearStretch(),
            clip=True,
        )
    return aviz.ImageNormalize(
        data,
        interval=aviz.MinMaxInterval(),
        stretch=aviz.AsinhStretch(a=0.1),
        clip=True,
    )


def render_mpl(
    cutouts: Cutouts,
    row: Mapping[str, Any],
    annotate: bool = False,
    cmap: str = "gray",
    nan_color: str = "#ff00ff",
    pixel_scale: float | None = None,
    instrument: str | None = None,
) -> bytes:
    """One source's picture drawn with a matplotlib figure, as PNG bytes."""
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=nan_color)
    fig = Figure()
    FigureCanvasAgg(fig)
    nrows = len(cutouts.rows)
    axs = fig.subplots(nrows, 3, squeeze=False)
    scale = cutouts.pixel_scale or pixel_scale
    for i, triplet in enumerate(cutouts.rows):
        panels = (triplet.template, triplet.science, triplet.difference)
        kinds = ("template", "science", "difference")
        for j, (data, kind) in enumerate(zip(panels, kinds, strict=True)):
            ax = axs[i][j]
            ny, nx = data.shape
            ax.imshow(
                data,
                cmap=colormap,
                norm=_norm(data, kind),
                interpolation="none",
                origin="lower",
                extent=(0, nx, 0, ny),
                aspect="equal",
            )
            if annotate and scale:
                xs = (1, 1 + 1.0 / scale)
                ax.plot(xs, (1, 1), color="blue", lw=6)
                ax.plot(xs, (1, 1), color="yellow", lw=2)
            ax.axis("off")
            if i == 0:
                ax.set_title(TITLES[j])
    fig.tight_layout()
    if annotate:
        heights = (
            (0.95, 0.91, 0.87, 0.83, 0.79)
            if nrows == 1
            else (1.2, 1.15, 1.1, 1.05, 1.0)
        )
        name = row.get("instrument") or cutouts.notes.get("instrument") or instrument
        for item in annotation_items(row, name):
            fig.text(
                item.x,
                heights[item.line],
                item.text,
                color=item.color,
                fontweight="bold" if item.bold else "normal",
                horizontalalignment=item.align,
            )
    out = io.BytesIO()
    fig.savefig(out, format="png", bbox_inches="tight")
    return out.getvalue()
