"""Upload: exactly-once subjects on the local Panoptes stand-in, faults and all.

Every test drives the real zooprep upload (and, underneath, panoptes-client's
sign-in) against ``tests/panoptes_standin`` and checks what the server holds:
one linked subject per source, carrying the source's PNG bytes, no
duplicates, no orphans, no broken images.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zooprep
from tests.plugins.panoptes import (
    StandinSubprocess,
    upload_command,
    upload_killed_then_resumed,
)
from zooprep.errors import AuthError, InputError, QuotaError, SettingsMismatch
from zooprep.files import atomic_write
from zooprep.options import UploadOptions
from zooprep.panoptes import (
    Credentials,
    PanoptesAPI,
    RetryPolicy,
    TokenManager,
    check_endpoint,
)
from zooprep.run import Run

FIRST_ID = 506428274000265570  # a real-looking 64-bit DiaSource id
FAST = RetryPolicy(attempts=4, initial=0.05, maximum=0.3)


# -- helpers -------------------------------------------------------------------


def _png(seed: int, size: int = 24) -> bytes:
    """A small, distinct greyscale PNG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size * 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def make_run(path: Path, n: int, **manifest_kw) -> Path:
    """A run of ``n`` rendered sources with real PNGs, and its manifest."""
    with Run.create(path) as run:
        run.add_sources(
            [
                {"diaSourceId": FIRST_ID + i, "visit": 1000 + i, "band": "gri"[i % 3]}
                for i in range(n)
            ],
            id_column="diaSourceId",
        )
        for src in run.iter_sources():
            rel = run.cutout_path(src)
            atomic_write(run.path / rel, _png(src.seq))
            run.update(src.id, status="rendered", files=[rel])
    zooprep.manifest(path, **manifest_kw)
    return path


def login_env(monkeypatch: pytest.MonkeyPatch, standin, kind: str = "password") -> None:
    for key, value in standin.client_env(kind).items():
        monkeypatch.setenv(key, value)


def options(standin, **kw) -> UploadOptions:
    kw.setdefault("subject_set_id", standin.subject_set_id)
    kw.setdefault("workers", 4)
    kw.setdefault("timeout", 2.0)
    return UploadOptions(project=standin.project_id, endpoint=standin.url, **kw)


def assert_exactly_once(standin, run_path: Path, set_id: str | None = None) -> None:
    """Each source of the run: one linked subject with its bytes; nothing else."""
    set_id = set_id or standin.subject_set_id
    with Run.open(run_path, lock=False) as run:
        sources = list(run.iter_sources(["linked", "uploaded", "rendered", "failed"]))
        assert sources, "no sources to check"
        assert all(s.status == "linked" for s in sources), run.counts()
        by_zid = {str(s.id): s for s in sources}
        in_set = standin.set_subjects(set_id)
        assert sorted(s.metadata["#zooprep_id"] for s in in_set) == sorted(by_zid)
        for subject in in_set:
            src = by_zid[subject.metadata["#zooprep_id"]]
            assert subject.id == src.subject_id
            assert subject.blobs == ((run.path / src.files[0]).read_bytes(),)
            assert subject.mimes == ("image/png",)
    assert standin.duplicates("#zooprep_id") == {}
    assert standin.orphans() == []
    assert standin.broken() == []


# -- happy path and options -----------------------------------------------------


def test_upload_makes_one_linked_subject_per_source_with_its_png(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 24)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (result.created, result.linked, result.failed) == (24, 24, 0)
    assert_exactly_once(panoptes_standin, run)
    first = next(
        s
        for s in panoptes_standin.set_subjects(panoptes_standin.subject_set_id)
        if s.metadata["#zooprep_id"] == str(FIRST_ID)
    )
    assert "1000" in first.metadata.values()  # the first source's visit
    with Run.open(run, lock=False) as opened:
        saved = opened.settings.upload
    assert saved is not None
    assert saved.subject_set_id == panoptes_standin.subject_set_id
    assert saved.endpoint == panoptes_standin.url
    assert saved.project == panoptes_standin.project_id
    again = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (again.created, again.skipped, again.failed) == (0, 24, 0)
    assert "24 already linked" in str(again)


def test_index_fields_go_to_the_subject_set_without_their_prefix(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 3, index=["band"])
    login_env(monkeypatch, panoptes_standin)
    zooprep.upload(run, options(panoptes_standin), retry=FAST)
    subject_set = panoptes_standin.subject_set(panoptes_standin.subject_set_id)
    assert subject_set.metadata["indexFields"] == "band"
    subjects = panoptes_standin.set_subjects(panoptes_standin.subject_set_id)
    assert {s.metadata["band"] for s in subjects} == {"g", "r", "i"}
    assert not any(k.startswith("%") for s in subjects for k in s.metadata)


def test_upload_by_set_name_creates_the_set_once(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 5)
    login_env(monkeypatch, panoptes_standin, "client")
    opts = options(panoptes_standin, subject_set_id=None, subject_set="DIA batch 1")
    first = zooprep.upload(run, opts, retry=FAST)
    second = zooprep.upload(run, opts, retry=FAST)
    named = [
        s for s in panoptes_standin.subject_sets() if s.display_name == "DIA batch 1"
    ]
    assert len(named) == 1
    assert first.subject_set_id == second.subject_set_id == named[0].id
    assert_exactly_once(panoptes_standin, run, named[0].id)


def test_upload_to_another_set_after_uploading_is_refused(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    zooprep.upload(run, options(panoptes_standin), retry=FAST)
    with pytest.raises(SettingsMismatch, match="subject_set_id"):
        zooprep.upload(
            run,
            options(panoptes_standin, subject_set_id=None, subject_set="other"),
            retry=FAST,
        )


def test_plain_http_endpoint_is_refused_except_loopback():
    with pytest.raises(InputError, match="HTTPS"):
        check_endpoint("http://www.zooniverse.org")
    assert check_endpoint("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_endpoint("https://panoptes-staging.zooniverse.org/api") == (
        "https://panoptes-staging.zooniverse.org"
    )


def test_upload_without_credentials_says_which_variables(panoptes_standin, tmp_path):
    run = make_run(tmp_path / "run", 2)
    with pytest.raises(AuthError, match="PANOPTES_USERNAME"):
        zooprep.upload(run, options(panoptes_standin), retry=FAST)


def test_wrong_password_is_an_auth_error_without_the_password(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 2)
    monkeypatch.setenv("PANOPTES_USERNAME", panoptes_standin.username)
    monkeypatch.setenv("PANOPTES_PASSWORD", "hunter2-wrong")
    with pytest.raises(AuthError) as caught:
        zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert "hunter2" not in str(caught.value)


# -- faults, one at a time ---------------------------------------------------


def test_create_answered_5xx_after_commit_makes_no_duplicate(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 12)
    login_env(monkeypatch, panoptes_standin)
    fault = panoptes_standin.faults.add(
        "error_after", method="POST", path=r"^/api/subjects$", times=4, skip=2
    )
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert fault.fired == 4
    assert result.failed == 0
    assert result.created + result.repaired == 12
    assert_exactly_once(panoptes_standin, run)
    assert panoptes_standin.uploaded_count() == 12  # nothing created twice


def test_failed_media_put_is_repaired(panoptes_standin, tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", 8)
    login_env(monkeypatch, panoptes_standin)
    # Five failures in a row on the first blob: more than one URL's retries,
    # so the subject gets fresh signed URLs.
    fault = panoptes_standin.faults.add(
        "error", method="PUT", path=r"^/blob/", times=5, status=503
    )
    result = zooprep.upload(run, options(panoptes_standin, workers=1), retry=FAST)
    assert fault.fired == 5
    assert result.failed == 0
    assert_exactly_once(panoptes_standin, run)
    assert panoptes_standin.count_requests("PUT", r"^/api/subjects/\d+$") >= 1


def test_media_that_never_stored_is_repaired_on_the_next_run(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 6)
    login_env(monkeypatch, panoptes_standin)
    panoptes_standin.faults.add("error", method="PUT", path=r"^/blob/", times=None)
    first = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert first.failed == 6
    with Run.open(run, lock=False) as opened:
        assert all(f.reason and f.subject_id for f in opened.failures())
    panoptes_standin.faults.clear()
    second = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (second.created, second.repaired, second.failed) == (0, 6, 0)
    assert_exactly_once(panoptes_standin, run)


def test_link_conflict_is_retried(panoptes_standin, tmp_path, monkeypatch):
    login_env(monkeypatch, panoptes_standin)
    tokens = TokenManager(
        panoptes_standin.url,
        Credentials.from_env(),  # type: ignore[arg-type]
        timeout=2,
    )
    api = PanoptesAPI(tokens, timeout=2, retry=FAST)
    ids = [
        api.create_subject(panoptes_standin.project_id, None, {"n": str(i)}, 1)[0]
        for i in range(3)
    ]
    fault = panoptes_standin.faults.add(
        "conflict", method="POST", path=r"/links/subjects$", times=2
    )
    api.link(panoptes_standin.subject_set_id, [*ids, ids[0]])  # repeated id dropped
    assert fault.fired == 2
    linked = panoptes_standin.subject_set(panoptes_standin.subject_set_id).subject_ids
    assert sorted(linked) == sorted(ids)


def test_link_conflicts_while_creating_concurrently_are_retried(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 10)
    login_env(monkeypatch, panoptes_standin)
    conflict = panoptes_standin.faults.add(
        "conflict", method="POST", path=r"^/api/subjects$", times=3
    )
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert conflict.fired == 3
    assert result.failed == 0
    assert_exactly_once(panoptes_standin, run)


def test_hung_requests_time_out_and_are_retried(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 8)
    login_env(monkeypatch, panoptes_standin)
    hung_put = panoptes_standin.faults.add(
        "hang", method="PUT", path=r"^/blob/", times=2, delay=5, process=False
    )
    hung_post = panoptes_standin.faults.add(
        "hang", method="POST", path=r"^/api/subjects$", times=1, delay=3, skip=3
    )
    started = time.monotonic()
    result = zooprep.upload(run, options(panoptes_standin, timeout=0.5), retry=FAST)
    assert time.monotonic() - started < 15
    assert (hung_put.fired, hung_post.fired) == (2, 1)
    assert result.failed == 0
    assert_exactly_once(panoptes_standin, run)


def test_expired_token_mid_run_is_refreshed(panoptes_standin, tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", 10)
    login_env(monkeypatch, panoptes_standin)
    panoptes_standin.faults.add(
        "expire_token", method="POST", path=r"^/api/subjects$", skip=4, times=1
    )
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert result.failed == 0
    assert_exactly_once(panoptes_standin, run)
    assert panoptes_standin.count_requests("POST", r"^/oauth/token$") >= 2


def test_short_lived_tokens_are_refreshed_before_they_expire(
    panoptes_standin_factory, tmp_path, monkeypatch
):
    standin = panoptes_standin_factory(token_lifetime=1, latency=0.03)
    run = make_run(tmp_path / "run", 60)
    login_env(monkeypatch, standin)
    result = zooprep.upload(run, options(standin, workers=2), retry=FAST)
    assert result.failed == 0
    assert_exactly_once(standin, run)
    assert standin.count_requests("POST", r"^/oauth/token$") >= 2
    assert (
        standin.count_requests(path=r"^/api/")
        - standin.count_requests(path=r"^/api/", method="GET")
        >= 60
    )


def test_every_fault_at_once(panoptes_standin, tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", 30)
    login_env(monkeypatch, panoptes_standin)
    faults = panoptes_standin.faults
    faults.add(
        "error_after", method="POST", path=r"^/api/subjects$", times=4, probability=0.3
    )
    faults.add("error", method="PUT", path=r"^/blob/", times=6, probability=0.3)
    faults.add("conflict", method="POST", path=r"^/api/subjects$", times=2, skip=5)
    faults.add("hang", method="PUT", path=r"^/blob/", times=1, delay=3, skip=10)
    faults.add("expire_token", path=r"^/api/", times=2, skip=12, probability=0.5)
    faults.add("error", method="GET", path=r"^/api/subjects$", times=1, status=502)
    result = zooprep.upload(run, options(panoptes_standin, timeout=1.0), retry=FAST)
    if result.failed:  # a row may exhaust its retries: the next run finishes it
        result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert result.failed == 0
    assert_exactly_once(panoptes_standin, run)


# -- quota -------------------------------------------------------------------


def test_quota_exceeded_stops_before_uploading_anything(
    panoptes_standin_factory, tmp_path, monkeypatch
):
    standin = panoptes_standin_factory(subject_limit=7)
    run = make_run(tmp_path / "run", 10)
    login_env(monkeypatch, standin)
    with pytest.raises(QuotaError, match=r"needs 10 new subjects .*0 of 7.*7 left"):
        zooprep.upload(run, options(standin), retry=FAST)
    assert standin.count_requests("POST", r"^/api/subjects$") == 0
    with Run.open(run, lock=False) as opened:
        assert opened.counts()["rendered"] == 10


def test_quota_reached_mid_run_fails_the_rest_with_the_reason(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 10)
    login_env(monkeypatch, panoptes_standin)
    panoptes_standin.faults.add(
        "quota", method="POST", path=r"^/api/subjects$", skip=4, times=None
    )
    result = zooprep.upload(run, options(panoptes_standin, workers=1), retry=FAST)
    assert result.created == 4
    assert result.failed == 6
    with Run.open(run, lock=False) as opened:
        reasons = {f.reason for f in opened.failures()}
    assert any("maximum" in r for r in reasons)


# -- kill -9 and resume -------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_upload_killed_at_random_then_resumed_has_each_source_once(
    panoptes_standin_factory, tmp_path, seed
):
    # Kill once early (sign-in or the first creates), once later.
    standin, run = upload_killed_then_resumed(
        panoptes_standin_factory,
        tmp_path,
        make_run,
        40,
        seed,
        ((0.15, 0.5), (0.5, 0.85)),
    )
    assert_exactly_once(standin, run)


def test_upload_killed_while_a_batch_is_read_back_then_resumed_has_each_source_once(
    panoptes_standin_factory, tmp_path
):
    standin = panoptes_standin_factory(latency=0.01)
    # The batched read-back (GET /api/subjects?id=...) answers slowly, so the
    # kill lands while one is in flight: files PUT, not yet read back.
    slow = standin.faults.add(
        "delay", method="GET", path=r"^/api/subjects$", query=r"(^|&)id=", times=None
    )
    run = make_run(tmp_path / "run", 40)
    (tmp_path / "home").mkdir()
    runner = StandinSubprocess(standin, tmp_path / "home")
    args = upload_command(standin, run, "--workers", "4", "--timeout", "10")
    proc = runner.popen(args)
    try:
        for _ in range(600):
            if slow.fired or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert slow.fired, stderr
    created = {s.metadata["#zooprep_id"] for s in standin.subjects()}
    assert created  # subjects exist, in the set, with their files PUT
    with Run.open(run, lock=False) as opened:
        recorded = {str(s.id): s for s in opened.iter_sources() if s.subject_id}
    # None counts as uploaded before its files were read back.
    assert recorded
    assert all(s.status != "linked" for s in recorded.values())
    assert {s.upload.get("media") for s in recorded.values()} == {"pending"}
    standin.faults.clear()
    done = runner.run(args, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(standin, run)


def test_a_hung_request_is_given_up_after_its_deadline_and_retried(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 12)
    login_env(monkeypatch, panoptes_standin)
    faults = panoptes_standin.faults
    hung_put = faults.add("hang", method="PUT", path=r"^/blob/", skip=4, delay=60)
    hung_head = faults.add("hang", method="HEAD", path=r"^/media/", skip=4, delay=60)
    hung_get = faults.add("hang", method="GET", query=r"(^|&)id=", delay=60)
    # --timeout 30: each hung request (answered after 60 s) is given up long
    # before, after a few times the latency seen so far, and sent again.
    result = zooprep.upload(run, options(panoptes_standin, timeout=30.0), retry=FAST)
    assert (hung_put.fired, hung_head.fired, hung_get.fired) == (1, 1, 1)
    assert (result.created, result.linked, result.failed) == (12, 12, 0)
    # The upload is over while the hung requests are still unanswered.
    assert [r for r in panoptes_standin.requests() if r.fault == "hang"] == []
    assert_exactly_once(panoptes_standin, run)


def test_a_slow_create_is_waited_for_while_the_next_rows_go_on(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 10)
    login_env(monkeypatch, panoptes_standin)
    # The second create is answered only after 5 s (and really creates the
    # subject, as a slow server does): never sent twice, never abandoned
    # before --timeout; meanwhile the one worker goes on with the next rows.
    slow = panoptes_standin.faults.add(
        "hang", method="POST", path=r"^/api/subjects$", skip=1, delay=5
    )
    result = zooprep.upload(
        run, options(panoptes_standin, workers=1, timeout=30.0), retry=FAST
    )
    assert slow.fired == 1
    assert (result.created, result.linked, result.failed) == (10, 10, 0)
    creates = panoptes_standin.requests("POST", r"^/api/subjects$")
    assert len(creates) == 10  # none sent twice
    (hung,) = [r for r in creates if r.fault == "hang"]
    during = [
        r
        for r in creates
        if r.fault is None and hung.started < r.started < hung.started + hung.duration
    ]
    assert during  # other rows were created while it hung
    listings = panoptes_standin.requests("GET", r"^/api/subjects$")
    # the set was listed once, before starting: no create was left uncertain
    assert len([r for r in listings if "subject_set_id" in r.query]) == 1
    assert_exactly_once(panoptes_standin, run)


# -- reviewed manifest, dry run, secrets -----------------------------------------


def test_reviewed_manifest_drives_what_is_uploaded(
    panoptes_standin, tmp_path, monkeypatch
):
    import csv

    run = make_run(tmp_path / "run", 6)
    path = run / "manifest.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    deleted = {rows[1][fields[0]], rows[4][fields[0]]}
    kept = [r for i, r in enumerate(rows) if i not in (1, 4)]
    meta_col = next(c for c in fields if c.split(":")[-1].lstrip("#!%/") == "visit")
    kept[0][meta_col] = "edited-by-a-person"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        writer.writerows(kept)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (result.created, result.removed) == (4, 2)
    subjects = panoptes_standin.set_subjects(panoptes_standin.subject_set_id)
    zids = {s.metadata["#zooprep_id"] for s in subjects}
    assert len(zids) == 4
    assert not zids & deleted
    assert any("edited-by-a-person" in s.metadata.values() for s in subjects)


def test_dry_run_checks_everything_and_uploads_nothing(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 5)
    with Run.open(run, lock=False) as opened:
        big = opened.path / next(opened.iter_sources()).files[0]
    # Incompressible noise: a valid PNG over the 1 MB limit.
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(noise, mode="RGB").save(big, format="PNG")
    login_env(monkeypatch, panoptes_standin)
    opts = options(
        panoptes_standin, subject_set_id=None, subject_set="new", dry_run=True
    )
    result = zooprep.upload(run, opts, retry=FAST)
    assert result.dry_run
    assert (result.to_create, result.failed) == (4, 1)
    assert str(result).endswith("for subject set 'new' (new); nothing uploaded")
    assert panoptes_standin.count_requests("POST", r"^/api/") == 0
    assert panoptes_standin.count_requests("GET", r"^/api/me$") == 1
    assert panoptes_standin.subjects() == []
    with Run.open(run, lock=False) as opened:
        assert opened.counts()["rendered"] == 5
        assert opened.settings.upload is None


def test_credentials_are_never_written_or_logged(
    panoptes_subprocess, panoptes_standin, tmp_path, caplog, monkeypatch
):
    run = make_run(tmp_path / "run", 4)
    secrets = [panoptes_standin.password, panoptes_standin.client_secret]
    caplog.set_level(logging.DEBUG)
    login_env(monkeypatch, panoptes_standin)
    panoptes_standin.faults.add("error", method="PUT", path=r"^/blob/", times=1)
    zooprep.upload(run, options(panoptes_standin, workers=2), retry=FAST)
    assert not any(s in caplog.text for s in secrets)
    assert "Credentials(password for" in repr(Credentials.from_env())
    assert panoptes_standin.password not in repr(Credentials.from_env())
    for kind in ("password", "client"):
        other = make_run(tmp_path / f"run-{kind}", 2)
        done = panoptes_subprocess.run(
            [
                "zooprep",
                "--debug",
                "upload",
                str(other),
                "--project",
                panoptes_standin.project_id,
                "--subject-set",
                f"set via {kind}",
                "--endpoint",
                panoptes_standin.url,
            ],
            credentials=kind,
        )
        assert done.returncode == 0, done.stderr
        assert not any(s in done.stderr + done.stdout for s in secrets)
    for file in tmp_path.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert not any(s.encode() in data for s in secrets), file


# -- server-side import -----------------------------------------------------------


def test_import_route_creates_each_subject_once(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 7, url_root="https://data.example.org/run1")
    login_env(monkeypatch, panoptes_standin)
    for _ in range(2):
        result = zooprep.upload(
            run,
            options(panoptes_standin, via="import"),
            publish=panoptes_standin.register_file,
            retry=FAST,
        )
        assert result.failed == 0
    subjects = panoptes_standin.set_subjects(panoptes_standin.subject_set_id)
    assert len(subjects) == 7
    assert all(
        u and u.startswith("https://data.example.org/run1/")
        for s in subjects
        for u in s.external_urls
    )
    with Run.open(run, lock=False) as opened:
        assert opened.counts()["linked"] == 7


# -- storage that answers 201 and keeps nothing ----------------------------------


def test_store_that_keeps_nothing_never_leaves_a_subject_in_the_set_without_its_file(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 30)
    login_env(monkeypatch, panoptes_standin)
    lost = panoptes_standin.faults.add(
        "not_stored", method="PUT", path=r"^/blob/", times=None, probability=0.4
    )
    first = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert lost.fired > 0
    # Every subject volunteers can see has its file; the rows whose file was
    # lost twice failed with the reason and their subject left the set.
    set_id = panoptes_standin.subject_set_id
    assert [s for s in panoptes_standin.set_subjects(set_id) if s.broken] == []
    with Run.open(run, lock=False) as opened:
        linked = {s.subject_id for s in opened.iter_sources(["linked"])}
        failed = opened.failures()
    assert {s.id for s in panoptes_standin.set_subjects(set_id)} == linked
    assert first.failed == len(failed)
    assert all(
        "answered 201 twice but file 1 of 1 not found" in f.reason for f in failed
    )
    assert first.linked == 30 - len(failed)
    # Once the store keeps files again, the same command repairs and relinks.
    panoptes_standin.faults.clear()
    second = zooprep.upload(run, options(panoptes_standin), retry=FAST)
    assert (second.created, second.failed) == (0, 0)
    assert_exactly_once(panoptes_standin, run)


def test_a_lost_file_is_put_again_with_fresh_urls_before_the_subject_counts(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 5)
    login_env(monkeypatch, panoptes_standin)
    lost = panoptes_standin.faults.add("not_stored", method="PUT", path=r"^/blob/")
    result = zooprep.upload(run, options(panoptes_standin, workers=1), retry=FAST)
    assert lost.fired == 1
    assert (result.created, result.linked, result.failed) == (5, 5, 0)
    assert panoptes_standin.count_requests("PUT", r"^/api/subjects/\d+$") == 1
    assert panoptes_standin.count_requests("HEAD", r"^/media/") == 6
    assert_exactly_once(panoptes_standin, run)


def test_no_verify_trusts_the_stores_201(panoptes_subprocess, tmp_path):
    standin = panoptes_subprocess.standin
    run = make_run(tmp_path / "run", 4)
    standin.faults.add("not_stored", method="PUT", path=r"^/blob/", times=None)
    done = panoptes_subprocess.run(
        upload_command(standin, run, "--no-verify", quiet=True)
    )
    assert done.returncode == 0, done.stderr
    assert standin.count_requests("HEAD") == 0
    assert len(standin.broken()) == 4  # what the read-back protects against
