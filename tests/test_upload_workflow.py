"""``zooprep upload --workflow ID``: the subject set is linked to the workflow, once."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import zooprep
from tests.test_upload import FAST, FIRST_ID, _png, login_env, make_run, options
from tests.test_upload_locations import _json, make_multi_run
from zooprep.cli import cli
from zooprep.errors import InputError
from zooprep.files import atomic_write
from zooprep.run import Run
from zooprep.viewers import SUBJECT_VIEWERS


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
    # it says that it checks the feedback rule ids against the workflow's task
    text = " ".join(out.output.split())
    assert "checks the feedback keys written by 'manifest --feedback'" in text
    assert "a rule id the task's feedback.rules do not define" in text
    assert "feedback rule ids (manifest --feedback) against the feedback rules" in text


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


def test_panoptes_client_sets_a_workflows_subject_viewer_on_the_standin(
    panoptes_standin,
):
    """Read, change and save a workflow's configuration with panoptes-client."""
    from panoptes_client import Panoptes, Workflow
    from panoptes_client.panoptes import PanoptesAPIException

    standin = panoptes_standin
    workflow_id = standin.add_workflow(standin.project_id)
    standin.set_workflow_configuration(workflow_id, {"training_set_ids": [7]})
    with Panoptes(
        endpoint=standin.url, username=standin.username, password=standin.password
    ):
        workflow = Workflow.find(workflow_id)
        assert workflow.configuration == {"training_set_ids": [7]}
        stale = Workflow.find(workflow_id)
        workflow.configuration["subject_viewer"] = "dataImage"
        workflow.save()
        again = Workflow.find(workflow_id)
        assert again.configuration == {
            "training_set_ids": [7],
            "subject_viewer": "dataImage",
        }
        # A copy read before that save is stale: the API refuses it (412).
        stale.configuration["subject_viewer"] = "flipbook"
        with pytest.raises(PanoptesAPIException, match="Precondition"):
            stale.save()
    assert standin.workflow_configuration(workflow_id)["subject_viewer"] == (
        "dataImage"
    )


# -- the workflow's subject viewer (issue 21) ----------------------------------


def _viewer_puts(standin, workflow: str) -> int:
    return standin.count_requests("PUT", f"/api/workflows/{workflow}")


def _cli_upload(standin, run, workflow: str, *extra: str):
    args = [
        *("upload", str(run), "--project", standin.project_id),
        *("--subject-set-id", standin.subject_set_id),
        *("--endpoint", standin.url, "--workflow", workflow, *extra),
    ]
    return CliRunner().invoke(cli, args)


def test_pngs_with_a_light_curve_are_refused_until_the_workflow_shows_them(
    panoptes_standin, tmp_path, monkeypatch
):
    """No subject_viewer: the classifier would draw nothing; say what to set."""
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_multi_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    out = _cli_upload(panoptes_standin, run, workflow)
    assert out.exit_code == 2, out.output
    assert len(out.output.strip().splitlines()) == 1
    assert f"workflow {workflow}: subject_viewer is unset" in out.output
    assert "--subject-viewer dataImage" in out.output
    assert panoptes_standin.subjects() == []
    assert panoptes_standin.workflow_sets(workflow) == ()


@pytest.mark.parametrize("configured", ["scatterPlot", "flipbook", "lightCurve"])
def test_a_workflow_viewer_that_cannot_show_the_files_is_refused(
    panoptes_standin, tmp_path, monkeypatch, configured
):
    """scatterPlot hides the cutouts, flipbook blanks the JSON, lightCurve is no value."""
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    panoptes_standin.set_workflow_configuration(
        workflow, {"subject_viewer": configured}
    )
    run = make_multi_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    with pytest.raises(InputError, match="set it to dataImage") as caught:
        zooprep.upload(run, options(panoptes_standin, workflow=workflow), retry=FAST)
    assert configured in str(caught.value)
    assert panoptes_standin.subjects() == []


def test_a_workflow_that_shows_the_files_needs_nothing(
    panoptes_standin, tmp_path, monkeypatch
):
    """Single PNGs: the automatic singleImage; PNGs + JSON under dataImage."""
    plain = panoptes_standin.add_workflow(panoptes_standin.project_id)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(
        make_run(tmp_path / "plain", 2),
        options(panoptes_standin, workflow=plain),
        retry=FAST,
    )
    assert result.created == 2
    data = panoptes_standin.add_workflow(panoptes_standin.project_id)
    panoptes_standin.set_workflow_configuration(data, {"subject_viewer": "dataImage"})
    other_set = panoptes_standin.add_subject_set(panoptes_standin.project_id, "b")
    result = zooprep.upload(
        make_multi_run(tmp_path / "multi", 2),
        options(panoptes_standin, workflow=data, subject_set_id=other_set),
        retry=FAST,
    )
    assert result.created == 2
    assert _viewer_puts(panoptes_standin, data) == 0


def test_subject_viewer_is_set_once_keeping_the_rest_of_the_configuration(
    panoptes_standin, tmp_path, monkeypatch
):
    standin = panoptes_standin
    workflow = standin.add_workflow(standin.project_id)
    standin.set_workflow_configuration(
        workflow, {"training_set_ids": [7], "subject_viewer": "flipbook"}
    )
    run = make_multi_run(tmp_path / "run", 3)
    login_env(monkeypatch, standin)
    chosen = options(standin, workflow=workflow, subject_viewer="dataImage")
    result = zooprep.upload(run, chosen, retry=FAST)
    assert result.subject_viewer_set
    assert result.created == 3
    assert f"subject_viewer of workflow {workflow} set to dataImage" in str(result)
    assert standin.workflow_configuration(workflow) == {
        "training_set_ids": [7],
        "subject_viewer": "dataImage",
    }
    # Resumed or repeated: not sent again.
    again = zooprep.upload(run, chosen, retry=FAST)
    assert not again.subject_viewer_set
    assert _viewer_puts(standin, workflow) == 1
    # Changed by hand since to a value that hides the files: this run does
    # not change it back, it says so.
    standin.set_workflow_configuration(workflow, {"subject_viewer": "scatterPlot"})
    with pytest.raises(InputError, match="has been changed since"):
        zooprep.upload(run, chosen, retry=FAST)
    assert _viewer_puts(standin, workflow) == 1


def test_setting_the_viewer_reads_again_when_the_workflow_changed_meanwhile(
    panoptes_standin, tmp_path, monkeypatch
):
    """A 412 (someone saved the workflow between read and PUT): nothing of theirs is lost."""
    from zooprep.panoptes import PanoptesAPI

    standin = panoptes_standin
    workflow = standin.add_workflow(standin.project_id)
    request = PanoptesAPI.request
    changed = []

    def meanwhile(self, method, path, **kw):
        if method == "PUT" and path == f"/workflows/{workflow}" and not changed:
            changed.append(path)
            standin.set_workflow_configuration(workflow, {"training_set_ids": [9]})
        return request(self, method, path, **kw)

    monkeypatch.setattr(PanoptesAPI, "request", meanwhile)
    run = make_multi_run(tmp_path / "run", 1)
    login_env(monkeypatch, standin)
    result = zooprep.upload(
        run,
        options(standin, workflow=workflow, subject_viewer="dataImage"),
        retry=FAST,
    )
    assert result.subject_viewer_set
    assert _viewer_puts(standin, workflow) == 2  # the first one was a 412
    assert standin.workflow_configuration(workflow) == {
        "training_set_ids": [9],
        "subject_viewer": "dataImage",
    }


def test_a_dry_run_says_which_subject_viewer_it_would_set(
    panoptes_standin, tmp_path, monkeypatch
):
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_multi_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    out = _cli_upload(
        panoptes_standin, run, workflow, "--subject-viewer", "dataImage", "--dry-run"
    )
    assert out.exit_code == 0, out.output
    assert (
        f"would set subject_viewer of workflow {workflow} to dataImage (now unset)"
        in out.output
    )
    assert panoptes_standin.workflow_configuration(workflow) == {}
    assert _viewer_puts(panoptes_standin, workflow) == 0


def test_a_subject_viewer_that_cannot_show_the_files_is_not_set(
    panoptes_standin, tmp_path, monkeypatch
):
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    run = make_multi_run(tmp_path / "run", 2)
    login_env(monkeypatch, panoptes_standin)
    out = _cli_upload(panoptes_standin, run, workflow, "--subject-viewer", "flipbook")
    assert out.exit_code == 2, out.output
    assert len(out.output.strip().splitlines()) == 1
    assert "--subject-viewer flipbook:" in out.output
    assert "set it to dataImage" in out.output
    assert panoptes_standin.workflow_configuration(workflow) == {}
    assert panoptes_standin.subjects() == []


@pytest.mark.parametrize("value", ["lightCurve", "datAImage", "table"])
def test_an_unknown_subject_viewer_exits_2_naming_the_valid_ones(
    panoptes_standin, tmp_path, value
):
    run = make_run(tmp_path / "run", 1)
    workflow = panoptes_standin.add_workflow(panoptes_standin.project_id)
    out = _cli_upload(panoptes_standin, run, workflow, "--subject-viewer", value)
    assert out.exit_code == 2, out.output
    assert f"'{value}' is not one of" in out.output
    for name in SUBJECT_VIEWERS:
        assert name in out.output
    assert panoptes_standin.count_requests() == 0


def test_subject_viewer_needs_a_workflow(tmp_path) -> None:
    run = make_run(tmp_path / "run", 1)
    out = CliRunner().invoke(
        cli,
        [
            *("upload", str(run), "--project", "1", "--subject-set-id", "2"),
            *("--subject-viewer", "dataImage", "--dry-run"),
        ],
    )
    assert out.exit_code == 2, out.output
    assert "--subject-viewer needs --workflow ID" in out.output


def test_help_documents_the_subject_viewer_flag() -> None:
    out = CliRunner().invoke(cli, ["upload", "--help"])
    assert "--subject-viewer" in out.output
    assert "dataImage" in out.output


def _triplet_and_chart_run(path, n: int, without_chart: int):
    """Triplet + light-curve JSON per source; source ``without_chart`` has none.

    As render writes them: a source with no point to draw gets no JSON.
    """
    with Run.create(path) as run:
        run.add_sources(
            [{"diaSourceId": FIRST_ID + i, "visit": 1000 + i} for i in range(n)],
            id_column="diaSourceId",
        )
        for k, src in enumerate(run.iter_sources()):
            files = [run.cutout_path(src)]
            atomic_write(run.path / files[0], _png(src.seq))
            if k != without_chart:
                files.append(run.cutout_path(src, "_lightcurve.json"))
                atomic_write(run.path / files[1], _json(src.seq))
            run.update(src.id, status="rendered", files=files)
    zooprep.manifest(path)
    return path


def test_a_run_where_some_light_curves_are_missing_is_refused_under_one_viewer(
    panoptes_standin, tmp_path, monkeypatch
):
    """Triplet alone and triplet + chart: dataImage breaks the first, others the second."""
    standin = panoptes_standin
    workflow = standin.add_workflow(standin.project_id)
    run = _triplet_and_chart_run(tmp_path / "run", 3, without_chart=1)
    login_env(monkeypatch, standin)
    for viewer in (None, "dataImage", "singleImage"):
        with pytest.raises(InputError, match="upload each kind to its own") as caught:
            zooprep.upload(
                run,
                options(standin, workflow=workflow, subject_viewer=viewer),
                retry=FAST,
            )
        assert "nothing was uploaded" in str(caught.value)
    assert standin.subjects() == []
    assert standin.workflow_configuration(workflow) == {}
    assert _viewer_puts(standin, workflow) == 0
    # Without the subject that has no light curve, dataImage shows them all.
    kept = _triplet_and_chart_run(tmp_path / "kept", 3, without_chart=-1)
    result = zooprep.upload(
        kept,
        options(standin, workflow=workflow, subject_viewer="dataImage"),
        retry=FAST,
    )
    assert result.created == 3
    assert standin.workflow_configuration(workflow) == {"subject_viewer": "dataImage"}
