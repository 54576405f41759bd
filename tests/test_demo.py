"""``zooprep demo``: the whole pipeline on the bundled sample, offline."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from PIL import Image

import zooprep
from zooprep.demo import DemoResult, sample_path
from zooprep.errors import RunError
from zooprep.run import Run


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    """One demo, run in this process."""
    return zooprep.demo(tmp_path_factory.mktemp("demo") / "out")


def test_bundled_sample_is_small_and_licensed() -> None:
    data = sample_path()
    files = [p for p in data.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3_000_000
    readme = (data / "README.md").read_text(encoding="utf-8")
    for name in ("MIT", "Apache-2.0", "synthetic"):
        assert name in readme
    assert {p.name for p in (data / "licenses").iterdir()} == {
        "Apache-2.0.txt",
        "MIT-boom.txt",
        "MIT-sfft.txt",
    }
    # No GPL material: the real ci_dc2 APDB is not bundled.
    assert not list(data.rglob("ci_dc2*"))
    # The DECam triplet keeps its celestial WCS and shares a pixel grid.
    headers = [
        fits.getheader(data / "decam" / f"{r}.fits")
        for r in ("science", "template", "difference")
    ]
    assert {h["CTYPE1"] for h in headers} == {"RA---TPV"}
    assert {(h["NAXIS1"], h["NAXIS2"]) for h in headers} == {(256, 256)}


def test_demo_apdb_looks_like_a_rubin_apdb() -> None:
    path = sample_path() / "apdb" / "demo_apdb.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = [r[1] for r in db.execute('PRAGMA table_info("DiaSource")')]
        rows = db.execute(
            'SELECT diaSourceId, x, y, reliability, "pixelFlags_edge", "isDipole" '
            'FROM "DiaSource"'
        ).fetchall()
        meta = dict(db.execute("SELECT name, value FROM metadata"))
    finally:
        db.close()
    assert len(columns) == 144
    for name in (
        "diaSourceId",
        "visit",
        "detector",
        "band",
        "psfFlux",
        "apFluxErr",
        "scienceFlux",
        "psfChi2",
        "psfNdata",
        "bboxSize",
        "centroid_flag",
        "shape_flag",
        "forced_PsfFlux_flag",
        "pixelFlags_saturated",
    ):
        assert name in columns
    assert meta["instrument"] == "DECam"
    assert 20 <= len(rows) <= 40
    assert all(r[0] > 2**53 for r in rows)  # 64-bit ids that a float would damage
    assert all(0 <= r[1] < 256 and 0 <= r[2] < 256 for r in rows)
    assert all(0 < r[3] < 1 for r in rows)
    assert sum(r[4] for r in rows) >= 2  # a few near the edge, so padding shows
    assert sum(r[5] for r in rows) >= 1


def test_demo_runs_every_stage_and_uploads_nothing(demo_result: DemoResult) -> None:
    out = demo_result.out
    apdb_run, alerts_run = demo_result.runs
    assert apdb_run.selected == apdb_run.rendered == 32
    assert apdb_run.padded >= 2
    assert alerts_run.selected == alerts_run.rendered == 8
    assert demo_result.failed == 0
    for r in demo_result.runs:
        assert r.manifest == r.path / "manifest.csv"
        with open(r.manifest, newline="", encoding="utf-8") as fh:
            assert len(list(csv.DictReader(fh))) == r.manifest_rows == r.rendered
        assert r.preview == r.path / "preview.html"
        assert "data:image/png;base64," in r.preview.read_text(encoding="utf-8")
        assert len(r.pngs) == r.rendered
        for png in r.pngs:
            assert png.stat().st_size < 1_000_000
            with Image.open(png) as im:
                assert im.format == "PNG"
        assert "nothing uploaded" in r.upload
        assert r.to_upload == r.rendered
        with Run.open(r.path, lock=False) as run:
            assert run.counts()["rendered"] == r.rendered
            assert not any(s.subject_id for s in run.iter_sources())
    # Annotated, two sizes: taller than wide-ish plain strips of one size.
    with (
        Image.open(apdb_run.pngs[0]) as annotated,
        Image.open(alerts_run.pngs[0]) as plain,
    ):
        assert annotated.height / annotated.width > plain.height / plain.width
    text = str(demo_result)
    assert str(out / "apdb-run" / "preview.html") in text
    assert str(out / "apdb-run" / "manifest.csv") in text
    assert "zooprep upload" in text
    assert "panoptes-staging" in text


def test_demo_again_on_the_same_directory_resumes(demo_result: DemoResult) -> None:
    again = zooprep.demo(demo_result.out)
    assert [r.selected for r in again.runs] == [r.selected for r in demo_result.runs]
    assert [r.rendered for r in again.runs] == [r.rendered for r in demo_result.runs]


def test_demo_refuses_a_directory_that_holds_other_things(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious", encoding="utf-8")
    with pytest.raises(RunError, match="not made by 'zooprep demo'"):
        zooprep.demo(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_zooprep_demo_command_stays_offline_even_with_credentials(
    tmp_path: Path,
) -> None:
    env = dict(os.environ)
    # Credentials present in the environment must not lead to a login: the
    # demo only rehearses the upload.  A proxy that does not exist makes any
    # attempt to reach the network fail loudly.
    env.update(
        PANOPTES_USERNAME="someone",
        PANOPTES_PASSWORD="not-a-real-password",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "zooprep", "demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing uploaded" in proc.stdout
    assert "preview.html" in proc.stdout
    # What a newcomer reads: no warning about the credentials it ignores, no
    # "?" for a count not known yet, the subject set named.
    assert "WARNING" not in proc.stdout + proc.stderr
    assert "?" not in proc.stdout + proc.stderr
    assert "select: started" in proc.stdout + proc.stderr
    assert (
        "for subject set 'zooprep demo' (not looked up: no credentials); "
        "nothing uploaded"
    ) in proc.stdout
    assert "not-a-real-password" not in proc.stdout + proc.stderr
    assert (tmp_path / "demo" / "apdb-run" / "preview.html").is_file()


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("rubin_apdb_butler.py", "rendered"),
        ("ztf_alerts.py", "8 rendered"),
        ("python_api.py", "nothing uploaded"),
    ],
)
def test_examples_run_on_the_bundled_sample(
    script: str, expected: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert (tmp_path / "run" / "preview.html").is_file()
