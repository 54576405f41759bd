"""zooprep results: volunteers' classifications joined back to the sources."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import zooprep
from tests.exportgen import ExportBuilder, Row, simulate
from zooprep.cli import cli
from zooprep.errors import AuthError, InputError, RunError
from zooprep.options import UploadOptions
from zooprep.readers.catalog import read_parquet
from zooprep.run import Run

WORKFLOW = 101
N_SOURCES = 40
N_UPLOADED = 36


@dataclass
class Setup:
    run: Path
    export: Path
    builder: ExportBuilder
    subject_to_source: dict[int, int]  # what the test knows, state and hidden id
    sources: dict[int, dict]


def _apdb_rows(apdb: Path, n: int) -> list[dict]:
    db = sqlite3.connect(f"file:{apdb}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    rows = db.execute(
        "SELECT * FROM DiaSource ORDER BY diaSourceId LIMIT ?", (n,)
    ).fetchall()
    db.close()
    return [dict(r) for r in rows]


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((30, 90)) * 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def make_setup(tmp_path: Path, apdb: Path) -> Setup:
    rows = _apdb_rows(apdb, N_SOURCES)
    run_dir = tmp_path / "run"
    subject_to_source: dict[int, int] = {}
    with Run.create(run_dir) as run:
        run.add_sources(rows, id_column="diaSourceId")
        for i, src in enumerate(run.iter_sources()):
            rel = run.cutout_path(src)
            _png(run_dir / rel, i)
            if i < N_UPLOADED:
                sid = 90_000_000 + 7 * i
                run.update(src.id, status="linked", subject_id=str(sid), files=[rel])
                subject_to_source[sid] = src.id
            else:
                run.update(src.id, status="rendered", files=[rel])
    ids = [r["diaSourceId"] for r in rows]
    sources = {r["diaSourceId"]: r for r in rows}

    b = ExportBuilder(seed=11)
    for sid, source in subject_to_source.items():
        b.subject(
            sid,
            {"#zooprep_id": str(source), "!band": sources[source]["band"]},
            retired_after=10 if sid % 2 else None,
            workflow_id=WORKFLOW,
        )
    # Volunteers call a source real more often the higher its reliability rank.
    by_rel = sorted(
        subject_to_source, key=lambda s: sources[subject_to_source[s]]["reliability"]
    )
    p_real = {s: 0.1 + 0.8 * k / len(by_rel) for k, s in enumerate(by_rel)}
    simulate(b, p_real, volunteers=30, per_subject=(3, 9), version="4.2")
    first = by_rel[:6]
    # Minor version 4.1 (same major: used) and major version 3 (older: skipped).
    crowd = [b.volunteer() for _ in range(4)] + [b.volunteer(logged_in=False)]
    for s in first:
        b.classify(crowd[0], s, "Real", version="4.1")
        b.classify(crowd[1], s, "Yes", version="3.7")
    # Another workflow of the same project.
    for s in first[:4]:
        b.classify(
            crowd[2],
            s,
            "Streak",
            workflow_id=202,
            workflow_name="Streaks",
            version="1.1",
        )
    # Gold standard by the team, and one expert-mode classification.
    team = b.volunteer("zooprep_team")
    b.classify(team, first[0], "Bogus", gold_standard=True)
    b.classify(team, first[1], "Real", gold_standard=True)
    b.classify(team, first[2], "Real", expert="owner")
    # Duplicates: the same volunteer again, later, answering differently.
    dup = b.volunteer()
    r1 = b.classify(dup, first[3], "Real")
    b.classify(dup, first[3], "Bogus", at=r1.created_at + timedelta(hours=2))
    b.classify(dup, first[3], "Real", at=r1.created_at + timedelta(hours=3))
    # Two logged-out people behind one IP (two sessions), and one of them twice.
    out1 = crowd[4]
    out2 = b.same_ip(out1)
    b.classify(out1, first[4], "Bogus")
    b.classify(out2, first[4], "Real")
    b.classify(out1, first[4], "Real")
    # A malformed row, a classification without T0, a task left unanswered.
    b.classify(crowd[3], first[5], "Real", malformed=True)
    b.classify(
        crowd[3],
        first[5],
        None,
        extra=[
            {
                "task": "T1",
                "task_label": "Which artefacts?",
                "value": ["Dipole", "Cosmic ray"],
            }
        ],
    )
    b.classify(crowd[2], first[5], "")
    # A subject uploaded elsewhere: known by its hidden #zooprep_id only.
    elsewhere = ids[N_UPLOADED]
    # (panoptes-cli sent the manifest's "#zooprep_id" cell, "id:<digits>").
    b.subject(95_000_001, {"#zooprep_id": f"id:{elsewhere}"}, retired_after=3)
    for v in crowd[:3]:
        b.classify(v, 95_000_001, "Real")
    subject_to_source[95_000_001] = elsewhere
    # Subjects of another run: an unknown #zooprep_id, and no id at all.
    b.subject(95_000_002, {"#zooprep_id": "170094456272322680"})
    b.subject(95_000_003, {"filename": "x.png"})
    b.classify(crowd[0], 95_000_002, "Real")
    b.classify(crowd[0], 95_000_003, "Bogus")
    export = b.write(tmp_path / "real-or-bogus-classifications.csv")
    return Setup(run_dir, export, b, subject_to_source, sources)


def independent(
    setup: Setup, task: str = "T0", major: str = "4"
) -> tuple[dict, Counter]:
    """What results.csv must say, computed from the generated rows directly."""
    skipped: Counter = Counter()
    kept: dict[int, list[Row]] = {}
    for row in setup.builder.rows:
        if row.workflow_id != WORKFLOW:
            skipped["other_workflow"] += 1
        elif row.workflow_version.split(".")[0] != major:
            skipped["older_workflow_version"] += 1
        elif row.malformed:
            skipped["malformed_json"] += 1
        elif row.subject_id not in setup.subject_to_source:
            skipped["subject_not_in_run"] += 1
        elif row.gold_standard:
            skipped["gold_standard"] += 1
        elif row.answer(task) is None:
            skipped["task_missing"] += 1
        elif row.answer(task) == "":
            skipped["no_answer"] += 1
        elif row.expert:
            skipped["expert"] += 1
        else:
            kept.setdefault(row.subject_id, []).append(row)
    expected = {}
    for sid, rows in kept.items():
        first: dict[str, Row] = {}
        for row in sorted(rows, key=lambda r: (r.created_at, r.classification_id)):
            v = row.volunteer
            who = f"u{v.user_id}" if v.user_id is not None else f"s{v.session}"
            first.setdefault(who, row)
        skipped["duplicate"] += len(rows) - len(first)
        votes = Counter(r.answer(task).lower() for r in first.values())
        n = len(first)
        expected[sid] = {
            "source_id": setup.subject_to_source[sid],
            "n_classifications": len(rows),
            "n_volunteers": n,
            "real": votes["real"],
            "bogus": votes["bogus"],
        }
    return expected, skipped


def test_results_counts_and_fractions_match_an_independent_count(tmp_path, apdb_sqlite):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    result = zooprep.results(setup.run, setup.export, workflow_id=WORKFLOW)
    expected, skipped = independent(setup)

    assert result.subjects == len(expected)
    assert result.classifications == sum(e["n_volunteers"] for e in expected.values())
    assert result.rows == len(setup.builder.rows)
    assert result.skipped == {k: v for k, v in skipped.items() if v}
    assert result.real_answer == "real"
    assert set(result.versions) == {"3.7", "4.1", "4.2"}
    assert result.versions["3.7"] == {"used": 0, "skipped": 6}
    assert result.versions["4.1"]["used"] == 6
    assert "subjects" in str(result)
    assert "\n" not in str(result)

    with open(setup.run / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(expected)
    for rec in table:
        exp = expected[int(rec["subject_id"])]
        assert int(rec["source_id"]) == exp["source_id"]  # exact 64-bit
        assert int(rec["n_classifications"]) == exp["n_classifications"]
        assert int(rec["n_volunteers"]) == exp["n_volunteers"]
        assert float(rec["frac_real"]) == pytest.approx(
            exp["real"] / exp["n_volunteers"]
        )
        assert float(rec["frac_bogus"]) == pytest.approx(
            exp["bogus"] / exp["n_volunteers"]
        )
        assert float(rec["real_fraction"]) == float(rec["frac_real"])
        if exp["real"] != exp["bogus"]:
            top = "real" if exp["real"] > exp["bogus"] else "bogus"
            assert rec["consensus"] == top
            assert float(rec["agreement"]) == pytest.approx(
                max(exp["real"], exp["bogus"]) / exp["n_volunteers"]
            )
        else:
            assert rec["consensus"] == ""
        source = setup.sources[exp["source_id"]]
        assert float(rec["reliability"]) == pytest.approx(source["reliability"])
        assert float(rec["snr"]) == pytest.approx(source["snr"])
        assert "pixelFlags_edge" in rec
        assert "isDipole" in rec

    by_subject = {int(r["subject_id"]): r for r in table}
    gold = {r.subject_id: r.answer() for r in setup.builder.rows if r.gold_standard}
    for sid, answer in gold.items():
        assert by_subject[sid]["gold_answer"] == answer.lower()
    assert by_subject[95_000_001]["mapped_by"] == "zooprep_id"
    assert by_subject[95_000_001]["retired"] == "True"
    assert 95_000_002 not in by_subject
    assert 95_000_003 not in by_subject

    parquet = read_parquet(setup.run / "results.parquet")
    assert parquet["source_id"].dtype == "int64"
    assert sorted(parquet["source_id"].tolist()) == sorted(
        int(r["source_id"]) for r in table
    )


def _data_uri_pngs(page: str) -> list[Image.Image]:
    found = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in found]


def test_results_report_opens_in_chromium_with_plots(tmp_path, apdb_sqlite, chromium):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    zooprep.results(setup.run, setup.export, workflow_id=str(WORKFLOW))
    page_path = setup.run / "results.html"
    page = page_path.read_text()
    assert "http://" not in page  # self-contained
    assert "https://" not in page
    assert "<script" not in page

    dom = chromium.dump_dom(page_path)
    for fig in ("fig-calibration", "fig-distribution", "fig-roc"):
        assert f'id="{fig}"' in dom
    cards = re.findall(r'class="card" data-source-id="(\d+)"', dom)
    assert cards
    assert all(int(c) in setup.sources for c in cards)
    for reason in ("malformed_json", "duplicate", "gold_standard", "other_workflow"):
        assert f'data-reason="{reason}"' in dom
    images = _data_uri_pngs(page)
    assert len(images) >= 3 + len(cards)
    assert all(im.size[0] > 20 for im in images)

    shot = chromium.screenshot(page_path, tmp_path / "shot.png", size=(1200, 1600))
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank page

    # The AUC shown is the Mann-Whitney statistic of the same data.
    table = pd.read_csv(setup.run / "results.csv")
    table = table[table["consensus"].notna()]
    pos = table.loc[table["consensus"] == "real", "reliability"].tolist()
    neg = table.loc[table["consensus"] == "bogus", "reliability"].tolist()
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    auc = float(re.search(r"AUC = ([0-9.]+)</span>", dom).group(1))
    assert auc == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-4)

    # Calibration: sources per reliability bin, counted here independently.
    all_rows = pd.read_csv(setup.run / "results.csv")
    counts = Counter(min(int(r * 10), 9) for r in all_rows["reliability"])
    table_html = dom.split('id="calibration-table"')[1].split("</table>")[0]
    shown = [int(n) for n in re.findall(r"</td><td>(\d+)</td>", table_html)]
    assert shown == [counts[b] for b in range(10)]


def test_results_refuses_to_overwrite_without_force(tmp_path, apdb_sqlite):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    zooprep.results(setup.run, setup.export, workflow_id=WORKFLOW)
    before = (setup.run / "results.csv").read_bytes()
    with pytest.raises(RunError, match=r"already has results\.csv.*--force"):
        zooprep.results(setup.run, setup.export, workflow_id=WORKFLOW)
    assert (setup.run / "results.csv").read_bytes() == before
    # Version 3 asked "Yes"/"No": mixing versions needs to be told what is real.
    with pytest.raises(InputError, match=r"'bogus'.*'real'.*'yes'.*--real-answer"):
        zooprep.results(
            setup.run,
            setup.export,
            workflow_id=WORKFLOW,
            workflow_version="all",
            force=True,
        )
    again = zooprep.results(
        setup.run,
        setup.export,
        workflow_id=WORKFLOW,
        workflow_version="all",
        real_answer="Real",
        force=True,
    )
    assert "older_workflow_version" not in again.skipped
    assert again.versions["3.7"]["used"] == 6
    assert (setup.run / "results.csv").read_bytes() != before


def test_results_unknown_task_lists_the_tasks_found(tmp_path, apdb_sqlite):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    with pytest.raises(InputError, match=r"task 'T7' .* tasks found: T0, T1"):
        zooprep.results(setup.run, setup.export, workflow_id=WORKFLOW, task="T7")
    assert not (setup.run / "results.csv").exists()


def test_results_multiple_choice_task_and_explicit_real_answer(tmp_path, apdb_sqlite):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    with pytest.raises(InputError, match="cannot tell which answer means 'real'"):
        zooprep.results(setup.run, setup.export, workflow_id=WORKFLOW, task="T1")
    result = zooprep.results(
        setup.run, setup.export, workflow_id=WORKFLOW, task="T1", real_answer="Dipole"
    )
    assert result.subjects == 1
    assert result.real_answer == "dipole"
    table = pd.read_csv(setup.run / "results.csv")
    assert table["frac_dipole"].tolist() == [1.0]
    assert table["frac_cosmic_ray"].tolist() == [1.0]


def test_results_asks_for_a_workflow_when_several_hold_run_subjects(
    tmp_path, apdb_sqlite
):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    with pytest.raises(InputError, match=r"several workflows.*--workflow-id.*101.*202"):
        zooprep.results(setup.run, setup.export)
    with pytest.raises(InputError, match="no classifications of workflow 999"):
        zooprep.results(setup.run, setup.export, workflow_id=999)


def test_results_export_of_another_project_is_refused_with_reasons(
    tmp_path, apdb_sqlite
):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    other = ExportBuilder(seed=3)
    simulate(other, {77_000_000 + i: 0.5 for i in range(5)}, volunteers=5)
    path = other.write(tmp_path / "other.csv")
    with pytest.raises(
        InputError, match=r"no volunteer classification .* subject_not_in_run"
    ):
        zooprep.results(setup.run, path)
    assert not (setup.run / "results.html").exists()


def test_results_refuses_a_file_that_is_not_a_classification_export(
    tmp_path, apdb_sqlite
):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    bad = tmp_path / "subjects.csv"
    bad.write_text("subject_id,project_id,metadata\n1,2,{}\n")
    with pytest.raises(InputError, match="not a Zooniverse classification export"):
        zooprep.results(setup.run, bad)
    with pytest.raises(InputError, match="not found"):
        zooprep.results(setup.run, tmp_path / "missing.csv")
    with pytest.raises(InputError, match="--classifications, or fetch it"):
        zooprep.results(setup.run)


def test_results_command_and_status(tmp_path, apdb_sqlite):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "results",
            str(setup.run),
            "--classifications",
            str(setup.export),
            "--workflow-id",
            "101",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        [
            "results",
            str(setup.run),
            "--classifications",
            str(setup.export),
            "--workflow-id",
            "101",
        ],
    )
    assert res.exit_code == 2
    assert "--force" in res.output
    res = runner.invoke(cli, ["status", str(setup.run), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    expected, _ = independent(setup)
    assert report["results"]["uploaded_subjects"] == N_UPLOADED
    assert report["results"]["subjects_with_results"] == len(expected)
    assert report["results"]["classifications"] == sum(
        e["n_classifications"] for e in expected.values()
    )


def test_results_command_can_use_every_workflow_version(tmp_path, apdb_sqlite):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    args = ["results", str(setup.run), "--classifications", str(setup.export)]
    args += ["--workflow-id", "101", "--workflow-version", "all"]
    res = CliRunner().invoke(cli, [*args, "--real-answer", "Real"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(setup.run / "results.csv")
    assert "frac_yes" in table.columns
    assert table["frac_yes"].sum() > 0
    res = CliRunner().invoke(cli, [*args, "--workflow-version", "5", "--force"])
    assert res.exit_code == 2
    assert "versions found: 3.7, 4.1, 4.2" in res.output


def test_results_download_fetches_the_project_export(
    tmp_path, apdb_sqlite, panoptes_standin, monkeypatch
):
    pytest.importorskip("panoptes_aggregation")  # the results extra
    setup = make_setup(tmp_path, apdb_sqlite)
    standin = panoptes_standin
    # No upload settings: which project's export?
    with pytest.raises(InputError, match="no upload settings naming a project"):
        zooprep.results(setup.run, download=True, endpoint=standin.url)
    with Run.open(setup.run) as run:
        run.save(UploadOptions.record(project=standin.project_id))
    with pytest.raises(AuthError, match="no Panoptes credentials"):
        zooprep.results(setup.run, download=True, endpoint=standin.url)
    monkeypatch.setenv("PANOPTES_USERNAME", standin.username)
    monkeypatch.setenv("PANOPTES_PASSWORD", standin.password)
    with pytest.raises(InputError, match="no classification export yet"):
        zooprep.results(setup.run, download=True, endpoint=standin.url)

    name = f"project-{standin.project_id}-classifications.csv"
    standin.register_file(name, setup.export.read_bytes())
    result = zooprep.results(
        setup.run, download=True, endpoint=standin.url, workflow_id=WORKFLOW
    )
    saved = setup.run / "exports" / name
    assert saved.read_bytes() == setup.export.read_bytes()
    expected, skipped = independent(setup)
    assert result.subjects == len(expected)
    assert result.skipped == {k: v for k, v in skipped.items() if v}
    assert standin.password not in (setup.run / "results.html").read_text()


def test_results_help_names_the_files_the_known_answers_produce() -> None:
    from zooprep.stages.results import COMPLETENESS_CSV, VOLUNTEERS_CSV

    out = CliRunner().invoke(cli, ["results", "--help"])
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    for name in (COMPLETENESS_CSV, VOLUNTEERS_CSV, "results.html"):
        assert f"RUN/{name}" in text
    assert "With known answers in the run (zooprep fakes" in text
    assert "the 50 % points" in text
