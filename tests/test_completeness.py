"""Completeness curves, the 50 % point and volunteer skills recover what was simulated."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from zooprep.completeness import curve, fit_logistic, purity
from zooprep.skill import Vote, swap_probabilities, volunteer_skills


def _simulate(
    seed: int, n: int, m50: float = 22.8, width: float = 0.25, cmax: float = 0.95
):
    rng = np.random.default_rng(seed)
    mag = rng.uniform(20.0, 25.0, n)
    p = cmax / (1.0 + np.exp((mag - m50) / width))
    return mag, rng.random(n) < p, p


def test_the_binned_curve_counts_each_bin_and_its_interval_covers_the_truth() -> None:
    mag, found, p = _simulate(1, 4000)
    edges = np.arange(20.0, 25.01, 0.25)
    c = curve(mag, found, edges)
    assert c.n.sum() == 4000
    low, high = c.interval()
    # the true completeness of each bin (the mean of p over its fakes)
    truth = np.array(
        [p[(mag >= a) & (mag < b)].mean() for a, b in itertools.pairwise(edges)]
    )
    inside = (truth >= low) & (truth <= high)
    # a 68 % interval covers the truth in about 68 % of the bins
    assert 0.45 <= inside.mean() <= 0.95
    assert np.all(low <= c.fraction)
    assert np.all(c.fraction <= high)


def test_a_hundred_fakes_per_bin_give_five_percent_errors() -> None:
    c = curve([21.0] * 100, [True] * 50 + [False] * 50, [20.0, 22.0])
    low, high = c.interval()
    assert high[0] - low[0] == pytest.approx(0.10, abs=0.01)


def test_the_fitted_50_percent_magnitude_is_the_simulated_one_within_its_error() -> (
    None
):
    pulls = []
    for seed in range(8):
        mag, found, _ = _simulate(seed, 1500)
        fit = fit_logistic(mag, found)
        assert fit is not None
        true_m50 = 22.8 + 0.25 * np.log(2 * 0.95 - 1)
        pulls.append((fit.x50 - true_m50) / fit.x50_err)
        assert fit.c_max == pytest.approx(0.95, abs=0.03)
    pulls = np.asarray(pulls)
    assert np.all(np.abs(pulls) < 3.5)
    assert 0.4 < pulls.std() < 1.8  # the error is the right size


def test_the_50_percent_snr_is_fitted_in_log_snr() -> None:
    mag, found, _ = _simulate(3, 2000)
    snr = 10 ** (-0.4 * (mag - 26.0))  # S/N 10 at mag 23.5
    fit = fit_logistic(snr, found, "snr")
    assert fit is not None
    m_fit = fit_logistic(mag, found)
    assert m_fit is not None
    assert fit.x50 == pytest.approx(10 ** (-0.4 * (m_fit.x50 - 26.0)), rel=0.05)
    assert float(fit(fit.x50)) == pytest.approx(0.5, abs=0.01)


def test_a_curve_that_finds_every_bright_one_still_has_its_50_percent_error() -> None:
    # c_max at its bound of 1 (a sharp threshold on a score): the error is
    # measured, and is the size of the scatter of x50 over repeated samples
    x50s, errors = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        mag = rng.uniform(20.0, 25.0, 1200)
        found = 1.0 / (1.0 + np.exp((mag - 22.6) / 0.08)) > rng.random(1200)
        fit = fit_logistic(mag, found)
        assert fit is not None
        assert fit.c_max > 0.999
        x50s.append(fit.x50)
        errors.append(fit.x50_err)
    assert np.all(np.isfinite(errors))
    assert 0.5 < np.std(x50s) / np.mean(errors) < 2.0
    assert abs(np.mean(x50s) - 22.6) < 3 * np.mean(errors) / np.sqrt(12)


def test_a_step_with_no_subject_near_it_has_no_error_to_give() -> None:
    mag = np.r_[np.linspace(20.0, 22.0, 50), np.linspace(23.0, 25.0, 50)]
    fit = fit_logistic(mag, mag < 22.5)
    assert fit is not None
    assert 22.0 <= fit.x50 <= 23.0
    assert math.isnan(fit.x50_err)


def test_no_fit_without_a_step() -> None:
    assert fit_logistic([21.0] * 20, [True] * 20) is None
    assert fit_logistic([21.0, 22.0], [True, False]) is None


def test_purity_and_false_positive_rate_on_known_answers() -> None:
    p = purity([True, True, False, False, False], [True, False, True, False, False])
    assert p.purity == pytest.approx(0.5)
    assert p.false_positive_rate == pytest.approx(1 / 3)
    low, high = p.interval()
    assert low < 1 / 3 < high


def _crowd(seed: int, skills: dict[str, tuple[float, float]], known: int, unknown: int):
    """Volunteers answering known-real, known-bogus and unknown subjects."""
    rng = np.random.default_rng(seed)
    truth_all = {s: bool(rng.random() < 0.5) for s in range(known + unknown)}
    votes = []
    for name, (p_real, p_bogus) in skills.items():
        for s, is_real in truth_all.items():
            if rng.random() < 0.6:
                said = rng.random() < (p_real if is_real else 1 - p_bogus)
                votes.append(Vote(name, s, bool(said)))
    truth = {s: t for s, t in truth_all.items() if s < known}
    return votes, truth, truth_all


def test_volunteers_are_ranked_by_their_simulated_skill() -> None:
    groups = {0.95: 4, 0.8: 4, 0.65: 4, 0.5: 4}  # P(right), skill 0.9 .. 0
    skills = {f"v{g}-{i}": (g, g) for g, n in groups.items() for i in range(n)}
    votes, truth, _ = _crowd(5, skills, known=300, unknown=200)
    found = volunteer_skills(votes, truth)
    for a, (pa, _) in skills.items():
        for b, (pb, _) in skills.items():
            if pa > pb:
                assert found[a].skill > found[b].skill, (a, b)
    v = found["v0.95-0"]
    assert v.known == v.real + v.bogus
    assert v.p_real == pytest.approx(0.95, abs=0.06)


def test_the_skill_weighted_vote_beats_the_plain_vote_with_unequal_volunteers() -> None:
    skills = {f"good{i}": (0.95, 0.95) for i in range(3)}
    skills |= {f"poor{i}": (0.55, 0.55) for i in range(9)}
    votes, truth, truth_all = _crowd(8, skills, known=400, unknown=400)
    prob = swap_probabilities(votes, truth)
    by_subject: dict[int, list[bool]] = {}
    for v in votes:
        by_subject.setdefault(v.subject, []).append(v.said_real)
    unknown = [s for s in truth_all if s not in truth and s in prob]
    weighted = np.mean([(prob[s] > 0.5) == truth_all[s] for s in unknown])
    plain = np.mean([(np.mean(by_subject[s]) > 0.5) == truth_all[s] for s in unknown])
    assert weighted > plain + 0.05


def test_known_subjects_are_scored_without_their_own_answers() -> None:
    # one volunteer, one known subject: left out, the vote has no weight
    prob = swap_probabilities([Vote("a", 1, True)], {1: True})
    assert prob[1] == pytest.approx(0.5)
