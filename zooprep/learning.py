"""Learning from what volunteers said: the pipeline's calibration, and the next batch.

The **calibration** is the volunteers' real-fraction as a function of the
pipeline's score (``reliability``, ``drb``, ``rb``): in each score bin, what
share of the volunteers' votes say "real".  It is what a project needs to
trust (or re-threshold) the score, and what each batch should measure better.

Why binned Beta posteriors
--------------------------
Each score bin ``b`` gets a Beta posterior for its mean real-fraction ``p_b``:
a uniform ``Beta(1, 1)`` prior updated with every classified subject in the
bin, the subject's real-fraction ``y`` counting as ``y`` "real" and ``1 - y``
"not real" (one subject is one unit: the votes on one subject share its truth,
so they are not independent trials).  This was chosen over an isotonic or
logistic fit because

- its uncertainty is exact and per bin (``sd_b``), which is what the
  strategies below spend labels on, and it stays honest where a bin has few
  or no labels (the prior's 0.5 +- 0.29) instead of borrowing a shape from
  the neighbours;
- it assumes no shape: pipeline scores are often not monotonic in what
  volunteers say at the extremes (artefacts with high scores), which an
  isotonic or logistic curve would smooth away;
- it updates by adding counts, so the curve after each batch is the curve
  before it plus that batch's labels, and fitting costs nothing.

Fractional labels make the posterior a little conservative (a subject at 0.5
is less variable than a coin flip), never over-confident.

Only the score is used.  A second column (S/N, band) would split each bin
into several cells, and at the hundreds of labels a batch brings a cell
would hold a handful: its posterior would say little and the strategies
would chase noise.  A project that expects the calibration to differ by
band selects each band's batches as runs of their own (``--band``).

Correcting for how sources were chosen
--------------------------------------
Every source chosen by ``zooprep select --next`` records its *stream*
(`STREAMS`: ``strategy`` or ``random``; sources chosen otherwise count as
``blind``) and its *propensity*, the probability it had of being chosen.
The strategies choose by score only, and within a score bin at random, so
within a bin the labels are a fair sample; what they change is where in the
bin, and how many per bin.  `fit` therefore weights each label by one over
its propensity (``correction="ipw"``, the default: a Hajek mean per bin with
Kish's effective count in the Beta posterior), or uses only the random and
blind streams (``"random"``), or all labels alike (``"none"``).

Strategies
----------
All three leave ``round(random_share * n)`` picks (half up) to a uniform
random draw from all candidates, drawn first (so the random stream is a fair
sample of the candidates), and count those picks as labels to come.

``uncertainty``
    Each pick goes to the score bin whose calibrated probability is most
    uncertain (largest posterior variance, counting the picks made so far),
    so labels go where the calibration is least known: bins with few labels
    and bins whose real-fraction is near one half.
``disagreement``
    Quotas per score bin in proportion to the bin's sum over its candidates
    of ``(p(s) - s)^2``, the calibrated probability (interpolated between bin
    centres) against the raw score: picks go where the score is most wrong as
    a probability, and most often.  Needs a score in [0, 1].
``stratified``
    Quotas per score bin proportional to the bin's share of the candidates
    times its calibration error (``W_b sd_b``: Neyman's optimal allocation
    for the population-weighted error), at random within each bin.

All three choose at random within a bin, so every candidate of a bin has
the same chance of being chosen (its propensity) and the labels of a bin
stay a fair sample of it.  The choice is ranked, most informative first
(`Choice.rank`): the order of the greedy picks, each pick's ``|p(s) - s|``,
or each bin's marginal share; the
random picks are spread evenly through the ranking (every fifth place at
20 %), so however far volunteers get through a prioritized subject set, the
random share of what they saw stays the same.

Examples
--------
>>> import numpy as np
>>> cal = fit(np.array([0.05, 0.1, 0.9, 0.95]), np.array([0.0, 0.2, 1.0, 0.8]),
...           edges=np.linspace(0, 1, 3))
>>> np.round(cal.mean, 3).tolist(), np.round(cal.sd, 3).tolist()
([0.3, 0.7], [0.205, 0.205])
>>> pick = choose(np.arange(100), np.linspace(0, 1, 100), cal, 10, seed=1)
>>> len(pick.ids), pick.streams.count("random")
(10, 2)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zooprep.vocabulary import STRATEGIES

__all__ = [
    "BINS",
    "CORRECTIONS",
    "MIN_LABELLED",
    "STRATEGIES",
    "STREAMS",
    "BatchStep",
    "Calibration",
    "Choice",
    "choose",
    "controversy",
    "default_edges",
    "fit",
    "history",
    "random_count",
    "weights",
]

#: What picked a source: a strategy, the random share, or a blind choice
#: (``--sample``, ``--limit``, a whole catalog); ``controversial`` marks
#: subjects shown again because their votes were split.
STREAMS = ("strategy", "random", "blind", "controversial")
#: How `fit` corrects for the streams.
CORRECTIONS = ("ipw", "random", "none")
#: Score bins of the calibration.
BINS = 10
#: Classified subjects with a score needed before a calibration is fitted.
MIN_LABELLED = 2 * BINS


def default_edges(scores: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Equal-width bin edges: over [0, 1] for probabilities, else the scores' range.

    Examples
    --------
    >>> default_edges(np.array([0.2, 0.7]), 4).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    finite = scores[np.isfinite(scores)]
    if not len(finite) or (finite.min() >= 0.0 and finite.max() <= 1.0):
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


@dataclass(frozen=True)
class Calibration:
    """The volunteers' real-fraction per score bin, as Beta posteriors.

    Attributes
    ----------
    edges : numpy.ndarray
        Bin edges (``bins + 1``).
    alpha, beta : numpy.ndarray
        The posterior's parameters per bin (1, 1 where a bin has no label).
    labels : numpy.ndarray
        Classified subjects per bin (before weighting).
    """

    edges: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    labels: np.ndarray

    @property
    def bins(self) -> int:
        """Number of bins."""
        return len(self.edges) - 1

    @property
    def centres(self) -> np.ndarray:
        """Bin centres."""
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean real-fraction per bin."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def sd(self) -> np.ndarray:
        """Posterior standard deviation per bin (the calibration's error)."""
        n = self.alpha + self.beta
        return np.sqrt(self.alpha * self.beta / (n * n * (n + 1.0)))

    def bin_of(self, scores: np.ndarray) -> np.ndarray:
        """The bin of each score (-1 for a missing one; the ends are clipped)."""
        scores = np.asarray(scores, dtype=np.float64)
        out = np.full(len(scores), -1, dtype=np.int64)
        ok = np.isfinite(scores)
        inner = self.edges[1:-1]
        out[ok] = np.searchsorted(inner, scores[ok], side="right")
        return out

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability at each score (interpolated between centres)."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.centres, self.mean)

    def error(self, weights: np.ndarray | None = None) -> float:
        """The calibration's RMS error: ``sqrt(sum_b w_b sd_b^2 / sum_b w_b)``.

        Parameters
        ----------
        weights : numpy.ndarray, optional
            Weight per bin (e.g. its share of the sources); equal by default.
        """
        w = np.ones(self.bins) if weights is None else np.asarray(weights, float)
        if not w.sum() > 0:
            return float("nan")
        return float(math.sqrt(float((w * self.sd**2).sum() / w.sum())))

    def rows(self) -> list[dict[str, float]]:
        """One dict per bin: edges, labels, mean, sd (for tables and CSV)."""
        return [
            {
                "score_low": float(self.edges[b]),
                "score_high": float(self.edges[b + 1]),
                "labels": int(self.labels[b]),
                "real_fraction": float(self.mean[b]),
                "sd": float(self.sd[b]),
            }
            for b in range(self.bins)
        ]


def weights(
    streams: Sequence[str], propensity: np.ndarray, correction: str = "ipw"
) -> np.ndarray:
    """Each label's weight in `fit` under a correction (`CORRECTIONS`).

    ``ipw``: one over the propensity (1 where it is unknown: blind choices);
    ``random``: 1 for the random and blind streams, 0 for the others;
    ``none``: 1.

    Examples
    --------
    >>> weights(["random", "strategy", "blind"], np.array([0.5, 0.25, np.nan])).tolist()
    [2.0, 4.0, 1.0]
    >>> weights(["random", "strategy", "blind"], np.ones(3), "random").tolist()
    [1.0, 0.0, 1.0]
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, not {correction!r}")
    n = len(streams)
    if correction == "none":
        return np.ones(n)
    if correction == "random":
        return np.array([1.0 if s in ("random", "blind", "") else 0.0 for s in streams])
    p = np.asarray(propensity, dtype=np.float64)
    ok = np.isfinite(p) & (p > 0)
    out = np.ones(n)
    out[ok] = 1.0 / p[ok]
    return out


def fit(
    scores: np.ndarray,
    real_fraction: np.ndarray,
    *,
    edges: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Calibration:
    """Fit the calibration: a Beta posterior of the real-fraction per score bin.

    Parameters
    ----------
    scores : numpy.ndarray
        The pipeline's score of each classified subject (NaN: left out).
    real_fraction : numpy.ndarray
        The share of its volunteers who said real.
    edges : numpy.ndarray, optional
        Bin edges (`default_edges` of the scores when not given).
    weight : numpy.ndarray, optional
        Each label's weight (`weights`); within a bin the mean is the
        weighted (Hajek) mean and the count Kish's effective size
        ``(sum w)^2 / sum w^2``.  Zero-weight labels are left out.
    groups : numpy.ndarray, optional
        The batch of each label: weights are inverse propensities within
        one batch's candidates, so they are scaled to a mean of 1 within each
        batch and bin (a batch chosen blind, weight 1, and one chosen with
        propensities 0.05 then pool by their effective counts).

    Returns
    -------
    Calibration
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.clip(np.asarray(real_fraction, dtype=np.float64), 0.0, 1.0)
    w = np.ones(len(s)) if weight is None else np.asarray(weight, dtype=np.float64)
    if edges is None:
        edges = default_edges(s)
    edges = np.asarray(edges, dtype=np.float64)
    bins = len(edges) - 1
    alpha, beta = np.ones(bins), np.ones(bins)
    labels = np.zeros(bins, dtype=np.int64)
    ok = np.isfinite(s) & np.isfinite(y) & (w > 0)
    which = np.searchsorted(edges[1:-1], s[ok], side="right")
    ys, ws = y[ok], w[ok].copy()
    gs = np.zeros(len(ys), np.int64) if groups is None else np.asarray(groups)[ok]
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        for g in np.unique(gs[sel]):
            cell = sel & (gs == g)
            ws[cell] = ws[cell] / ws[cell].mean()
        wb, yb = ws[sel], ys[sel]
        mean = float((wb * yb).sum() / wb.sum())
        n_eff = float(wb.sum() ** 2 / (wb**2).sum())
        alpha[b] += n_eff * mean
        beta[b] += n_eff * (1.0 - mean)
        labels[b] = int(sel.sum())
    return Calibration(edges, alpha, beta, labels)


def random_count(n: int, share: float) -> int:
    """How many of ``n`` picks are random: ``share * n`` rounded half up.

    Examples
    --------
    >>> random_count(25, 0.2), random_count(7, 0.2), random_count(5, 0.3)
    (5, 1, 2)
    """
    return min(n, math.floor(share * n + 0.5 + 1e-9))


@dataclass(frozen=True)
class Choice:
    """A chosen batch, ranked.

    Attributes
    ----------
    ids : numpy.ndarray
        The chosen source ids, most informative first (``rank`` 1, 2, ...).
    streams : list of str
        What picked each: ``strategy`` or ``random``.
    propensity : numpy.ndarray
        Each source's probability of being chosen (for `weights`).
    value : numpy.ndarray
        How informative each pick was judged (the strategy's own measure;
        NaN for random picks).
    strategy : str
        The strategy.
    """

    ids: np.ndarray
    streams: list[str]
    propensity: np.ndarray
    value: np.ndarray
    strategy: str

    @property
    def rank(self) -> np.ndarray:
        """1 for the most informative, then 2, 3 ..."""
        return np.arange(1, len(self.ids) + 1)


def choose(
    ids: np.ndarray,
    scores: np.ndarray,
    calibration: Calibration,
    n: int,
    *,
    strategy: str = "uncertainty",
    random_share: float = 0.2,
    seed: int = 0,
) -> Choice:
    """Choose ``n`` of the candidates and rank them (see the module's notes).

    Parameters
    ----------
    ids : numpy.ndarray
        Candidate source ids (any order; the choice does not depend on it).
    scores : numpy.ndarray
        Their pipeline scores (finite).
    calibration : Calibration
        What the earlier batches measured.
    n : int
        How many to choose (at most ``len(ids)``).
    strategy : str
        One of `STRATEGIES`.
    random_share : float
        Share of ``n`` drawn uniformly at random (`random_count`).
    seed : int
        Seed of `numpy.random.default_rng`: the same seed, candidates and
        calibration give the same choice.

    Returns
    -------
    Choice
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be within [0, 1], not {random_share}")
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(ids, kind="stable")
    ids, scores = ids[order], scores[order]
    total = len(ids)
    if n > total:
        raise ValueError(f"cannot choose {n} of {total} candidates")
    rng = np.random.default_rng(seed)
    keys = rng.random(total)  # one key per candidate, in id order
    n_random = random_count(n, random_share)
    taken = np.zeros(total, dtype=bool)
    random_picks = np.argsort(keys, kind="stable")[:n_random]
    taken[random_picks] = True
    p_random = n_random / total if total else 0.0
    which = calibration.bin_of(scores)
    rest = n - n_random
    gap = np.abs(calibration.predict(scores) - scores)
    picks, values, props = _by_bins(
        which, calibration, taken, keys, rest, strategy, gap
    )
    props = p_random + (1.0 - p_random) * props
    # A candidate's chance of being chosen by either stream: the same for
    # every candidate of a bin, random picks included.
    by_bin = {int(which[i]): float(p) for i, p in zip(picks, props, strict=True)}
    strat_order = np.argsort(-values, kind="stable")
    picks, values, props = picks[strat_order], values[strat_order], props[strat_order]
    ranked: list[tuple[int, str, float, float]] = []
    randoms = [
        (int(i), "random", by_bin.get(int(which[i]), p_random), math.nan)
        for i in random_picks
    ]
    strats = [
        (int(i), "strategy", float(p), float(v))
        for i, v, p in zip(picks, values, props, strict=True)
    ]
    # Random picks evenly spaced through the ranking.
    randoms.reverse()
    strats.reverse()
    for k in range(n):
        due = math.floor((k + 1) * n_random / n)
        if (randoms and (n_random - len(randoms)) < due) or not strats:
            ranked.append(randoms.pop())
        else:
            ranked.append(strats.pop())
    return Choice(
        ids=ids[[r[0] for r in ranked]] if ranked else np.empty(0, np.int64),
        streams=[r[1] for r in ranked],
        propensity=np.array([r[2] for r in ranked], dtype=np.float64),
        value=np.array([r[3] for r in ranked], dtype=np.float64),
        strategy=strategy,
    )


def _by_bins(
    which: np.ndarray,
    calibration: Calibration,
    taken: np.ndarray,
    keys: np.ndarray,
    n: int,
    strategy: str,
    gap: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quotas per bin (greedy by variance, Neyman, or by disagreement), then random within."""
    bins = calibration.bins
    free_by_bin = [np.flatnonzero((which == b) & ~taken) for b in range(bins)]
    capacity = np.array([len(f) for f in free_by_bin])
    counts = calibration.alpha + calibration.beta
    mean = calibration.mean
    counts = counts + np.bincount(which[taken], minlength=bins)[:bins]  # to come
    quota = np.zeros(bins, dtype=np.int64)
    gains: list[list[float]] = [[] for _ in range(bins)]
    if strategy == "uncertainty":
        heap: list[tuple[float, int]] = []
        for b in range(bins):
            if capacity[b]:
                var = mean[b] * (1 - mean[b]) / (counts[b] + 1)
                heapq.heappush(heap, (-var, b))
        for _ in range(n):
            neg, b = heapq.heappop(heap)
            quota[b] += 1
            gains[b].append(-neg)
            if quota[b] < capacity[b]:
                var = mean[b] * (1 - mean[b]) / (counts[b] + quota[b] + 1)
                heapq.heappush(heap, (-var, b))
    elif strategy == "stratified":  # Neyman, W_b * sd_b, capped by what bins have
        total = max(1, int(capacity.sum()))
        share = capacity / total * calibration.sd
        quota = _allocate(share, capacity, n)
        for b in range(bins):
            # the k-th pick of a bin is worth share / (k + 1/2) (largest remainders)
            gains[b] = [float(share[b]) / (k + 0.5) for k in range(int(quota[b]))]
    else:  # disagreement: in proportion to the bin's sum of (p(s) - s)^2
        share = np.array(
            [float((gap[f] ** 2).sum()) if len(f) else 0.0 for f in free_by_bin]
        )
        quota = _allocate(share, capacity, n)
    picks, values, props = [], [], []
    for b in range(bins):
        q = int(quota[b])
        if not q:
            continue
        free = free_by_bin[b]
        chosen = free[np.argsort(keys[free], kind="stable")[:q]]
        picks.append(chosen)
        values.append(
            gap[chosen] if strategy == "disagreement" else np.array(gains[b][:q])
        )
        props.append(np.full(q, q / len(free)))
    if not picks:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    return np.concatenate(picks), np.concatenate(values), np.concatenate(props)


def _allocate(share: np.ndarray, capacity: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` in proportion to ``share``, capped by ``capacity`` (largest remainders)."""
    quota = np.zeros(len(share), dtype=np.int64)
    remaining = n
    active = capacity > 0
    while remaining > 0 and active.any():
        s = np.where(active, share, 0.0)
        if not s.sum() > 0:
            s = active.astype(float)
        want = s / s.sum() * remaining
        room = capacity - quota
        base = np.minimum(np.floor(want).astype(np.int64), room)
        quota += base
        remaining -= int(base.sum())
        if remaining > 0:
            frac = np.where(active & (quota < capacity), want - np.floor(want), -1.0)
            for b in np.argsort(-frac, kind="stable"):
                if remaining == 0 or frac[b] < 0:
                    break
                quota[b] += 1
                remaining -= 1
        active = quota < capacity
    return quota


def controversy(real_fraction: np.ndarray, volunteers: np.ndarray) -> np.ndarray:
    """How split each subject's votes are: ``1 - |2 f - 1|`` (1 at a 50:50 split).

    ``f`` is the real-fraction (or SWAP's skill-weighted probability); a
    subject with fewer than two volunteers is not controversial (0).

    Examples
    --------
    >>> controversy(np.array([0.5, 0.9, 0.4, 1.0]), np.array([6, 10, 5, 1])).tolist()
    [1.0, 0.19999999999999996, 0.8, 0.0]
    """
    f = np.asarray(real_fraction, dtype=np.float64)
    out = 1.0 - np.abs(2.0 * f - 1.0)
    out[~np.isfinite(out) | (np.asarray(volunteers) < 2)] = 0.0
    return out


@dataclass(frozen=True)
class BatchStep:
    """The calibration after one more batch.

    Attributes
    ----------
    run : str
        The batch (its run directory).
    labels : int
        Its classified subjects with a score.
    total : int
        Classified subjects with a score up to and including it.
    streams : dict of str to int
        Its labels per stream (``strategy``, ``random``, ``blind``).
    calibration : Calibration
        Fitted on every batch up to and including it.
    error : float
        `Calibration.error` (RMS over the bins of the posterior sd).
    labels_per_error : float
        This batch's labels per 0.01 the error fell (NaN for the first batch
        or when it did not fall).
    """

    run: str
    labels: int
    total: int
    streams: dict[str, int]
    calibration: Calibration
    error: float
    labels_per_error: float

    def shares(self) -> dict[str, float]:
        """Each stream's share of the batch's labels."""
        n = max(1, self.labels)
        return {k: v / n for k, v in self.streams.items()}


def history(
    batches: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[str], np.ndarray]],
    *,
    edges: np.ndarray | None = None,
    correction: str = "ipw",
) -> list[BatchStep]:
    """The calibration after each batch, learnt from that batch and those before.

    Parameters
    ----------
    batches : sequence of (run, scores, real_fraction, streams, propensity)
        In the order they were shown.
    edges : numpy.ndarray, optional
        Bin edges (`default_edges` of every score by default).
    correction : str
        One of `CORRECTIONS`, as `fit`.

    Returns
    -------
    list of BatchStep

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s1, s2 = rng.random(100), rng.random(300)
    >>> steps = history([("run1", s1, s1, ["blind"] * 100, np.full(100, np.nan)),
    ...                  ("run2", s2, s2, ["random"] * 300, np.full(300, 0.1))])
    >>> [(b.total, round(b.error, 3)) for b in steps]
    [(100, 0.125), (400, 0.066)]
    """
    if edges is None:
        edges = default_edges(
            np.concatenate([np.asarray(b[1], float) for b in batches])
        )
    steps: list[BatchStep] = []
    scores: list[np.ndarray] = []
    fractions: list[np.ndarray] = []
    weight: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    for run, s, y, streams, p in batches:
        s = np.asarray(s, dtype=np.float64)
        ok = np.isfinite(s)
        scores.append(s[ok])
        fractions.append(np.asarray(y, dtype=np.float64)[ok])
        kept = [st for st, k in zip(streams, ok, strict=True) if k]
        weight.append(weights(kept, np.asarray(p, dtype=np.float64)[ok], correction))
        groups.append(np.full(int(ok.sum()), len(groups)))
        cal = fit(
            np.concatenate(scores),
            np.concatenate(fractions),
            edges=edges,
            weight=np.concatenate(weight),
            groups=np.concatenate(groups),
        )
        error = cal.error()
        per = math.nan
        if steps and steps[-1].error > error:
            per = int(ok.sum()) / ((steps[-1].error - error) / 0.01)
        counts: dict[str, int] = {}
        for st in kept:
            counts[st] = counts.get(st, 0) + 1
        steps.append(
            BatchStep(
                run=run,
                labels=int(ok.sum()),
                total=sum(len(x) for x in scores),
                streams=counts,
                calibration=cal,
                error=error,
                labels_per_error=per,
            )
        )
    return steps
