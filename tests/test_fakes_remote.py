"""zooprep fakes on images in an object store and in a Butler repository.

The same DECam triplet, put in moto's S3 (on 127.0.0.1) and ingested into a
real Butler repository, must give exactly the fakes the local files give:
the same positions, fluxes and noise, and the same rendered cutouts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("photutils")

import zooprep
from tests.test_fakes import APDB, IMAGES
from zooprep.options import FakesOptions
from zooprep.run import Run

OPTIONS = FakesOptions(count=6, mag=(19.0, 22.5), seed=4, training=0.5, zeropoint=30.0)


def _known_and_cubes(path: Path) -> tuple[dict, dict[int, bytes]]:
    with Run.open(path, lock=False) as run:
        known = run.known_answers()
        cubes = {
            s.id: (path / s.files[-1]).read_bytes()
            for s in run.iter_sources()
            if s.id in known
        }
    return known, cubes


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "run"
    zooprep.select(path, apdb=APDB)
    zooprep.fakes(path, OPTIONS, images=IMAGES)
    zooprep.render(path, sizes=(30,), numpy=True, jobs=1)
    return path


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    pytest.importorskip("s3fs")
    from tests.objectstores import S3Server

    with S3Server() as server:
        for k, v in server.environ().items():
            monkeypatch.setenv(k, v)
        yield server


def test_fakes_on_images_in_s3_are_those_of_the_local_files(
    local: Path, s3, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for role, source in IMAGES.items():
        shutil.copy(source, tree / f"{role}.fits")
    s3.upload_tree("survey", tree)
    path = tmp_path / "run"
    zooprep.select(path, apdb=APDB)
    images = {role: f"s3://survey/{role}.fits" for role in IMAGES}
    result = zooprep.fakes(path, OPTIONS, images=images)
    assert result.added == 6
    zooprep.render(path, sizes=(30,), numpy=True, jobs=1)
    want_known, want = _known_and_cubes(local)
    got_known, got = _known_and_cubes(path)
    assert got_known == want_known
    assert got == want


def test_fakes_on_a_butler_repository_are_those_of_the_local_files(
    local: Path, tmp_path: Path
) -> None:
    pytest.importorskip("lsst.daf.butler")
    from astropy.io import fits

    from tests.butlerrepo import RUN, make_repo
    from tests.imagegen import write_exposure

    types = ("preliminary_visit_image", "template_matched", "difference_image")
    with Run.open(local, lock=False) as run:
        first = next(run.iter_sources())
        visit, detector = int(first.row["visit"]), int(first.row["detector"])
    files = {}
    for name, role in zip(types, ("science", "template", "difference"), strict=True):
        header = fits.getheader(IMAGES[role])
        wcs = fits.Header(
            [
                c
                for c in header.cards
                if c.keyword.startswith(
                    ("CTYPE", "CRPIX", "CRVAL", "CD", "PV", "CUNIT")
                )
            ]
        )
        for key in ("GAIN", "SATURATE", "FWHM"):
            wcs[key] = header[key]
        files[(name, visit, detector)] = write_exposure(
            tmp_path / f"{role}.fits",
            fits.getdata(IMAGES[role]).astype(np.float32),
            wcs,
            instrument="DECam",
        )
    repo = make_repo(tmp_path / "repo", files, types, instrument="DECam")
    path = tmp_path / "run"
    zooprep.select(path, apdb=APDB)
    result = zooprep.fakes(
        path,
        OPTIONS,
        images={"butler": str(repo), "collections": [RUN]},
    )
    assert result.added == 6
    zooprep.render(path, sizes=(30,), numpy=True, jobs=1)
    want_known, want = _known_and_cubes(local)
    got_known, got = _known_and_cubes(path)
    assert got_known == want_known
    assert got == want
