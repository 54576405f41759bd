"""The pictures: plain and annotated renderers, checked pixel by pixel.

Expected panel colours are computed here independently, with astropy's
intervals and stretches and matplotlib's colour maps, and compared with the
panel regions found in the PNG.  Annotation is checked on real rows of the
ci_dc2 APDB.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import sqlite3
import struct
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.visualization import (
    AsinhStretch,
    LinearStretch,
    ManualInterval,
    MinMaxInterval,
    ZScaleInterval,
)
from PIL import Image

from zooprep.errors import InputError
from zooprep.images.base import Cutouts, Triplet
from zooprep.images.stamps import read_alert_records
from zooprep.options import RenderOptions
from zooprep.renderers import (
    AnnotatedRenderer,
    PlainRenderer,
    Renderer,
    annotation_items,
    flag_labels,
    make_renderer,
)
from zooprep.renderers.scaling import central_asinh, minmax_asinh, zscale_limits
from zooprep.renderers.scaling import zscale_linear as ours_zscale_linear

WHITE = (255, 255, 255)


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def decam(test_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = test_data / "decam_sfft"
    return tuple(  # type: ignore[return-value]
        fits.getdata(d / name).astype(np.float32)
        for name in (
            "DEC-OBS04a.mini.fits",
            "DEC-OBS18a.mini.fits",
            "FinalDifference.fits",
        )
    )


@pytest.fixture(scope="module")
def apdb(apdb_sqlite: Path) -> tuple[list[dict], str]:
    """All DiaSource rows (plain Python values, ids as int) and the instrument."""
    uri = f"file:{apdb_sqlite}?mode=ro"
    with sqlite3.connect(uri, uri=True) as con:
        table = pd.read_sql("SELECT * FROM DiaSource", con)
        ids = [r[0] for r in con.execute("SELECT diaSourceId FROM DiaSource")]
        instrument = con.execute(
            "SELECT value FROM metadata WHERE name = 'instrument'"
        ).fetchone()[0]
    rows = table.to_dict("records")
    for row, source_id in zip(rows, ids, strict=True):
        row["diaSourceId"] = source_id
        row["instrument"] = instrument
    return rows, instrument


def cut(images, y: int, x: int, n: int) -> Triplet:
    y0, x0 = y - n // 2, x - n // 2
    return Triplet(*(a[y0 : y0 + n, x0 : x0 + n] for a in images))


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode in ("RGB", "L")  # greyscale when the colour map is grey
        return np.asarray(im.convert("RGB"))


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    out, start = [], None
    for i, v in enumerate(flags):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


def panel_boxes(img: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
    """Panel boxes (y0, y1, x0, x1) by row, found as large non-white blocks."""
    ink = (img != 255).any(axis=2)
    col_runs = [r for r in runs(ink.mean(axis=0) > 0.3) if r[1] - r[0] > 8]
    row_runs = [r for r in runs(ink.mean(axis=1) > 0.5) if r[1] - r[0] > 8]
    return [[(y0, y1, x0, x1) for x0, x1 in col_runs] for y0, y1 in row_runs]


def expected_rgb(normed: np.ndarray, cmap: str, nan_color: str) -> np.ndarray:
    """Colours matplotlib gives to normalised values, NaN in ``nan_color``."""
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=nan_color)
    return colormap(np.ma.masked_invalid(normed), bytes=True)[..., :3]


def upscale(rgb: np.ndarray, s: int) -> np.ndarray:
    """Nearest-neighbour upscaling, first array row at the bottom."""
    return rgb[::-1].repeat(s, axis=0).repeat(s, axis=1)


def asinh_minmax(data: np.ndarray) -> np.ndarray:
    return AsinhStretch(a=0.1)(MinMaxInterval()(data))


def zscale_linear(data: np.ndarray) -> np.ndarray:
    return LinearStretch()(ZScaleInterval()(data), clip=True)


def stamp_images(path: Path, field: str) -> list[np.ndarray]:
    """The images of one stamp field of every alert in an Avro file."""
    out = []
    for record in read_alert_records(path):
        value = record[field]
        data = bytes(value["stampData"] if isinstance(value, dict) else value)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with warnings.catch_warnings():
            # ZTF stamps have a non-standard SIMPLE card, which astropy reports.
            warnings.simplefilter("ignore", VerifyWarning)
            with fits.open(io.BytesIO(data)) as hdul:
                out.append(np.array(hdul[0].data, dtype=np.float32))
    return out


def text_block(img: np.ndarray, line: int, x0: float, x1: float) -> np.ndarray:
    """Pixels of annotation text row ``line`` between fractions x0..x1 of the text."""
    width = img.shape[1] - 20
    top = 10 + 20 * line
    return img[top : top + 20, 10 + int(x0 * width) : 10 + int(x1 * width)]


# ------------------------------------------------------------- stretches


@pytest.mark.parametrize("cmap", ["gray", "bone"])
def test_plain_panels_equal_astropy_stretches_through_the_colour_map(decam, cmap):
    triplet = cut(decam, 142, 103, 30)
    png = PlainRenderer(cmap=cmap).render(Cutouts(1, [triplet]), {})
    img = decode(png)
    [boxes] = panel_boxes(img)
    assert len(boxes) == 3
    expected = [
        asinh_minmax(triplet.template),
        asinh_minmax(triplet.science),
        zscale_linear(triplet.difference),
    ]
    for (y0, y1, x0, x1), normed in zip(boxes, expected, strict=True):
        assert (y1 - y0, x1 - x0) == (210, 210)  # round(200 / 30) = 7 per pixel
        want = upscale(expected_rgb(normed, cmap, "#ff00ff"), 7)
        np.testing.assert_array_equal(img[y0:y1, x0:x1], want)


def test_asinh_central_difference_uses_the_central_15_pixels(decam):
    triplet = cut(decam, 142, 103, 30)
    renderer = PlainRenderer(difference_stretch="asinh-central", scale=3)
    img = decode(renderer.render(Cutouts(1, [triplet]), {}))
    y0, y1, x0, x1 = panel_boxes(img)[0][2]
    centre = triplet.difference[7:22, 7:22]
    interval = ManualInterval(vmin=centre.min(), vmax=centre.max())
    normed = AsinhStretch(a=0.1)(interval(triplet.difference))
    np.testing.assert_array_equal(
        img[y0:y1, x0:x1], upscale(expected_rgb(normed, "gray", "#ff00ff"), 3)
    )


def test_zscale_limits_equal_astropy_on_real_images(test_data, decam):
    images = [decam[2], decam[2].astype(np.float64)]
    images += [
        decam[2][y : y + 30, x : x + 30]
        for y in range(0, 220, 37)
        for x in range(0, 220, 23)
    ]
    for path in sorted((test_data / "ztf_alerts" / "ampel").glob("*.avro")):
        images += stamp_images(path, "cutoutDifference")
    for path in sorted(
        (test_data / "rubin_alerts" / "fink-filters-repacked").glob("*.avro")
    ):
        images += stamp_images(path, "cutoutDifference")
    assert len(images) > 60
    exact = 0
    for data in images:
        want = ZScaleInterval().get_limits(data)
        got = zscale_limits(data)
        # The line fit is solved in closed form: equal up to float rounding.
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        exact += got == tuple(float(v) for v in want)
    assert exact >= len(images) // 2


def test_stretches_give_astropys_values_bit_for_bit(test_data, decam):
    # The stretches run astropy's interval and asinh operations themselves
    # (no astropy objects per panel): the values, hence the PNG bytes, must be
    # astropy's exactly, on real cutouts, padded ones and alert stamps.
    padded = [np.pad(image, 10, constant_values=np.nan) for image in decam]
    images = [
        image[y : y + 30, x : x + 30]
        for image in padded
        for y in range(0, 250, 29)
        for x in range(0, 250, 31)
    ]
    images += [decam[0].astype(np.float64)[:40, :40]]
    for kind in ("ztf_alerts/ampel", "rubin_alerts/fink-filters-repacked"):
        for path in sorted((test_data / kind).glob("*.avro")):
            for field in ("cutoutTemplate", "cutoutScience", "cutoutDifference"):
                images += stamp_images(path, field)
    assert len(images) > 250
    for data in images:
        np.testing.assert_array_equal(minmax_asinh(data), asinh_minmax(data))
        y0, x0 = (data.shape[0] - 15) // 2, (data.shape[1] - 15) // 2
        centre = data[y0 : y0 + 15, x0 : x0 + 15]
        ok = centre[np.isfinite(centre)]
        if ok.size:
            interval = ManualInterval(vmin=ok.min(), vmax=ok.max())
            want = AsinhStretch(a=0.1)(interval(data))
            np.testing.assert_array_equal(central_asinh(data), want)
        vmin, vmax = zscale_limits(data)
        want = ManualInterval(vmin=vmin, vmax=vmax)(data, clip=True)
        np.testing.assert_array_equal(ours_zscale_linear(data), want)


def test_nan_pixels_are_drawn_in_the_nan_colour(decam):
    triplet = cut(decam, 142, 103, 20)
    science = triplet.science.copy()
    science[:5, :] = np.nan  # the bottom five rows on screen
    difference = np.full_like(triplet.difference, np.nan)
    cutouts = Cutouts(1, [Triplet(triplet.template, science, difference)])
    img = decode(PlainRenderer(nan_color="#00ff00", scale=10).render(cutouts, {}))
    [boxes] = panel_boxes(img)
    (_, _, _, _), (sy0, sy1, sx0, sx1), (dy0, dy1, dx0, dx1) = boxes
    green = np.array([0, 255, 0], dtype=np.uint8)
    assert (img[sy1 - 50 : sy1, sx0:sx1] == green).all()
    assert not (img[sy0 : sy1 - 50, sx0:sx1] == green).all(axis=2).any()
    assert (img[dy0:dy1, dx0:dx1] == green).all()
    want = upscale(expected_rgb(asinh_minmax(science), "gray", "#00ff00"), 10)
    np.testing.assert_array_equal(img[sy0:sy1, sx0:sx1], want)


# ----------------------------------------------------------------- layout


def test_panels_are_in_template_science_difference_order():
    n = 16
    base = np.ones((n, n), dtype=np.float32)
    template, science, difference = base.copy(), base.copy(), base.copy()
    template[:, : n // 2] = np.nan  # left half
    science[n // 2 :, :] = np.nan  # top half on screen (origin lower)
    difference[:, n // 2 :] = np.nan  # right half
    cutouts = Cutouts(7, [Triplet(template, science, difference)])
    img = decode(PlainRenderer(scale=12).render(cutouts, {}))
    [boxes] = panel_boxes(img)
    magenta = (img == np.array([255, 0, 255], dtype=np.uint8)).all(axis=2)
    half = n * 12 // 2
    (ty0, ty1, tx0, tx1), (sy0, sy1, sx0, sx1), (dy0, dy1, dx0, dx1) = boxes
    assert magenta[ty0:ty1, tx0 : tx0 + half].all()
    assert not magenta[ty0:ty1, tx0 + half : tx1].any()
    assert magenta[sy0 : sy0 + half, sx0:sx1].all()
    assert not magenta[sy0 + half : sy1, sx0:sx1].any()
    assert magenta[dy0:dy1, dx0 + half : dx1].all()
    assert not magenta[dy0:dy1, dx0 : dx0 + half].any()


@pytest.mark.parametrize(("sizes", "width"), [((32, 64), 192), ((30, 64), 210)])
def test_multisize_pictures_stack_one_row_per_size_with_equal_panels(
    decam, sizes, width
):
    cutouts = Cutouts(1, [cut(decam, 128, 128, n) for n in sizes])
    for renderer in (PlainRenderer(cmap="bone"), AnnotatedRenderer(cmap="bone")):
        img = decode(renderer.render(cutouts, {}))
        rows = panel_boxes(img)
        assert len(rows) == 2
        for boxes in rows:
            assert [(y1 - y0, x1 - x0) for y0, y1, x0, x1 in boxes] == [
                (width, width)
            ] * 3
        # Titles once: text above the first row, only white between the rows.
        top, bottom_of_first = rows[0][0][:2]
        second_top = rows[1][0][0]
        assert (img[top - 25 : top - 2] != 255).any()
        assert (img[bottom_of_first:second_top] == 255).all()


def test_scale_picks_about_200_pixels_and_can_be_overridden(decam):
    for n, scale, width in (
        (30, None, 210),
        (63, None, 189),
        (30, 3, 90),
        (10, None, 200),
    ):
        cutouts = Cutouts(1, [cut(decam, 128, 128, n)])
        img = decode(PlainRenderer(scale=scale).render(cutouts, {}))
        [boxes] = panel_boxes(img)
        assert [x1 - x0 for _, _, x0, x1 in boxes] == [width] * 3


def _yellow_lengths(img: np.ndarray) -> list[int]:
    yellow = (img == np.array([255, 255, 0], dtype=np.uint8)).all(axis=2)
    out = []
    for boxes in panel_boxes(img):
        for y0, y1, x0, x1 in boxes:
            box = yellow[y0:y1, x0:x1]
            out.append(int(box.sum(axis=1).max()) if box.any() else 0)
    return out


def test_scale_bar_is_one_arcsec_long_when_that_fits_else_a_round_length(decam):
    triplet = cut(decam, 128, 128, 30)
    renderer = AnnotatedRenderer(scale=7, pixel_scale=0.5)
    # From the cutouts' WCS: 1 arcsec = 5 pixels = 35 screen pixels.
    img = decode(renderer.render(Cutouts(1, [triplet], pixel_scale=0.2), {}))
    assert _yellow_lengths(img) == [35] * 3
    # The renderer's pixel scale when the cutouts have none: 1 arcsec = 2 px =
    # 14 screen px, under 10 % of the 210-px panel, so the bar is 2" = 28 px.
    img = decode(renderer.render(Cutouts(1, [triplet]), {}))
    assert _yellow_lengths(img) == [28] * 3
    # The bar sits in the lower left of each panel, over a blue line.
    blue = (img == np.array([0, 0, 255], dtype=np.uint8)).all(axis=2)
    for y0, y1, x0, x1 in panel_boxes(img)[0]:
        ys, xs = np.nonzero(blue[y0:y1, x0:x1])
        assert ys.min() > (y1 - y0) * 3 // 4
        assert xs.max() < (x1 - x0) // 4
    # No pixel scale, no bar.
    img = decode(AnnotatedRenderer().render(Cutouts(1, [triplet]), {}))
    assert _yellow_lengths(img) == [0] * 3
    # Multi-size: each row's bar fits that row's scale: 1" = 24 px on the
    # 32-px row; 1" = 12 px (6 %) is too short on the 64-px row: 2" = 24 px.
    cutouts = Cutouts(
        1, [cut(decam, 128, 128, 32), cut(decam, 128, 128, 64)], pixel_scale=0.25
    )
    img = decode(AnnotatedRenderer().render(cutouts, {}))
    assert _yellow_lengths(img) == [24] * 3 + [24] * 3


# ----------------------------------------------------------- file output


def test_same_input_gives_byte_identical_png(decam, apdb):
    rows, _ = apdb
    cutouts = Cutouts(
        1, [cut(decam, 100, 100, 30), cut(decam, 100, 100, 60)], pixel_scale=0.26
    )
    for renderer in (PlainRenderer(cmap="bone"), AnnotatedRenderer(cmap="viridis")):
        first = renderer.render(cutouts, rows[3])
        again = renderer.render(cutouts, rows[3])
        unpickled = pickle.loads(pickle.dumps(renderer)).render(cutouts, rows[3])
        assert first == again == unpickled


def test_grey_colour_map_gives_a_greyscale_png_with_the_same_pixels(decam):
    cutouts = Cutouts(1, [cut(decam, 142, 103, 30)])
    grey = PlainRenderer().render(cutouts, {})
    with Image.open(io.BytesIO(grey)) as im:
        assert im.mode == "L"
    # The same picture through a colour map that is grey but written as RGB
    # (NaN in colour) has the same pixels where there is no NaN.
    with_nan = Triplet(
        *(
            a.copy()
            for a in (
                cutouts.rows[0].template,
                cutouts.rows[0].science,
                cutouts.rows[0].difference,
            )
        )
    )
    with_nan.template[0, 0] = np.nan
    rgb = PlainRenderer().render(Cutouts(1, [with_nan]), {})
    with Image.open(io.BytesIO(rgb)) as im:
        assert im.mode == "RGB"
    a, b = decode(grey), decode(rgb)
    [boxes] = panel_boxes(b)
    assert (a[:, boxes[1][2] :] == b[:, boxes[1][2] :]).all()


def test_png_has_no_metadata_and_stays_under_1mb():
    rng = np.random.default_rng(5)
    noise = [rng.normal(size=(n, n)).astype(np.float32) for n in (64, 128)]
    cutouts = Cutouts(
        1, [Triplet(a, a[::-1].copy(), a.T.copy()) for a in noise], pixel_scale=0.2
    )
    png = AnnotatedRenderer(scale=6, cmap="viridis").render(cutouts, {})
    assert len(png) < 1_000_000
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}


def test_real_alert_stamps_render_at_native_size(test_data):
    path = test_data / "ztf_alerts" / "ampel" / "516171791415015025.avro"
    stamps = [
        stamp_images(path, f)[0]
        for f in ("cutoutTemplate", "cutoutScience", "cutoutDifference")
    ]
    cutouts = Cutouts(
        1, [Triplet(*stamps)], pixel_scale=1.01, notes={"difference_sign": "ref-sci"}
    )
    img = decode(
        AnnotatedRenderer().render(cutouts, {"diaSourceId": 516171791415015025})
    )
    [boxes] = panel_boxes(img)
    assert [x1 - x0 for _, _, x0, x1 in boxes] == [189] * 3  # 63 px at 3x


# ------------------------------------------------------------- annotation


def _items(row, instrument=None):
    return {(i.line, i.x): i for i in annotation_items(row, instrument)}


def test_annotation_writes_every_field_of_a_real_apdb_row(apdb):
    rows, instrument = apdb
    row = next(r for r in rows if r["scienceFlux"] > 0 and r["reliability"] >= 0.5)
    items = _items(row)
    assert items[(0, 0.145)].text == str(row["diaSourceId"])
    assert items[(0, 0.43)].text == instrument == "LSSTCam-imSim"
    assert items[(0, 0.43)].bold
    assert items[(0, 0.74)].text == str(row["detector"])
    assert items[(0, 0.85)].text == str(row["visit"])
    assert items[(0, 0.95)].text == row["band"]
    assert items[(1, 0.037)].text == f"{row['ra']:.8f}"
    assert items[(1, 0.265)].text == f"{row['dec']:+.8f}"
    assert items[(1, 0.66)].text == f"{row['snr']:6.1f}"
    assert items[(1, 0.85)].text == f"{row['psfChi2'] / row['psfNdata']:6.2f}"
    for line, flux, err in (
        (2, "psfFlux", "psfFluxErr"),
        (3, "apFlux", "apFluxErr"),
        (4, "scienceFlux", "scienceFluxErr"),
    ):
        assert items[(line, 0.25)].text == f"{row[flux]:8.1f}"
        assert items[(line, 0.25)].align == "right"
        assert items[(line, 0.29)].text == f"{row[err]:8.1f}"
        assert items[(line, 0.45)].text == f"{abs(row[flux] / row[err]):6.2f}"
    assert (
        items[(4, 0.635)].text == f"{31.4 - 2.5 * math.log10(row['scienceFlux']):.3f}"
    )
    assert items[(4, 0.73)].text == f"RB:{row['reliability']:.3f}"
    assert items[(4, 0.73)].color == "#4daf4a"
    labels = {i.text: i.color for i in items.values() if i.color == "grey"}
    assert {
        "diaSourceId:",
        "detector:",
        "visit:",
        "ra:",
        "dec:",
        "detection S/N:",
        "PSF chi2:",
        "+/-",
        "S/N:",
        "ABmag:",
    } <= set(labels)


def test_ids_are_written_as_exact_integers():
    big = 2**62 + 1  # not representable as a float64
    items = _items({"diaSourceId": big, "visit": np.int64(2**40 + 3), "detector": "12"})
    assert items[(0, 0.145)].text == "4611686018427387905"
    top = {i.text: i for i in annotation_items({"visit": np.int64(2**40 + 3)})}
    assert "1099511627779" in top  # a 13-digit visit, moved left to fit
    six = _items({"visit": np.int64(943296), "detector": "12"})
    assert six[(0, 0.85)].text == "943296"
    assert six[(0, 0.74)].text == "12"


FLAG_COLUMNS = {
    "EDGE": ["pixelFlags_edge"],
    "INTERP": ["pixelFlags_interpolated", "pixelFlags_interpolatedCenter"],
    "SAT": ["pixelFlags_saturated", "pixelFlags_saturatedCenter"],
    "CR": ["pixelFlags_cr", "pixelFlags_crCenter"],
    "BAD": ["pixelFlags_bad"],
    "DIPOLE": ["isDipole"],
    "SUS": ["pixelFlags_suspect", "pixelFlags_suspectCenter"],
    "CENTROID": ["centroid_flag"],
    "SHAPE": [
        "shape_flag",
        "shape_flag_no_pixels",
        "shape_flag_not_contained",
        "shape_flag_parent_source",
    ],
}


def test_flag_labels_follow_the_apdb_flag_columns(apdb):
    rows, _ = apdb
    seen = set()
    for row in rows:
        shown = {label for label, _ in flag_labels(row) if not label.startswith("RB:")}
        want = {
            label for label, cols in FLAG_COLUMNS.items() if any(row[c] for c in cols)
        }
        assert shown == want, row["diaSourceId"]
        seen |= shown
    # The ci_dc2 APDB has these flags set on some rows and unset on others.
    assert {"DIPOLE", "INTERP", "SAT", "EDGE", "CENTROID", "SHAPE"} <= seen
    dipole = next(r for r in rows if r["isDipole"])
    assert ("DIPOLE", "indigo") in flag_labels(dipole)
    assert "DIPOLE" not in dict(flag_labels({**dipole, "isDipole": 0}))


def test_each_flag_has_a_fixed_place_and_colour(apdb):
    rows, _ = apdb
    clean = {
        k: (0 if "flag" in k.lower() or k == "isDipole" else v)
        for k, v in rows[0].items()
    }
    places = {
        "EDGE": (2, 0.55, "goldenrod"),
        "INTERP": (2, 0.62, "green"),
        "SAT": (2, 0.72, "green"),
        "CR": (2, 0.77, "magenta"),
        "BAD": (2, 0.81, "red"),
        "DIPOLE": (2, 0.87, "indigo"),
        "SUS": (3, 0.55, "goldenrod"),
        "CENTROID": (3, 0.60, "red"),
        "CEN+": (3, 0.73, "chocolate"),
        "CEN-": (3, 0.80, "blue"),
        "SHAPE": (3, 0.87, "red"),
    }
    columns = {
        **FLAG_COLUMNS,
        "CEN+": ["slot_Centroid_pos_flag"],
        "CEN-": ["slot_Centroid_neg_flag"],
    }
    assert not [
        i
        for i in annotation_items(clean)
        if i.bold and not i.text.startswith(("RB", "LSST"))
    ]
    for label, cols in columns.items():
        for col in cols:  # either the flag or its *Center variant shows the label
            items = [
                i for i in annotation_items({**clean, col: True}) if i.text == label
            ]
            assert [(i.line, i.x, i.color, i.bold) for i in items] == [
                (*places[label], True)
            ]
    assert flag_labels({"slot_Centroid_flag": 1}) == [("CENTROID", "red")]


def test_measurement_labels_turn_red_when_their_flags_are_set(apdb):
    rows, _ = apdb
    flagged = next(
        r
        for r in rows
        if r["psfFlux_flag"] and r["apFlux_flag"] and r["forced_PsfFlux_flag"]
    )
    clean = next(
        r
        for r in rows
        if not (r["psfFlux_flag"] or r["apFlux_flag"] or r["forced_PsfFlux_flag"])
    )
    for row, colour in ((flagged, "red"), (clean, "grey")):
        items = _items(row)
        assert [items[(line, 0.0)].color for line in (2, 3, 4)] == [colour] * 3
    items = _items(
        {
            "psfFlux_flag_edge": True,
            "apFlux_flag_apertureTruncated": 1,
            "forced_PsfFlux_flag_noGoodPixels": 1.0,
        }
    )
    assert [items[(line, 0.0)].color for line in (2, 3, 4)] == ["red"] * 3


def test_reliability_is_green_from_one_half_red_below_and_absent_when_null():
    assert flag_labels({"reliability": 0.5}) == [("RB:0.500", "#4daf4a")]
    assert flag_labels({"reliability": 0.4999}) == [("RB:0.500", "#e41a1c")]
    assert flag_labels({"reliability": None}) == []
    assert flag_labels({"reliability": float("nan")}) == []


def test_missing_or_null_columns_leave_their_fields_blank(decam):
    items = _items(
        {
            "scienceFlux": -5.0,
            "scienceFluxErr": 2.0,
            "psfFlux": float("nan"),
            "psfChi2": 3.0,
            "psfNdata": 0,
            "ra": None,
        }
    )
    assert (4, 0.635) not in items  # no magnitude for a negative flux
    assert (2, 0.25) not in items
    assert (2, 0.45) not in items
    assert (1, 0.85) not in items
    assert (1, 0.037) not in items
    assert items[(4, 0.25)].text == "    -5.0"
    assert items[(4, 0.45)].text == "  2.50"
    assert {i.text for i in annotation_items({}) if not i.static} == {
        "PSF (nJy):",
        "ap (nJy):",
        "total (nJy):",
        "detector:",  # these two move left for long visit numbers
        "visit:",
    }
    # Rendering an empty row works and differs from a full one only in text.
    png = AnnotatedRenderer().render(Cutouts(1, [cut(decam, 128, 128, 30)]), {})
    assert len(decode(png)) > 0


def test_flag_text_is_drawn_in_its_colour_at_its_place(decam, apdb):
    rows, _ = apdb
    row = next(r for r in rows if r["isDipole"] and r["psfFlux_flag"])
    cutouts = Cutouts(1, [cut(decam, 128, 128, 30)])
    renderer = AnnotatedRenderer()
    with_flags = decode(renderer.render(cutouts, row))
    unset = {
        "isDipole": 0,
        "psfFlux_flag": 0,
        "psfFlux_flag_edge": 0,
        "psfFlux_flag_noGoodPixels": 0,
    }
    without = decode(renderer.render(cutouts, {**row, **unset}))
    # DIPOLE, indigo (75, 0, 130): row 3 from 0.87 of the text width.
    region = with_flags.astype(int)
    dipole = text_block(region, 2, 0.87, 1.0)
    indigo = (dipole[..., 1] < 100) & (dipole[..., 2] - dipole[..., 1] > 60)
    assert indigo.sum() > 20
    assert (text_block(without, 2, 0.87, 1.0) == 255).all()
    # "PSF (nJy):" red when flagged, grey when not.
    psf = text_block(region, 2, 0.0, 0.2)
    assert ((psf[..., 0] > 200) & (psf[..., 1] < 80)).sum() > 20
    psf = text_block(without.astype(int), 2, 0.0, 0.2)
    assert ((psf[..., 0] - psf[..., 1]) == 0).all()


def test_difference_note_and_instrument_come_from_the_cutouts(decam):
    cutouts = Cutouts(
        1,
        [cut(decam, 128, 128, 30)],
        notes={"difference_sign": "ref-sci", "instrument": "ZTF"},
    )
    renderer = AnnotatedRenderer(instrument="Fallback")
    plain = AnnotatedRenderer().render(Cutouts(1, [cut(decam, 128, 128, 30)]), {})
    noted = renderer.render(cutouts, {})
    assert decode(plain).shape == decode(noted).shape
    assert plain != noted
    assert _items({}, "ZTF")[(0, 0.43)].text == "ZTF"
    assert _items({"instrument": "DECam"}, "ZTF")[(0, 0.43)].text == "DECam"


def test_a_resampled_template_says_so_in_its_title(decam):
    plain = Cutouts(1, [cut(decam, 128, 128, 30)])
    noted = Cutouts(1, [cut(decam, 128, 128, 30)], notes={"resampled": "template"})
    renderer = AnnotatedRenderer()
    a, b = decode(renderer.render(plain, {})), decode(renderer.render(noted, {}))
    assert a.shape == b.shape
    changed = np.argwhere((a != b).any(axis=-1))
    assert len(changed)
    # only the template's title changed: over the first panel, not in it
    assert changed[:, 1].max() < a.shape[1] / 3
    np.testing.assert_array_equal(a[a.shape[0] // 2 :], b[a.shape[0] // 2 :])
    frames = renderer.render_frames(noted, {})
    assert decode(frames[0]).shape == decode(renderer.render_frames(plain, {})[0]).shape
    assert frames[0] != renderer.render_frames(plain, {})[0]
    assert frames[1:] == renderer.render_frames(plain, {})[1:]


# -------------------------------------------------------------- factory


def test_make_renderer_follows_the_render_options():
    plain = make_renderer(RenderOptions(cmap="bone", scale=5))
    assert isinstance(plain, PlainRenderer)
    assert not isinstance(plain, AnnotatedRenderer)
    assert (plain.cmap, plain.scale) == ("bone", 5)
    annotated = make_renderer(
        RenderOptions(
            annotate=True,
            pixel_scale=0.2,
            instrument="DECam",
            difference_stretch="asinh-central",
        )
    )
    assert isinstance(annotated, AnnotatedRenderer)
    assert isinstance(annotated, Renderer)
    assert (annotated.pixel_scale, annotated.instrument) == (0.2, "DECam")
    assert annotated.difference_stretch == "asinh-central"
    with pytest.raises(InputError, match=r"viridiss.*valid choices: .*viridis"):
        make_renderer(RenderOptions(cmap="viridiss"))


def test_long_rubin_visit_numbers_do_not_run_into_the_band_or_instrument() -> None:
    from pathlib import Path as _Path

    import matplotlib
    from PIL import ImageFont

    from zooprep.renderers.annotated import annotation_items

    fonts = _Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    regular = ImageFont.truetype(str(fonts / "DejaVuSans.ttf"), 14)
    bold = ImageFont.truetype(str(fonts / "DejaVuSans-Bold.ttf"), 14)
    width = 640  # the text block of a 30 px picture
    row = {
        "diaSourceId": 170094456272322680,
        "instrument": "LSSTCam",
        "detector": 94,
        "visit": 2026030500055,
        "band": "r",
    }
    top = {item.text: item for item in annotation_items(row) if item.line == 0}

    def span(text: str) -> tuple[float, float]:
        item = top[text]
        font = bold if item.bold else regular
        left = item.x * width
        return left, left + font.getlength(text)

    assert span("2026030500055")[1] + 4 < span("r")[0]
    assert span("LSSTCam")[1] + 4 < span("detector:")[0]
    assert span("detector:")[1] <= span("94")[0]
    assert span("visit:")[1] <= span("2026030500055")[0]
    # six-digit visits keep the seed's positions
    seed = {item.text: item.x for item in annotation_items({**row, "visit": 943296})}
    assert (seed["detector:"], seed["visit:"], seed["943296"]) == (0.64, 0.795, 0.85)
