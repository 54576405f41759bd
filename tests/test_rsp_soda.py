"""Cutouts from the Rubin Science Platform: SIAv2 finds the images, SODA cuts them.

The RSP stand-in (``tests/rsp_standin/server.py``) serves the real DECam
triplet of ``tests/data/decam_sfft`` through SIAv2, DataLink documents laid
out as the RSP's and SODA sync; zooprep talks to it through pyvo and requests.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

import zooprep
from tests.imagegen import QUARTER, turned_copy
from tests.plugins.rsp import TOKEN
from tests.rsp_standin.rows import DECAM_VISIT, decam_sources
from tests.rsp_standin.server import Faults, RspStandin
from zooprep.images.base import Cutouts, Failed
from zooprep.images.fits import FitsImages
from zooprep.run import Run

pytest.importorskip("pyvo")

SIZES = (30, 61)


@pytest.fixture
def decam_rows(test_data: Path) -> list[tuple[int, dict[str, Any]]]:
    return [(int(r["diaSourceId"]), r) for r in decam_sources(test_data / "decam_sfft")]


def _soda(rsp: RspStandin) -> Any:
    from zooprep.images.soda import SodaImages

    return SodaImages(rsp.sia_url, concurrency=4)


def test_a_soda_cutout_equals_the_same_cut_of_the_local_image(
    rsp_factory: Callable[..., RspStandin],
    decam_rows: list[tuple[int, dict[str, Any]]],
    test_data: Path,
) -> None:
    rsp = rsp_factory()
    images = _soda(rsp)
    try:
        remote = list(images.cutouts(decam_rows, SIZES))
    finally:
        images.close()
    d = test_data / "decam_sfft"
    local = list(
        FitsImages(
            str(d / "Stack-DEC-OBS04.fits"),
            str(d / "Stack-DEC-OBS18.fits"),
            str(d / "FinalDifference.fits"),
            position="radec",
        ).cutouts(decam_rows, SIZES)
    )
    assert len(remote) == len(local) == len(decam_rows)
    for got, want in zip(remote, local, strict=True):
        assert isinstance(got, Cutouts), got
        assert isinstance(want, Cutouts)
        assert got.source_id == want.source_id
        assert got.padded == want.padded
        for a, b in zip(got.rows, want.rows, strict=True):
            for role in ("science", "template", "difference"):
                np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
    # each image's DataLink document once; SIA once for the visit, once for
    # the template (whose footprint then covers the other sources)
    assert rsp.requests["/api/datalink/links"] == 3
    assert rsp.requests["/api/sia/dp1/query"] == 2
    assert rsp.requests["/api/cutout/sync"] == 3 * len(decam_rows)
    # a cutout is a small part of the image
    assert rsp.bytes_sent["/api/cutout/sync"] < 0.2 * 3 * 538560 * len(decam_rows)


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (
            Faults(status={"lsst.template_coadd": 404}),
            "SODA cutout of the template image ivo://org.rubinobs/usdac/lsst-dp1?"
            "repo=dp1&id=",
        ),
        (Faults(status={"lsst.visit_image": 403}), "access refused (HTTP 403)"),
        (
            Faults(error_document={"lsst.difference_image"}),
            "error document: UsageError",
        ),
        (Faults(corrupt={"lsst.visit_image"}), "corrupt FITS"),
    ],
    ids=["404", "403", "error-document", "corrupt"],
)
def test_an_image_soda_cannot_give_fails_its_rows_with_one_line_naming_it(
    rsp_factory: Callable[..., RspStandin],
    decam_rows: list[tuple[int, dict[str, Any]]],
    faults: Faults,
    expected: str,
) -> None:
    rsp = rsp_factory(faults=faults)
    images = _soda(rsp)
    try:
        out = list(images.cutouts(decam_rows[:3], SIZES))
    finally:
        images.close()
    assert all(isinstance(o, Failed) for o in out), out
    for o in out:
        assert expected in o.reason
        assert "\n" not in o.reason
        assert TOKEN not in o.reason


def test_throttling_and_transient_errors_are_retried_until_the_cutouts_come(
    rsp_factory: Callable[..., RspStandin],
    decam_rows: list[tuple[int, dict[str, Any]]],
) -> None:
    rsp = rsp_factory(faults=Faults(throttle=3, transient=3))
    images = _soda(rsp)
    try:
        out = list(images.cutouts(decam_rows[:4], SIZES))
    finally:
        images.close()
    assert all(isinstance(o, Cutouts) for o in out), out
    assert rsp.requests["/api/cutout/sync"] == 3 * 4 + 6


def test_a_source_no_image_covers_fails_naming_what_sia_did_not_find(
    rsp_factory: Callable[..., RspStandin],
    decam_rows: list[tuple[int, dict[str, Any]]],
) -> None:
    rsp = rsp_factory()
    sid, row = decam_rows[0]
    far = {**row, "ra": row["ra"] + 1.0, "detector": 99, "visit": 1}
    images = _soda(rsp)
    try:
        (out,) = list(images.cutouts([(sid, far)], SIZES))
    finally:
        images.close()
    assert isinstance(out, Failed)
    assert out.reason.startswith("no lsst.visit_image of visit 1 at RA")
    assert rsp.sia_url in out.reason


def test_a_wrong_token_fails_the_rows_without_showing_it(
    rsp_factory: Callable[..., RspStandin],
    decam_rows: list[tuple[int, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rsp = rsp_factory()
    monkeypatch.setenv("RSP_TOKEN", "gt-not-the-right-one")
    images = _soda(rsp)
    try:
        out = list(images.cutouts(decam_rows[:2], SIZES))
    finally:
        images.close()
    assert all(isinstance(o, Failed) for o in out)
    assert "access refused (401); check RSP_TOKEN" in out[0].reason
    assert "gt-not-the-right-one" not in out[0].reason


@pytest.mark.tap
def test_render_of_a_tap_run_cuts_through_soda_like_local_files(
    tmp_path: Path, rsp: RspStandin, test_data: Path
) -> None:
    run = tmp_path / "tap"
    zooprep.select(
        run,
        tap=rsp.tap_url,
        table="dp1.DiaSource",
        visit=[DECAM_VISIT],
        tap_mode="sync",
    )
    result = zooprep.render(run, sizes=[30], jobs=1)
    assert (result.rendered, result.failed) == (8, 0)
    # the same sources from a catalog, rendered from the local files
    with Run.open(run, lock=False) as r:
        rows = [s.row for s in r.iter_sources()]
    import pandas as pd

    catalog = tmp_path / "same.csv"
    pd.DataFrame(rows).to_csv(catalog, index=False)
    local = tmp_path / "local"
    zooprep.select(local, catalog=catalog)
    d = test_data / "decam_sfft"
    zooprep.render(
        local,
        sizes=[30],
        jobs=1,
        position="radec",
        images={
            "science": str(d / "Stack-DEC-OBS04.fits"),
            "template": str(d / "Stack-DEC-OBS18.fits"),
            "difference": str(d / "FinalDifference.fits"),
        },
    )
    pngs = sorted(p.relative_to(run) for p in (run / "cutouts").rglob("*.png"))
    assert len(pngs) == 8
    for p in pngs:
        assert (run / p).read_bytes() == (local / p).read_bytes(), p
    assert TOKEN.encode() not in (run / "zooprep.toml").read_bytes()


def test_a_template_coadd_turned_from_the_visit_is_resampled_like_a_local_one(
    decam_rows: list[tuple[int, dict[str, Any]]],
    test_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As DP1's template_coadd on its tract's grid: turned 90 degrees from the
    # visit; SODA cuts it in its own frame, zooprep resamples it.
    d = test_data / "decam_sfft"
    for name in ("Stack-DEC-OBS04.fits", "FinalDifference.fits"):
        shutil.copy(d / name, tmp_path / name)
    tpl = tmp_path / "Stack-DEC-OBS18.fits"
    turned_copy(
        d / "Stack-DEC-OBS18.fits",
        tpl,
        QUARTER,
        np.rot90(fits.getdata(d / "Stack-DEC-OBS18.fits")),
    )
    monkeypatch.setenv("RSP_TOKEN", TOKEN)
    with RspStandin(tmp_path, token=TOKEN) as rsp:
        images = _soda(rsp)
        try:
            remote = list(images.cutouts(decam_rows, SIZES))
        finally:
            images.close()
    local = list(
        FitsImages(
            str(d / "Stack-DEC-OBS04.fits"),
            str(tpl),
            str(d / "FinalDifference.fits"),
            position="radec",
        ).cutouts(decam_rows, SIZES)
    )
    assert len(remote) == len(local) == len(decam_rows)
    for got, want in zip(remote, local, strict=True):
        assert isinstance(got, Cutouts), got
        assert isinstance(want, Cutouts), want
        assert got.notes["resampled"] == want.notes["resampled"] == "template"
        assert got.padded == want.padded
        for a, b in zip(got.rows, want.rows, strict=True):
            for role in ("science", "template", "difference"):
                np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
