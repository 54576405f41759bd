"""One cutout reader for every wrapping brokers and alert packets use.

Each wrapping of the same real stamp (a Rubin stamp with its variance and PSF
HDUs, a ZTF gzipped stamp) must give the same pixels; anything that is not a
FITS image must say what it is instead, in one line.
"""

from __future__ import annotations

import base64
import gzip
import io
import json

import numpy as np
import pytest
from astropy.io import fits

from tests.brokers.stamps import rubin_alerts, rubin_stamp, ztf_alerts, ztf_stamp
from zooprep.images.cutoutdata import CutoutError, cutout_kind, read_cutout


@pytest.fixture(scope="module")
def rubin() -> bytes:
    return rubin_stamp(rubin_alerts()[0], "Science")


@pytest.fixture(scope="module")
def ztf() -> bytes:
    return ztf_stamp(ztf_alerts()[0], "Difference")


def _image(data: bytes) -> np.ndarray:
    with fits.open(io.BytesIO(data), ignore_missing_simple=True) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32)


def test_every_wrapping_of_a_rubin_stamp_gives_its_image(rubin: bytes) -> None:
    """Raw FITS (Lasair, Fink), gzipped (ALeRCE), base64, JSON with base64."""
    want = _image(rubin)
    assert want.shape == (30, 30)
    b64 = base64.b64encode(gzip.compress(rubin)).decode()
    for wrapped in (
        rubin,
        gzip.compress(rubin),
        base64.b64encode(rubin),
        b64,
        json.dumps({"stampData": b64}).encode(),
        {"b:cutoutScience": {"stampData": b64}},
        {"fileName": "x.fits.gz", "stampData": gzip.compress(rubin)},
    ):
        image, header = read_cutout(wrapped)
        np.testing.assert_array_equal(image, want)
        assert header["BUNIT"].strip() == "nJy"


def test_a_ztf_stamp_and_a_pixel_array_read_alike(ztf: bytes) -> None:
    """ZTF's gzipped stamp (non-standard SIMPLE card) and Fink's array output."""
    image, _ = read_cutout(ztf)
    assert image.shape == (63, 63)
    array = {"b:cutoutDifference": np.nan_to_num(image).tolist()}
    again, header = read_cutout(json.dumps(array).encode())
    np.testing.assert_allclose(again, np.nan_to_num(image))
    assert len(header) == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not FITS: an empty body"),
        (b"<!DOCTYPE html><html><body>502</body></html>", "not FITS: an HTML page"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not FITS: a PNG image"),
        (b'{"detail": "Not found."}', "no single stamp field"),
        (gzip.compress(b"hello")[:-4], "damaged gzip"),
        (b"SIMPLE  =                    T" + b" " * 50, "damaged FITS"),
        (b"Internal Server Error", "not FITS (starts with"),
    ],
)
def test_what_is_not_a_fits_cutout_says_what_it_is(data: bytes, reason: str) -> None:
    with pytest.raises(CutoutError, match=reason.replace("(", r"\(")) as caught:
        read_cutout(data)
    assert "\n" not in str(caught.value)


def test_cutout_kind_names_the_first_bytes(rubin: bytes) -> None:
    assert cutout_kind(rubin) == "FITS"
    assert cutout_kind(gzip.compress(rubin)) == "gzip"
    assert cutout_kind(b"  [1, 2]") == "JSON"
