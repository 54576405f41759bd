"""The JSON of Zooniverse's data-series chart, from a `LightCurve`.

The format is the classifier's ``DataSeriesPlot`` (zooniverse/front-end-monorepo,
``packages/lib-classifier/src/store/JSONData/DataSeriesPlot.js``), drawn by
the ``dataImage`` viewer beside the subject's images (and by ``scatterPlot``
alone, and by Talk)::

    {"data": [{"seriesData": [{"x": ..., "y": ..., "y_error": ...}, ...],
               "seriesOptions": {"label": ..., "color": ..., "glyph": ...,
                                 "pointSize": ...}},
              ...],
     "chartOptions": {"xAxisLabel": ..., "yAxisLabel": ...,
                      "invertAxes": {"x": false, "y": ...}}}

The series, colours, glyphs and unit are those of
`zooprep.lightcurves.light_curve_plot`, which the PNG light curve draws too.
The model needs at least one series, so a curve without a finite point has
no JSON (`scatter_plot_json` gives None).
"""

from __future__ import annotations

import json
import math

from zooprep.lightcurves import VIEWER_X_LABEL, LightCurve, light_curve_plot

__all__ = ["scatter_plot_json"]


def _number(value: float, digits: int) -> float:
    """A finite value rounded for the file (``-0.0`` written as ``0.0``)."""
    return round(float(value), digits) + 0.0


def scatter_plot_json(curve: LightCurve, mode: str = "flux") -> bytes | None:
    """The classifier's chart JSON of ``curve``, or None when it has no point.

    One series per band and kind of point, and one for the classified
    source's own point (see `~zooprep.lightcurves.light_curve_plot`).  ``x``
    is days since the first detection (the axis title is just "Days": a
    longer one is cut off by the chart), ``y`` the flux in the unit the axis
    title names (nJy, µJy, mJy or Jy, so ticks have at most three digits
    before the point; three significant digits) or the AB magnitude (to
    0.01), with the y axis inverted
    (``chartOptions.invertAxes.y``) so that brighter is up; ``y_error`` is
    given when known.  Every number is finite, as JSON requires.
    """
    shown = light_curve_plot(curve, mode)
    if not shown.points:
        return None
    digits = shown.digits
    data = []
    for s in shown.series:
        points = []
        for x, y, e in zip(s.x, s.y, s.err, strict=True):
            point = {"x": _number(x, 5), "y": _number(y, digits)}
            if math.isfinite(float(e)):
                point["y_error"] = _number(e, digits)
            points.append(point)
        data.append(
            {
                "seriesData": points,
                "seriesOptions": {
                    "label": s.label,
                    "color": s.colour,
                    "glyph": s.glyph,
                    "pointSize": s.size,
                },
            }
        )
    body = {
        "data": data,
        "chartOptions": {
            "xAxisLabel": VIEWER_X_LABEL,
            "yAxisLabel": shown.viewer_y_label,
            "invertAxes": {"x": False, "y": shown.inverted},
        },
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
