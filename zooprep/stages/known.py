"""What the known answers say: how complete the volunteers are, and how good each is.

`zooprep results` calls `analyse` once the votes are reduced.  The known
answers are the run's (`zooprep.run.KnownAnswer`: injected fakes are real,
sources a column named are real or bogus).  For the known-real subjects:

- completeness of the **consensus** (the subject's top answer is "real"),
  of **single classifications** (each volunteer's vote on a fake is one
  trial), of the **skill-weighted** vote (SWAP's probability above 1/2, see
  `zooprep.skill`) and, where the subjects have a pipeline score, of the
  **pipeline** (score at or above the threshold), against the injected
  magnitude and S/N (`zooprep.completeness`: binomial intervals per bin and
  a fitted 50 % point);
- purity and the false-positive rate where known-bogus subjects exist;
- each volunteer's confusion matrix and skill (`zooprep.skill`).

Blind and training subjects are counted together in the curves (the
``known_stream`` column tells them apart); a volunteer's answers on training
subjects are given before the feedback is shown, so they are not biased by
it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zooprep.completeness import Curve, Logistic, Purity, curve, fit_logistic, purity
from zooprep.run import KnownAnswer
from zooprep.skill import Skill, Vote, swap_probabilities, volunteer_skills

__all__ = ["CLASSIFIERS", "KNOWN_COLUMNS", "KnownReport", "analyse", "snr_edges"]

#: Columns `analyse` adds to the results table.
KNOWN_COLUMNS = (
    "known",
    "known_origin",
    "known_stream",
    "fake_mag",
    "fake_snr",
    "swap_real_probability",
    "swap_real",
)
#: The classifiers whose completeness is measured, in report order.
CLASSIFIERS = ("consensus", "single", "swap", "pipeline")
#: Width of the magnitude bins.
MAG_BIN = 0.5
#: Edges of the S/N bins.
SNR_EDGES = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 1e4)


def snr_edges(values: Sequence[float | None]) -> np.ndarray:
    """The S/N bin edges that cover ``values`` (at least two)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0])
    if not len(v):
        return np.array([1.0, 10.0])
    edges = np.array(SNR_EDGES, dtype=float)
    lo = edges[edges <= v.min()]
    hi = edges[edges > v.max()]
    start = lo[-1] if len(lo) else v.min()
    stop = hi[0] if len(hi) else v.max() * 1.01
    inner = edges[(edges > start) & (edges < stop)]
    return np.concatenate([[start], inner, [stop]])


def _mag_edges(values: Sequence[float | None]) -> np.ndarray:
    """Half-magnitude bin edges covering ``values``."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)])
    if not len(v):
        return np.array([0.0, MAG_BIN])
    lo = math.floor(v.min() / MAG_BIN) * MAG_BIN
    hi = math.floor(v.max() / MAG_BIN) * MAG_BIN + MAG_BIN
    return np.arange(lo, hi + MAG_BIN / 2, MAG_BIN)


@dataclass
class KnownReport:
    """The known answers' verdict on the volunteers and the pipeline.

    Attributes
    ----------
    real, bogus : int
        Known-real and known-bogus subjects with volunteer votes.
    training, blind : int
        Of the known subjects with votes, by stream.
    curves : dict of (str, str) to Curve
        ``(classifier, "mag" | "snr")`` to its binned completeness.
    fits : dict of (str, str) to Logistic or None
        The fitted curves and their 50 % points.
    purity : dict of str to Purity
        Per classifier (consensus, swap), on the known-answer subjects.
    skills : list of Skill
        Every volunteer with a known-answer classification, best first.
    score : str or None
        The pipeline score column used.
    threshold : float
        The score at which the pipeline says real.
    prior : float
        SWAP's prior probability of "real".
    """

    real: int = 0
    bogus: int = 0
    training: int = 0
    blind: int = 0
    curves: dict[tuple[str, str], Curve] = field(default_factory=dict)
    fits: dict[tuple[str, str], Logistic | None] = field(default_factory=dict)
    purity: dict[str, Purity] = field(default_factory=dict)
    skills: list[Skill] = field(default_factory=list)
    score: str | None = None
    threshold: float = 0.5
    prior: float = 0.5

    def completeness_rows(self) -> list[dict[str, Any]]:
        """``completeness.csv``: one row per classifier, quantity and bin."""
        out = []
        for (who, quantity), c in self.curves.items():
            fit = self.fits.get((who, quantity))
            for row in c.rows():
                out.append(
                    {
                        "classifier": who,
                        **row,
                        "x50": fit.x50 if fit else None,
                        "x50_err": fit.x50_err if fit else None,
                    }
                )
        return out

    def volunteer_rows(self) -> list[dict[str, Any]]:
        """``volunteers.csv``: each volunteer's confusion matrix and skill."""
        return [
            {
                "volunteer": s.volunteer,
                "classifications": s.votes,
                "known_real": s.real,
                "real_said_real": s.real_said_real,
                "known_bogus": s.bogus,
                "bogus_said_bogus": s.bogus_said_bogus,
                "p_real": s.p_real,
                "p_bogus": s.p_bogus,
                "skill": s.skill,
            }
            for s in self.skills
        ]


def analyse(
    table: Any,
    votes: Iterable[Vote],
    known: Mapping[int, KnownAnswer],
    *,
    real_answer: str,
    score: str | None,
    threshold: float = 0.5,
    prior: float = 0.5,
) -> KnownReport | None:
    """Measure the volunteers (and the pipeline) on the known answers.

    Parameters
    ----------
    table : pandas.DataFrame
        The results table (one row per subject, ``source_id``, ``consensus``
        and the pipeline columns); `KNOWN_COLUMNS` are added to it in place.
    votes : iterable of Vote
        One per volunteer and subject (``subject`` is the source id).
    known : mapping of int to KnownAnswer
        The run's known answers.
    real_answer : str
        The answer slug that means real.
    score : str or None
        The pipeline's score column.
    threshold : float
        The score at which the pipeline says real.
    prior : float
        SWAP's prior probability that a subject is real.

    Returns
    -------
    KnownReport or None
        None when no known-answer subject has a vote (the columns are still
        added, empty).
    """
    ids = [int(i) for i in table["source_id"]]
    listed = list(votes)
    truth = {i: known[i].truth == "real" for i in ids if i in known}
    prob = swap_probabilities(listed, truth, prior=prior)
    answers = [known.get(i) for i in ids]
    table["known"] = [a.truth if a else None for a in answers]
    table["known_origin"] = [a.origin if a else None for a in answers]
    table["known_stream"] = [a.stream if a else None for a in answers]
    table["fake_mag"] = [a.mag if a else None for a in answers]
    table["fake_snr"] = [a.snr if a else None for a in answers]
    table["swap_real_probability"] = [prob.get(i, math.nan) for i in ids]
    table["swap_real"] = [bool(prob.get(i, math.nan) > 0.5) for i in ids]
    if not truth:
        return None

    report = KnownReport(score=score, threshold=threshold, prior=prior)
    report.real = sum(truth.values())
    report.bogus = len(truth) - report.real
    report.training = sum(1 for i in truth if known[i].stream == "training")
    report.blind = len(truth) - report.training
    consensus = {
        int(i): c == real_answer
        for i, c in zip(table["source_id"], table["consensus"], strict=True)
    }
    scores: dict[int, float] = {}
    if score is not None and score in table:
        for i, s in zip(table["source_id"], table[score], strict=True):
            try:
                value = float(s)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                scores[int(i)] = value

    reals = [i for i, t in truth.items() if t]
    mags = [known[i].mag for i in reals]
    snrs = [known[i].snr for i in reals]
    edges = {
        "mag": _mag_edges([m for m in mags if m is not None]),
        "snr": snr_edges(snrs),
    }

    def add(who: str, subjects: Sequence[int], found: Sequence[bool]) -> None:
        for quantity in ("mag", "snr"):
            values = [getattr(known[i], quantity) for i in subjects]
            pairs = [
                (float(v), f)
                for v, f in zip(values, found, strict=True)
                if v is not None and math.isfinite(v)
            ]
            if not pairs:
                continue
            vs, fs = zip(*pairs, strict=True)
            report.curves[(who, quantity)] = curve(vs, fs, edges[quantity], quantity)
            report.fits[(who, quantity)] = fit_logistic(vs, fs, quantity)

    add("consensus", reals, [consensus.get(i, False) for i in reals])
    single = [v for v in listed if truth.get(v.subject) is True]
    add("single", [v.subject for v in single], [v.said_real for v in single])
    add("swap", reals, [prob.get(i, 0.0) > 0.5 for i in reals])
    scored = [i for i in reals if i in scores]
    if scored:
        add("pipeline", scored, [scores[i] >= threshold for i in scored])

    if report.bogus:
        subjects = list(truth)
        t = [truth[i] for i in subjects]
        report.purity["consensus"] = purity(
            t, [consensus.get(i, False) for i in subjects]
        )
        report.purity["swap"] = purity(t, [prob.get(i, 0.0) > 0.5 for i in subjects])
        with_score = [i for i in subjects if i in scores]
        if with_score:
            report.purity["pipeline"] = purity(
                [truth[i] for i in with_score],
                [scores[i] >= threshold for i in with_score],
            )
    # Ranked by skill when known-bogus subjects measure both matrix elements,
    # else by P(says real | real), the only one measured.
    skills = volunteer_skills(listed, truth)
    both = report.bogus > 0
    report.skills = sorted(
        (s for s in skills.values() if s.known),
        key=lambda s: (-(s.skill if both else s.p_real), -s.known, s.volunteer),
    )
    return report
