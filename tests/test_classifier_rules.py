"""What zooprep's subjects look like in Zooniverse's classifier, rule by rule.

The rules are those of zooniverse/front-end-monorepo's ``lib-classifier``
(`tests.classifier_model` cites the files): every light-curve JSON zooprep
writes, from every data set in ``tests/data`` and from the edge cases, is a
``DataSeriesPlot`` the classifier draws; every location's content type is one
the classifier accepts; the chart's tick labels fit the margin of the
``dataImage`` viewer.
"""

from __future__ import annotations

import glob
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import ImageFont

import zooprep
from tests.classifier_model import (
    GLYPHS,
    json_data_type,
    location_error,
    parse_strict,
    series_plot_errors,
)
from tests.panoptes_standin.server import ALLOWED_MIME_TYPES
from tests.test_subjects import FlatImages
from zooprep.cli import cli
from zooprep.lightcurves import DETECTION, FORCED, LIMIT, LightCurveBuilder
from zooprep.readers.history import row_light_curve, rubin_light_curve
from zooprep.renderers._draw import font_path
from zooprep.renderers.lightcurve import png_size
from zooprep.run import Run
from zooprep.scatterplot import scatter_plot_json
from zooprep.viewers import draws, viewer_problem, viewer_to_set
from zooprep.vocabulary import CONTENT_TYPES

# -- rules of the chart as the classifier draws it ----------------------------------

#: DataImageViewer.jsx: ``yAxisLabelOffset={50}``; visx's AxisLeft puts the
#: rotated axis title at ``-(tickLength + labelOffset)`` (tickLength: visx's
#: default 8, Axis.jsx passes none) and the tick labels end at
#: ``-(tickLength + 0.25em)`` (Axis.jsx ``dx: '-0.25em'``, fontSize 12).  A
#: tick label wider than the gap runs over the title.  Widths are measured in
#: DejaVu Sans, wider than the viewer's Karla / Arial: a safe bound.
TICK_ROOM = 50 + 8 - (8 + 3) - 1  # px, less 1 px between label and title
TICK_FONT_PX = 12
#: DataImageViewer.jsx ``CHART_MARGINS.left``: the x axis' title is centred on
#: the axis' left end (Axis.jsx ``dx: -range / 2``, visx's middle anchor), so
#: half of it must fit in the margin; Axes.jsx upper-cases it, bold, with 1 px
#: letter spacing.
X_TITLE_ROOM = 2 * 70


def d3_ticks(lo: float, hi: float, count: int = 10) -> tuple[list[float], float]:
    """d3-array's ``ticks(lo, hi, count)`` and their step (ScatterPlot.jsx: 10)."""
    span = (hi - lo) / count
    power = math.floor(math.log10(span))
    error = span / 10**power
    factor = (
        10
        if error >= math.sqrt(50)
        else 5
        if error >= math.sqrt(10)
        else 2
        if error >= math.sqrt(2)
        else 1
    )
    step = factor * 10**power
    first, last = math.ceil(lo / step), math.floor(hi / step)
    return [k * step for k in range(first, last + 1)], step


def d3_tick_label(value: float, step: float) -> str:
    """d3-scale's linear ``tickFormat``: ``,.<precisionFixed(step)>f``, U+2212 minus."""
    decimals = max(0, -math.floor(math.log10(abs(step))))
    text = f"{value:,.{decimals}f}"
    if float(text.replace(",", "")) == 0:
        text = text.lstrip("-")
    return text.replace("-", "\N{MINUS SIGN}")


def y_tick_labels(body: dict[str, Any]) -> list[str]:
    """The y tick labels the classifier writes for a chart.

    utils.js ``getDataExtent``: the extent of the points' ``y`` widened by
    5 % on each side (ScatterPlot.jsx ``BUFFER_PERCENTAGE_FOR_DATA_EXTENT``).
    """
    ys = [p["y"] for s in body["data"] for p in s["seriesData"]]
    lo, hi = min(ys), max(ys)
    pad = abs(hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    if hi == lo:  # one value: d3 gives the one tick
        return [d3_tick_label(lo, 1.0)]
    ticks, step = d3_ticks(lo, hi)
    return [d3_tick_label(t, step) for t in ticks]


def check_drawn(body: dict[str, Any], mode: str) -> None:
    """Everything a volunteer relies on in one chart JSON."""
    assert series_plot_errors(body) == []
    series = body["data"]
    opts = [s["seriesOptions"] for s in series]
    # Every series its own colour-and-glyph pair; no upward triangle.
    pairs = [(o["color"], o["glyph"]) for o in opts]
    assert len(set(pairs)) == len(pairs), pairs
    assert all(o["glyph"] in GLYPHS and o["glyph"] != "triangle" for o in opts)
    # Limits and forced photometry never look like detections.
    detection = {o["glyph"] for o in opts if o["label"].split(" ")[-1] not in
                 ("limit", "forced") and not o["label"].startswith("this source")}  # fmt: skip
    for o in opts:
        if o["label"].endswith((" limit", " forced")):
            assert o["glyph"] not in detection, o
    # Bands differ by colour.
    band_colour: dict[str, str] = {}
    for o in opts:
        if not o["label"].startswith("this source"):
            band = o["label"].removesuffix(" limit").removesuffix(" forced")
            assert band_colour.setdefault(band, o["color"]) == o["color"]
    assert len(set(band_colour.values())) == len(band_colour)
    # The classified source, when it has a point, is one series of one point, last.
    mine = [o for o in opts if o["label"].startswith("this source")]
    assert len(mine) <= 1
    if mine:
        assert opts[-1] is mine[0]
        assert len(series[-1]["seriesData"]) == 1
        assert mine[0]["glyph"] not in {o["glyph"] for o in opts[:-1]}
    # Brighter is up: magnitudes invert the y axis, fluxes do not.
    assert body["chartOptions"]["invertAxes"] == {"x": False, "y": mode == "mag"}
    # Axis titles survive the viewer's upper-casing; ticks fit the margin.
    assert "µ" not in body["chartOptions"]["yAxisLabel"]
    bold = ImageFont.truetype(font_path(True), TICK_FONT_PX)
    title = body["chartOptions"]["xAxisLabel"].upper()
    assert bold.getlength(title) + len(title) <= X_TITLE_ROOM, title
    font = ImageFont.truetype(font_path(False), TICK_FONT_PX)
    for label in y_tick_labels(body):
        assert "e" not in label
        assert font.getlength(label) <= TICK_ROOM, label
    if mode == "flux":
        assert max(abs(p["y"]) for s in series for p in s["seriesData"]) < 1000


def _bodies(run: Path) -> list[bytes]:
    with Run.open(run, lock=False) as r:
        return [
            (run / f).read_bytes()
            for s in r.iter_sources(["rendered"])
            for f in s.files
            if f.endswith(".json")
        ]


# -- content types ---------------------------------------------------------------------


def test_every_content_type_zooprep_uploads_is_one_the_classifier_shows() -> None:
    for suffix, mime in CONTENT_TYPES.items():
        assert location_error(mime, f"subject{suffix}") is None, suffix
        assert mime in ALLOWED_MIME_TYPES  # and Panoptes takes it
    assert ".svg" not in CONTENT_TYPES


def test_the_model_refuses_what_the_classifier_refuses() -> None:
    """The validator itself, on the classifier's own examples and the issue's."""
    good = {
        "data": [
            {
                "seriesData": [{"x": 1.46, "y": 6.37, "x_error": 2, "y_error": 0.5}],
                "seriesOptions": {"color": "accent-1", "glyph": "circle",
                                  "label": "Filter 1", "pointSize": "large"},
            }
        ],
        "chartOptions": {"xAxisLabel": "Days", "yAxisLabel": "Brightness"},
    }  # fmt: skip
    assert json_data_type(good) == "DataSeriesPlot"
    assert json_data_type({"data": {"x": [1, 2], "y": [6, 3]}}) == "DataSeriesPlot"
    assert json_data_type({"data": []}) is None  # issue 21: raw JSON, TypeError
    bad_glyph = json.loads(json.dumps(good))
    bad_glyph["data"][0]["seriesOptions"]["glyph"] = "triangle-down"
    assert json_data_type(bad_glyph) is None
    null_error = json.loads(json.dumps(good))
    null_error["data"][0]["seriesData"][0]["y_error"] = None
    assert json_data_type(null_error) is None
    with pytest.raises(ValueError, match="NaN"):
        parse_strict('{"x": NaN}')
    assert location_error("image/svg+xml", "a.svg") is not None
    assert location_error("image/png", "a.jpg") is not None


# -- every data set in tests/data -------------------------------------------------------


@pytest.mark.parametrize("mode", ["flux", "mag"])
@pytest.mark.parametrize(
    "folder",
    [
        "ztf_alerts/ampel",
        "ztf_alerts/boom",
        "ztf_alerts/fink-client",
        "ztf_alerts/pittgoogle",
        "rubin_alerts/fink-client",
        "rubin_alerts/fink-filters-repacked",
    ],
)
def test_alert_light_curves_are_charts_the_classifier_draws(
    tmp_path: Path, test_data: Path, folder: str, mode: str
) -> None:
    packets = tmp_path / "packets"
    packets.mkdir()
    for f in sorted(glob.glob(str(test_data / folder / "*.avro"))):
        if "schema" not in f:
            (packets / Path(f).name).symlink_to(f)
    run = tmp_path / "run"
    zooprep.select(run, alerts=str(packets / "*.avro"))
    result = zooprep.render(run, lightcurve=mode, lightcurve_json=True, jobs=1)
    assert result.rendered > 0
    bodies = _bodies(run)
    assert (
        len(bodies)
        + result.notes.get("sources without a light-curve point (no light curve)", 0)
        == result.rendered
    )
    for data in bodies:
        check_drawn(parse_strict(data), mode)


@pytest.mark.parametrize("mode", ["flux", "mag"])
def test_apdb_light_curves_are_charts_the_classifier_draws(
    tmp_path: Path, apdb_sqlite: Path, mode: str
) -> None:
    run = tmp_path / "run"
    zooprep.select(run, apdb=f"sqlite:///{apdb_sqlite}", limit=60)
    result = zooprep.render(
        run, images=FlatImages(), lightcurve=mode, lightcurve_json=True, jobs=1
    )
    assert result.rendered == 60
    bodies = _bodies(run)
    assert len(bodies) == 60
    labels: set[str] = set()
    for data in bodies:
        body = parse_strict(data)
        check_drawn(body, mode)
        labels |= {s["seriesOptions"]["label"] for s in body["data"]}
    assert any(label.endswith(" forced") for label in labels)


def test_decam_catalog_sources_without_history_are_one_point_charts(
    tmp_path: Path, test_data: Path
) -> None:
    base = test_data / "decam_sfft"
    pd.DataFrame(
        {
            "diaSourceId": [1, 2, 3, 4],
            "visit": 1,
            "detector": 2,
            "band": "i",
            "midpointMjdTai": 60000.0,
            "psfFlux": [2500.0, -400.0, float("nan"), 680_000.0],
            "psfFluxErr": [100.0, 100.0, 100.0, float("nan")],
            "x": 100.0,
            "y": 120.0,
        }
    ).to_csv(tmp_path / "cat.csv", index=False)
    run = tmp_path / "run"
    zooprep.select(run, catalog=tmp_path / "cat.csv")
    images = {
        "science": str(base / "Stack-DEC-OBS04.fits"),
        "template": str(base / "Stack-DEC-OBS18.fits"),
        "difference": str(base / "FinalDifference.fits"),
    }
    result = zooprep.render(
        run, images=images, lightcurve="mag", lightcurve_json=True, jobs=1
    )
    assert result.rendered == 4
    assert result.failed == 0
    # The NaN flux has no point: no JSON, counted in the summary and in status.
    note = "sources without a light-curve point (no light curve)"
    assert result.notes[note] == 1
    assert "1 sources without a light-curve point" in str(result)
    with Run.open(run, lock=False) as r:
        files = {s.id: s.files for s in r.iter_sources(["rendered"])}
    assert [Path(f).name for f in files[3]] == ["3.png"]
    assert zooprep.status(run)["notes"] == {"no light curve (no point to draw)": 1}
    out = CliRunner().invoke(cli, ["status", str(run)])
    assert "note: 1 sources: no light curve (no point to draw)" in out.output
    for sid in (1, 2, 4):
        body = parse_strict((run / files[sid][-1]).read_bytes())
        check_drawn(body, "mag")
        # One point: the source's own; a negative flux is a limit.
        (series,) = body["data"]
        kind = " limit" if sid == 2 else ""
        assert series["seriesOptions"]["label"] == f"this source (i{kind})"


# -- edge cases ---------------------------------------------------------------------------


def _curve(
    points: list[tuple[float, float, float, str, int]], current: int = -1
) -> Any:
    b = LightCurveBuilder(7)
    for n, (t, f, e, band, kind) in enumerate(points):
        b.add(t, f, e, band, kind, current=n == current)
    return b.build(object_id=70)


NAN = float("nan")
EDGE_CASES = {
    "empty history, own point": row_light_curve(
        5, {"band": "r", "midpointMjdTai": 60000.0, "psfFlux": 1500.0,
            "psfFluxErr": 90.0}),
    "one point, no error": _curve([(60000.0, 800.0, NAN, "g", DETECTION)]),
    "negative fluxes in magnitude mode": rubin_light_curve(
        2,
        {
            "diaSource": {"diaSourceId": 2, "midpointMjdTai": 60000.0,
                          "psfFlux": -500.0, "psfFluxErr": 100.0, "band": "r"},
            "prvDiaSources": [
                {"diaSourceId": 3, "midpointMjdTai": 59990.0, "psfFlux": -20.0,
                 "psfFluxErr": 30.0, "band": "r"},
                {"diaSourceId": 4, "midpointMjdTai": 59980.0, "psfFlux": 900.0,
                 "psfFluxErr": 50.0, "band": "g"},
            ],
            "prvDiaForcedSources": [
                {"midpointMjdTai": 59970.0, "psfFlux": -60.0, "psfFluxErr": NAN,
                 "band": "g"},
            ],
        },
    ),
    "many bands": _curve(
        [(60000.0 + n, 1000.0 * (n + 1), 50.0, band, DETECTION)
         for n, band in enumerate(
             ["u", "g", "r", "i", "z", "y", "VR", "N708", "Y", "w", "B", "V",
              "R", "I", "J", "H", "K", "L", "M"])]
        + [(60100.0, 300.0, NAN, "i", LIMIT), (60101.0, 200.0, 40.0, "i", FORCED)],
        current=3,
    ),
    "forced photometry only": _curve(
        [(60000.0 + n, 100.0 - 40 * n, 30.0, "z", FORCED) for n in range(5)]
    ),
    "limits only, bright limiting flux": _curve(
        [(60000.0, 680_000.0, NAN, "r", LIMIT), (60001.0, 650_000.0, NAN, "r", LIMIT)]
    ),
    "bright source in Jy range": _curve(
        [(60000.0, 3.2e9, 1e7, "g", DETECTION), (60002.0, 2.9e9, 1e7, "g", DETECTION)],
        current=1,
    ),
    "tiny flux changes": _curve(
        [(60000.0 + n, 850.0 + 0.01 * n, 0.1, "r", DETECTION) for n in range(6)],
        current=0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["flux", "mag"])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_case_light_curves_are_charts_the_classifier_draws(
    case: str, mode: str
) -> None:
    curve = EDGE_CASES[case]
    data = scatter_plot_json(curve, mode)
    if data is None:  # nothing finite to draw (e.g. negative limits in mag)
        _, y, _ = curve.values(mode)
        assert not np.isfinite(y).any()
        return
    check_drawn(parse_strict(data), mode)


def test_all_nan_history_has_no_chart_at_all() -> None:
    curve = _curve([(60000.0, NAN, 1.0, "r", DETECTION), (NAN, 5.0, 1.0, "r", FORCED)])
    assert curve.dropped == 2
    for mode in ("flux", "mag"):
        assert scatter_plot_json(curve, mode) is None


def test_magnitude_charts_put_brighter_points_higher() -> None:
    curve = EDGE_CASES["many bands"]
    body = parse_strict(scatter_plot_json(curve, "mag") or b"")
    assert body["chartOptions"]["invertAxes"]["y"] is True
    u = body["data"][0]["seriesData"][0]["y"]
    g = body["data"][1]["seriesData"][0]["y"]
    assert g < u  # g is twice as bright: a smaller magnitude, drawn higher


def test_limits_and_forced_points_are_drawn_at_their_values_not_as_flares() -> None:
    curve = EDGE_CASES["limits only, bright limiting flux"]
    body = parse_strict(scatter_plot_json(curve, "flux") or b"")
    (limits,) = body["data"]
    assert limits["seriesOptions"]["glyph"] == "wye"  # stem down
    assert body["chartOptions"]["yAxisLabel"] == "Flux (microjansky)"
    assert [p["y"] for p in limits["seriesData"]] == [680.0, 650.0]
    assert all("y_error" not in p for p in limits["seriesData"])


# -- the README's table of subject kinds is what render writes ------------------------


def _subject_kind_rows() -> list[dict[str, str]]:
    """The rows of the README's subject-kind table, by column title."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("### Subjects of several files: frames and light curves")[1]
    start = section.index("| `--layout` |")
    lines = section[start:].split("\n\n")[0].splitlines()
    head = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    assert head == ["--layout", "light curve", "files, in location order",
                    "subject_viewer", "volunteers see"]  # fmt: skip
    return [
        dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True))
        for ln in lines[2:]
    ]


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@pytest.fixture
def decam_run(tmp_path: Path, test_data: Path) -> tuple[Path, dict[str, str]]:
    """Six DECam sources without history (light curves of one point), and images."""
    base = test_data / "decam_sfft"
    images = {
        "science": str(base / "Stack-DEC-OBS04.fits"),
        "template": str(base / "Stack-DEC-OBS18.fits"),
        "difference": str(base / "FinalDifference.fits"),
    }
    rng = np.random.default_rng(3)
    n = 6
    pd.DataFrame(
        {
            "diaSourceId": 506428274000265570 + np.arange(n, dtype=np.int64),
            "visit": 1,
            "detector": 2,
            "band": "i",
            "midpointMjdTai": 60000.0 + np.arange(n),
            "psfFlux": rng.uniform(-500, 5000, n),
            "psfFluxErr": 100.0,
            "x": rng.uniform(40, 215, n),
            "y": rng.uniform(40, 215, n),
        }
    ).to_csv(tmp_path / "cat.csv", index=False)
    return tmp_path / "cat.csv", images


def test_readme_subject_kinds_are_the_files_render_writes_and_the_viewer_to_set(
    decam_run: tuple[Path, dict[str, str]],
) -> None:
    catalog, images = decam_run
    rows = _subject_kind_rows()
    assert len(rows) == 7
    seen = set()
    for n, row in enumerate(rows):
        run = catalog.parent / f"run{n}"  # a new run per row: no saved settings
        zooprep.select(run, catalog=catalog)
        layout = _code(row["--layout"])[0]
        flags = " ".join(_code(row["light curve"])).split()
        args = ["render", str(run), "--layout", layout, *flags]
        args += [f"--{k}={v}" for k, v in images.items()]
        out = CliRunner().invoke(cli, args)
        seen.add((layout, tuple(flags)))
        if row["files, in location order"].startswith("refused"):
            assert out.exit_code == 2, (row, out.output)
            assert not row["subject_viewer"]
            continue
        assert out.exit_code == 0, (row, out.output)
        with Run.open(run, lock=False) as r:
            sources = list(r.iter_sources(["rendered"]))
        assert len(sources) == 6
        for src in sources:
            names = [Path(f).name for f in src.files]
            expected = [
                c.replace("<id>", str(src.id))
                for c in _code(row["files, in location order"])
            ]
            assert names == expected, row  # fmt: skip
            mimes = [CONTENT_TYPES[Path(n).suffix] for n in names]
            # The viewer to set is the one zooprep/viewers.py says.
            wanted = _code(row["subject_viewer"])[0]
            assert viewer_to_set([mimes]) == wanted, row
            unset_ok = row["subject_viewer"].startswith("unset is fine")
            assert (viewer_problem(None, [mimes]) is None) == unset_ok, row
            assert draws(wanted, mimes).shows_all
            # Every image the viewer flips through has one pixel size.
            sizes = {
                png_size((run / f).read_bytes())
                for f in src.files
                if f.endswith(".png")
            }
            assert len(sizes) == 1, (row, sizes)
            # JSON only where a chart is drawn, never among the images.
            if any(n.endswith(".json") for n in names):
                assert draws(wanted, mimes).chart == len(names) - 1
    assert ("triplet", ()) in seen
    assert ("both", ()) in seen


def test_render_help_names_the_subject_kinds_and_their_viewers() -> None:
    out = CliRunner().invoke(cli, ["render", "--help"])
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    for row in _subject_kind_rows():
        for viewer in _code(row["subject_viewer"]):
            assert viewer in text
    assert "dataImage" in text
    assert "--layout both" in text


# -- the PNG light curve follows the chart's choices ----------------------------------


@pytest.mark.parametrize("mode", ["flux", "mag"])
@pytest.mark.parametrize("case", ["many bands", "negative fluxes in magnitude mode"])
def test_the_light_curve_picture_uses_the_charts_colours_and_unit(
    case: str, mode: str
) -> None:
    from PIL import Image

    from zooprep.lightcurves import light_curve_plot
    from zooprep.renderers.lightcurve import LightCurveRenderer

    curve = EDGE_CASES[case]
    png = LightCurveRenderer(mode).render(curve, "object 70", (615, 229))
    assert png_size(png) == (615, 229)
    with Image.open(io.BytesIO(png)) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20) or []}
    body = parse_strict(scatter_plot_json(curve, mode) or b"")
    shown = light_curve_plot(curve, mode)
    assert [s.label for s in shown.series] == [
        s["seriesOptions"]["label"] for s in body["data"]
    ]
    for s in body["data"][:12]:  # the legend lists the first bands
        hex_colour = s["seriesOptions"]["color"]
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, s["seriesOptions"]["label"]
    assert shown.y_label in ("AB magnitude", "Flux (µJy)", "Flux (nJy)")
    assert shown.viewer_y_label.startswith(shown.y_label.split(" (")[0])


def test_picture_tick_labels_never_use_an_exponent() -> None:
    from zooprep.renderers.lightcurve import nice_ticks, tick_label

    for lo, hi in [(0, 680_000), (-2e5, 3e5), (0.0, 0.004), (21.3, 21.31), (0, 5)]:
        ticks = nice_ticks(lo, hi)
        step = ticks[1] - ticks[0]
        labels = [tick_label(t, step) for t in ticks]
        assert all("e" not in label for label in labels), labels
