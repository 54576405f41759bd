"""How fast the calibration error falls when batches are chosen (``select --next``).

Run by hand::

    python benchmarks/bench_nextbatch.py                  # 200 repetitions
    python benchmarks/bench_nextbatch.py --repeats 50 --batch 300

A simulated survey with a hidden truth:

* ``--population`` candidate sources (50,000) with pipeline scores from a
  mixture of mostly bogus (``Beta(1.2, 6)``, 70 %) and real-looking
  (``Beta(5, 1.5)``) detections;
* each source is real with probability ``s ** 2.5`` (an over-confident
  score), and each subject is classified by 7 simulated volunteers who say
  real with probability 0.85 on a real source and 0.08 on a bogus one, so
  the volunteers' real-fraction at a score is ``0.08 + 0.77 s ** 2.5`` on
  average and the true calibration of each score bin is the population's
  mean of it there;
* batch 1 is a random sample (``--batch`` sources, chosen blind); batches 2
  and 3 are chosen from the sources not yet shown, by each strategy of
  `zooprep.learning.choose` (with its 20 % random share) or entirely at
  random (``random_share=1``), the calibration learnt from the batches before,
  exactly as ``zooprep select --next`` does;
* after each batch the calibration (`zooprep.learning.fit`, propensity
  weighted, per batch) is compared with the truth: the RMS over the ten score
  bins of (fitted - true), unweighted (every score range counts alike) and
  weighted by each bin's share of the population.

Prints, per strategy, the mean error after each batch over ``--repeats``
seeds (the same seeds, so the same populations, for every strategy); the
ratio of its mean error after batch 3 to random choice's (below 1: the
strategy did better), with the standard error of the paired difference; how
much faster the error fell from batch 1 to 3 than under random choice; and
how many labels random choice would need for the same error (the error
falls as one over the square root of the labels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zooprep import learning

VOLUNTEERS = 7
P_SAY_REAL_IF_REAL = 0.85
P_SAY_REAL_IF_BOGUS = 0.08


def population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and hidden truth (real or not) of ``n`` sources."""
    bogus = rng.random(n) < 0.7
    s = np.where(bogus, rng.beta(1.2, 6.0, n), rng.beta(5.0, 1.5, n))
    real = rng.random(n) < s**2.5
    return s, real


def classify(rng: np.random.Generator, real: np.ndarray) -> np.ndarray:
    """The volunteers' real-fraction on each subject."""
    p = np.where(real, P_SAY_REAL_IF_REAL, P_SAY_REAL_IF_BOGUS)
    return rng.binomial(VOLUNTEERS, p) / VOLUNTEERS


def true_calibration(
    edges: np.ndarray, n: int = 2_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's mean expected real-fraction, and its share of the population."""
    rng = np.random.default_rng(12345)
    s, _ = population(rng, n)
    f = P_SAY_REAL_IF_BOGUS + (P_SAY_REAL_IF_REAL - P_SAY_REAL_IF_BOGUS) * s**2.5
    which = np.searchsorted(edges[1:-1], s, side="right")
    bins = len(edges) - 1
    mean = np.array([f[which == b].mean() for b in range(bins)])
    share = np.bincount(which, minlength=bins) / n
    return mean, share


def one_survey(
    seed: int, how: str, n_pop: int, batch: int, edges: np.ndarray
) -> list[tuple[np.ndarray, int]]:
    """The calibration's bin means after each of three batches."""
    rng = np.random.default_rng(seed)
    s, real = population(rng, n_pop)
    ids = np.arange(n_pop, dtype=np.int64)
    shown = np.zeros(n_pop, dtype=bool)
    scores: list[np.ndarray] = []
    fractions: list[np.ndarray] = []
    weight: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    out = []
    for k in range(3):
        if k == 0:
            chosen = rng.choice(n_pop, batch, replace=False)
            prop = np.full(batch, np.nan)
            streams = ["blind"] * batch
        else:
            cal = learning.fit(
                np.concatenate(scores), np.concatenate(fractions), edges=edges,
                weight=np.concatenate(weight), groups=np.concatenate(groups),
            )  # fmt: skip
            free = ~shown
            strategy, share = ("uncertainty", 1.0) if how == "random" else (how, 0.2)
            choice = learning.choose(
                ids[free], s[free], cal, batch, strategy=strategy,
                random_share=share, seed=seed * 10 + k,
            )  # fmt: skip
            chosen, prop, streams = choice.ids, choice.propensity, choice.streams
        shown[chosen] = True
        scores.append(s[chosen])
        fractions.append(classify(rng, real[chosen]))
        weight.append(learning.weights(streams, prop))
        groups.append(np.full(len(chosen), k))
        cal = learning.fit(
            np.concatenate(scores), np.concatenate(fractions), edges=edges,
            weight=np.concatenate(weight), groups=np.concatenate(groups),
        )  # fmt: skip
        out.append((cal.mean, int(shown.sum())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--population", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    edges = np.linspace(0.0, 1.0, learning.BINS + 1)
    truth, share = true_calibration(edges)
    hows = ("random", *learning.STRATEGIES)
    err: dict[str, np.ndarray] = {}
    werr: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for how in hows:
        e = np.zeros((args.repeats, 3))
        w = np.zeros((args.repeats, 3))
        for r in range(args.repeats):
            for k, (mean, _) in enumerate(
                one_survey(1000 + r, how, args.population, args.batch, edges)
            ):
                d2 = (mean - truth) ** 2
                e[r, k] = np.sqrt(d2.mean())
                w[r, k] = np.sqrt((share * d2).sum())
        err[how], werr[how] = e, w
    took = time.perf_counter() - start
    print(
        f"population {args.population}, batches of {args.batch}, {args.repeats} "
        f"repeats, {took:.0f} s; load {os.getloadavg()[0]:.2f}"
    )
    for name, table in (("unweighted", err), ("population-weighted", werr)):
        print(f"\nRMS calibration error ({name}), mean over repeats:")
        print(f"{'choice':>14} {'batch 1':>9} {'batch 2':>9} {'batch 3':>9} "
              f"{'b3 / random':>12} {'fall 1->3':>10} {'random needs':>13}")  # fmt: skip
        base = table["random"][:, 2]
        for how in hows:
            e = table[how]
            ratio = e[:, 2].mean() / base.mean()
            paired = e[:, 2] - base  # same seeds: a paired difference
            sem = paired.std(ddof=1) / np.sqrt(len(paired)) / base.mean()
            fall = (e[:, 0].mean() - e[:, 2].mean()) / (
                table["random"][:, 0].mean() - base.mean()
            )
            # error ~ 1/sqrt(labels): labels random needs for this error
            needs = 3 * args.batch * (base.mean() / e[:, 2].mean()) ** 2
            print(
                f"{how:>14} {e[:, 0].mean():9.4f} {e[:, 1].mean():9.4f} "
                f"{e[:, 2].mean():9.4f} {ratio:6.3f}+-{sem:.3f} {fall:9.2f}x "
                f"{needs:12.0f}"
            )


if __name__ == "__main__":
    main()
