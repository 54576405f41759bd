"""Pictures from other instruments: scale bars that fit, names from the data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zooprep
from zooprep.images.base import Cutouts, Triplet
from zooprep.readers.alerts import alert_rows, ztf_schema_instrument
from zooprep.renderers import AnnotatedRenderer, _draw
from zooprep.renderers._draw import SCALE_BAR_ARCSEC, PanelRow, draw_scale_bar

#: Arcsec per pixel of the cameras people render (JWST NIRCam short
#: wavelength, Rubin, HSC, DECam, ZTF), and a coarse all-sky camera.
PIXEL_SCALES = (0.031, 0.2, 0.168, 0.263, 1.01, 15.0)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.parametrize("pixel_scale", PIXEL_SCALES)
@pytest.mark.parametrize(("n", "width"), [(30, 210), (63, 189), (64, 192), (200, 200)])
def test_scale_bar_is_a_round_length_covering_10_to_35_percent_of_the_panel(
    pixel_scale: float, n: int, width: int
) -> None:
    canvas = np.full((width + 20, width, 3), 128, dtype=np.uint8)
    row = PanelRow(top=10, height=width, ny=n, nx=n)
    arcsec = draw_scale_bar(canvas, 0, row, width, pixel_scale, _draw.Typesetter())
    assert arcsec in SCALE_BAR_ARCSEC
    yellow = (canvas == np.array([255, 255, 0], dtype=np.uint8)).all(axis=2)
    length = int(yellow.sum(axis=1).max())
    assert length == round(arcsec * (width / n) / pixel_scale)
    assert 0.10 * width - 1 <= length <= 0.35 * width + 1
    # Labelled: yellow text on a blue box above the bar.
    assert (yellow.sum(axis=1) > 0).sum() > 3 + 4


def test_one_arcsec_is_kept_whenever_it_fits() -> None:
    assert _draw.scale_bar_arcsec(210, 35.0) == 1.0  # 17 % of the panel
    assert _draw.scale_bar_arcsec(210, 14.0) == 2.0  # 1" would be 7 %
    assert _draw.scale_bar_arcsec(200, 4.0) == 10.0  # 1" would be 2 %


@pytest.mark.parametrize("band", ["F200W", "HSC-R2", "F444W-F470N", "r"])
def test_long_band_names_stay_on_the_canvas(band: str) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(30, 30)).astype(np.float32) for _ in range(3)]
    row = {
        "diaSourceId": 1234567890123456789,
        "instrument": "NIRCam",
        "visit": 1234567,
        "detector": 12,
        "band": band,
    }
    img = _decode(
        AnnotatedRenderer().render(
            Cutouts(1, [Triplet(*arrays)], pixel_scale=0.031), row
        )
    )
    top_line = img[: _draw.MARGIN + _draw.LINE_PITCH]
    ink = np.nonzero((top_line < 200).any(axis=2).any(axis=0))[0]
    assert ink.max() < img.shape[1] - _draw.MARGIN // 2
    # The band is drawn: its right end is near the right margin.
    assert ink.max() > img.shape[1] - _draw.MARGIN - 40


def test_instrument_of_a_ztf_schema_packet_comes_from_the_packet(
    test_data: Path,
) -> None:
    ztf = next(iter(sorted((test_data / "ztf_alerts" / "ampel").glob("5*.avro"))))
    assert {r["instrument"] for r in alert_rows(ztf)} == {"ZTF"}
    assert {r["instrument"] for r in alert_rows(ztf, instrument="X")} == {"X"}
    decam = {"objectId": "C202211081234", "candidate": {"candid": 1}}
    assert ztf_schema_instrument(decam) is None
    named = {"objectId": "A1", "candidate": {"candid": 1, "instrument": "DECam"}}
    assert ztf_schema_instrument(named) == "DECam"


def test_ztf_stamps_without_wcs_get_a_scale_bar_from_the_camera(
    tmp_path: Path, test_data: Path
) -> None:
    run = tmp_path / "run"
    zooprep.select(run, alerts=str(test_data / "ztf_alerts" / "ampel" / "5*.avro"))
    zooprep.render(run, annotate=True, jobs=1)
    pngs = sorted((run / "cutouts").rglob("*.png"))
    assert pngs
    for path in pngs:
        img = _decode(path.read_bytes())
        yellow = (img == np.array([255, 255, 0], dtype=np.uint8)).all(axis=2)
        assert yellow.any(), path.name
