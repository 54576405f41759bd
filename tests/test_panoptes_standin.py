"""The local Panoptes stand-in is faithful: the real panoptes-client and
panoptes-cli work against it unmodified, and each injected fault shows up
through them the way it does against zooniverse.org."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from panoptes_client import Panoptes, Project, Subject, SubjectSet, User
from panoptes_client.panoptes import PanoptesAPIException

from tests.panoptes_standin import PanoptesStandin
from tests.plugins.panoptes import StandinSubprocess

API = {
    "Accept": "application/vnd.api+json; version=1",
    "Content-Type": "application/json",
}


@pytest.fixture
def seed_pngs(test_data: Path) -> list[Path]:
    """The real cutout PNGs of the seed (19-80 kB each)."""
    pngs = sorted((test_data / "seed").glob("*.png"))
    assert len(pngs) >= 3, "seed PNGs missing from tests/data/seed"
    return pngs


def _login(standin: PanoptesStandin) -> Panoptes:
    return Panoptes(
        endpoint=standin.url, username=standin.username, password=standin.password
    )


def _token(standin: PanoptesStandin, session: requests.Session | None = None) -> str:
    """An access token through the client-credentials grant (raw HTTP)."""
    answer = (session or requests).post(
        f"{standin.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": standin.client_id,
            "client_secret": standin.client_secret,
        },
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _create_subject(standin: PanoptesStandin, token: str, **metadata: object) -> dict:
    body = {
        "subjects": {
            "locations": ["image/png"],
            "metadata": metadata,
            "links": {"project": standin.project_id},
        }
    }
    answer = requests.post(
        f"{standin.url}/api/subjects",
        json=body,
        headers={**API, "Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["subjects"][0]


def _upload_with_client(
    standin: PanoptesStandin, png: Path, zooprep_id: str
) -> Subject:
    subject = Subject()
    subject.links.project = Project(standin.project_id)
    subject.add_location(str(png))
    subject.metadata.update({"#zooprep_id": zooprep_id, "filename": png.name})
    subject.save()
    return subject


# --------------------------------------------------------------------- login


def test_panoptes_client_signs_in_with_csrf_and_reads_the_quota(panoptes_standin):
    standin = panoptes_standin
    with _login(standin) as client:
        assert client.logged_in_user_id == int(standin.user_id)
        me = User.me()
        assert me.login == standin.username
        body, etag = client.get("/me")
    assert etag
    user = body["users"][0]
    assert user["id"] == standin.user_id
    assert user["uploaded_subjects_count"] == 0
    assert user["subject_limit"] == 10_000
    flow = [(r.method, r.path, r.status) for r in standin.requests()][:3]
    assert flow == [
        ("GET", "/users/sign_in", 200),
        ("POST", "/users/sign_in", 200),
        ("POST", "/oauth/token", 200),
    ]
    assert standin.issued_grants() == ["password"]


def test_sign_in_needs_the_csrf_token_and_the_right_password(panoptes_standin):
    standin = panoptes_standin
    with requests.Session() as http:
        form = http.get(
            f"{standin.url}/users/sign_in", headers={"Accept": "application/json"}
        )
        csrf = form.headers["X-CSRF-Token"]
        assert "_Panoptes_session" in http.cookies
        user = {"login": standin.username, "password": "wrong", "remember_me": True}
        no_csrf = http.post(f"{standin.url}/users/sign_in", json={"user": user})
        assert no_csrf.status_code == 422
        wrong = http.post(
            f"{standin.url}/users/sign_in",
            json={"authenticity_token": csrf, "user": user},
        )
        assert wrong.status_code == 401
        assert wrong.json()["errors"][0]["message"] == "Invalid login or password."
        # The password grant without a signed-in session is refused like Doorkeeper does.
        token = http.post(
            f"{standin.url}/oauth/token",
            data={"grant_type": "password", "client_id": standin.client_id},
        )
        assert token.status_code == 401
        assert token.json()["error"] == "invalid_grant"
    with pytest.raises(PanoptesAPIException, match="Invalid login or password"):
        Panoptes(endpoint=standin.url, username=standin.username, password="wrong")


def test_client_credentials_act_as_the_application_owner(panoptes_standin):
    standin = panoptes_standin
    with Panoptes(
        endpoint=standin.url,
        client_id=standin.client_id,
        client_secret=standin.client_secret,
    ) as client:
        body, _ = client.get("/me")
    assert body["users"][0]["login"] == standin.username
    assert standin.issued_grants() == ["client_credentials"]
    wrong = requests.post(
        f"{standin.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": standin.client_id,
            "client_secret": "nope",
        },
        timeout=5,
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"


def test_panoptes_client_refreshes_a_token_about_to_expire(panoptes_standin):
    standin = panoptes_standin
    # panoptes-client refreshes 2 minutes before expiry: 122 s leaves 2 s of use.
    standin.token_lifetime = 122
    with _login(standin):
        SubjectSet.find(standin.subject_set_id)
        time.sleep(2.1)
        SubjectSet.find(standin.subject_set_id)
    assert standin.issued_grants() == ["password", "refresh_token"]


def test_expired_or_reused_tokens_are_refused(panoptes_standin):
    standin = panoptes_standin
    standin.token_lifetime = 1.5
    with requests.Session() as http:
        csrf = http.get(f"{standin.url}/users/sign_in").headers["X-CSRF-Token"]
        user = {
            "login": standin.username,
            "password": standin.password,
            "remember_me": True,
        }
        signed_in = http.post(
            f"{standin.url}/users/sign_in",
            json={"authenticity_token": csrf, "user": user},
        )
        assert signed_in.json()["users"][0]["id"] == standin.user_id
        first = http.post(
            f"{standin.url}/oauth/token",
            data={"grant_type": "password", "client_id": standin.client_id},
        ).json()
        assert first["token_type"] == "Bearer"
        auth = {**API, "Authorization": f"Bearer {first['access_token']}"}
        assert http.get(f"{standin.url}/api/me", headers=auth).status_code == 200
        time.sleep(1.6)
        expired = http.get(f"{standin.url}/api/me", headers=auth)
        assert expired.status_code == 401
        assert expired.json() == {"errors": [{"message": "The access token expired"}]}
        assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": standin.client_id,
        }
        second = http.post(f"{standin.url}/oauth/token", data=refresh)
        assert second.status_code == 200
        fresh = {**API, "Authorization": f"Bearer {second.json()['access_token']}"}
        assert http.get(f"{standin.url}/api/me", headers=fresh).status_code == 200
        # A refresh token is single use.
        assert http.post(f"{standin.url}/oauth/token", data=refresh).status_code == 401
    anonymous = requests.post(
        f"{standin.url}/api/subjects", json={"subjects": {}}, headers=API, timeout=5
    )
    assert anonymous.status_code == 401
    assert "logged in" in anonymous.json()["errors"][0]["message"]


# ------------------------------------------------------------------ envelope


def test_api_needs_the_versioned_accept_header_and_sends_etags(panoptes_standin):
    standin = panoptes_standin
    url = f"{standin.url}/api/projects/{standin.project_id}"
    assert requests.get(url, timeout=5).status_code == 404
    plain = requests.get(url, headers={"Accept": "application/json"}, timeout=5)
    assert plain.status_code == 404
    answer = requests.get(url, headers=API, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["ETag"].startswith('"')
    project = answer.json()["projects"][0]
    assert project["id"] == "1"
    assert standin.subject_set_id in project["links"]["subject_sets"]
    wrong_type = requests.post(
        f"{standin.url}/api/subject_sets",
        data="display_name=x",
        headers={"Accept": API["Accept"], "Content-Type": "text/plain"},
        timeout=5,
    )
    assert wrong_type.status_code == 415


def test_listing_a_large_set_pages_like_panoptes(panoptes_standin):
    standin = panoptes_standin
    token = _token(standin)
    auth = {**API, "Authorization": f"Bearer {token}"}
    ids = [
        _create_subject(standin, token, **{"#zooprep_id": str(i)})["id"]
        for i in range(230)
    ]
    linked = requests.post(
        f"{standin.url}/api/subject_sets/{standin.subject_set_id}/links/subjects",
        json={"subjects": ids},
        headers=auth,
        timeout=10,
    )
    assert linked.status_code == 200
    assert linked.json()["subject_sets"][0]["set_member_subjects_count"] == 230
    page = requests.get(
        f"{standin.url}/api/subjects",
        params={"subject_set_id": standin.subject_set_id, "page_size": 500},
        headers=auth,
        timeout=10,
    ).json()
    meta = page["meta"]["subjects"]
    assert len(page["subjects"]) == 100
    assert meta["page_size"] == 100
    assert (meta["count"], meta["page_count"], meta["page"]) == (230, 3, 1)
    assert meta["previous_href"] is None
    assert meta["next_href"].startswith("/subjects?page=2&page_size=100")
    assert f"subject_set_id={standin.subject_set_id}" in meta["next_href"]
    assert page["subjects"][0]["metadata"] == {"#zooprep_id": "0"}
    # panoptes-client follows next_href (prefixing /api itself) through all pages.
    with _login(standin):
        listed = Subject.where(subject_set_id=standin.subject_set_id, page_size=100)
        seen = {s.metadata["#zooprep_id"] for s in listed}
    assert seen == {str(i) for i in range(230)}
    zero = requests.get(
        f"{standin.url}/api/subjects", params={"page_size": 0}, headers=API, timeout=5
    )
    assert zero.status_code == 422


def test_subjects_are_read_many_at_once_by_id_like_panoptes(panoptes_standin):
    # Panoptes filters an index by a comma-separated id (ResourceIds.from),
    # only active subjects, at most 100 per page; unknown ids are left out.
    standin = panoptes_standin
    token = _token(standin)
    auth = {**API, "Authorization": f"Bearer {token}"}
    ids = [
        _create_subject(standin, token, **{"#zooprep_id": str(i)})["id"]
        for i in range(130)
    ]
    gone = ids.pop()
    got = requests.get(f"{standin.url}/api/subjects/{gone}", headers=auth, timeout=5)
    deleted = requests.delete(
        f"{standin.url}/api/subjects/{gone}",
        headers={**auth, "If-Match": got.headers["ETag"]},
        timeout=5,
    )
    assert deleted.status_code == 204
    wanted = [*ids[:120], gone, "999999"]
    page = requests.get(
        f"{standin.url}/api/subjects",
        params={"id": ",".join(wanted), "page_size": 500},
        headers=auth,
        timeout=10,
    ).json()
    meta = page["meta"]["subjects"]
    assert (meta["page_size"], meta["count"], meta["page_count"]) == (100, 120, 2)
    assert [s["id"] for s in page["subjects"]] == sorted(ids[:120], key=int)[:100]
    assert all("/media/" in s["locations"][0]["image/png"] for s in page["subjects"])
    # panoptes-client sends the same query and follows next_href.
    with _login(standin):
        listed = {s.id for s in Subject.where(id=",".join(wanted), page_size=100)}
    assert listed == set(ids[:120])
    # A fault can be armed on the batched read alone (its query names ids).
    fault = standin.faults.add("error", method="GET", query=r"(^|&)id=")
    plain = requests.get(
        f"{standin.url}/api/subjects",
        params={"page_size": 1},
        headers=auth,
        timeout=5,
    )
    by_id = requests.get(
        f"{standin.url}/api/subjects", params={"id": ids[0]}, headers=auth, timeout=5
    )
    assert (plain.status_code, by_id.status_code, fault.fired) == (200, 500, 1)


def test_updates_and_deletes_need_a_current_if_match(panoptes_standin):
    standin = panoptes_standin
    auth = {**API, "Authorization": f"Bearer {_token(standin)}"}
    url = f"{standin.url}/api/subject_sets/{standin.subject_set_id}"
    etag = requests.get(url, headers=auth, timeout=5).headers["ETag"]
    change = {"subject_sets": {"display_name": "renamed"}}
    assert requests.put(url, json=change, headers=auth, timeout=5).status_code == 428
    stale = {**auth, "If-Match": '"0123"'}
    assert requests.put(url, json=change, headers=stale, timeout=5).status_code == 412
    ok = requests.put(url, json=change, headers={**auth, "If-Match": etag}, timeout=5)
    assert ok.status_code == 200
    assert standin.subject_set(standin.subject_set_id).display_name == "renamed"
    # Known flaw: objects loaded through where() carry the list ETag, so save() fails.
    with _login(standin):
        listed = next(SubjectSet.where(project_id=standin.project_id))
        listed.display_name = "again"
        with pytest.raises(PanoptesAPIException, match="Precondition Failed"):
            listed.save()
        found = SubjectSet.find(standin.subject_set_id)
        found.display_name = "again"
        found.save()
    assert standin.subject_set(standin.subject_set_id).display_name == "again"


def test_a_workflow_update_needs_if_match_and_replaces_its_configuration(
    panoptes_standin,
):
    standin = panoptes_standin
    workflow = standin.add_workflow(standin.project_id)
    standin.set_workflow_configuration(workflow, {"training_set_ids": [3]})
    auth = {**API, "Authorization": f"Bearer {_token(standin)}"}
    url = f"{standin.url}/api/workflows/{workflow}"
    got = requests.get(url, headers=auth, timeout=5)
    assert got.json()["workflows"][0]["configuration"] == {"training_set_ids": [3]}
    assert got.json()["workflows"][0]["links"]["project"] == standin.project_id
    change = {"workflows": {"configuration": {"subject_viewer": "dataImage"}}}
    assert requests.put(url, json=change, headers=auth, timeout=5).status_code == 428
    current = {**auth, "If-Match": got.headers["ETag"]}
    # The update schema has no links.project (nor any key it does not list).
    moved = {"workflows": {"links": {"project": "2"}}}
    assert requests.put(url, json=moved, headers=current, timeout=5).status_code == 422
    ok = requests.put(url, json=change, headers=current, timeout=5)
    assert ok.status_code == 200
    # Replaced whole: the key not sent is gone.
    assert standin.workflow_configuration(workflow) == {"subject_viewer": "dataImage"}
    again = requests.put(url, json=change, headers=current, timeout=5)
    assert again.status_code == 412  # the ETag read before the update is stale


# ------------------------------------------------------------ real clients


def test_panoptes_client_uploads_links_and_lists_subjects(panoptes_standin, seed_pngs):
    standin = panoptes_standin
    with _login(standin):
        subject_set = SubjectSet.find(standin.subject_set_id)
        subjects = [
            _upload_with_client(standin, png, str(i)) for i, png in enumerate(seed_pngs)
        ]
        subject_set.add(subjects)
        listed = list(Subject.where(subject_set_id=standin.subject_set_id))
        members = [s.id for s in subject_set.subjects]
        fresh = SubjectSet()
        fresh.links.project = Project(standin.project_id)
        fresh.display_name = "zooprep batch 1"
        fresh.save()
        found = next(
            SubjectSet.where(
                project_id=standin.project_id, display_name="zooprep batch 1"
            )
        )
    assert found.id == fresh.id
    assert sorted(members) == sorted(s.id for s in subjects)
    assert [s.metadata["#zooprep_id"] for s in listed] == [
        str(i) for i in range(len(seed_pngs))
    ]
    for subject, png in zip(subjects, seed_pngs, strict=True):
        stored = standin.subject(subject.id)
        assert stored.blobs == (png.read_bytes(),)
        assert stored.mimes == ("image/png",)
        assert stored.set_ids == (standin.subject_set_id,)
        media_url = listed[[s.id for s in listed].index(subject.id)].locations[0][
            "image/png"
        ]
        assert requests.get(media_url, timeout=5).content == png.read_bytes()
    assert standin.orphans() == []
    assert standin.broken() == []
    assert standin.duplicates() == {}
    assert standin.uploaded_count() == len(seed_pngs)


def test_panoptes_cli_uploads_a_manifest(
    panoptes_subprocess: StandinSubprocess, seed_pngs, tmp_path
):
    standin = panoptes_subprocess.standin
    panoptes_subprocess.write_cli_config()
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "#zooprep_id", "diaSourceId"])
        for i, png in enumerate(seed_pngs):
            (tmp_path / png.name).write_bytes(png.read_bytes())
            writer.writerow([png.name, f"z{i}", str(170094456272322680 + i)])
    done = panoptes_subprocess.run(
        [
            "panoptes",
            "subject-set",
            "upload-subjects",
            standin.subject_set_id,
            str(manifest),
        ],
        credentials="none",
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    linked = standin.set_subjects(standin.subject_set_id)
    assert len(linked) == len(seed_pngs)
    by_id = {s.metadata["#zooprep_id"]: s for s in linked}
    for i, png in enumerate(seed_pngs):
        subject = by_id[f"z{i}"]
        assert subject.metadata["filename"] == png.name
        assert subject.metadata["diaSourceId"] == str(170094456272322680 + i)
        assert subject.blobs == (png.read_bytes(),)
    assert standin.orphans() == []
    assert standin.broken() == []
    assert standin.count_requests("POST", r"/links/subjects$") >= 1


def test_cli_state_and_credentials_stay_out_of_the_real_home(panoptes_subprocess):
    # panoptes-cli reads its endpoint from the private HOME: `subject-set ls` hits the stand-in.
    panoptes_subprocess.write_cli_config()
    done = panoptes_subprocess.run(
        ["panoptes", "subject-set", "ls", "-p", panoptes_subprocess.standin.project_id],
        credentials="none",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "existing set" in done.stdout
    assert (
        panoptes_subprocess.standin.count_requests("GET", r"^/api/subject_sets$") == 1
    )


# ----------------------------------------------------------------- limits


def test_linking_rules_match_panoptes(panoptes_standin):
    standin = panoptes_standin
    token = _token(standin)
    auth = {**API, "Authorization": f"Bearer {token}"}
    a, b = (_create_subject(standin, token)["id"] for _ in range(2))
    url = f"{standin.url}/api/subject_sets/{standin.subject_set_id}/links/subjects"
    twice = requests.post(url, json={"subjects": [a, a, b]}, headers=auth, timeout=5)
    assert twice.status_code == 422
    assert standin.subject_set(standin.subject_set_id).subject_ids == ()
    assert (
        requests.post(url, json={"subjects": [a]}, headers=auth, timeout=5).status_code
        == 200
    )
    again = requests.post(url, json={"subjects": [a, b]}, headers=auth, timeout=5)
    assert again.status_code == 200
    assert standin.subject_set(standin.subject_set_id).subject_ids == (a, b)
    unknown = requests.post(url, json={"subjects": ["999999"]}, headers=auth, timeout=5)
    assert unknown.status_code == 422
    wrong_key = requests.post(url, json={"subject": [a]}, headers=auth, timeout=5)
    assert wrong_key.status_code == 422
    removed = requests.delete(f"{url}/{a}", headers=auth, timeout=5)
    assert removed.status_code == 204
    assert standin.subject_set(standin.subject_set_id).subject_ids == (b,)


def test_blob_storage_checks_headers_signature_and_size(panoptes_standin, seed_pngs):
    standin = panoptes_standin
    subject = _create_subject(standin, _token(standin))
    put_url = subject["locations"][0]["image/png"]
    assert put_url.startswith(f"{standin.url}/blob/")
    png = seed_pngs[0].read_bytes()
    good = {"Content-Type": "image/png", "x-ms-blob-type": "BlockBlob"}
    no_type = requests.put(
        put_url, data=png, headers={"Content-Type": "image/png"}, timeout=5
    )
    assert no_type.status_code == 400
    wrong_mime = {**good, "Content-Type": "image/jpeg"}
    assert (
        requests.put(put_url, data=png, headers=wrong_mime, timeout=5).status_code
        == 400
    )
    tampered = put_url.replace("sig=", "sig=0")
    assert requests.put(tampered, data=png, headers=good, timeout=5).status_code == 403
    too_big = png + bytes(1024 * 1024)
    assert (
        requests.put(put_url, data=too_big, headers=good, timeout=5).status_code == 413
    )
    assert standin.subject(subject["id"]).broken
    assert requests.put(put_url, data=png, headers=good, timeout=5).status_code == 201
    assert standin.subject(subject["id"]).blobs == (png,)
    shown = requests.get(
        f"{standin.url}/api/subjects/{subject['id']}", headers=API, timeout=5
    ).json()
    media = shown["subjects"][0]["locations"][0]["image/png"]
    assert requests.get(media, timeout=5).content == png


def test_subject_quota_counts_deleted_subjects(panoptes_standin_factory):
    standin = panoptes_standin_factory(subject_limit=3)
    token = _token(standin)
    auth = {**API, "Authorization": f"Bearer {token}"}
    created = [_create_subject(standin, token)["id"] for _ in range(3)]
    me = requests.get(f"{standin.url}/api/me", headers=auth, timeout=5).json()["users"][
        0
    ]
    assert (me["uploaded_subjects_count"], me["subject_limit"]) == (3, 3)
    url = f"{standin.url}/api/subjects/{created[0]}"
    etag = requests.get(url, headers=auth, timeout=5).headers["ETag"]
    assert (
        requests.delete(url, headers={**auth, "If-Match": etag}, timeout=5).status_code
        == 204
    )
    assert requests.get(url, headers=auth, timeout=5).status_code == 404
    over = requests.post(
        f"{standin.url}/api/subjects",
        json={"subjects": {"locations": ["image/png"], "links": {"project": "1"}}},
        headers=auth,
        timeout=5,
    )
    assert over.status_code == 403
    assert over.json() == {
        "errors": [{"message": "User has uploaded 3 subjects of 3 maximum"}]
    }
    assert standin.uploaded_count() == 3
    assert len(standin.subjects()) == 2


def test_subject_set_import_finds_or_creates_by_external_id(
    panoptes_standin, seed_pngs
):
    standin = panoptes_standin
    standin.import_row_delay = 0.05
    urls = [standin.register_file(p.name, p.read_bytes()) for p in seed_pngs[:3]]
    rows = ["external_id,location:1,metadata:diaSourceId"]
    rows += [f"{100 + i},{url},{170094456272322680 + i}" for i, url in enumerate(urls)]
    manifest_url = standin.register_file(
        "manifest.csv", ("\n".join(rows) + "\n").encode()
    )
    body = {
        "subject_set_imports": {
            "source_url": manifest_url,
            "links": {"subject_set": standin.subject_set_id},
        }
    }
    with _login(standin) as client:
        created, _ = client.post("/subject_set_imports", json=body)
        imp = created["subject_set_imports"][0]
        assert (imp["manifest_count"], imp["imported_count"]) == (3, 0)
        deadline = time.time() + 10
        while imp["progress"] < 1.0 and time.time() < deadline:
            time.sleep(0.05)
            imp = client.get(f"/subject_set_imports/{imp['id']}")[0][
                "subject_set_imports"
            ][0]
        assert (imp["imported_count"], imp["failed_count"], imp["progress"]) == (
            3,
            0,
            1.0,
        )
        client.post("/subject_set_imports", json=body)  # the same manifest again
    deadline = time.time() + 10
    while standin.imports()[-1].imported_count < 3 and time.time() < deadline:
        time.sleep(0.05)
    linked = standin.set_subjects(standin.subject_set_id)
    assert sorted(s.external_id for s in linked) == ["100", "101", "102"]
    assert linked[0].external_urls == (urls[0],)
    assert linked[0].metadata == {"diaSourceId": "170094456272322680"}
    standin.import_row_limit = 2
    with (
        _login(standin) as client,
        pytest.raises(PanoptesAPIException, match=r"\(3\) exceeds"),
    ):
        client.post("/subject_set_imports", json=body)
    outside = {
        "subject_set_imports": {
            **body["subject_set_imports"],
            "source_url": "https://example.org/m.csv",
        }
    }
    with (
        _login(standin) as client,
        pytest.raises(PanoptesAPIException, match="Failed to download"),
    ):
        client.post("/subject_set_imports", json=outside)


def test_classifications_export_downloads_through_panoptes_client(panoptes_standin):
    standin = panoptes_standin
    content = b"classification_id,subject_ids\n1,1001\n"
    standin.register_file(f"project-{standin.project_id}-classifications.csv", content)
    with _login(standin):
        export = Project(standin.project_id).get_export(
            "classifications", generate=True
        )
        rows = list(export.csv_dictreader())
    assert rows == [{"classification_id": "1", "subject_ids": "1001"}]


# ------------------------------------------------------------------ faults


def test_5xx_after_create_makes_panoptes_client_duplicate(
    panoptes_standin, seed_pngs, fast_client_retries
):
    standin = panoptes_standin
    fault = standin.faults.add(
        "error_after", method="POST", path=r"^/api/subjects$", status=502
    )
    with _login(standin):
        subject = _upload_with_client(standin, seed_pngs[0], "src-1")
        SubjectSet.find(standin.subject_set_id).add(subject)
    assert fault.fired == 1
    # The known flaw: the first create succeeded server-side, the client re-POSTed.
    assert standin.count_requests("POST", r"^/api/subjects$") == 2
    duplicates = standin.duplicates("#zooprep_id")
    assert list(duplicates) == ["src-1"]
    assert len(duplicates["src-1"]) == 2
    first, second = duplicates["src-1"]
    assert subject.id == second
    assert [o.id for o in standin.orphans()] == [first]
    assert standin.subject(first).broken  # nobody ever PUT its image either


def test_failed_blob_puts_are_retried_or_swallowed_by_panoptes_client(
    panoptes_standin, seed_pngs, fast_client_retries
):
    standin = panoptes_standin
    standin.faults.add("error", method="PUT", path=r"^/blob/", times=1, status=500)
    with _login(standin):
        retried = _upload_with_client(standin, seed_pngs[0], "a")
    assert standin.subject(retried.id).blobs == (seed_pngs[0].read_bytes(),)
    standin.faults.add("error", method="PUT", path=r"^/blob/", times=None, status=500)
    with _login(standin):
        swallowed = _upload_with_client(
            standin, seed_pngs[1], "b"
        )  # no exception raised
    assert standin.subject(swallowed.id).broken
    standin.faults.clear()
    standin.faults.add("not_stored", method="PUT", path=r"^/blob/")
    with _login(standin):
        lost = _upload_with_client(standin, seed_pngs[2], "c")
    puts = standin.requests("PUT", r"^/blob/")
    assert puts[-1].status == 201
    assert puts[-1].fault == "not_stored"
    assert [s.id for s in standin.broken()] == [swallowed.id, lost.id]


def test_conflict_on_linking_fails_panoptes_client_and_leaves_an_orphan(
    panoptes_standin, seed_pngs
):
    standin = panoptes_standin
    standin.faults.add("conflict", method="POST", path=r"/links/subjects$")
    with _login(standin):
        subject = _upload_with_client(standin, seed_pngs[0], "x")
        with pytest.raises(PanoptesAPIException, match="stale object"):
            SubjectSet.find(standin.subject_set_id).add(subject)
    assert [o.id for o in standin.orphans()] == [subject.id]


def test_concurrent_link_requests_on_one_set_can_conflict(panoptes_standin_factory):
    standin = panoptes_standin_factory(link_conflicts=True, latency=0.2)
    token = _token(standin)
    ids = [_create_subject(standin, token)["id"] for _ in range(2)]
    url = f"{standin.url}/api/subject_sets/{standin.subject_set_id}/links/subjects"
    auth = {**API, "Authorization": f"Bearer {token}"}
    statuses: list[int] = []

    def link(subject_id: str) -> None:
        answer = requests.post(
            url, json={"subjects": [subject_id]}, headers=auth, timeout=5
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=link, args=(i,)) for i in ids]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409]
    assert len(standin.subject_set(standin.subject_set_id).subject_ids) == 1


def test_hung_create_times_out_the_client_but_still_creates(panoptes_standin):
    standin = panoptes_standin
    token = _token(standin)
    standin.faults.add("hang", method="POST", path=r"^/api/subjects$", delay=1.0)
    body = {
        "subjects": {
            "locations": ["image/png"],
            "links": {"project": standin.project_id},
        }
    }
    auth = {**API, "Authorization": f"Bearer {token}"}
    started = time.time()
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{standin.url}/api/subjects", json=body, headers=auth, timeout=0.3
        )
    assert time.time() - started < 0.9
    deadline = time.time() + 5
    while not standin.subjects() and time.time() < deadline:
        time.sleep(0.05)
    assert len(standin.subjects()) == 1  # an uploader must reconcile before re-creating
    standin.faults.add(
        "hang", method="GET", path=r"^/api/me$", delay=0.2, process=False
    )
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{standin.url}/api/me", headers=auth, timeout=5)
    assert standin.requests("GET", r"^/api/me$")[-1].status == 0


def test_token_expired_mid_run_is_not_recovered_by_panoptes_client(panoptes_standin):
    standin = panoptes_standin
    standin.faults.add("expire_token", method="GET", path=r"^/api/subject_sets/")
    with _login(standin):
        Project.find(standin.project_id)
        with pytest.raises(PanoptesAPIException, match="The access token expired"):
            SubjectSet.find(standin.subject_set_id)
        # The client trusts its own clock, so it keeps sending the dead token.
        with pytest.raises(PanoptesAPIException, match="The access token expired"):
            Project.find(standin.project_id)
    with _login(standin):  # a new sign-in gets a new token
        assert SubjectSet.find(standin.subject_set_id).display_name == "existing set"


def test_quota_fault_refuses_a_create_with_panoptes_message(
    panoptes_standin, seed_pngs
):
    standin = panoptes_standin
    standin.faults.add("quota", method="POST", path=r"^/api/subjects$", times=None)
    with (
        _login(standin),
        pytest.raises(
            PanoptesAPIException, match="User has uploaded 0 subjects of 10000 maximum"
        ),
    ):
        # Subject.save retries API errors (5 s apart); the first answer is enough here.
        Panoptes.client().post(
            "/subjects",
            json={"subjects": {"locations": ["image/png"], "links": {"project": "1"}}},
        )
    assert standin.subjects() == []


def test_latency_and_skipped_faults_are_applied_per_request(panoptes_standin_factory):
    standin = panoptes_standin_factory(latency=0.05)
    fault = standin.faults.add(
        "error", method="GET", path=r"^/api/projects/", skip=2, times=1
    )
    url = f"{standin.url}/api/projects/{standin.project_id}"
    started = time.time()
    statuses = [requests.get(url, headers=API, timeout=5).status_code for _ in range(5)]
    assert time.time() - started >= 5 * 0.05
    assert statuses == [200, 200, 500, 200, 200]
    assert fault.fired == 1
    assert fault.seen == 3
    assert all(r.duration >= 0.05 for r in standin.requests())
    with pytest.raises(ValueError, match="unknown fault kind"):
        standin.faults.add("meteor")


def test_standalone_server_serves_until_terminated():
    with subprocess.Popen(
        [sys.executable, "-m", "tests.panoptes_standin", "--latency", "0.01"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            assert info["url"].startswith("http://127.0.0.1:")
            assert info["env"]["PANOPTES_USERNAME"] == info["username"]
            summary = requests.get(f"{info['url']}/_standin/summary", timeout=5).json()
            assert summary["subjects"] == 0
            assert summary["subject_sets"] == {info["subject_set_id"]: 0}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert proc.returncode == 0
