"""Pictures: plain and annotated cutout PNGs.

`make_renderer` picks and configures a renderer from the render stage's
`~zooprep.options.RenderOptions`; both renderers follow the
`~zooprep.renderers.base.Renderer` protocol.
"""

from __future__ import annotations

from zooprep.options import RenderOptions
from zooprep.renderers.annotated import (
    AnnotatedRenderer,
    TextItem,
    annotation_items,
    flag_labels,
)
from zooprep.renderers.base import Renderer
from zooprep.renderers.plain import PlainRenderer

__all__ = [
    "AnnotatedRenderer",
    "PlainRenderer",
    "Renderer",
    "TextItem",
    "annotation_items",
    "flag_labels",
    "make_renderer",
]


def make_renderer(options: RenderOptions) -> Renderer:
    """The renderer that draws pictures as ``options`` asks.

    Parameters
    ----------
    options : `~zooprep.options.RenderOptions`
        ``annotate`` picks `AnnotatedRenderer` over `PlainRenderer`; ``cmap``,
        ``scale``, ``nan_color``, ``difference_stretch``, ``pixel_scale`` and
        ``instrument`` configure it.

    Returns
    -------
    Renderer
        A picklable renderer.

    Raises
    ------
    ValueError
        For an unknown colour map, colour or stretch, or a scale below 1.
    """
    options = options.resolved()
    if options.annotate:
        return AnnotatedRenderer(
            cmap=options.cmap,
            scale=options.scale,
            nan_color=options.nan_color,
            difference_stretch=options.difference_stretch,
            pixel_scale=options.pixel_scale,
            instrument=options.instrument,
        )
    return PlainRenderer(
        cmap=options.cmap,
        scale=options.scale,
        nan_color=options.nan_color,
        difference_stretch=options.difference_stretch,
    )
