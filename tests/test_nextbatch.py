"""Choosing the next batch from what volunteers said (``zooprep select --next``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import zooprep
from tests.catalogs import write_big_catalog
from tests.exportgen import ExportBuilder, simulate
from tests.killing import kill_at_random, timed_run
from zooprep import learning
from zooprep.run import Run
from zooprep.vocabulary import PROPENSITY_COLUMN, RANK_COLUMN, STREAM_COLUMN

pytest.importorskip("panoptes_aggregation")


def truth(score: np.ndarray | float) -> np.ndarray:
    """The simulated volunteers' real-fraction at a score: a step at 0.6."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(score, float) - 0.6) * 12.0))


def learnt_run(
    tmp: Path,
    catalog: Path,
    name: str,
    *,
    sample: int,
    seed: int,
    workflow: int = 101,
    first_subject: int = 80_000_000,
) -> Path:
    """A run of ``sample`` catalog sources, uploaded and classified, with results."""
    run = tmp / name
    zooprep.select(run, catalog=catalog, sample=sample, seed=seed)
    b = ExportBuilder(seed=seed)
    p = {}
    with Run.open(run) as r:
        for i, src in enumerate(r.iter_sources()):
            sid = first_subject + i
            r.update(src.id, status="linked", subject_id=str(sid))
            b.subject(sid, {"#zooprep_id": f"id:{src.id}"})
            p[sid] = float(truth(src.row["reliability"]))
    simulate(b, p, volunteers=30, per_subject=(5, 8), workflow_id=workflow)
    zooprep.results(run, b.write(tmp / f"{name}-export.csv"))
    return run


@pytest.fixture(scope="module")
def learnt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("learnt")
    catalog = write_big_catalog(tmp / "catalog.csv", 3000, seed=1)
    run1 = learnt_run(tmp, catalog, "run1", sample=250, seed=1)
    run2 = learnt_run(
        tmp, catalog, "run2", sample=150, seed=2, first_subject=81_000_000
    )
    return {"tmp": tmp, "catalog": catalog, "runs": [run1, run2]}


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zooprep", *map(str, args)],
        capture_output=True,
        text=True,
    )


def _shown(runs: list[Path]) -> set[int]:
    """The sources the runs uploaded."""
    shown: set[int] = set()
    for run in runs:
        with Run.open(run, lock=False) as r:
            shown |= {s.id for s in r.iter_sources() if s.subject_id}
    return shown


def _chosen(run: Path) -> pd.DataFrame:
    """The run's sources with their hidden stream, rank and propensity."""
    with Run.open(run, lock=False) as r:
        rows = [
            {
                "source_id": s.id,
                "reliability": s.row["reliability"],
                "stream": s.row[STREAM_COLUMN],
                "rank": s.row[RANK_COLUMN],
                "propensity": s.row[PROPENSITY_COLUMN],
            }
            for s in r.iter_sources()
        ]
    return pd.DataFrame(rows).sort_values("rank").reset_index(drop=True)


# -- the choice itself -----------------------------------------------------------------


def _population(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=np.int64) * 7 + 11, rng.uniform(0, 1, n)


def _calibration(seed: int, n: int, curve=truth) -> learning.Calibration:
    """A calibration learnt from ``n`` subjects spread evenly over the scores."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, n)
    y = rng.binomial(6, curve(s)) / 6
    return learning.fit(s, y, edges=np.linspace(0, 1, 11))


def test_a_seeded_choice_is_reproducible_and_ignores_the_candidates_order() -> None:
    ids, scores = _population(3)
    cal = _calibration(4, 500)
    for strategy in learning.STRATEGIES:
        a = learning.choose(ids, scores, cal, 200, strategy=strategy, seed=9)
        flip = np.random.default_rng(0).permutation(len(ids))
        b = learning.choose(
            ids[flip], scores[flip], cal, 200, strategy=strategy, seed=9
        )
        assert a.ids.tolist() == b.ids.tolist()
        assert a.streams == b.streams
        other = learning.choose(ids, scores, cal, 200, strategy=strategy, seed=10)
        assert other.ids.tolist() != a.ids.tolist()
        assert len(set(a.ids.tolist())) == 200


@pytest.mark.parametrize(
    ("n", "share"), [(100, 0.2), (7, 0.2), (25, 0.3), (10, 0.0), (9, 1.0)]
)
def test_the_random_share_is_exact(n: int, share: float) -> None:
    ids, scores = _population(5, 500)
    choice = learning.choose(
        ids, scores, _calibration(1, 300), n, random_share=share, seed=2
    )
    expected = int(np.floor(share * n + 0.5))
    assert choice.streams.count("random") == expected
    assert choice.streams.count("strategy") == n - expected
    # Spread through the ranking: every prefix keeps about the random share.
    ranks = [k for k, s in enumerate(choice.streams, start=1) if s == "random"]
    for k, rank in enumerate(ranks, start=1):
        assert rank <= np.ceil(k * n / max(expected, 1)) + 1


def test_uncertainty_chooses_where_the_calibration_is_most_uncertain() -> None:
    ids, scores = _population(6)
    cal = _calibration(7, 1000)
    choice = learning.choose(ids, scores, cal, 300, strategy="uncertainty", seed=3)
    strategy = np.array([s == "strategy" for s in choice.streams])
    picked = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    chosen = np.array([picked[int(i)] for i in choice.ids])
    # Where the true real-fraction is between 0.15 and 0.85 (scores ~0.45-0.75)
    # the calibration is least certain: most strategy picks are there, far
    # more than the candidates' share of that range.
    uncertain = (truth(chosen) > 0.15) & (truth(chosen) < 0.85)
    share_of_candidates = float(
        ((truth(scores) > 0.15) & (truth(scores) < 0.85)).mean()
    )
    assert uncertain[strategy].mean() > 0.7 > 2 * share_of_candidates
    # and the random picks are spread like the candidates.
    assert abs(uncertain[~strategy].mean() - share_of_candidates) < 0.15
    # Their posterior sd is the largest the calibration had.
    sd = cal.sd[cal.bin_of(chosen[strategy])]
    assert np.median(sd) >= np.quantile(cal.sd, 0.6)


def test_disagreement_chooses_where_the_score_is_most_wrong() -> None:
    # The pipeline is over-confident: volunteers call a source of score s real
    # s**3 of the time, so score and real-fraction differ most near s = 0.58.
    ids, scores = _population(8)
    cal = _calibration(9, 2000, curve=lambda s: np.asarray(s) ** 3)
    choice = learning.choose(ids, scores, cal, 300, strategy="disagreement", seed=4)
    picked = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    streams = np.array(choice.streams)
    chosen = np.array([picked[int(i)] for i in choice.ids])
    gap = chosen - chosen**3
    wrong = gap > 0.25  # s from 0.3 to 0.83
    assert wrong[streams == "strategy"].mean() > 0.8
    assert (
        wrong[streams == "strategy"].mean() > (scores - scores**3 > 0.25).mean() + 0.2
    )
    # Ranked most disagreeing first.
    values = choice.value[streams == "strategy"]
    assert values.tolist() == sorted(values, reverse=True)


def test_stratified_gives_each_bin_its_share_times_its_error() -> None:
    ids, scores = _population(10)
    cal = _calibration(11, 800)
    choice = learning.choose(
        ids, scores, cal, 400, strategy="stratified", random_share=0.0, seed=5
    )
    picked = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    counts = np.bincount(
        cal.bin_of(np.array([picked[int(i)] for i in choice.ids])), minlength=10
    )
    share = np.bincount(cal.bin_of(scores), minlength=10) * cal.sd
    expected = share / share.sum() * 400
    assert np.all(np.abs(counts - expected) <= 1)


def test_weighting_by_propensity_recovers_a_bin_mean_that_choosing_biased() -> None:
    # Within one bin the real-fraction rises with the score; a stream that
    # took the bin's upper half ten times as often biases the plain mean.
    rng = np.random.default_rng(12)
    s = rng.uniform(0.5, 0.6, 20000)
    p = np.where(s > 0.55, 1.0, 0.1)
    keep = rng.random(len(s)) < p
    y = (rng.random(len(s)) < (s - 0.5) * 10).astype(float)
    edges = np.array([0.5, 0.6])
    plain = learning.fit(s[keep], y[keep], edges=edges)
    weighted = learning.fit(
        s[keep], y[keep], edges=edges,
        weight=learning.weights(["strategy"] * int(keep.sum()), p[keep]),
    )  # fmt: skip
    assert abs(plain.mean[0] - 0.5) > 0.2
    assert abs(weighted.mean[0] - 0.5) < 3 * weighted.sd[0] + 0.01


# -- select --next ---------------------------------------------------------------------


def test_the_next_batch_leaves_out_every_source_already_shown(
    learnt: dict, tmp_path: Path
) -> None:
    run1, run2 = learnt["runs"]
    result = zooprep.select(
        tmp_path / "next", catalog=learnt["catalog"], next=400,
        learn_from=[run1, run2], seed=5,
    )  # fmt: skip
    assert result.selected == 400
    shown = _shown([run1, run2])
    chosen = _chosen(tmp_path / "next")
    assert len(shown) > 300
    assert not shown & set(chosen["source_id"])
    assert chosen["rank"].tolist() == list(range(1, 401))
    assert (chosen["stream"] == "random").sum() == 80
    assert ((chosen["propensity"] > 0) & (chosen["propensity"] <= 1)).all()
    table = pd.read_csv(tmp_path / "next" / "next.csv")
    assert table["source_id"].tolist() == chosen["source_id"].tolist()
    assert f"chose 400 of {3000 - len(shown)} candidates by uncertainty" in str(result)


def test_the_same_seed_chooses_the_same_batch(learnt: dict, tmp_path: Path) -> None:
    run1 = learnt["runs"][0]
    picks = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        zooprep.select(
            tmp_path / name, catalog=learnt["catalog"], next=120, learn_from=[run1],
            seed=seed, strategy="stratified",
        )  # fmt: skip
        picks.append(_chosen(tmp_path / name)["source_id"].tolist())
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_the_chosen_batch_lies_where_the_calibration_is_uncertain(
    learnt: dict, tmp_path: Path
) -> None:
    zooprep.select(
        tmp_path / "next", catalog=learnt["catalog"], next=200,
        learn_from=learnt["runs"], seed=8,
    )  # fmt: skip
    chosen = _chosen(tmp_path / "next")
    strategy = chosen[chosen["stream"] == "strategy"]["reliability"].to_numpy()
    randoms = chosen[chosen["stream"] == "random"]["reliability"].to_numpy()
    near = lambda s: ((truth(s) > 0.15) & (truth(s) < 0.85)).mean()  # noqa: E731
    assert near(strategy) > 0.6
    assert near(strategy) > near(randoms) + 0.3


def test_the_seed_is_drawn_saved_and_reused(learnt: dict, tmp_path: Path) -> None:
    run1 = learnt["runs"][0]
    zooprep.select(
        tmp_path / "next", catalog=learnt["catalog"], next=50, learn_from=[run1]
    )
    with Run.open(tmp_path / "next", lock=False) as r:
        saved = r.settings.select
    assert saved.seed is not None
    assert saved.learn_from == (str(run1.resolve()),)
    assert saved.learned
    again = zooprep.select(
        tmp_path / "next", catalog=learnt["catalog"], next=50, learn_from=[run1]
    )
    assert again.selected == 0
    assert again.already_in_run == 50


def test_a_select_killed_while_choosing_resumes_to_the_same_batch(
    learnt: dict, tmp_path: Path
) -> None:
    catalog = write_big_catalog(tmp_path / "big.csv", 60000, seed=1)
    run1 = learnt["runs"][0]

    def cmd(run: Path) -> list[str]:
        return [
            sys.executable, "-m", "zooprep", "select", str(run), "--catalog",
            str(catalog), "--next", "3000", "--learn-from", str(run1),
            "--seed", "11", "--strategy", "uncertainty",
        ]  # fmt: skip

    duration = timed_run(cmd(tmp_path / "whole"))
    whole = _chosen(tmp_path / "whole")
    killed = kill_at_random(
        cmd(tmp_path / "killed"), seed=2, rounds=3, duration=duration
    )
    done = subprocess.run(cmd(tmp_path / "killed"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = _chosen(tmp_path / "killed")
    assert killed >= 1
    assert again.to_dict("records") == whole.to_dict("records")


# -- bad input -------------------------------------------------------------------------


def _refused(args: list[object], *words: str) -> None:
    done = _cli(*args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_learning_from_a_run_without_results_is_refused(
    learnt: dict, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    zooprep.select(bare, catalog=learnt["catalog"], limit=30)
    _refused(
        ["select", tmp_path / "next", "--catalog", learnt["catalog"], "--next", 10,
         "--learn-from", bare],
        "no results yet", "zooprep results",
    )  # fmt: skip
    assert not (tmp_path / "next").exists()


def test_learning_from_results_of_another_workflow_is_refused(
    learnt: dict, tmp_path: Path
) -> None:
    other = learnt_run(
        tmp_path, learnt["catalog"], "other", sample=40, seed=9, workflow=202,
        first_subject=82_000_000,
    )  # fmt: skip
    _refused(
        ["select", tmp_path / "next", "--catalog", learnt["catalog"], "--next", 10,
         "--learn-from", learnt["runs"][0], "--learn-from", other],
        "workflow 202", "workflow 101",
    )  # fmt: skip
    assert not (tmp_path / "next").exists()


def test_learning_from_too_few_classifications_says_how_many_are_needed(
    learnt: dict, tmp_path: Path
) -> None:
    few = learnt_run(tmp_path, learnt["catalog"], "few", sample=12, seed=3)
    _refused(
        ["select", tmp_path / "next", "--catalog", learnt["catalog"], "--next", 10,
         "--learn-from", few],
        "12 classified subjects", f"at least {learning.MIN_LABELLED}",
    )  # fmt: skip
    assert not (tmp_path / "next").exists()


def test_asking_for_more_than_the_candidates_is_refused(
    learnt: dict, tmp_path: Path
) -> None:
    left = 3000 - len(_shown(learnt["runs"]))
    _refused(
        ["select", tmp_path / "next", "--catalog", learnt["catalog"], "--next",
         left + 1, "--learn-from", learnt["runs"][0], "--learn-from", learnt["runs"][1]],
        f"--next {left + 1}", f"only {left} candidates", f"{3000 - left} already shown",
    )  # fmt: skip
    assert not (tmp_path / "next").exists()


def test_next_without_learn_from_and_with_a_sample_are_refused(
    learnt: dict, tmp_path: Path
) -> None:
    _refused(
        ["select", tmp_path / "n", "--catalog", learnt["catalog"], "--next", 5],
        "--learn-from",
    )  # fmt: skip
    _refused(
        ["select", tmp_path / "n", "--catalog", learnt["catalog"], "--next", 5,
         "--learn-from", learnt["runs"][0], "--sample", 5],
        "--sample",
    )  # fmt: skip
    _refused(
        ["select", tmp_path / "n", "--catalog", learnt["catalog"], "--next", 5,
         "--learn-from", learnt["runs"][0], "--random-share", 1.5],
        "--random-share",
    )  # fmt: skip


# -- the manifest ----------------------------------------------------------------------


def test_the_manifest_writes_priority_in_the_order_of_the_ranking(
    learnt: dict, tmp_path: Path
) -> None:
    from PIL import Image

    run = tmp_path / "next"
    zooprep.select(
        run, catalog=learnt["catalog"], next=60, learn_from=learnt["runs"], seed=2
    )
    with Run.open(run) as r:
        for src in r.iter_sources():
            rel = r.cutout_path(src)
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (30, 90)).save(run / rel)
            r.update(src.id, status="rendered", files=[rel])
    zooprep.manifest(run)
    table = pd.read_csv(run / "manifest.csv", dtype=str)
    ranked = pd.read_csv(run / "next.csv", dtype={"source_id": str})
    by_priority = table.sort_values("metadata:#priority", key=lambda c: c.astype(int))
    assert by_priority["external_id"].tolist() == ranked["source_id"].tolist()
    assert by_priority["metadata:#priority"].tolist() == [str(k) for k in range(1, 61)]
    assert by_priority["metadata:#zooprep_stream"].tolist() == ranked["stream"].tolist()
    # The stream and rank columns of the state are not metadata of their own.
    assert not [c for c in table.columns if "_zooprep" in c]


# -- results over several batches ------------------------------------------------------


def test_results_of_a_batch_report_the_calibration_after_each_batch(
    learnt: dict, tmp_path: Path
) -> None:
    run = tmp_path / "next"
    zooprep.select(
        run, catalog=learnt["catalog"], next=200, learn_from=learnt["runs"], seed=4
    )
    b = ExportBuilder(seed=21)
    p = {}
    with Run.open(run) as r:
        for i, src in enumerate(r.iter_sources()):
            sid = 83_000_000 + i
            r.update(src.id, status="linked", subject_id=str(sid))
            b.subject(sid, {"#zooprep_id": f"id:{src.id}"})
            p[sid] = float(truth(src.row["reliability"]))
    simulate(b, p, volunteers=30, per_subject=(5, 8))
    result = zooprep.results(run, b.write(tmp_path / "export.csv"))
    assert result.subjects == 200
    table = pd.read_csv(run / "results.csv")
    assert sorted(table["stream"].value_counts().items()) == [
        ("random", 40),
        ("strategy", 160),
    ]
    assert sorted(table["rank"]) == list(range(1, 201))
    steps = pd.read_csv(run / "learning.csv")
    per_batch = steps.groupby("batch").first()
    assert per_batch["run"].map(lambda s: Path(s).name).tolist() == [
        "run1",
        "run2",
        "next",
    ]
    assert per_batch["total_labels"].tolist() == [250, 400, 600]
    assert per_batch["share_blind"].tolist()[:2] == [1.0, 1.0]
    assert per_batch["share_random"].iloc[2] == pytest.approx(0.2)
    assert per_batch["share_strategy"].iloc[2] == pytest.approx(0.8)
    errors = per_batch["calibration_error"].tolist()
    assert errors[0] > errors[1] > errors[2]
    assert per_batch["labels_per_0.01_error"].iloc[2] > 0
    # Ten bins per batch, each with its posterior.
    assert len(steps) == 30
    assert (steps["sd"] > 0).all()
    page = (run / "results.html").read_text()
    assert "id='batches-table'" in page
    assert "id='fig-batches'" in page
    # The earlier runs' results stay as they were.
    assert not (learnt["runs"][0] / "learning.csv").exists()


# -- upload: the priorities in the subject set -----------------------------------------


def _rendered(run: Path) -> None:
    """Give every source of the run a small PNG and mark it rendered."""
    from PIL import Image

    with Run.open(run) as r:
        for src in r.iter_sources():
            rel = r.cutout_path(src)
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(src.seq).integers(0, 255, (12, 36))
            Image.fromarray(noise.astype("uint8"), mode="L").save(run / rel)
            r.update(src.id, status="rendered", files=[rel])


def _priorities(standin, set_id: str) -> dict[str, float]:
    """``{subject id: priority}`` of a set, read with panoptes-client."""
    from panoptes_client import Panoptes
    from panoptes_client.set_member_subject import SetMemberSubject

    with Panoptes(
        endpoint=standin.url, username=standin.username, password=standin.password
    ):
        return {
            str(sms.raw["links"]["subject"]): float(sms.raw["priority"])
            for sms in SetMemberSubject.where(subject_set_id=set_id)
            if sms.raw["priority"] is not None
        }


def test_an_uploaded_batch_is_served_in_the_order_of_its_ranking(
    learnt: dict, tmp_path: Path, panoptes_standin, monkeypatch
) -> None:
    from tests.test_upload import FAST, login_env
    from tests.test_upload import options as upload_options

    run = tmp_path / "next"
    zooprep.select(
        run, catalog=learnt["catalog"], next=25, learn_from=learnt["runs"], seed=6
    )
    _rendered(run)
    zooprep.manifest(run)
    login_env(monkeypatch, panoptes_standin)
    result = zooprep.upload(run, upload_options(panoptes_standin), retry=FAST)
    assert result.linked == 25
    assert result.prioritized == 25
    ranked = pd.read_csv(run / "next.csv", dtype={"source_id": int})
    with Run.open(run, lock=False) as r:
        subject_of = {s.id: s.subject_id for s in r.iter_sources()}
    got = _priorities(panoptes_standin, panoptes_standin.subject_set_id)
    # Designator serves a prioritized set in ascending priority.
    served = sorted(got, key=lambda s: got[s])
    assert served == [subject_of[i] for i in ranked["source_id"]]
    assert sorted(got.values()) == [float(k) for k in range(1, 26)]
    for subject_id, priority in got.items():
        assert panoptes_standin.subject(subject_id).metadata["#priority"] == str(
            int(priority)
        )
    # Run again: nothing to change, no PUT.
    puts = panoptes_standin.count_requests("PUT")
    again = zooprep.upload(run, upload_options(panoptes_standin), retry=FAST)
    assert again.prioritized == 0
    assert panoptes_standin.count_requests("PUT") == puts


def test_linking_subjects_through_the_api_copies_their_priority(
    learnt: dict, tmp_path: Path, panoptes_standin, monkeypatch
) -> None:
    # What Panoptes' SubjectMetadataWorker does, seen through panoptes-client:
    # the subjects of a batch added to another set get their #priority there.
    from panoptes_client import Panoptes, Subject, SubjectSet

    from tests.test_upload import FAST, login_env
    from tests.test_upload import options as upload_options

    run = tmp_path / "next"
    zooprep.select(
        run, catalog=learnt["catalog"], next=8, learn_from=learnt["runs"], seed=3
    )
    _rendered(run)
    zooprep.manifest(run)
    login_env(monkeypatch, panoptes_standin)
    zooprep.upload(run, upload_options(panoptes_standin), retry=FAST)
    with Run.open(run, lock=False) as r:
        subjects = [s.subject_id for s in r.iter_sources()]
    with Panoptes(
        endpoint=panoptes_standin.url,
        username=panoptes_standin.username,
        password=panoptes_standin.password,
    ):
        other = SubjectSet()
        other.links.project = panoptes_standin.project_id
        other.display_name = "experts"
        other.save()
        other.add([Subject.find(s) for s in subjects])
        other_id = str(other.id)
    got = _priorities(panoptes_standin, other_id)
    for s in subjects:
        assert got[s] == float(panoptes_standin.subject(s).metadata["#priority"])


def test_split_subjects_are_added_to_their_own_set_not_uploaded_again(
    learnt: dict, tmp_path: Path, panoptes_standin, monkeypatch
) -> None:
    from tests.test_upload import FAST, login_env
    from tests.test_upload import options as upload_options

    login_env(monkeypatch, panoptes_standin)
    run1 = tmp_path / "run1"
    zooprep.select(run1, catalog=learnt["catalog"], sample=40, seed=12)
    _rendered(run1)
    zooprep.manifest(run1)
    zooprep.upload(run1, upload_options(panoptes_standin), retry=FAST)
    b = ExportBuilder(seed=5)
    p = {}
    with Run.open(run1, lock=False) as r:
        for src in r.iter_sources():
            sid = int(src.subject_id)
            b.subject(sid, {"#zooprep_id": f"id:{src.id}"})
            p[sid] = float(truth(src.row["reliability"]))
    simulate(b, p, volunteers=30, per_subject=(6, 9))
    zooprep.results(run1, b.write(tmp_path / "export.csv"))
    split = pd.read_csv(run1 / "results.csv")
    split["c"] = 1 - (2 * split["real_fraction"] - 1).abs()

    run2 = tmp_path / "run2"
    zooprep.select(
        run2, catalog=learnt["catalog"], next=10, learn_from=[run1], seed=1,
        reshow_controversial=5,
    )  # fmt: skip
    listed = pd.read_csv(run2 / "controversial.csv")
    assert len(listed) == 5
    # the five most split, most votes first among equals
    expected = split.sort_values(
        ["c", "n_volunteers", "source_id"], ascending=[False, False, True]
    ).head(5)
    assert listed["source_id"].tolist() == expected["source_id"].tolist()
    _rendered(run2)
    zooprep.manifest(run2)
    before = len(panoptes_standin.subjects())
    result = zooprep.upload(
        run2,
        upload_options(
            panoptes_standin, subject_set_id=None, subject_set="batch 2",
            controversial_set="experts",
        ),
        retry=FAST,
    )  # fmt: skip
    assert result.linked == 10
    assert result.controversial == 5
    # the split subjects are the same subjects, now in a second set too
    assert len(panoptes_standin.subjects()) == before + 10
    experts = panoptes_standin.subject_set(result.controversial_set_id)
    assert experts.display_name == "experts"
    assert sorted(experts.subject_ids) == sorted(str(s) for s in listed["subject_id"])
    again = zooprep.upload(
        run2,
        upload_options(
            panoptes_standin, subject_set_id=None, subject_set="batch 2",
            controversial_set="experts",
        ),
        retry=FAST,
    )  # fmt: skip
    assert again.controversial == 0
    assert (
        len(panoptes_standin.subject_set(result.controversial_set_id).subject_ids) == 5
    )


def test_a_controversial_set_without_a_listing_is_refused(
    learnt: dict, tmp_path: Path, panoptes_standin, monkeypatch
) -> None:
    from tests.test_upload import FAST, login_env
    from tests.test_upload import options as upload_options

    login_env(monkeypatch, panoptes_standin)
    run = tmp_path / "next"
    zooprep.select(
        run, catalog=learnt["catalog"], next=5, learn_from=learnt["runs"], seed=1
    )
    _rendered(run)
    zooprep.manifest(run)
    with pytest.raises(zooprep.errors.InputError, match="--reshow-controversial"):
        zooprep.upload(
            run, upload_options(panoptes_standin, controversial_set="experts"),
            retry=FAST,
        )  # fmt: skip
    assert panoptes_standin.subjects() == []


# -- other sources, changed results ----------------------------------------------------


def test_the_next_batch_from_a_rubin_apdb(tmp_path: Path, apdb_sqlite: Path) -> None:
    url = f"sqlite:///{apdb_sqlite}"
    run1 = tmp_path / "run1"
    zooprep.select(run1, apdb=url, sample=120, seed=3)
    b = ExportBuilder(seed=8)
    p = {}
    with Run.open(run1) as r:
        for i, src in enumerate(r.iter_sources()):
            sid = 84_000_000 + i
            r.update(src.id, status="linked", subject_id=str(sid))
            b.subject(sid, {"#zooprep_id": f"id:{src.id}"})
            p[sid] = float(truth(src.row["reliability"]))
    simulate(b, p, volunteers=20, per_subject=(4, 7))
    zooprep.results(run1, b.write(tmp_path / "export.csv"))
    done = _cli(
        "select", tmp_path / "run2", "--apdb", url, "--next", 100,
        "--learn-from", run1, "--strategy", "stratified", "--seed", 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    chosen = _chosen(tmp_path / "run2")
    assert len(chosen) == 100
    assert not set(chosen["source_id"]) & _shown([run1])
    assert (chosen["stream"] == "random").sum() == 20
    # 290 - 120 = 170 left: asking for 171 is refused.
    _refused(
        ["select", tmp_path / "run3", "--apdb", url, "--next", 171,
         "--learn-from", run1],
        "only 170 candidates",
    )  # fmt: skip


def test_a_batch_whose_results_changed_is_not_continued(
    learnt: dict, tmp_path: Path
) -> None:
    run1 = learnt_run(tmp_path, learnt["catalog"], "run1", sample=60, seed=4)
    args = dict(catalog=learnt["catalog"], next=30, learn_from=[run1], seed=1)
    zooprep.select(tmp_path / "next", **args)
    # results redone from another export: a new calibration
    b = ExportBuilder(seed=99)
    with Run.open(run1, lock=False) as r:
        subjects = {int(s.subject_id): 0.5 for s in r.iter_sources()}
        for sid in subjects:
            b.subject(sid, {})
    simulate(b, subjects, volunteers=10, per_subject=(3, 4))
    zooprep.results(run1, b.write(tmp_path / "again.csv"), force=True)
    with pytest.raises(zooprep.errors.RunError, match="changed since"):
        zooprep.select(tmp_path / "next", **args)
    assert len(_chosen(tmp_path / "next")) == 30
