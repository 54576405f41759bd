"""The JSON of Zooniverse's scatter-plot / light-curve viewer, from a `LightCurve`.

The format is that of the front end's ``ScatterPlotViewer``
(zooniverse/front-end-monorepo, ``lib-classifier`` ``ScatterPlotViewer``
README)::

    {"data": [{"seriesData": [{"x": ..., "y": ..., "y_error": ...}, ...],
               "seriesOptions": {"color": ..., "glyph": ..., "label": ...}},
              ...],
     "chartOptions": {"xAxisLabel": ..., "yAxisLabel": ...}}

one series per band and kind of point.  In a subject it must follow a PNG
(the viewer needs one; it is the Talk thumbnail).
"""

from __future__ import annotations

import json
import math

import numpy as np

from zooprep.lightcurves import DETECTION, FORCED, LIMIT, LightCurve, style

__all__ = ["scatter_plot_json"]


def scatter_plot_json(curve: LightCurve, mode: str = "flux") -> bytes:
    """The scatter-plot / light-curve viewer JSON, one series per band and kind.

    Detections of a band are one series (``label`` the band), forced
    photometry another (``"<band> forced"``) and limits a third
    (``"<band> limit"``, triangles).  ``x`` is days since the first
    detection, ``y`` flux in nJy or AB magnitude, ``y_error`` the error when
    known.
    """
    days, y, err = curve.values(mode)
    kinds = curve.mag_kinds() if mode == "mag" else curve.kind
    series = []
    for n, band in enumerate(curve.bands()):
        colour, glyph = style(band, n)
        for kind, suffix, shape in (
            (DETECTION, "", glyph),
            (FORCED, " forced", glyph),
            (LIMIT, " limit", "triangle"),
        ):
            pick = (curve.band == band) & (kinds == kind) & np.isfinite(y)
            if not pick.any():
                continue
            points = []
            for d, v, e in zip(days[pick], y[pick], err[pick], strict=True):
                point: dict[str, float] = {
                    "x": round(float(d), 5),
                    "y": round(float(v), 4),
                }
                if kind != LIMIT and math.isfinite(float(e)):
                    point["y_error"] = round(float(e), 4)
                points.append(point)
            series.append(
                {
                    "seriesData": points,
                    "seriesOptions": {
                        "color": colour,
                        "glyph": shape,
                        "label": band + suffix,
                    },
                }
            )
    body = {
        "data": series,
        "chartOptions": {
            "xAxisLabel": "Days since first detection",
            "yAxisLabel": "AB magnitude" if mode == "mag" else "Flux (nJy)",
        },
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
