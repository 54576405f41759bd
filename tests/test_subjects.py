"""Subjects as transient projects show them: frames, light curves, several files."""

from __future__ import annotations

import glob
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import zooprep
from zooprep.cli import cli
from zooprep.images.base import Cutouts, Triplet
from zooprep.lightcurves import DETECTION, FORCED, LIMIT
from zooprep.options import RenderOptions
from zooprep.readers.history import ApdbHistory
from zooprep.renderers import _draw, make_renderer
from zooprep.renderers.annotated import TEXT_LINES
from zooprep.run import Run
from zooprep.scatterplot import scatter_plot_json


class FlatImages:
    """An image source of the same small ramp for every source."""

    def check(self, columns: Any) -> None:
        """Every run will do."""

    def group_key(self, row: Any) -> str:
        return ""

    def cutouts(self, rows: Any, sizes: Any, use_footprint: bool = False) -> Any:
        ramp = np.arange(100, dtype=np.float32).reshape(10, 10)
        for sid, _ in rows:
            yield Cutouts(sid, [Triplet(ramp, ramp, ramp)])


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _files(run: Path) -> dict[int, list[str]]:
    with Run.open(run, lock=False) as r:
        return {s.id: s.files for s in r.iter_sources(["rendered"])}


@pytest.fixture
def decam_run(tmp_path: Path, test_data: Path) -> tuple[Path, dict[str, str]]:
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
    run = tmp_path / "run"
    zooprep.select(run, catalog=tmp_path / "cat.csv")
    return run, images


# -- frames ----------------------------------------------------------------------


@pytest.mark.parametrize("annotate", [False, True])
def test_frames_are_the_triplets_panels_pixel_for_pixel(
    decam_run: tuple[Path, dict[str, str]], annotate: bool
) -> None:
    run, images = decam_run
    common: dict[str, Any] = {"sizes": (24, 48), "annotate": annotate, "jobs": 1}
    assert zooprep.render(run, images=images, **common).rendered == 6
    triplets = {
        sid: _rgb((run / files[0]).read_bytes()) for sid, files in _files(run).items()
    }
    result = zooprep.render(run, layout="frames", force=True, **common)
    assert result.rendered == 6
    for sid, files in _files(run).items():
        names = [Path(f).name for f in files]
        assert names == [
            f"{sid}_{k}_{panel}.png"
            for k in (1, 2)
            for panel in ("template", "science", "difference")
        ]
        triplet = triplets[sid]
        frames = [_rgb((run / f).read_bytes()) for f in files]
        assert len({f.shape for f in frames}) == 1  # all frames the same size
        layout = _draw.make_layout(
            [(24, 24), (48, 48)], None, text_lines=TEXT_LINES if annotate else 0
        )
        top = frames[0].shape[0] - max(r.height for r in layout.rows)
        w = layout.panel_width
        for n, frame in enumerate(frames):
            row = layout.rows[n // 3]
            x = layout.panel_x[n % 3]
            panel = triplet[row.top : row.top + row.height, x : x + w]
            np.testing.assert_array_equal(frame[top : top + row.height, :w], panel)


def test_frames_layout_alone_writes_only_the_frames_in_the_documented_order(
    decam_run: tuple[Path, dict[str, str]],
) -> None:
    run, images = decam_run
    zooprep.render(run, images=images, layout="frames", jobs=1)
    for sid, files in _files(run).items():
        assert [Path(f).name for f in files] == [
            f"{sid}_1_template.png",
            f"{sid}_1_science.png",
            f"{sid}_1_difference.png",
        ]


def test_changing_the_layout_of_a_rendered_run_needs_force(
    decam_run: tuple[Path, dict[str, str]],
) -> None:
    run, images = decam_run
    zooprep.render(run, images=images, jobs=1)
    with pytest.raises(zooprep.SettingsMismatch, match="layout"):
        zooprep.render(run, layout="frames", jobs=1)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--layout", "both"], "--layout both is not offered"),
        (["--layout", "frames", "--lightcurve"], "needs --lightcurve-json"),
    ],
)
def test_subjects_mixing_image_sizes_are_refused_with_exit_2(
    decam_run: tuple[Path, dict[str, str]], flags: list[str], says: str
) -> None:
    run, images = decam_run
    args = ["render", str(run), "--science", images["science"]]
    args += ["--template", images["template"], "--difference", images["difference"]]
    out = CliRunner().invoke(cli, [*args, *flags])
    assert out.exit_code == 2, out.output
    assert says in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not _files(run)  # nothing rendered


def test_lightcurve_json_without_lightcurve_is_refused_with_exit_2(
    decam_run: tuple[Path, dict[str, str]],
) -> None:
    run, images = decam_run
    args = ["render", str(run), "--science", images["science"]]
    args += ["--template", images["template"], "--difference", images["difference"]]
    out = CliRunner().invoke(cli, [*args, "--lightcurve-json"])
    assert out.exit_code == 2
    assert "--lightcurve-json needs --lightcurve" in out.output


# -- light curves: independent counts from the packets and the database ----------


def _ztf_count(record: dict[str, Any]) -> dict[tuple[str, int], int]:
    bands = {1: "g", 2: "r", 3: "i"}
    out: dict[tuple[str, int], int] = {}
    cand = record["candidate"]
    out[(bands[cand["fid"]], DETECTION)] = 1
    for p in record.get("prv_candidates") or []:
        if p.get("magpsf") is not None:
            key = (bands[p["fid"]], DETECTION)
        elif p.get("diffmaglim") is not None:
            key = (bands[p["fid"]], LIMIT)
        else:
            continue
        out[key] = out.get(key, 0) + 1
    return out


def _rubin_count(record: dict[str, Any]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    me = record["diaSource"]["diaSourceId"]
    entries = [(record["diaSource"], DETECTION)]
    entries += [
        (p, DETECTION)
        for p in record.get("prvDiaSources") or []
        if p["diaSourceId"] != me
    ]
    entries += [(p, FORCED) for p in record.get("prvDiaForcedSources") or []]
    for entry, kind in entries:
        if entry.get("psfFlux") is None or entry["psfFlux"] != entry["psfFlux"]:
            continue
        out[(entry["band"], kind)] = out.get((entry["band"], kind), 0) + 1
    return out


def _series_counts(data: bytes) -> dict[str, int]:
    body = json.loads(data)
    return {s["seriesOptions"]["label"]: len(s["seriesData"]) for s in body["data"]}


def _expected_series(
    count: dict[tuple[str, int], int], current: tuple[str, int] | None
) -> dict[str, int]:
    """Series sizes: the source's own point is its own series."""
    suffix = {DETECTION: "", FORCED: " forced", LIMIT: " limit"}
    count = dict(count)
    out = {}
    if current is not None:
        count[current] -= 1
        out[f"this source ({current[0]}{suffix[current[1]]})"] = 1
    out.update({band + suffix[kind]: n for (band, kind), n in count.items() if n})
    return out


def _ztf_current(record: dict[str, Any]) -> tuple[str, int] | None:
    return ({1: "g", 2: "r", 3: "i"}[record["candidate"]["fid"]], DETECTION)


def _rubin_current(record: dict[str, Any]) -> tuple[str, int] | None:
    me = record["diaSource"]
    if me.get("psfFlux") is None or me["psfFlux"] != me["psfFlux"]:
        return None
    return (me["band"], DETECTION)


@pytest.mark.parametrize(
    ("folder", "counter", "current"),
    [
        ("ztf_alerts/ampel", _ztf_count, _ztf_current),
        ("ztf_alerts/boom", _ztf_count, _ztf_current),
        ("ztf_alerts/fink-client", _ztf_count, _ztf_current),
        ("ztf_alerts/pittgoogle", _ztf_count, _ztf_current),
        ("rubin_alerts/fink-client", _rubin_count, _rubin_current),
        ("rubin_alerts/fink-filters-repacked", _rubin_count, _rubin_current),
    ],
)
def test_alert_light_curves_hold_every_point_of_the_packets_per_band(
    tmp_path: Path, test_data: Path, folder: str, counter: Any, current: Any
) -> None:
    files = sorted(glob.glob(str(test_data / folder / "*.avro")))
    files = [f for f in files if "schema" not in f]
    packets = tmp_path / "packets"
    packets.mkdir()
    for f in files:
        (packets / Path(f).name).symlink_to(f)
    run = tmp_path / "run"
    zooprep.select(run, alerts=str(packets / "*.avro"))
    result = zooprep.render(run, lightcurve="flux", lightcurve_json=True, jobs=1)
    assert result.failed == 0
    assert result.rendered > 0
    expected: dict[int, dict[str, int]] = {}
    for f in files:
        with open(f, "rb") as fh:
            for record in fastavro.reader(fh):
                sid = record.get("candid") or record["diaSource"]["diaSourceId"]
                expected[int(sid)] = _expected_series(counter(record), current(record))
    for sid, names in _files(run).items():
        # The chart JSON replaces the light-curve picture.
        assert [Path(n).name for n in names] == [f"{sid}.png", f"{sid}_lightcurve.json"]
        assert _series_counts((run / names[1]).read_bytes()) == expected[sid]


def test_apdb_light_curves_count_the_objects_diasources_and_forced_sources(
    tmp_path: Path, apdb_sqlite: Path
) -> None:
    db = sqlite3.connect(apdb_sqlite)
    rows = db.execute(
        "SELECT diaSourceId, diaObjectId FROM DiaSource ORDER BY diaSourceId LIMIT 60"
    ).fetchall()
    history = ApdbHistory(f"sqlite:///{apdb_sqlite}", chunk=25)
    curves = dict(history.light_curves([(sid, {"diaObjectId": o}) for sid, o in rows]))
    objects = sorted({o for _, o in rows})
    # One query per table per chunk of 25 objects, not one per source.
    assert history.queries == 2 * -(-len(objects) // 25)
    for sid, oid in rows:
        expected: dict[tuple[str, int], int] = {}
        for table, kind in (("DiaSource", DETECTION), ("DiaForcedSource", FORCED)):
            for band, n in db.execute(
                f"SELECT band, COUNT(*) FROM {table} WHERE diaObjectId = ? "
                "AND psfFlux IS NOT NULL AND midpointMjdTai IS NOT NULL GROUP BY band",
                (oid,),
            ):
                expected[(band, kind)] = n
        curve = curves[sid]
        assert not isinstance(curve, str)
        assert curve.counts() == expected
        assert curve.source_id == sid
        assert curve.current >= 0


def test_apdb_run_renders_light_curves_with_every_point_of_the_object(
    tmp_path: Path, apdb_sqlite: Path
) -> None:
    run = tmp_path / "run"
    zooprep.select(run, apdb=f"sqlite:///{apdb_sqlite}")
    with Run.open(run) as r:
        objects = {s.id: s.row["diaObjectId"] for s in r.iter_sources()}
    # The APDB run has no images here: draw from a stand-in image source.
    result = zooprep.render(
        run,
        images=FlatImages(),
        lightcurve="flux",
        lightcurve_json=True,
        jobs=1,
    )
    assert result.rendered == len(objects) == 290
    db = sqlite3.connect(apdb_sqlite)
    for sid, files in _files(run).items():
        assert Path(files[1]).name == f"{sid}_lightcurve.json"
        count: dict[tuple[str, int], int] = {}
        for table, kind in (("DiaSource", DETECTION), ("DiaForcedSource", FORCED)):
            for band, n in db.execute(
                f"SELECT band, COUNT(*) FROM {table} WHERE diaObjectId = ? "
                "AND psfFlux IS NOT NULL GROUP BY band",
                (objects[sid],),
            ):
                count[(band, kind)] = n
        (band,) = db.execute(
            "SELECT band FROM DiaSource WHERE diaSourceId = ?", (sid,)
        ).fetchone()
        expected = _expected_series(count, (band, DETECTION))
        assert _series_counts((run / files[1]).read_bytes()) == expected


def test_a_source_without_history_gets_a_light_curve_of_its_one_point(
    decam_run: tuple[Path, dict[str, str]],
) -> None:
    run, images = decam_run
    result = zooprep.render(run, images=images, lightcurve="mag", jobs=1)
    assert result.failed == 0
    assert result.notes == {"light curves of one point (no history)": 6}
    assert "6 light curves of one point" in str(result)


def test_a_source_without_any_photometry_gets_empty_axes_not_a_crash() -> None:
    from zooprep.readers.history import row_light_curve
    from zooprep.renderers.lightcurve import LightCurveRenderer

    curve = row_light_curve(5, {"band": "r"})
    assert curve.dropped == 1
    for mode in ("flux", "mag"):
        png = LightCurveRenderer(mode).render(curve)
        assert Image.open(io.BytesIO(png)).size == (600, 360)
        assert scatter_plot_json(curve, mode) is None  # no chart without a point


def test_malformed_and_nan_history_entries_are_left_out_and_counted() -> None:
    from zooprep.readers.history import rubin_light_curve, ztf_light_curve

    ztf = ztf_light_curve(
        1,
        {
            "candidate": {"jd": 2460000.5, "fid": 1, "magpsf": 18.0, "sigmapsf": 0.1},
            "prv_candidates": [
                {"jd": 2459999.5, "fid": 1, "magpsf": None, "diffmaglim": 20.0},
                {"jd": 2459998.5, "fid": 2, "magpsf": None, "diffmaglim": None},
                "garbage",
            ],
        },
    )
    assert ztf.counts() == {("g", DETECTION): 1, ("g", LIMIT): 1}
    assert (ztf.dropped, ztf.malformed) == (1, 1)
    rubin = rubin_light_curve(
        2,
        {
            "diaSource": {
                "diaSourceId": 2,
                "midpointMjdTai": 60000.0,
                "psfFlux": -500.0,
                "psfFluxErr": 100.0,
                "band": "r",
            },
            "prvDiaSources": [
                {"diaSourceId": 3, "midpointMjdTai": 59990.0, "psfFlux": float("nan"),
                 "psfFluxErr": 1.0, "band": "r"},
            ],
            "prvDiaForcedSources": None,
        },
    )  # fmt: skip
    assert rubin.counts() == {("r", DETECTION): 1}
    assert rubin.dropped == 1
    # A negative flux in magnitude mode becomes a limit; it never crashes.
    from zooprep.renderers.lightcurve import LightCurveRenderer

    assert LightCurveRenderer("mag").render(rubin)[:4] == b"\x89PNG"
    body = json.loads(scatter_plot_json(rubin, "mag") or b"")
    assert [s["seriesOptions"]["label"] for s in body["data"]] == [
        "this source (r limit)"
    ]


def test_viewer_json_has_the_scatter_plot_viewer_shape() -> None:
    from zooprep.readers.history import ztf_light_curve

    curve = ztf_light_curve(
        1,
        {
            "candidate": {"jd": 2460001.5, "fid": 2, "magpsf": 18.0, "sigmapsf": 0.1},
            "prv_candidates": [
                {"jd": 2460000.5, "fid": 1, "magpsf": 18.5, "sigmapsf": 0.2},
            ],
        },
    )
    body = json.loads(scatter_plot_json(curve, "flux") or b"")
    assert set(body) == {"data", "chartOptions"}
    assert body["chartOptions"]["xAxisLabel"] == "Days"
    g, r = body["data"]
    assert g["seriesOptions"]["label"] == "g"
    assert r["seriesOptions"]["label"] == "this source (r)"
    assert g["seriesData"][0]["x"] == 0.0
    assert r["seriesData"][0]["x"] == 1.0
    assert set(g["seriesData"][0]) == {"x", "y", "y_error"}
    assert g["seriesOptions"]["color"] != r["seriesOptions"]["color"]


def test_make_renderer_frames_match_plain_render_for_one_size() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(20, 20)).astype(np.float32) for _ in range(3)]
    cutouts = Cutouts(1, [Triplet(*arrays)])
    renderer = make_renderer(RenderOptions())
    triplet = _rgb(renderer.render(cutouts, {}))
    layout = _draw.make_layout([(20, 20)], None)
    row = layout.rows[0]
    for n, frame in enumerate(renderer.render_frames(cutouts, {})):  # type: ignore[attr-defined]
        x = layout.panel_x[n]
        np.testing.assert_array_equal(
            _rgb(frame), triplet[row.top : row.top + row.height, x : x + row.height]
        )


# -- preview and results of multi-location subjects --------------------------------


def test_preview_shows_every_location_of_a_subject_in_chromium(
    decam_run: tuple[Path, dict[str, str]], chromium: Any
) -> None:
    run, images = decam_run
    zooprep.render(
        run,
        images=images,
        layout="frames",
        lightcurve="flux",
        lightcurve_json=True,
        jobs=1,
    )
    page = zooprep.preview(run)
    dom = chromium.dump_dom(page, "status=rendered")
    cards = re.findall(r'<figure class="card" data-id="(\d+)"[^>]*>', dom)
    assert len(cards) == 6
    tags = re.findall(r'<figure class="card" data-id="\d+"[^>]*>', dom)
    for tag in tags:
        assert 'data-img="loaded"' in tag
        # The two other frames loaded beside the first (the JSON is a link).
        assert 'data-locs="2"' in tag
        assert "data-locs-broken" not in tag
    for sid in cards:
        assert f"{sid}_1_difference.png" in dom
        assert f'href="cutouts/0/{sid}_lightcurve.json"' in dom


def test_an_annotated_picture_decodes_in_chromium_to_the_pixels_drawn(
    decam_run: tuple[Path, dict[str, str]], chromium: Any, tmp_path: Path
) -> None:
    # Colour pictures are deflated by ISA-L, not zlib: the browser that shows
    # them to volunteers must read the same pixels Pillow does.
    import base64

    run, images = decam_run
    zooprep.render(run, images=images, annotate=True, cmap="viridis", jobs=1)
    png = sorted((run / "cutouts").rglob("*.png"))[0]
    with Image.open(png) as im:
        assert im.mode == "RGB"
        width, height = im.size
        rgb = im.tobytes()
    expected = 0
    for value in rgb:
        expected = (expected * 31 + value) & 0xFFFFFFFF
    data = base64.b64encode(png.read_bytes()).decode()
    page = tmp_path / "decode.html"
    page.write_text(
        f'<img id="i" src="data:image/png;base64,{data}"><script>\n'
        "const img = document.getElementById('i');\n"
        "function go() {\n"
        "  const c = document.createElement('canvas');\n"
        "  c.width = img.naturalWidth; c.height = img.naturalHeight;\n"
        "  const g = c.getContext('2d'); g.drawImage(img, 0, 0);\n"
        "  const d = g.getImageData(0, 0, c.width, c.height).data;\n"
        "  let h = 0;\n"
        "  for (let k = 0; k < d.length; k++) {\n"
        "    if (k % 4 !== 3) h = (Math.imul(h, 31) + d[k]) >>> 0;\n"
        "  }\n"
        "  document.body.setAttribute('data-decoded', c.width + 'x' + c.height + ':' + h);\n"
        "}\n"
        "if (img.complete) go(); else img.onload = go;\n"
        "</script>\n"
    )
    dom = chromium.dump_dom(page)
    assert f'data-decoded="{width}x{height}:{expected}"' in dom


def test_cli_renders_an_alert_run_as_frames_and_light_curves_for_the_manifest(
    tmp_path: Path, test_data: Path
) -> None:
    run = tmp_path / "run"
    alerts = str(test_data / "rubin_alerts" / "fink-filters-repacked" / "*.avro")
    runner = CliRunner()
    assert runner.invoke(cli, ["select", str(run), "--alerts", alerts]).exit_code == 0
    out = runner.invoke(
        cli,
        ["render", str(run), "--layout", "frames", "--lightcurve", "--lightcurve-json"],
    )
    assert out.exit_code == 0, out.output
    with Run.open(run, lock=False) as r:
        options = r.settings.render
    assert options is not None
    assert options.layout == "frames"
    assert options.lightcurve == "flux"
    assert options.lightcurve_json is True
    assert runner.invoke(cli, ["manifest", str(run)]).exit_code == 0
    with open(run / "manifest.csv", newline="") as fh:
        header = next(iter(fh)).strip().split(",")
    assert [c for c in header if c.startswith("location:")] == [
        f"location:{n}" for n in range(1, 5)
    ]
    out = runner.invoke(cli, ["render", "--help"])
    for flag in ("--layout", "--lightcurve", "--lightcurve-json"):
        assert flag in out.output


def test_results_galleries_show_the_first_picture_of_multi_file_subjects(
    tmp_path: Path, apdb_sqlite: Path
) -> None:
    pytest.importorskip("panoptes_aggregation")  # the results extra
    import base64

    from tests.test_results import WORKFLOW, make_setup

    setup = make_setup(tmp_path, apdb_sqlite)
    first: dict[int, bytes] = {}
    with Run.open(setup.run) as r:
        for src in r.iter_sources(["linked", "rendered"]):
            extra = [r.cutout_path(src, "_1_template.png")]
            extra.append(r.cutout_path(src, "_lightcurve.json"))
            (setup.run / extra[0]).write_bytes((setup.run / src.files[0]).read_bytes())
            (setup.run / extra[1]).write_text('{"data": []}')
            r.update(src.id, files=[*src.files, *extra])
            first[src.id] = (setup.run / src.files[0]).read_bytes()
    zooprep.results(setup.run, setup.export, workflow_id=str(WORKFLOW))
    page = (setup.run / "results.html").read_text()
    cards = re.findall(
        r"data-source-id='(\d+)'><img src='data:image/png;base64,([^']+)'", page
    )
    assert cards
    for sid, data in cards:
        assert base64.b64decode(data) == first[int(sid)]
