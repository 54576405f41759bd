"""Image sources: cutouts from FITS path templates, alert stamps and a Butler."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.wcs import WCS

from tests.imagegen import (
    MIRROR,
    QUARTER,
    tan_wcs,
    turned_copy,
    write_exposure,
    write_simple,
)
from zooprep.errors import InputError
from zooprep.images import (
    AlertStamps,
    Cutouts,
    Failed,
    FitsImages,
    ImageSource,
    read_alert_records,
    stack_cutouts,
)
from zooprep.images.fits import ImageCache

SCI, TPL, DIF = "Stack-DEC-OBS04.fits", "Stack-DEC-OBS18.fits", "FinalDifference.fits"


@pytest.fixture(scope="module")
def decam(test_data: Path) -> Path:
    return test_data / "decam_sfft"


@pytest.fixture
def decam_source(decam: Path) -> FitsImages:
    return FitsImages(
        science=str(decam / SCI), template=str(decam / TPL), difference=str(decam / DIF)
    )


def reference_cut(data: np.ndarray, x: float, y: float, n: int) -> np.ndarray:
    """The cutout computed independently: source pixel at index n // 2, NaN outside."""
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    out = np.full((n, n), np.nan)
    for j in range(n):
        for i in range(n):
            yy, xx = iy - n // 2 + j, ix - n // 2 + i
            if 0 <= yy < data.shape[0] and 0 <= xx < data.shape[1]:
                out[j, i] = data[yy, xx]
    return out.astype(np.float32)


def one(source, row, sizes=(30,), use_footprint=False, source_id=1):
    (result,) = source.cutouts([(source_id, row)], sizes, use_footprint)
    return result


# --- FITS path templates -------------------------------------------------------------


def test_decam_cutouts_equal_independent_slices(decam: Path, decam_source: FitsImages):
    assert isinstance(decam_source, ImageSource)
    data = {name: fits.getdata(decam / name) for name in (SCI, TPL, DIF)}
    rows = [(1, {"x": 100.2, "y": 50.7}), (2, {"x": 128.5, "y": 127.49})]
    results = list(decam_source.cutouts(rows, (30, 31)))
    assert [r.source_id for r in results] == [1, 2]
    for (_, row), res in zip(rows, results, strict=True):
        assert isinstance(res, Cutouts)
        assert not res.padded
        for triplet, n in zip(res.rows, (30, 31), strict=True):
            assert triplet.shape == (n, n)
            assert triplet.science.dtype == np.float32
            for got, name in (
                (triplet.science, SCI),
                (triplet.template, TPL),
                (triplet.difference, DIF),
            ):
                np.testing.assert_array_equal(
                    got, reference_cut(data[name], row["x"], row["y"], n)
                )
    # pixel scale from the TPV WCS: DECam is ~0.263"/px
    assert results[0].pixel_scale == pytest.approx(0.263, abs=0.003)


def test_radec_position_agrees_with_xy(decam: Path, decam_source: FitsImages):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TPV header's FITSFixedWarning
        wcs = WCS(fits.getheader(decam / SCI))
    x, y = 77.3, 190.8
    ra, dec = wcs.all_pix2world([[x, y]], 0)[0]
    by_xy = one(decam_source, {"x": x, "y": y}, (25,))
    by_sky = one(decam_source, {"ra": ra, "dec": dec}, (25,))
    forced = FitsImages(
        decam_source.science,
        decam_source.template,
        decam_source.difference,
        position="radec",
    )
    by_forced = one(forced, {"x": 0.0, "y": 0.0, "ra": ra, "dec": dec}, (25,))
    for res in (by_sky, by_forced):
        assert isinstance(res, Cutouts)
        np.testing.assert_array_equal(res.rows[0].science, by_xy.rows[0].science)
        np.testing.assert_array_equal(res.rows[0].template, by_xy.rows[0].template)
        np.testing.assert_array_equal(res.rows[0].difference, by_xy.rows[0].difference)


def test_cutout_near_edge_is_padded_with_nan(decam: Path, decam_source: FitsImages):
    res = one(decam_source, {"x": 2.0, "y": 254.6}, (30,))
    assert isinstance(res, Cutouts)
    assert res.padded
    sci = res.rows[0].science
    assert sci.shape == (30, 30)
    # x: source on column 2 lands at index 15, so 13 columns are off the image;
    # y: row 255 at index 15, so rows 256.. (indices 16..29) are off the image.
    assert np.isnan(sci[:, :13]).all()
    assert np.isnan(sci[16:, :]).all()
    assert np.isfinite(sci[:16, 13:]).all()
    np.testing.assert_array_equal(
        sci, reference_cut(fits.getdata(decam / SCI), 2.0, 254.6, 30)
    )


def test_source_off_the_image_fails_and_others_carry_on(decam_source: FitsImages):
    rows = [
        (1, {"x": 300.0, "y": 10.0}),
        (2, {"x": 10.0, "y": 10.0}),
        (3, {"x": -0.6, "y": 10.0}),
    ]
    results = list(decam_source.cutouts(rows, (30,)))
    assert isinstance(results[0], Failed)
    assert "off the science image" in results[0].reason
    assert SCI in results[0].reason
    assert isinstance(results[1], Cutouts)
    assert isinstance(results[2], Failed)


def test_missing_file_fails_with_its_path(decam: Path, tmp_path: Path):
    source = FitsImages(
        str(decam / SCI), str(tmp_path / "{visit}.fits"), str(decam / DIF)
    )
    rows = [(1, {"visit": 5, "x": 10, "y": 10}), (2, {"visit": 5, "x": 11, "y": 12})]
    results = list(source.cutouts(rows, (30,)))
    assert all(isinstance(r, Failed) for r in results)
    assert str(tmp_path / "5.fits") in results[0].reason
    assert "no such file" in results[0].reason
    assert "\n" not in results[0].reason


def test_truncated_and_corrupt_fits_fail_per_row(decam: Path, tmp_path: Path):
    raw = (decam / TPL).read_bytes()
    (tmp_path / "truncated.fits").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "header_only.fits").write_bytes(raw[:1000])
    (tmp_path / "garbage.fits").write_bytes(b"not a FITS file\n" * 300)
    source = FitsImages(
        str(decam / SCI), str(tmp_path / "{name}.fits"), str(decam / DIF)
    )
    rows = [
        (i, {"name": n, "x": 5.0, "y": 5.0})
        for i, n in enumerate(["truncated", "header_only", "garbage"])
    ]
    shutil.copy(decam / TPL, tmp_path / "good.fits")
    rows.append((9, {"name": "good", "x": 5.0, "y": 5.0}))
    results = list(source.cutouts(rows, (30,)))
    assert isinstance(results[0], Failed)
    assert "truncated" in results[0].reason
    for res, name in zip(
        results[:3], ["truncated", "header_only", "garbage"], strict=True
    ):
        assert isinstance(res, Failed)
        assert str(tmp_path / f"{name}.fits") in res.reason
    # a readable row after the bad ones still gets its cutouts
    assert isinstance(results[3], Cutouts)


def test_lsst_exposure_image_found_by_extname(tmp_path: Path):
    rng = np.random.default_rng(5)
    image = rng.normal(100, 5, size=(120, 90)).astype(np.float32)
    header = tan_wcs(120, 90)
    # IMAGE after MASK: the reader must find it by name, not by index
    sci = write_exposure(
        tmp_path / "sci.fits", image, header, order=("MASK", "IMAGE", "VARIANCE")
    )
    tpl = write_exposure(tmp_path / "tpl.fits", image * 2, header)
    dif = write_exposure(tmp_path / "dif.fits", image - 100, header)
    source = FitsImages(str(sci), str(tpl), str(dif))
    res = one(source, {"x": 40.0, "y": 60.0}, (21,))
    assert isinstance(res, Cutouts)
    np.testing.assert_array_equal(res.rows[0].science, image[50:71, 30:51])
    np.testing.assert_array_equal(res.rows[0].template, image[50:71, 30:51] * 2)
    assert res.pixel_scale == pytest.approx(0.2)
    # uncompressed pixels are memory-mapped, not loaded whole
    assert isinstance(source.cache.get(str(sci)).pixels, np.memmap)
    # the instrument, written by lsst.afw in the PRIMARY header, reaches the picture
    assert res.notes["instrument"] == "LSSTCam"


def test_lsst_exposure_with_xy0_offsets_catalogue_xy(tmp_path: Path):
    image = np.arange(50 * 60, dtype=np.float32).reshape(50, 60)
    paths = [
        write_exposure(tmp_path / f"{n}.fits", image, tan_wcs(50, 60), xy0=(1000, 2000))
        for n in ("s", "t", "d")
    ]
    source = FitsImages(*map(str, paths))
    res = one(source, {"x": 1030.0, "y": 2020.0}, (5,))
    np.testing.assert_array_equal(res.rows[0].science, image[18:23, 28:33])


def test_rice_compressed_exposure_is_read(tmp_path: Path):
    rng = np.random.default_rng(7)
    image = rng.normal(0, 10, size=(100, 100)).astype(np.float32)
    paths = [
        write_exposure(
            tmp_path / f"{n}.fits.fz", image + k, tan_wcs(100, 100), compress=True
        )
        for k, n in enumerate("std")
    ]
    with fits.open(paths[0]) as hdul:
        assert isinstance(hdul["IMAGE"], fits.CompImageHDU)
        expected = np.array(hdul["IMAGE"].data)  # RICE quantises floats
    source = FitsImages(*map(str, paths))
    res = one(source, {"x": 99.0, "y": 50.0}, (10,))
    assert isinstance(res, Cutouts)
    assert res.padded
    np.testing.assert_array_equal(res.rows[0].science[:, :6], expected[45:55, 94:100])
    assert np.isnan(res.rows[0].science[:, 6:]).all()
    assert np.allclose(res.rows[0].science[:, :6], image[45:55, 94:100], atol=2.0)


def test_all_nan_cutout_fails(tmp_path: Path):
    image = np.ones((60, 60), dtype=np.float32)
    holey = image.copy()
    holey[:30, :30] = np.nan
    sci = write_simple(tmp_path / "sci.fits", image)
    tpl = write_simple(tmp_path / "tpl.fits", holey)
    source = FitsImages(str(sci), str(tpl), str(sci))
    results = list(
        source.cutouts([(1, {"x": 10, "y": 10}), (2, {"x": 45, "y": 45})], (9,))
    )
    assert isinstance(results[0], Failed)
    assert "all-NaN" in results[0].reason
    assert "template" in results[0].reason
    assert str(tpl) in results[0].reason
    assert isinstance(results[1], Cutouts)


def test_radec_needs_a_celestial_wcs(tmp_path: Path):
    image = np.ones((40, 40), dtype=np.float32)
    paths = [write_exposure(tmp_path / f"{n}.fits", image) for n in "std"]
    source = FitsImages(*map(str, paths))
    res = one(source, {"ra": 150.0, "dec": 2.0})
    assert isinstance(res, Failed)
    assert "no celestial WCS" in res.reason
    assert str(paths[0]) in res.reason
    assert isinstance(
        one(source, {"x": 20.0, "y": 20.0, "ra": 1.0, "dec": 1.0}), Cutouts
    )


def decam_sky(decam: Path, x: float, y: float) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TPV header's FITSFixedWarning
        wcs = WCS(fits.getheader(decam / SCI))
    ra, dec = wcs.all_pix2world([[x, y]], 0)[0]
    return float(ra), float(dec)


@pytest.mark.parametrize(
    ("turn", "turned"),
    [
        (QUARTER, np.rot90),
        (MIRROR, np.fliplr),
        (QUARTER @ QUARTER, lambda a: np.rot90(a, 2)),
    ],
    ids=["rotated-90", "mirrored", "rotated-180"],
)
def test_a_template_turned_by_right_angles_is_put_back_exactly_by_radec(
    decam: Path, tmp_path: Path, turn, turned
):
    pixels = turned(fits.getdata(decam / TPL))
    tpl = turned_copy(decam / TPL, tmp_path / "turned.fits", turn, pixels)
    ra, dec = decam_sky(decam, 100.3, 140.6)
    row = {"ra": ra, "dec": dec}
    # The original template as the science image: the turned copy, resampled
    # onto its grid, is the original pixel for pixel.
    plain = one(FitsImages(*[str(decam / TPL)] * 3), row, (31, 30))
    res = one(FitsImages(str(decam / TPL), str(tpl), str(tpl)), row, (31, 30))
    assert isinstance(res, Cutouts), res
    assert res.notes["resampled"] == "template, difference"
    assert "resampled" not in plain.notes
    assert not res.padded
    for got, want in zip(res.rows, plain.rows, strict=True):
        np.testing.assert_array_equal(got.template, want.template)
        np.testing.assert_array_equal(got.difference, want.template)
        np.testing.assert_array_equal(got.science, want.science)


def test_a_template_rotated_30_degrees_is_resampled_onto_the_science_grid(
    decam: Path, decam_source: FitsImages, tmp_path: Path
):
    t = np.radians(30.0)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    tpl = turned_copy(decam / TPL, tmp_path / "rotated.fits", turn)
    ra, dec = decam_sky(decam, 120.2, 131.7)
    row = {"ra": ra, "dec": dec}
    plain = one(decam_source, row, (41,))
    rotated = FitsImages(decam_source.science, str(tpl), decam_source.difference)
    res = one(rotated, row, (41,))
    assert isinstance(res, Cutouts), res
    assert res.notes["resampled"] == "template"
    np.testing.assert_array_equal(res.rows[0].science, plain.rows[0].science)
    np.testing.assert_array_equal(res.rows[0].difference, plain.rows[0].difference)
    got = res.rows[0].template[5:-5, 5:-5].astype(np.float64)
    want = plain.rows[0].template[5:-5, 5:-5].astype(np.float64)
    assert np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.95
    # Interpolated twice (cubic to make it, bilinear to put it back): off by
    # much less than the spread of the sky.
    sky = float(np.median(np.abs(want - np.median(want))))
    assert float(np.median(np.abs(got - want))) < sky


def test_a_source_off_the_turned_template_fails_naming_it(decam: Path, tmp_path: Path):
    data = fits.getdata(decam / TPL)
    small = tmp_path / "small.fits"
    with fits.open(decam / TPL) as hdul:
        fits.PrimaryHDU(data[:128, :128], header=hdul[0].header).writeto(small)
    turned = np.rot90(data[:128, :128])
    tpl = turned_copy(small, tmp_path / "turned.fits", QUARTER, turned)
    source = FitsImages(str(decam / SCI), str(tpl), str(decam / DIF))
    on, off = decam_sky(decam, 50.0, 60.0), decam_sky(decam, 200.0, 60.0)
    results = list(
        source.cutouts(
            [(1, {"ra": on[0], "dec": on[1]}), (2, {"ra": off[0], "dec": off[1]})],
            (31,),
        )
    )
    assert isinstance(results[0], Cutouts), results[0]
    assert results[0].notes["resampled"] == "template"
    assert isinstance(results[1], Failed)
    assert "off the template image" in results[1].reason
    assert str(tpl) in results[1].reason


def test_a_cutout_over_the_turned_template_edge_is_padded_with_nan(
    decam: Path, tmp_path: Path
):
    data = fits.getdata(decam / TPL)
    tpl = turned_copy(decam / TPL, tmp_path / "turned.fits", QUARTER, np.rot90(data))
    row = dict(zip(("ra", "dec"), decam_sky(decam, 5.0, 128.0), strict=True))
    plain = one(FitsImages(*[str(decam / TPL)] * 3), row, (31,))
    res = one(FitsImages(str(decam / TPL), str(tpl), str(decam / TPL)), row, (31,))
    assert res.padded
    assert plain.padded
    np.testing.assert_array_equal(res.rows[0].template, plain.rows[0].template)
    assert np.isnan(res.rows[0].template[:, :5]).all()


def test_a_synthetic_template_turned_90_degrees_cuts_by_radec(tmp_path: Path):
    image = np.ones((80, 80), dtype=np.float32)
    sci = write_exposure(tmp_path / "s.fits", image, tan_wcs(80, 80))
    tpl = write_exposure(tmp_path / "t.fits", image, tan_wcs(80, 80, rotation_deg=90))
    source = FitsImages(str(sci), str(tpl), str(sci), position="radec")
    res = one(source, {"ra": 150.0, "dec": 2.0})
    assert isinstance(res, Cutouts), res
    assert res.notes["resampled"] == "template"
    np.testing.assert_array_equal(res.rows[0].template, np.ones((30, 30)))
    # Placed by x/y, the images share a grid: nothing is resampled.
    by_xy = FitsImages(str(sci), str(tpl), str(sci), position="xy")
    assert "resampled" not in one(by_xy, {"x": 40.0, "y": 40.0}).notes


def test_use_footprint_grows_cutout_to_bbox_size(decam_source: FitsImages):
    row = {"x": 120.0, "y": 120.0, "bboxSize": 44}
    grown = one(decam_source, row, (30, 64), use_footprint=True)
    assert [t.shape for t in grown.rows] == [(44, 44), (64, 64)]
    plain = one(decam_source, row, (30,), use_footprint=False)
    assert plain.rows[0].shape == (30, 30)


def test_empty_sizes_mean_30_pixels(decam_source: FitsImages):
    assert one(decam_source, {"x": 50, "y": 50}, ()).rows[0].shape == (30, 30)


def test_path_template_naming_missing_column_fails_before_work(tmp_path: Path):
    source = FitsImages(
        "data/{visit}/{detector}/calexp.fits",
        "data/{visit}/{detector}/tpl.fits",
        "data/{visit}/{filter}/diff.fits",
    )
    with pytest.raises(
        InputError,
        match=r"'filter'.*available columns: detector, "
        r"diaSourceId, visit, x, y",
    ):
        source.check(["diaSourceId", "visit", "detector", "x", "y"])
    source.check(["visit", "detector", "filter", "ra", "dec"])
    with pytest.raises(InputError, match="x/y or ra/dec"):
        source.check(["visit", "detector", "filter"])
    with pytest.raises(InputError, match="positional"):
        FitsImages("{}.fits", "t.fits", "d.fits")
    with pytest.raises(InputError, match="position must be"):
        FitsImages("s.fits", "t.fits", "d.fits", position="pixels")  # type: ignore[arg-type]


def test_group_key_is_the_three_paths_and_rows_are_grouped():
    source = FitsImages("s/{visit}.fits", "t/{tract}.fits", "d/{visit}.fits", root="/r")
    assert source.group_key({"visit": 3, "tract": 9}) == (
        "/r/s/3.fits",
        "/r/t/9.fits",
        "/r/d/3.fits",
    )


def test_cutting_10000_sources_from_20_images_reads_no_image_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rng = np.random.default_rng(1)
    # 20 images: 9 visits (science + difference each) and 2 templates
    for k in range(9):
        write_simple(tmp_path / f"sci{k}.fits", rng.normal(size=(200, 200)))
        write_simple(tmp_path / f"dif{k}.fits", rng.normal(size=(200, 200)))
    for t in range(2):
        write_simple(tmp_path / f"tpl{t}.fits", rng.normal(size=(200, 200)))
    opened: list[str] = []
    real_open = fits.open

    def counting_open(name, *args, **kwargs):
        opened.append(str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(fits, "open", counting_open)
    visits = rng.integers(0, 9, size=10_000)
    xy = rng.uniform(-5, 205, size=(10_000, 2))
    rows = [
        (i, {"visit": int(v), "tract": int(v) % 2, "x": x, "y": y})
        for i, (v, (x, y)) in enumerate(zip(visits, xy, strict=True))
    ]
    source = FitsImages(
        str(tmp_path / "sci{visit}.fits"),
        str(tmp_path / "tpl{tract}.fits"),
        str(tmp_path / "dif{visit}.fits"),
    )
    rows.sort(key=lambda r: source.group_key(r[1]))  # as the render stage groups them
    results = list(source.cutouts(rows, (16, 32)))
    assert len(results) == 10_000
    assert len(opened) == 20
    assert len(set(opened)) == 20
    assert sum(source.cache.opens.values()) == 20
    off = [r for r in results if isinstance(r, Failed)]
    assert off
    assert all("off the science image" in r.reason for r in off)
    assert sum(isinstance(r, Cutouts) and r.padded for r in results) > 0

    # a cache too small to keep anything still opens each image once per group
    opened.clear()
    tiny = FitsImages(source.science, source.template, source.difference, cache_bytes=0)
    assert len(list(tiny.cutouts(rows, (16,)))) == 10_000
    assert len(opened) == 27
    assert tiny.cache.nbytes == 0


def test_cache_is_bounded_by_bytes(decam: Path):
    cache = ImageCache(max_bytes=600_000)  # one 256x256 float64 image is 524,288 bytes
    a = cache.get(str(decam / SCI))
    cache.get(str(decam / TPL))
    assert cache.nbytes <= 600_000
    assert cache.nbytes == a.nbytes
    cache.get(str(decam / SCI))
    assert cache.opens[str(decam / SCI)] == 2


def test_image_source_pickles_without_its_cache(decam_source: FitsImages):
    one(decam_source, {"x": 50, "y": 50})
    clone = pickle.loads(pickle.dumps(decam_source))
    assert clone._cache is None
    assert isinstance(one(clone, {"x": 50, "y": 50}), Cutouts)


def test_stack_cutouts_orders_template_science_difference(decam_source: FitsImages):
    res = one(decam_source, {"x": 60, "y": 70}, (20, 40))
    stacks = stack_cutouts(res)
    assert sorted(stacks) == [20, 40]
    assert stacks[20].shape == (3, 20, 20)
    assert stacks[20].dtype == np.float32
    np.testing.assert_array_equal(stacks[40][0], res.rows[1].template)
    np.testing.assert_array_equal(stacks[40][1], res.rows[1].science)
    np.testing.assert_array_equal(stacks[40][2], res.rows[1].difference)


# --- alert stamps --------------------------------------------------------------------


def ztf_stamp(record: dict, field: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        raw = gzip.decompress(record[field]["stampData"])
        with fits.open(io.BytesIO(raw)) as hdul:
            return np.array(hdul[0].data, dtype=np.float32)


def alert_rows(path: Path, fmt: str, n: int) -> list[tuple[int, dict]]:
    return [
        (1000 + i, {"_alert_path": str(path), "_alert_index": i, "_alert_format": fmt})
        for i in range(n)
    ]


def test_ztf_stamps_come_whole_at_native_size(test_data: Path):
    path = test_data / "ztf_alerts/fink-client/avro_multi_alerts_other.avro"
    records = list(read_alert_records(path))
    assert len(records) == 3
    source = AlertStamps()
    source.check(["_alert_path", "_alert_index", "_alert_format"])
    assert isinstance(source, ImageSource)
    results = list(source.cutouts(alert_rows(path, "ztf", 3), ()))
    for res, record in zip(results, records, strict=True):
        assert isinstance(res, Cutouts)
        assert res.pixel_scale == pytest.approx(1.01)
        assert not res.padded
        t = res.rows[0]
        assert t.shape == (63, 63)
        np.testing.assert_array_equal(t.science, ztf_stamp(record, "cutoutScience"))
        np.testing.assert_array_equal(t.template, ztf_stamp(record, "cutoutTemplate"))
        np.testing.assert_array_equal(
            t.difference, ztf_stamp(record, "cutoutDifference")
        )
        negative = record["candidate"]["isdiffpos"] == "f"
        assert (res.notes.get("difference_sign") == "reference - science") == negative


def test_ztf_stamp_cut_to_explicit_sizes(test_data: Path):
    path = test_data / "ztf_alerts/boom/2695378462115010012.avro"
    (record,) = read_alert_records(path)
    (res,) = AlertStamps().cutouts(alert_rows(path, "ztf", 1), (31, 64))
    sci = ztf_stamp(record, "cutoutScience")
    np.testing.assert_array_equal(res.rows[0].science, sci[16:47, 16:47])
    assert res.rows[1].shape == (64, 64)
    assert res.padded
    np.testing.assert_array_equal(res.rows[1].science[1:, 1:], sci)
    assert np.isnan(res.rows[1].science[0]).all()


def test_rubin_stamps_come_whole_with_pixel_scale(test_data: Path):
    path = test_data / "rubin_alerts/fink-client/part-2-918301.avro"
    records = list(read_alert_records(path))
    assert len(records) == 7
    results = list(AlertStamps().cutouts(alert_rows(path, "rubin", 7), ()))
    for res, record in zip(results, records, strict=True):
        assert isinstance(res, Cutouts), res
        assert res.rows[0].shape == (30, 30)
        assert res.pixel_scale == pytest.approx(0.2, abs=0.005)
        for field, got in (
            ("cutoutScience", res.rows[0].science),
            ("cutoutTemplate", res.rows[0].template),
            ("cutoutDifference", res.rows[0].difference),
        ):
            with fits.open(io.BytesIO(record[field])) as hdul:
                np.testing.assert_array_equal(got, hdul[0].data)


def test_alert_rows_of_many_files_each_read_once(test_data: Path):
    folder = test_data / "rubin_alerts/fink-filters-repacked"
    files = sorted(folder.glob("*.avro"))
    rows = [
        (i, {"_alert_path": str(p), "_alert_index": 0}) for i, p in enumerate(files)
    ]
    results = list(AlertStamps().cutouts(rows, (20,)))
    assert all(isinstance(r, Cutouts) and r.rows[0].shape == (20, 20) for r in results)
    assert len(results) == 10


def test_confluent_payload_without_schema_fails_clearly(test_data: Path):
    path = test_data / "rubin_alerts/boom/7912941781254298.avro"
    (res,) = AlertStamps().cutouts(alert_rows(path, "rubin", 1), ())
    assert isinstance(res, Failed)
    assert "Confluent wire-format payload without an embedded schema" in res.reason
    assert "schema id 900" in res.reason
    assert str(path) in res.reason


def test_confluent_payload_decodes_with_a_given_schema(test_data: Path, tmp_path: Path):
    # our own small writer schema (not Rubin's): stamps as raw FITS bytes
    (record,) = read_alert_records(
        test_data / "rubin_alerts/fink-filters-repacked/169813006111211559.avro"
    )
    schema = {
        "type": "record",
        "name": "mini",
        "fields": [
            {
                "name": "diaSource",
                "type": {
                    "type": "record",
                    "name": "src",
                    "fields": [{"name": "diaSourceId", "type": "long"}],
                },
            },
            {"name": "cutoutScience", "type": "bytes"},
            {"name": "cutoutTemplate", "type": "bytes"},
            {"name": "cutoutDifference", "type": "bytes"},
        ],
    }
    buf = io.BytesIO()
    buf.write(b"\x00" + (42).to_bytes(4, "big"))
    fastavro.schemaless_writer(
        buf,
        fastavro.parse_schema(schema),
        {
            "diaSource": {"diaSourceId": record["diaSourceId"]},
            **{
                k: record[k]
                for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")
            },
        },
    )
    path = tmp_path / "payload.avro"
    path.write_bytes(buf.getvalue())
    (res,) = AlertStamps(schema=schema).cutouts(alert_rows(path, "rubin", 1), ())
    assert isinstance(res, Cutouts)
    with fits.open(io.BytesIO(record["cutoutDifference"])) as hdul:
        np.testing.assert_array_equal(res.rows[0].difference, hdul[0].data)


def test_alert_problems_fail_per_row(test_data: Path, tmp_path: Path):
    good = test_data / "ztf_alerts/fink-client/ZTF19acihgng.avro"
    shutil.copy(good, tmp_path / "copy.avro")
    (tmp_path / "broken.avro").write_bytes(good.read_bytes()[:3000])
    rows = [
        (1, {"_alert_path": str(tmp_path / "copy.avro"), "_alert_index": 4}),
        (2, {"_alert_path": str(tmp_path / "missing.avro"), "_alert_index": 0}),
        (3, {"_alert_path": str(tmp_path / "broken.avro"), "_alert_index": 0}),
        (4, {"_alert_path": str(good), "_alert_index": 0}),
    ]
    results = list(AlertStamps().cutouts(rows, ()))
    assert isinstance(results[0], Failed)
    assert "no alert record 4" in results[0].reason
    assert isinstance(results[1], Failed)
    assert "missing.avro" in results[1].reason
    assert isinstance(results[2], Failed)
    assert "broken.avro" in results[2].reason
    assert isinstance(results[3], Cutouts)
    with pytest.raises(InputError, match="_alert_index"):
        AlertStamps().check(["_alert_path", "diaSourceId"])


# --- Butler repository ---------------------------------------------------------------


def test_butler_repository_cutouts_equal_the_ingested_files(tmp_path: Path):
    pytest.importorskip("lsst.daf.butler")  # the butler extra
    from tests.butlerrepo import INSTRUMENT, RUN, make_repo
    from zooprep.images import ButlerImages

    rng = np.random.default_rng(11)
    types = ("preliminary_visit_image", "template_matched", "difference_image")
    files, pixels = {}, {}
    for visit in (2026030500055, 2026030500057):
        for detector in (4, 94):
            for k, name in enumerate(types):
                image = rng.normal(k * 100, 3, size=(64, 48)).astype(np.float32)
                path = tmp_path / "in" / f"{name}_{visit}_{detector}.fits"
                path.parent.mkdir(exist_ok=True)
                write_exposure(
                    path, image, tan_wcs(64, 48), compress=(name == types[0])
                )
                files[(name, visit, detector)] = path
                with fits.open(path) as hdul:  # RICE quantises the science image
                    pixels[(name, visit, detector)] = np.array(hdul["IMAGE"].data)
    repo = make_repo(tmp_path / "repo", files, types)
    for path in files.values():
        path.unlink()  # the repository holds its own copies

    source = ButlerImages(repo, [RUN])
    assert isinstance(source, ImageSource)
    source.check(["diaSourceId", "visit", "detector", "x", "y"])
    with pytest.raises(InputError, match=r"'detector'.*available columns: visit, x, y"):
        source.check(["visit", "x", "y"])
    rows = [
        (1, {"visit": 2026030500055, "detector": 94, "x": 20.0, "y": 30.0}),
        (2, {"visit": 2026030500055, "detector": 94, "x": 1.0, "y": 63.0}),
        (3, {"visit": 2026030500057, "detector": 4, "x": 24.0, "y": 32.0}),
        (4, {"visit": 2026030500057, "detector": 7, "x": 24.0, "y": 32.0}),
    ]
    results = list(source.cutouts(rows, (11,)))
    for res, (_, row) in zip(results[:3], rows[:3], strict=True):
        assert isinstance(res, Cutouts)
        key = (row["visit"], row["detector"])
        for got, name in zip(
            (res.rows[0].science, res.rows[0].template, res.rows[0].difference),
            types,
            strict=True,
        ):
            want = reference_cut(pixels[(name, *key)], row["x"], row["y"], 11)
            np.testing.assert_array_equal(got, want)
        assert res.pixel_scale == pytest.approx(0.2)
    assert results[1].padded
    assert isinstance(results[3], Failed)
    assert "no preliminary_visit_image" in results[3].reason
    assert (
        f"instrument={INSTRUMENT}, visit=2026030500057, detector=7" in results[3].reason
    )
    # each image file in the repository was opened once
    assert sorted(source.cache.opens.values()) == [1] * 6
    # the image source travels to worker processes without its Butler
    clone = pickle.loads(pickle.dumps(source))
    assert clone._butler is None
    assert isinstance(next(iter(clone.cutouts(rows[:1], (5,)))), Cutouts)


def test_butler_with_older_dataset_type_names(tmp_path: Path):
    pytest.importorskip("lsst.daf.butler")  # the butler extra
    from tests.butlerrepo import RUN, make_repo
    from zooprep.images import ButlerImages

    image = np.arange(40 * 40, dtype=np.float32).reshape(40, 40)
    types = ("calexp", "goodSeeingDiff_templateExp", "goodSeeingDiff_differenceExp")
    files = {}
    for k, name in enumerate(types):
        files[(name, 7, 1)] = write_exposure(tmp_path / f"{name}.fits", image + k)
    repo = make_repo(tmp_path / "repo", files, types, transfer="direct")
    source = ButlerImages(repo, RUN, *types, instrument="ZooCam", position="xy")
    (res,) = source.cutouts([(9, {"visit": 7, "detector": 1, "x": 10, "y": 20})], (3,))
    np.testing.assert_array_equal(res.rows[0].template, image[19:22, 9:12] + 1)
    assert res.pixel_scale is None  # no WCS in these files


def test_butler_without_lsst_daf_butler_is_a_clear_input_error(
    monkeypatch: pytest.MonkeyPatch,
):
    import sys

    from zooprep.images import ButlerImages

    monkeypatch.setitem(sys.modules, "lsst.daf.butler", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'zooprep\[butler\]'"):
        ButlerImages("/nowhere", ["run"])


def test_scaled_integer_image_with_blank_reads_physical_values(tmp_path: Path):
    raw = np.arange(30 * 30, dtype=np.int16).reshape(30, 30)
    raw[10, 10] = -999
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["BLANK"] = -999
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)  # astropy writes the integers as given, with the scaling keys
    source = FitsImages(str(path), str(path), str(path))
    res = one(source, {"x": 10.0, "y": 10.0}, (3,))
    expected = raw[9:12, 9:12] * 0.5 + 100.0
    expected[1, 1] = np.nan
    np.testing.assert_array_equal(res.rows[0].science, expected.astype(np.float32))


def test_the_pixel_scale_of_a_cd_matrix_header_is_astropys_without_its_wcs(
    decam: Path,
) -> None:
    # The scale bar's length comes from the science image's pixel scale; for
    # the usual CD-matrix headers it is read without building a WCS, and must
    # be exactly what astropy gives (else the PNG bytes would change).
    from astropy import units as u
    from astropy.wcs.utils import proj_plane_pixel_scales

    from zooprep.images.cutting import _cd_pixel_scale, pixel_scale
    from zooprep.images.fitsimage import FitsImage

    def astropy_scale(header: fits.Header) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITSFixedWarning about SCAMP's PV
            wcs = WCS(header, naxis=2).celestial
        scales = proj_plane_pixel_scales(wcs)
        units = [u.Unit(cu) if str(cu) else u.deg for cu in wcs.wcs.cunit]
        return float(
            np.mean(
                [(s * n).to_value(u.arcsec) for s, n in zip(scales, units, strict=True)]
            )
        )

    headers = [fits.getheader(p) for p in sorted(decam.glob("*.fits"))]
    assert all("CD1_1" in h for h in headers)
    rng = np.random.default_rng(5)
    angles, flips = rng.uniform(0, 360, 40), rng.choice([-1, 1], 40)
    for angle, flip, scale in zip(angles, flips, rng.uniform(0.05, 2, 40), strict=True):
        h = headers[0].copy()
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        cd = scale / 3600 * np.array([[-c, s * flip], [s, c * flip]])
        for (i, j), v in np.ndenumerate(cd):
            h[f"CD{i + 1}_{j + 1}"] = v
        h["CTYPE1"], h["CTYPE2"] = ("RA---TAN", "DEC--TAN") if angle < 180 else (
            "RA---TPV", "DEC--TPV")  # fmt: skip
        headers.append(fits.Header.fromstring(h.tostring()))  # as read from a file
    for header in headers:
        image = FitsImage("x.fits", 0, header, np.zeros((2, 2), np.float32))
        assert pixel_scale(image) == astropy_scale(header)
    fast = [h for h in headers if _cd_pixel_scale(h) is not None]
    assert len(fast) == len(headers)  # DEC-OBS18 has CDELT 1 beside its CD too
    # Anything else is left to astropy's WCS: PC/CDELT, other units or axes.
    pc = headers[0].copy()
    for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        del pc[k]
    pc["CDELT1"], pc["CDELT2"] = -0.263 / 3600, 0.263 / 3600
    pc = fits.Header.fromstring(pc.tostring())
    other_units = headers[1].copy()
    other_units["CUNIT1"] = other_units["CUNIT2"] = "arcsec"
    galactic = headers[2].copy()
    galactic["CTYPE1"], galactic["CTYPE2"] = "GLON-TAN", "GLAT-TAN"
    for header in (pc, other_units, galactic):
        image = FitsImage("x.fits", 0, header, np.zeros((2, 2), np.float32))
        assert pixel_scale(image) == pytest.approx(astropy_scale(header), rel=1e-12)
