"""The rules of Zooniverse's classifier for subject files, written out for the tests.

Followed line by line from zooniverse/front-end-monorepo (read at commit
43a43fe11897f259c6d94bb512d46196f8c50107, ``packages/lib-classifier/src``):

- ``store/JSONData/index.js``: a subject's JSON is
  ``types.union(GeoJSON, BarChart, DataSeriesPlot, VariableStarPlots,
  TESSLightCurve)``; mobx-state-tree's union takes the first member whose
  snapshot is valid (``hooks/useSubjectJSON.js`` then picks the chart by that
  type's name, and falls back to the raw JSON when none matches).
- ``store/JSONData/DataSeriesPlot.js``, ``TESSLightCurve.js``,
  ``BarChart.js``, ``GeoJSON.js``, ``VariableStarPlots.js``: the models.
- ``store/subjects/Subject/SubjectLocation/SubjectLocation.js``: the content
  types a location may have and the file endings each allows.
- ``components/.../ScatterPlotViewer/README.md``: "Each label must be unique".

mobx-state-tree semantics used here: ``types.number`` is any JSON number (not
a boolean), ``types.maybe(T)`` and ``types.optional(T, d)`` accept a missing
key but not ``null``, ``types.model`` ignores keys it does not declare, and a
``types.refinement`` adds its predicate.  JSON is parsed strictly: ``NaN`` and
``Infinity`` are not JSON (the browser's ``response.json()`` refuses them).

Cross-checked by hand on 2026-12-03: the model files above, run by node with
mobx-state-tree 5.4.2 (the classifier's pin, ``~5.4.0``), gave the same model
as `json_data_type` for all 680 files tried: every chart JSON the tests'
data sets and edge cases make, in both modes, and twelve made to fail or
pass (an empty ``data``, a ``null`` error, an unknown glyph, a string ``y``,
the single-series and bar-chart shapes...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "CLASSIFIER_FILE_EXTENSIONS",
    "GLYPHS",
    "json_data_type",
    "location_error",
    "parse_strict",
    "series_plot_errors",
]

Check = Callable[[Any, bool], bool]  # (value, present) -> valid

#: SubjectLocation.js ``fileExtensions``: content type -> allowed endings.
CLASSIFIER_FILE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "application/json": (".json",),
    "audio/mp3": (".mp3",),
    "audio/m4a": (".m4a",),
    "audio/mpeg": (".mp3", ".mpga"),
    "audio/wav": (".wav",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "text/plain": (".txt",),
    "video/mp4": (".mp4",),
    "video/mpeg": (".mpeg",),
    "video/x-m4v": (".m4v",),
}


def location_error(mime: str, name: str) -> str | None:
    """Why the classifier's SubjectLocation refuses ``{mime: name}`` (None: it takes it)."""
    endings = CLASSIFIER_FILE_EXTENSIONS.get(mime)
    if endings is None:
        return f"{mime} is not one of the classifier's location types"
    if not name.lower().endswith(endings):
        return f"{name} does not end in {' or '.join(endings)} as {mime} must"
    return None


def parse_strict(data: bytes | str) -> Any:
    """JSON as a browser parses it: NaN, Infinity and -Infinity are errors."""

    def refuse(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    return json.loads(data, parse_constant=refuse)


# -- mobx-state-tree types --------------------------------------------------------


def _number(v: Any, present: bool) -> bool:
    return present and isinstance(v, int | float) and not isinstance(v, bool)


def _string(v: Any, present: bool) -> bool:
    return present and isinstance(v, str)


def _boolean(v: Any, present: bool) -> bool:
    return present and isinstance(v, bool)


def _frozen(v: Any, present: bool) -> bool:
    return present  # types.frozen(): any serialisable value


def _maybe(t: Check) -> Check:
    return lambda v, present: (not present) or t(v, True)


_optional = _maybe  # the default fills a missing key; null is still invalid


def _literal(value: Any) -> Check:
    return lambda v, present: present and v == value


def _enumeration(*names: str) -> Check:
    return lambda v, present: present and isinstance(v, str) and v in names


def _array(t: Check) -> Check:
    return lambda v, present: (
        present and isinstance(v, list) and all(t(x, True) for x in v)
    )


def _map(t: Check) -> Check:
    return lambda v, present: (
        present and isinstance(v, dict) and all(t(x, True) for x in v.values())
    )


def _refinement(t: Check, predicate: Callable[[Any], bool]) -> Check:
    return lambda v, present: t(v, present) and predicate(v)


def _model(**props: Check) -> Check:
    def check(v: Any, present: bool) -> bool:
        if not present or not isinstance(v, dict):
            return False
        return all(t(v.get(k), k in v) for k, t in props.items())

    return check


def _union(*types: Check) -> Check:
    return lambda v, present: any(t(v, present) for t in types)


# -- store/JSONData ------------------------------------------------------------------

_CSSBox = _model(bottom=_number, left=_number, right=_number, top=_number)

# TESSLightCurve.js
_coordinates = _refinement(_array(_number), lambda v: len(v) > 0)
TESS_LIGHT_CURVE = _model(x=_coordinates, y=_coordinates)

# DataSeriesPlot.js
_InvertAxes = _model(x=_optional(_boolean), y=_optional(_boolean))
_ZoomConfiguration = _model(
    direction=_optional(_enumeration("both", "x", "y")),
    minZoom=_optional(_number),
    maxZoom=_optional(_number),
    zoomInValue=_optional(_number),
    zoomOutValue=_optional(_number),
)
_ChartOptions = _model(
    color=_maybe(_string),
    xAxisLabel=_string,
    xAxisLabelOffset=_maybe(_number),
    yAxisLabel=_string,
    yAxisLabelOffset=_maybe(_number),
    invertAxes=_maybe(_InvertAxes),
    margin=_maybe(_CSSBox),
    padding=_maybe(_CSSBox),
    zoomConfiguration=_maybe(_ZoomConfiguration),
)
_DataPoint = _model(
    x=_number, y=_number, x_error=_maybe(_number), y_error=_maybe(_number)
)
#: The glyphs of DataSeriesPlot.js ``SeriesOptions.glyph``.
GLYPHS = ("circle", "cross", "diamond", "square", "star", "triangle", "wye")
_SeriesOptions = _model(
    glyph=_maybe(_enumeration(*GLYPHS)),
    label=_string,
    color=_maybe(_string),
    pointSize=_maybe(_union(_number, _enumeration("small", "medium", "large"))),
    period=_maybe(_number),
)
_DataSeries = _model(
    seriesData=_array(_DataPoint), seriesOptions=_maybe(_SeriesOptions)
)
_ChartData = _refinement(_array(_DataSeries), lambda v: len(v) > 0)
DATA_SERIES_PLOT = _model(
    data=_union(_ChartData, TESS_LIGHT_CURVE), chartOptions=_maybe(_ChartOptions)
)

# BarChart.js
_BarChartOptions = _model(
    xAxisLabel=_string,
    xAxisLabelOffset=_optional(_number),
    yAxisLabel=_string,
    yAxisLabelOffset=_optional(_number),
    margin=_maybe(_CSSBox),
    padding=_maybe(_CSSBox),
)
_BarValues = _model(color=_maybe(_string), label=_string, value=_number)
BAR_CHART = _model(
    data=_refinement(_array(_BarValues), lambda v: len(v) > 0),
    chartOptions=_maybe(_BarChartOptions),
)

# GeoJSON.js
_Geometry = _model(
    type=_enumeration(
        "Point",
        "LineString",
        "LinearRing",
        "Polygon",
        "MultiPoint",
        "MultiLineString",
        "MultiPolygon",
        "GeometryCollection",
        "Circle",
    ),
    coordinates=_frozen,
)
_Feature = _model(
    type=_literal("Feature"), geometry=_Geometry, properties=_maybe(_frozen)
)
GEOJSON = _model(
    type=_literal("FeatureCollection"),
    bbox=_maybe(_frozen),
    features=_array(_Feature),
    reference_data=_maybe(_frozen),
)

# VariableStarPlots.js
VARIABLE_STAR_PLOTS = _model(
    data=_model(scatterPlot=DATA_SERIES_PLOT, barCharts=_map(BAR_CHART))
)

#: index.js: the union, in its order.
JSON_DATA_UNION: tuple[tuple[str, Check], ...] = (
    ("GeoJSON", GEOJSON),
    ("BarChart", BAR_CHART),
    ("DataSeriesPlot", DATA_SERIES_PLOT),
    ("VariableStarPlots", VARIABLE_STAR_PLOTS),
    ("TESSLightCurve", TESS_LIGHT_CURVE),
)


def json_data_type(body: Any) -> str | None:
    """The JSONData model the classifier reads ``body`` as (None: raw JSON only)."""
    for name, check in JSON_DATA_UNION:
        if check(body, True):
            return name
    return None


_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def series_plot_errors(body: Any) -> list[str]:
    """What keeps ``body`` from being drawn as a multi-series DataSeriesPlot.

    Empty when the classifier reads it as ``DataSeriesPlot`` with a list of
    series whose labels are unique and whose colours are hex colours.
    """
    kind = json_data_type(body)
    if kind != "DataSeriesPlot":
        return [f"the classifier reads it as {kind or 'raw JSON'}, not DataSeriesPlot"]
    errors = []
    if not isinstance(body["data"], list):
        errors.append("data is the single-series form, not a list of series")
        return errors
    labels = [s.get("seriesOptions", {}).get("label") for s in body["data"]]
    if None in labels:
        errors.append("a series has no label")
    if len(set(labels)) != len(labels):
        errors.append(f"series labels repeat: {labels}")
    for s in body["data"]:
        colour = s.get("seriesOptions", {}).get("color")
        if colour is not None and not _HEX.fullmatch(colour):
            errors.append(f"colour {colour!r} is not #RRGGBB")
    return errors
