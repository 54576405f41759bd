"""``zooprep upload --workflow ID``: the subject set is linked to the workflow, once."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import zooprep
from tests.test_upload import FAST, login_env, make_run, options
from zooprep.cli import cli
from zooprep.errors import InputError


def _link_requests(standin, workflow: str) -> int:
    return standin.count_requests(
        "POST", f"/api/workflows/{workflow}/links/subject_sets"
    )


def test_upload_links_the_subject_set_to_the_workflow_once(
    panoptes_standin, tmp_path, monkeypatch
):
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_run(tmp_path / "run", 5)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(
        run, options(panoptes_standin, workflow=workflow), retry=FAST
    )
    assert result.created == 5
    assert result.workflow_linked
    assert "set linked to the workflow" in str(result)
    assert panoptes_standin.workflow_sets(workflow) == (
        panoptes_standin.subject_set_id,
    )
    # Resumed or repeated: no second link request, nothing changes.
    again = zooprep.upload(
        run, options(panoptes_standin, workflow=workflow), retry=FAST
    )
    assert not again.workflow_linked
    assert _link_requests(panoptes_standin, workflow) == 1
    assert panoptes_standin.workflow_sets(workflow) == (
        panoptes_standin.subject_set_id,
    )


def test_a_set_created_by_name_is_linked_to_the_workflow(
    panoptes_standin, tmp_path, monkeypatch
):
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(
        run,
        options(
            panoptes_standin, subject_set_id=None, subject_set="new", workflow=workflow
        ),
        retry=FAST,
    )
    assert panoptes_standin.workflow_sets(workflow) == (result.subject_set_id,)


def test_a_workflow_that_does_not_exist_is_refused_before_uploading(
    panoptes_standin, tmp_path, monkeypatch
):
    run = make_run(tmp_path / "run", 3)
    login_env(monkeypatch, panoptes_standin)
    with pytest.raises(InputError, match="workflow 999 does not exist"):
        zooprep.upload(run, options(panoptes_standin, workflow="999"), retry=FAST)
    assert panoptes_standin.subjects() == []


def test_a_workflow_of_another_project_is_refused_with_exit_2(
    panoptes_standin, tmp_path, monkeypatch
):
    other = panoptes_standin.add_project(
        "Another project", owner_id=panoptes_standin.user_id
    )
    workflow = panoptes_standin.add_workflow(other)
    run = make_run(tmp_path / "run", 3)
    login_env(monkeypatch, panoptes_standin)
    args = [
        *("upload", str(run), "--project", panoptes_standin.project_id),
        *("--subject-set-id", panoptes_standin.subject_set_id),
        *("--endpoint", panoptes_standin.url, "--workflow", workflow),
    ]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2, out.output
    assert f"workflow {workflow} belongs to project {other}" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert panoptes_standin.subjects() == []
    assert panoptes_standin.workflow_sets(workflow) == ()


def test_killed_after_the_upload_the_link_is_made_on_resume(
    panoptes_standin, tmp_path, monkeypatch
):
    """Kill between the last subject and the link: the next run links, once."""
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_run(tmp_path / "run", 4)
    login_env(monkeypatch, panoptes_standin)
    zooprep.upload(run, options(panoptes_standin), retry=FAST)  # no link yet
    assert panoptes_standin.workflow_sets(workflow) == ()
    for _ in range(2):
        zooprep.upload(run, options(panoptes_standin, workflow=workflow), retry=FAST)
    assert panoptes_standin.workflow_sets(workflow) == (
        panoptes_standin.subject_set_id,
    )
    assert _link_requests(panoptes_standin, workflow) == 1


def test_help_documents_the_workflow_flag() -> None:
    out = CliRunner().invoke(cli, ["upload", "--help"])
    assert "--workflow ID" in out.output


def test_panoptes_client_links_a_set_to_a_workflow_on_the_standin(panoptes_standin):
    from panoptes_client import Panoptes, SubjectSet, Workflow

    standin = panoptes_standin
    workflow_id = standin.add_workflow(standin.project_id, "Real or bogus")
    with Panoptes(
        endpoint=standin.url, username=standin.username, password=standin.password
    ):
        workflow = Workflow.find(workflow_id)
        assert workflow.display_name == "Real or bogus"
        workflow.links.subject_sets.add(SubjectSet.find(standin.subject_set_id))
        again = Workflow.find(workflow_id)
        linked = [s.id for s in again.links.subject_sets]
    assert linked == [standin.subject_set_id]
    assert standin.workflow_sets(workflow_id) == (standin.subject_set_id,)


def test_a_dry_run_checks_the_workflow_and_links_nothing(
    panoptes_standin, tmp_path, monkeypatch
):
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(
        run, options(panoptes_standin, workflow=workflow, dry_run=True), retry=FAST
    )
    assert result.to_create == 2
    assert not result.workflow_linked
    assert panoptes_standin.workflow_sets(workflow) == ()
    with pytest.raises(InputError, match="workflow 4242 does not exist"):
        zooprep.upload(
            run, options(panoptes_standin, workflow="4242", dry_run=True), retry=FAST
        )
