"""zooprep results measures volunteers on known answers, as simulated volunteers were made.

A run whose catalog marks the pipeline's own injected sources (with their
magnitudes) and an expert's known artefacts (``zooprep fakes --truth-column``)
is classified by simulated volunteers of known detection curve and known
skill (`tests.exportgen.simulate_known`).  The results must give back the
completeness curve within their error bars, the 50 % magnitude within its
error, and the volunteers in the order of their skill.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("panoptes_aggregation")

import zooprep
from tests.exportgen import ExportBuilder, SimSubject, SimVolunteer, simulate_known
from zooprep.options import FakesOptions
from zooprep.readers.catalog import read_parquet
from zooprep.stages.fakes import fakes

M0, WIDTH, CMAX = 22.6, 0.3, 0.97  # the shape of the simulated detection curve


def shape(mag: float | np.ndarray) -> np.ndarray:
    return CMAX / (1.0 + np.exp((np.asarray(mag) - M0) / WIDTH))


#: Four groups of volunteers: (chance to see a real source at its brightest,
#: chance to call an artefact real).  Their skills are about 0.9, 0.55, 0.2, -0.15.
GROUPS = [(0.98, 0.02), (0.78, 0.22), (0.58, 0.42), (0.38, 0.62)]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("known")
    rng = np.random.default_rng(2024)
    n_real, n_bogus, n_other = 1200, 500, 400
    catalog = base / "catalog.csv"
    subjects: list[SimSubject] = []
    hidden: dict[int, bool] = {}
    with open(catalog, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            [
                "diaSourceId",
                "visit",
                "detector",
                "ra",
                "dec",
                "snr",
                "reliability",
                "is_injected",
                "injected_mag",
                "label",
            ]
        )
        for k in range(n_real + n_bogus + n_other):
            sid = 9_000_000_000 + k
            if k < n_real:
                mag = float(rng.uniform(20.0, 25.0))
                truth, label, injected = True, "", "true"
                snr = 10 ** (-0.4 * (mag - 26.0))
                score = float(np.clip(shape(mag) + rng.normal(0, 0.1), 0, 1))
            elif k < n_real + n_bogus:
                mag, truth, label, injected = None, False, "bogus", "false"
                snr, score = float(rng.uniform(5, 20)), float(rng.uniform(0, 0.6))
            else:
                mag, truth, label, injected = None, None, "", "false"
                snr, score = float(rng.uniform(5, 50)), float(rng.uniform(0, 1))
                hidden[sid] = bool(rng.random() < 0.5)
            out.writerow(
                [
                    sid,
                    1,
                    7,
                    150.0 + k * 1e-4,
                    2.0,
                    snr,
                    score,
                    injected,
                    "" if mag is None else mag,
                    label,
                ]
            )
            subjects.append(SimSubject(80_000_000 + k, sid, truth, mag))
    run = base / "run"
    zooprep.select(run, catalog=str(catalog))
    # the pipeline's injected sources, and the expert's artefacts (a second column)
    marked = fakes(
        run,
        FakesOptions(
            truth_column="is_injected", truth_mag="injected_mag", training=0.3, seed=5
        ),
    )
    assert marked.real == n_real
    from zooprep.run import KnownAnswer, Run

    with Run.open(run) as r:
        bogus = [
            KnownAnswer(s.source_id, "bogus", "column", "training")
            for s in subjects
            if s.truth is False
        ]
        r.record_known(bogus)
    builder = ExportBuilder(seed=11)
    volunteers = [
        SimVolunteer(builder.volunteer(), detect, false_alarm)
        for detect, false_alarm in GROUPS
        for _ in range(5)
    ]
    # the unknown subjects' hidden truth decides how volunteers answer them
    for s in subjects:
        if s.truth is None:
            s.truth = hidden[s.source_id]
    simulate_known(builder, subjects, volunteers, shape, per_subject=(5, 9))
    for s in subjects:
        if s.source_id in hidden:
            s.truth = None
    export = builder.write(base / "export.csv")
    result = zooprep.results(run, export, task="T0", real_answer="Real")
    return {
        "run": run,
        "result": result,
        "subjects": subjects,
        "volunteers": volunteers,
        "hidden": hidden,
        "table": read_parquet(run / "results.parquet"),
        "completeness": pd.read_csv(run / "completeness.csv"),
        "skills": pd.read_csv(run / "volunteers.csv"),
    }


def _p_majority(ps: list[float]) -> float:
    """P(strictly more than half say real) for independent voters."""
    dist = np.zeros(len(ps) + 1)
    dist[0] = 1.0
    for p in ps:
        dist[1:] = dist[1:] * (1 - p) + dist[:-1] * p
        dist[0] *= 1 - p
    n = len(ps)
    return float(dist[n // 2 + 1 :].sum())


def _z_scores(frame: pd.DataFrame, expected: dict[float, float]) -> np.ndarray:
    """(found - expected) / binomial sigma per bin with subjects."""
    z = []
    for _, row in frame.iterrows():
        n = int(row["n"])
        if n < 5:
            continue
        e = expected[row["low_edge"]]
        sigma = math.sqrt(max(n * e * (1 - e), 1e-9))
        z.append((row["found"] - n * e) / sigma)
    return np.asarray(z)


def test_the_consensus_completeness_curve_is_the_simulated_one_within_its_errors(
    simulated: dict,
) -> None:
    frame = simulated["completeness"]
    cons = frame[(frame["classifier"] == "consensus") & (frame["quantity"] == "mag")]
    assert cons["n"].sum() == 1200
    reals = [s for s in simulated["subjects"] if s.mag is not None]
    expected = {}
    for _, row in cons.iterrows():
        inside = [s for s in reals if row["low_edge"] <= s.mag < row["high_edge"]]
        ps = [
            np.mean(
                [_p_majority([v.detect * float(shape(s.mag)) for v, _ in s.voters])]
            )
            for s in inside
        ]
        expected[row["low_edge"]] = float(np.mean(ps)) if ps else 0.0
        # the bin's interval is about the binomial one
        if row["n"] >= 20 and 0.1 < row["completeness"] < 0.9:
            assert row["upper"] - row["lower"] < 2.5 * math.sqrt(
                row["completeness"] * (1 - row["completeness"]) / row["n"]
            )
    z = _z_scores(cons, expected)
    assert len(z) >= 8
    assert np.all(np.abs(z) < 3.5)
    assert np.mean(z**2) < 2.0  # the errors are the right size


def test_single_classifications_give_the_simulated_curve_and_50_percent_magnitude(
    simulated: dict,
) -> None:
    frame = simulated["completeness"]
    single = frame[(frame["classifier"] == "single") & (frame["quantity"] == "mag")]
    votes = [
        (s.mag, v.detect * float(shape(s.mag)))
        for s in simulated["subjects"]
        if s.mag is not None
        for v, _ in s.voters
    ]
    assert single["n"].sum() == len(votes)
    expected = {}
    for _, row in single.iterrows():
        ps = [p for m, p in votes if row["low_edge"] <= m < row["high_edge"]]
        expected[row["low_edge"]] = float(np.mean(ps))
    z = _z_scores(single, expected)
    assert np.all(np.abs(z) < 3.5)
    assert np.mean(z**2) < 2.0
    # the true single-vote curve is mean(detect) * shape(m): its 50 % point
    detect = np.mean([p / float(shape(m)) for m, p in votes])
    true_m50 = M0 + WIDTH * math.log(2 * detect * CMAX - 1)
    x50, err = single["x50"].iloc[0], single["x50_err"].iloc[0]
    assert abs(x50 - true_m50) < 3 * err
    assert err < 0.1


def test_volunteers_are_ranked_by_their_simulated_skill(simulated: dict) -> None:
    skills = simulated["skills"].set_index("volunteer")
    truth = {}
    for v in simulated["volunteers"]:
        v_id = f"user:{v.volunteer.user_id}" if v.volunteer.user_id else None
        if v_id is None:
            v_id = f"session:{v.volunteer.session}"
        truth[v_id] = GROUPS.index((v.detect, v.false_alarm))
    assert set(truth) == set(skills.index)
    for a, ga in truth.items():
        for b, gb in truth.items():
            if ga < gb:  # a's group is more skilled
                assert skills.loc[a, "skill"] > skills.loc[b, "skill"], (a, b)
    # the confusion matrices hold every known-answer vote
    known_votes = sum(
        len(s.voters) for s in simulated["subjects"] if s.truth is not None
    )
    assert (skills["known_real"] + skills["known_bogus"]).sum() == known_votes
    # the best group's artefact rate is measured as simulated
    best = [v for v, g in truth.items() if g == 0]
    assert skills.loc[best, "p_bogus"].mean() == pytest.approx(0.98, abs=0.03)


def test_the_skill_weighted_vote_is_right_more_often_than_the_plain_vote(
    simulated: dict,
) -> None:
    table = simulated["table"].set_index("source_id")
    hidden = simulated["hidden"]
    ids = [i for i in hidden if i in table.index]
    plain = np.mean([(table.loc[i, "consensus"] == "real") == hidden[i] for i in ids])
    weighted = np.mean([bool(table.loc[i, "swap_real"]) == hidden[i] for i in ids])
    assert weighted > plain


def test_purity_and_the_pipelines_completeness_on_the_same_known_answers(
    simulated: dict,
) -> None:
    result = simulated["result"]
    known = result.known
    assert known.real == 1200
    assert known.bogus == 500
    # the false-positive rate of the consensus on known artefacts is what the
    # volunteers' false alarms give
    fp = known.purity["consensus"].false_positive_rate
    subjects = [s for s in simulated["subjects"] if s.truth is False]
    expected = np.mean(
        [_p_majority([v.false_alarm for v, _ in s.voters]) for s in subjects]
    )
    sigma = math.sqrt(expected * (1 - expected) / len(subjects))
    assert abs(fp - expected) < 3.5 * sigma
    frame = simulated["completeness"]
    pipeline = frame[(frame["classifier"] == "pipeline") & (frame["quantity"] == "mag")]
    assert pipeline["n"].sum() == 1200
    # the simulated score follows the same curve: its 50 % point is near M0
    assert abs(pipeline["x50"].iloc[0] - M0) < 0.3
    # a threshold on the score finds every bright fake (c_max at 1), and the
    # 50 % point still gets its error: score >= 0.5 where shape(m) + noise is
    x50, err = pipeline["x50"].iloc[0], pipeline["x50_err"].iloc[0]
    true_m50 = M0 + WIDTH * math.log(CMAX / 0.5 - 1)
    assert 0 < err < 0.1
    assert abs(x50 - true_m50) < 3 * err
    page = (simulated["run"] / "results.html").read_text()
    row = page.split("<tr data-classifier='pipeline'>")[1].split("</tr>")[0]
    assert f"{x50:.2f} &plusmn; {err:.2f}" in row


def test_results_gain_the_known_answer_columns(simulated: dict) -> None:
    table = simulated["table"]
    for column in (
        "known",
        "known_origin",
        "known_stream",
        "fake_mag",
        "fake_snr",
        "swap_real_probability",
        "swap_real",
    ):
        assert column in table.columns
    assert set(table["known"].dropna()) == {"real", "bogus"}
    assert set(table["known_stream"].dropna()) == {"blind", "training"}
    reals = table[table["known"] == "real"]
    assert reals["fake_mag"].between(20, 25).all()
    assert "known answers: 1200 real, 500 bogus" in str(simulated["result"])
    page = (simulated["run"] / "results.html").read_text()
    assert "id='completeness'" in page
    assert "id='skills'" in page
