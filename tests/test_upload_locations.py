"""Subjects of several files: the triplet, frames, a light curve and its JSON.

Driven against the local Panoptes stand-in: each subject is created with all
its locations in the manifest's order and with their content types, every
file is stored, and a kill -9 mid-upload resumes with no duplicate and no
missing file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import zooprep
from tests.plugins.panoptes import upload_killed_then_resumed
from tests.test_upload import FAST, FIRST_ID, _png, login_env, options
from zooprep.errors import ManifestEditError
from zooprep.files import atomic_write
from zooprep.options import MAX_FILE_BYTES
from zooprep.run import Run

SUFFIXES = ("_1_template.png", "_1_science.png", "_lightcurve.png", ".json")
KINDS = ("image/png", "image/png", "image/png", "image/png", "application/json")


def _json(seed: int, pad: int = 0) -> bytes:
    body = {
        "data": [
            {
                "seriesData": [{"x": 0.0, "y": float(seed)}],
                "seriesOptions": {"label": "g", "color": "#009E73", "glyph": "circle"},
            }
        ],
        "chartOptions": {"xAxisLabel": "Days", "yAxisLabel": "Flux", "pad": "x" * pad},
    }
    return json.dumps(body).encode()


def make_multi_run(path: Path, n: int, **manifest_kw) -> Path:
    """A run of ``n`` rendered sources of five files each, and its manifest."""
    with Run.create(path) as run:
        run.add_sources(
            [{"diaSourceId": FIRST_ID + i, "visit": 1000 + i} for i in range(n)],
            id_column="diaSourceId",
        )
        for src in run.iter_sources():
            files = [run.cutout_path(src)]
            atomic_write(run.path / files[0], _png(src.seq))
            for k, suffix in enumerate(SUFFIXES):
                rel = run.cutout_path(src, suffix.replace(".json", "_lightcurve.json"))
                data = _json(src.seq) if suffix == ".json" else _png(src.seq * 10 + k)
                atomic_write(run.path / rel, data)
                files.append(rel)
            run.update(src.id, status="rendered", files=files)
    zooprep.manifest(path, **manifest_kw)
    return path


def assert_every_location_once(standin, run_path: Path) -> None:
    """One linked subject per source holding all its files, in order, typed."""
    with Run.open(run_path, lock=False) as run:
        sources = {str(s.id): s for s in run.iter_sources()}
        assert all(s.status == "linked" for s in sources.values()), run.counts()
        in_set = standin.set_subjects(standin.subject_set_id)
        assert sorted(s.metadata["#zooprep_id"] for s in in_set) == sorted(sources)
        for subject in in_set:
            src = sources[subject.metadata["#zooprep_id"]]
            assert subject.id == src.subject_id
            assert subject.mimes == KINDS
            assert subject.blobs == tuple(
                (run.path / f).read_bytes() for f in src.files
            )
    assert standin.duplicates("#zooprep_id") == {}
    assert standin.orphans() == []
    assert standin.broken() == []


@pytest.mark.parametrize("layout", ["import", "panoptes-cli"])
def test_manifest_lists_every_file_of_a_subject_in_location_order(
    tmp_path: Path, layout: str
) -> None:
    run = make_multi_run(tmp_path / "run", 3, layout=layout)
    with open(run / "manifest.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    prefix = "location:" if layout == "import" else "#location:"
    columns = [c for c in rows[0] if c.startswith(prefix)]
    assert columns == [f"{prefix}{n}" for n in range(1, 6)]
    first = dict(zip(rows[0], rows[1], strict=True))
    assert [Path(first[c]).name for c in columns] == [
        f"{FIRST_ID}.png",
        *(f"{FIRST_ID}{s.replace('.json', '_lightcurve.json')}" for s in SUFFIXES),
    ]


@pytest.mark.parametrize("layout", ["import", "panoptes-cli"])
def test_upload_creates_each_subject_with_all_its_files_and_content_types(
    panoptes_standin, tmp_path, monkeypatch, layout
):
    from panoptes_client import Panoptes, Subject

    run = make_multi_run(tmp_path / "run", 6, layout=layout)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (result.created, result.linked, result.failed) == (6, 6, 0)
    assert_every_location_once(panoptes_standin, run)
    # The real panoptes-client reads the subjects back with every location.
    with Panoptes(
        endpoint=panoptes_standin.url,
        username=panoptes_standin.username,
        password=panoptes_standin.password,
    ):
        listed = list(Subject.where(subject_set_id=panoptes_standin.subject_set_id))
    assert len(listed) == 6
    for subject in listed:
        assert [next(iter(loc)) for loc in subject.locations] == list(KINDS)


def test_a_deleted_file_of_a_subject_is_refused_before_anything_is_uploaded(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 4)
    with Run.open(run, lock=False) as opened:
        victim = next(opened.iter_sources())
    (run / victim.files[3]).unlink()
    login_env(monkeypatch, panoptes_standin)
    with pytest.raises(ManifestEditError, match=r"line 2: .*does not exist"):
        zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert panoptes_standin.subjects() == []


def test_a_renamed_file_in_the_reviewed_manifest_names_its_row(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 3)
    text = (run / "manifest.csv").read_text()
    (run / "manifest.csv").write_text(
        text.replace(f"{FIRST_ID + 1}_lightcurve.png", "renamed.png")
    )
    login_env(monkeypatch, panoptes_standin)
    with pytest.raises(ManifestEditError, match=r"line 3: id \d+: location .*renamed"):
        zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert panoptes_standin.subjects() == []


def test_a_light_curve_json_over_1mb_fails_its_row_and_the_rest_upload(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 3)
    with Run.open(run, lock=False) as opened:
        big = next(opened.iter_sources())
    atomic_write(run / big.files[-1], _json(0, pad=MAX_FILE_BYTES))
    # The reviewed manifest is the file zooprep wrote: only the JSON grew.
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (result.created, result.failed) == (2, 1)
    with Run.open(run, lock=False) as opened:
        failed = opened.get(big.id)
    assert failed is not None
    assert failed.status == "failed"
    assert f"over the {MAX_FILE_BYTES}-byte limit" in str(failed.reason)
    assert "_lightcurve.json" in str(failed.reason)


def test_import_route_sends_every_location(panoptes_standin, tmp_path, monkeypatch):
    run = make_multi_run(tmp_path / "run", 3, url_root="https://data.example.org/r")
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(
        run,
        options(panoptes_standin, via="import"),
        publish=panoptes_standin.register_file,
        retry=FAST,
    )
    assert result.failed == 0
    subjects = panoptes_standin.set_subjects(panoptes_standin.subject_set_id)
    assert len(subjects) == 3
    for subject in subjects:
        assert subject.mimes == KINDS
        assert [Path(u or "").name for u in subject.external_urls][-1].endswith(
            "_lightcurve.json"
        )


@pytest.mark.parametrize("seed", [4, 5])
def test_multi_file_upload_killed_at_random_then_resumed_has_every_file_once(
    panoptes_standin_factory, tmp_path, seed
):
    standin, run = upload_killed_then_resumed(
        panoptes_standin_factory,
        tmp_path,
        make_multi_run,
        30,
        seed,
        ((0.2, 0.5), (0.5, 0.85)),
    )
    assert_every_location_once(standin, run)


def test_an_emptied_location_cell_names_the_location_and_its_file(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 3)
    with open(run / "manifest.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("location:5")
    rows[2][col] = ""
    with open(run / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    login_env(monkeypatch, panoptes_standin)
    with pytest.raises(
        ManifestEditError, match=r"line 3: id \d+: location 5 \(.*_lightcurve.json\)"
    ):
        zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert panoptes_standin.subjects() == []


def test_a_failed_put_of_the_json_gets_fresh_urls_for_every_typed_location(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 3)
    login_env(monkeypatch, panoptes_standin)
    # More failures than one URL's retries on the JSON files: fresh signed
    # URLs (a locations update with the same content types) and again.
    fault = panoptes_standin.faults.add(
        "error", method="PUT", path=r"^/blob/.*\.json", times=5, status=503
    )
    result = zooprep.upload(run, options(panoptes_standin, workers=1), retry=FAST)
    assert fault.fired == 5
    assert result.failed == 0
    assert panoptes_standin.count_requests("PUT", r"^/api/subjects/\d+$") >= 1
    assert_every_location_once(panoptes_standin, run)


def test_json_never_stored_is_repaired_on_the_next_run(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 3)
    login_env(monkeypatch, panoptes_standin)
    panoptes_standin.faults.add(
        "error", method="PUT", path=r"^/blob/.*\.json", times=None
    )
    first = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert first.failed == 3
    panoptes_standin.faults.clear()
    second = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (second.created, second.repaired, second.failed) == (0, 3, 0)
    assert_every_location_once(panoptes_standin, run)


def test_a_lost_json_of_a_subject_is_read_back_missing_and_put_again(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_multi_run(tmp_path / "run", 3)
    login_env(monkeypatch, panoptes_standin)
    # The store answers 201 to the first subject's fifth file (its JSON) and
    # keeps nothing: only reading every file back notices.
    lost = panoptes_standin.faults.add(
        "not_stored", method="PUT", path=r"^/blob/", skip=4, times=1
    )
    result = zooprep.upload(run, options(panoptes_standin, workers=1), retry=FAST)
    assert lost.fired == 1
    assert (result.created, result.linked, result.failed) == (3, 3, 0)
    assert panoptes_standin.count_requests("PUT", r"^/api/subjects/\d+$") == 1
    assert_every_location_once(panoptes_standin, run)
