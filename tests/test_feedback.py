"""Known-answer subjects reach Zooniverse as the classifier needs them.

A run with injected fakes (the real DECam triplet) gets its manifest with
feedback keys on the training fakes, is uploaded to the Panoptes stand-in
(training subjects to their own subject set), and the subjects are read back
with the real panoptes-client.  The classifier's own feedback rules
(`tests.classifier_feedback`, from front-end-monorepo's lib-classifier)
must accept them: a training fake gives the success message for the "real"
answer and the failure message for the other, a blind fake and a real
source give no feedback at all, and no truth key reaches a real source.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("photutils")

import zooprep
from tests.classifier_feedback import generate_rules, message_after
from tests.test_fakes import APDB, IMAGES
from tests.test_upload import FAST, login_env
from zooprep.cli import cli
from zooprep.errors import InputError
from zooprep.options import FakesOptions, UploadOptions
from zooprep.run import Run

RULE = "fake-check"
TASKS = {
    "T0": {
        "type": "single",
        "question": "Is this a real astrophysical source?",
        "answers": [{"label": "Real"}, {"label": "Bogus"}],
        "feedback": {
            "enabled": True,
            "rules": [
                {
                    "id": RULE,
                    "strategy": "singleAnswerQuestion",
                    "successEnabled": True,
                    "defaultSuccessMessage": "Right: it was an injected source.",
                    "failureEnabled": True,
                    "defaultFailureMessage": "This one was an injected source.",
                }
            ],
        },
    }
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered run with fakes, never uploaded (tests work on copies)."""
    path = tmp_path_factory.mktemp("feedback") / "run"
    zooprep.select(path, apdb=APDB)
    zooprep.fakes(
        path,
        FakesOptions(count=8, mag=(19.0, 22.0), seed=9, training=0.5, zeropoint=30.0),
        images=IMAGES,
    )
    zooprep.render(path, jobs=1)
    return path


@pytest.fixture
def fake_run(pristine: Path, tmp_path: Path) -> Path:
    import shutil

    path = tmp_path / "run"
    shutil.copytree(pristine, path)
    return path


def _manifest(path: Path, **kw) -> list[dict[str, str]]:
    zooprep.manifest(path, **kw)
    with open(path / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_feedback_keys_are_written_on_training_fakes_only(
    fake_run: Path, tmp_path: Path
) -> None:
    rows = _manifest(
        fake_run,
        feedback=RULE,
        real_answer=0,
        success_message="Well spotted: a fake of magnitude {mag}.",
    )
    with Run.open(fake_run, lock=False) as run:
        known = run.known_answers()
    training = [
        r
        for r in rows
        if int(r["external_id"]) in known
        and known[int(r["external_id"])].stream == "training"
    ]
    blind = [
        r
        for r in rows
        if int(r["external_id"]) in known
        and known[int(r["external_id"])].stream == "blind"
    ]
    real = [r for r in rows if int(r["external_id"]) not in known]
    assert training
    assert blind
    assert len(real) == 32
    for r in training:
        assert r["metadata:#feedback_1_id"] == RULE
        assert (
            r["metadata:#feedback_1_answer"] == "0"
        )  # text, as the classifier compares
        assert r["metadata:#feedback_1_successMessage"].startswith(
            "Well spotted: a fake of magnitude"
        )
        assert r["metadata:#training_subject"] == "true"
        assert r["metadata:#known_answer"] == "real"
    for r in blind + real:
        assert r["metadata:#feedback_1_id"] == ""
        assert r["metadata:#training_subject"] == ""
    for r in real:
        assert r["metadata:#known_answer"] == ""
    # the files of fakes are named like any other
    assert all(r["location:1"].endswith(f"/{r['external_id']}.png") for r in rows)


def test_the_classifier_accepts_the_uploaded_feedback_keys(
    fake_run: Path, panoptes_standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    from panoptes_client import Panoptes, Subject, SubjectSet, Workflow

    standin = panoptes_standin
    workflow_id = standin.add_workflow(standin.project_id, "Real or bogus?")
    standin.set_workflow_tasks(workflow_id, TASKS)
    _manifest(fake_run, feedback=RULE, real_answer=0)
    login_env(monkeypatch, standin)
    result = zooprep.upload(
        fake_run,
        UploadOptions(
            project=standin.project_id,
            endpoint=standin.url,
            subject_set_id=standin.subject_set_id,
            training_set="training fakes",
            workflow=workflow_id,
            workers=4,
            timeout=2.0,
        ),
        retry=FAST,
    )
    with Run.open(fake_run, lock=False) as run:
        known = run.known_answers()
        subjects = {s.id: s.subject_id for s in run.iter_sources()}
    n_training = sum(1 for a in known.values() if a.stream == "training")
    assert result.training == n_training
    assert result.linked == 40
    # the workflow's configuration does not list the training set yet
    assert "training_set_ids" in str(result)
    with Panoptes(
        endpoint=standin.url, username=standin.username, password=standin.password
    ):
        tasks = Workflow.find(workflow_id).tasks
        training_set = SubjectSet.find(result.training_set_id)
        in_training = {s.id for s in training_set.subjects}
        for source_id, subject_id in subjects.items():
            metadata = Subject.find(subject_id).metadata
            answer = known.get(source_id)
            if answer is None:
                assert not [
                    k
                    for k in metadata
                    if k.startswith(("#feedback", "#known", "#fake", "#training"))
                ]
                assert generate_rules(metadata, tasks) == {}
                assert subject_id not in in_training
                continue
            if answer.stream == "training":
                assert subject_id in in_training
                assert (
                    message_after(metadata, tasks, "T0", 0)
                    == "Right: it was an injected source."
                )
                assert (
                    message_after(metadata, tasks, "T0", 1)
                    == "This one was an injected source."
                )
            else:
                assert subject_id not in in_training
                assert metadata["#known_answer"] == "real"
                assert message_after(metadata, tasks, "T0", 0) is None


def test_a_number_for_the_answer_would_never_succeed() -> None:
    """Why the answer is text: the classifier compares strings."""
    as_number = {"#feedback_1_id": RULE, "#feedback_1_answer": 0}
    as_text = {"#feedback_1_id": RULE, "#feedback_1_answer": "0"}
    assert (
        message_after(as_number, TASKS, "T0", 0) == "This one was an injected source."
    )
    assert message_after(as_text, TASKS, "T0", 0) == "Right: it was an injected source."


def test_a_feedback_rule_the_workflow_lacks_is_refused_before_uploading(
    fake_run: Path, panoptes_standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fake_run
    standin = panoptes_standin
    workflow_id = standin.add_workflow(standin.project_id)
    standin.set_workflow_tasks(workflow_id, TASKS)
    _manifest(path, feedback="no-such-rule", real_answer=0)
    login_env(monkeypatch, standin)
    with pytest.raises(
        InputError, match="feedback rule 'no-such-rule' is not defined in workflow"
    ) as err:
        zooprep.upload(
            path,
            UploadOptions(
                project=standin.project_id,
                endpoint=standin.url,
                subject_set_id=standin.subject_set_id,
                training_set="training",
                workflow=workflow_id,
                timeout=2.0,
            ),
            retry=FAST,
        )
    assert "rules defined: T0: fake-check" in str(err.value)
    assert "\n" not in str(err.value)
    assert standin.subjects() == []
    # the command line says it in one line, exit status 2
    out = CliRunner().invoke(
        cli,
        [
            "upload",
            str(path),
            "--project",
            standin.project_id,
            "--endpoint",
            standin.url,
            "--subject-set-id",
            standin.subject_set_id,
            "--training-set",
            "training",
            "--workflow",
            workflow_id,
        ],
    )
    assert out.exit_code == 2
    assert "feedback rule 'no-such-rule' is not defined" in out.output
    assert standin.subjects() == []


def test_training_subjects_need_their_own_subject_set(
    fake_run: Path, panoptes_standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fake_run
    _manifest(path, feedback=RULE, real_answer=0)
    login_env(monkeypatch, panoptes_standin)
    with pytest.raises(InputError, match="give --training-set NAME"):
        zooprep.upload(
            path,
            UploadOptions(
                project=panoptes_standin.project_id,
                endpoint=panoptes_standin.url,
                subject_set_id=panoptes_standin.subject_set_id,
            ),
            retry=FAST,
        )
    assert panoptes_standin.subjects() == []


def test_feedback_without_training_subjects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run"
    zooprep.select(path, apdb=APDB)
    zooprep.fakes(path, FakesOptions(count=3, seed=1, zeropoint=30.0), images=IMAGES)
    zooprep.render(path, jobs=1)
    with pytest.raises(InputError, match="feedback on blind fakes"):
        zooprep.manifest(path, feedback=RULE, real_answer=0)
    with pytest.raises(InputError, match="--real-answer"):
        zooprep.manifest(path, feedback=RULE)


def test_no_truth_metadata_keeps_the_truth_off_zooniverse(fake_run: Path) -> None:
    rows = _manifest(fake_run, truth_metadata=False)
    assert not [k for k in rows[0] if "known_answer" in k or "fake_" in k]
    # the choice is kept for the next manifest, and feedback still works
    rows = _manifest(fake_run, feedback=RULE, real_answer=0)
    assert not [k for k in rows[0] if "known_answer" in k]
    assert "metadata:#feedback_1_id" in rows[0]
