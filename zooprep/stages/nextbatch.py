"""``zooprep select NEXT --next N --learn-from RUN ...``: the next batch, chosen from what was said.

`plan` reads the named runs (their results and which sources they showed),
fits the calibration (`zooprep.learning.fit`), scans the candidates of the
source ``select`` reads, leaves out every source already shown in those
runs, and chooses ``N`` (`zooprep.learning.choose`).  ``select`` then adds
the chosen rows as it adds a sample's, each carrying its stream, rank and
propensity as hidden columns (`STREAM_COLUMN`, `RANK_COLUMN`,
`PROPENSITY_COLUMN`): the manifest writes them as ``#zooprep_stream`` and
``#priority``, the results read them back.

Everything is checked before the run is touched (one line, exit 2): a named
run without results, results of another workflow or task than the first
run's, fewer classified subjects with a score than `MIN_LABELLED
<zooprep.learning.MIN_LABELLED>`, ``--next`` larger than the candidates.

The choice depends only on the candidates, the named runs' results and the
seed (saved in ``zooprep.toml``), so a select killed while choosing or while
adding the rows chooses the same sources when run again; the digest of the
results it learned from is saved too (``[select] learned``), and a changed
one is refused on a run that already holds sources.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zooprep import learning
from zooprep.errors import InputError, RunError
from zooprep.files import atomic_write
from zooprep.options import SelectOptions
from zooprep.readers.base import SourceReader
from zooprep.readers.catalog import read_parquet
from zooprep.readers.where import Expr
from zooprep.run import Run
from zooprep.vocabulary import PROPENSITY_COLUMN, RANK_COLUMN, STREAM_COLUMN

__all__ = [
    "CHOICE_CSV",
    "CONTROVERSIAL_CSV",
    "SCORE_COLUMNS",
    "Learned",
    "NextPlan",
    "learned_from",
    "plan",
]

log = logging.getLogger(__name__)

#: Names of a pipeline score column, in order of preference (as results).
SCORE_COLUMNS = ("reliability", "drb", "rb")
#: What select writes beside the run: the choice, and the split subjects.
CHOICE_CSV = "next.csv"
CONTROVERSIAL_CSV = "controversial.csv"
_RESULTS = "results.parquet"


@dataclass
class Learned:
    """What the named runs say: their classified subjects and what they showed.

    Attributes
    ----------
    runs : list of pathlib.Path
        The runs, in the order given.
    score : str
        The score column.
    table : pandas.DataFrame
        One row per classified subject with a score: ``run`` (its index),
        ``source_id``, ``subject_id``, ``score``, ``real_fraction``,
        ``n_volunteers``, ``stream``, ``propensity``, ``controversy``.
    shown : set of int
        Every source the runs uploaded or have results for.
    workflow_id, task : str
        Of the results.
    digest : str
        SHA-256 (16 hex digits) of the results files read.
    """

    runs: list[Path]
    score: str
    table: Any
    shown: set[int]
    workflow_id: str
    task: str
    digest: str

    def calibration(
        self, edges: np.ndarray, correction: str = "ipw", upto: int | None = None
    ) -> learning.Calibration:
        """The calibration from the runs (the first ``upto`` of them)."""
        t = self.table if upto is None else self.table[self.table["run"] < upto]
        w = learning.weights(
            list(t["stream"]), t["propensity"].to_numpy(float), correction
        )
        return learning.fit(
            t["score"].to_numpy(float),
            t["real_fraction"].to_numpy(float),
            edges=edges,
            weight=w,
            groups=t["run"].to_numpy(),
        )


def learned_from(
    runs: Iterable[str | os.PathLike[str]],
    *,
    flag: str,
    minimum: int = learning.MIN_LABELLED,
) -> Learned:
    """Read the named runs' results and shown sources (refusing what cannot be used).

    Parameters
    ----------
    runs : iterable of path
        Run directories with ``zooprep results`` done.
    flag : str
        How the runs were named, for messages (``--learn-from``).
    minimum : int
        Classified subjects with a score needed in all.

    Raises
    ------
    InputError
        A run is missing, has no results, has results of another workflow or
        task than the first, or the runs together have too few classified
        subjects with a score.
    """
    import pandas as pd

    paths = [Path(p) for p in runs]
    frames = []
    shown: set[int] = set()
    digest = hashlib.sha256()
    workflow = task = score = None
    first = ""
    for index, path in enumerate(paths):
        if not (path / Run.STATE).is_file():
            raise InputError(f"{flag} {path}: not a zooprep run directory")
        results = path / _RESULTS
        with Run.open(path, lock=False) as r:
            saved = r.settings.results
            if saved is None or not results.is_file():
                raise InputError(
                    f"{flag} {path}: no results yet; run 'zooprep results {path} "
                    "--classifications EXPORT.csv' first"
                )
            here = (str(saved.workflow_id), str(saved.task))
            if workflow is None:
                workflow, task, first = here[0], here[1], str(path)
            elif here != (workflow, task):
                raise InputError(
                    f"{flag} {path}: its results are of workflow {here[0]} task "
                    f"{here[1]}, those of {first} of workflow {workflow} task {task}; "
                    "learn from the answers to one question"
                )
            data = results.read_bytes()
            digest.update(data)
            table = read_parquet(results)
            hidden: dict[int, tuple[str, float]] = {}
            for src in r.iter_sources():
                if src.subject_id:
                    shown.add(src.id)
                stream = src.row.get(STREAM_COLUMN)
                if stream is not None:
                    p = src.row.get(PROPENSITY_COLUMN)
                    hidden[src.id] = (str(stream), math.nan if p is None else float(p))
        shown.update(int(i) for i in table["source_id"])
        column = next(
            (c for c in SCORE_COLUMNS if c in table and table[c].notna().any()), None
        )
        if column is None:
            continue
        if score is None:
            score = column
        elif column != score:
            raise InputError(
                f"{flag} {path}: its score is {column}, that of {first} {score}"
            )
        ids = [int(i) for i in table["source_id"]]
        frac = table["real_fraction"].to_numpy(float)
        if "swap_real_probability" in table:
            swap = pd.to_numeric(table["swap_real_probability"], errors="coerce")
            split = np.where(swap.notna(), swap.to_numpy(float), frac)
        else:
            split = frac
        frames.append(
            pd.DataFrame(
                {
                    "run": index,
                    "source_id": np.asarray(ids, dtype=np.int64),
                    "subject_id": table["subject_id"].to_numpy(np.int64),
                    "score": pd.to_numeric(table[column], errors="coerce").to_numpy(
                        float
                    ),
                    "real_fraction": frac,
                    "n_volunteers": table["n_volunteers"].to_numpy(np.int64),
                    "stream": [hidden.get(i, ("blind", math.nan))[0] for i in ids],
                    "propensity": [hidden.get(i, ("blind", math.nan))[1] for i in ids],
                    "controversy": learning.controversy(
                        split, table["n_volunteers"].to_numpy()
                    ),
                }
            )
        )
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["run", "source_id", "score", "real_fraction"])
    )
    if len(table):
        table = table[np.isfinite(table["score"].to_numpy(float))]
    names = ", ".join(str(p) for p in paths)
    if len(table) < minimum:
        raise InputError(
            f"{flag} {names}: {len(table)} classified subjects with a pipeline "
            f"score ({'/'.join(SCORE_COLUMNS)}); calibrating needs at least "
            f"{minimum} (let volunteers classify more, then run "
            "zooprep results again)"
        )
    assert workflow is not None
    assert task is not None
    return Learned(
        paths, score or SCORE_COLUMNS[0], table.reset_index(drop=True), shown, workflow, task,
        digest.hexdigest()[:16],
    )  # fmt: skip


@dataclass
class NextPlan:
    """The chosen batch, ready for ``select`` to add.

    Attributes
    ----------
    choice : zooprep.learning.Choice
        The chosen sources, ranked.
    calibration : zooprep.learning.Calibration
        What it was chosen from.
    learned : Learned
        The runs learned from.
    scores : dict of int to float
        The chosen sources' scores.
    candidates : int
        Candidates left after leaving out those shown.
    left_out : int
        Candidates left out as already shown.
    controversial : list of dict
        Shown subjects to show again (``--reshow-controversial``).
    """

    choice: learning.Choice
    calibration: learning.Calibration
    learned: Learned
    scores: dict[int, float]
    candidates: int
    left_out: int
    controversial: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ids(self) -> np.ndarray:
        """The chosen ids, sorted (the order ``select`` reads rows in)."""
        return np.sort(self.choice.ids)

    def annotate(
        self, rows: Iterable[dict[str, Any]], id_column: str
    ) -> Iterator[dict[str, Any]]:
        """Add each chosen row's stream, rank and propensity (hidden columns)."""
        by_id = {
            int(i): (s, int(k), float(p))
            for i, s, k, p in zip(
                self.choice.ids,
                self.choice.streams,
                self.choice.rank,
                self.choice.propensity,
                strict=True,
            )
        }
        for row in rows:
            stream, rank, p = by_id[int(row[id_column])]
            yield {**row, STREAM_COLUMN: stream, RANK_COLUMN: rank,
                   PROPENSITY_COLUMN: p}  # fmt: skip

    def write(self, run: Path) -> list[Path]:
        """``next.csv`` (the ranked choice) and ``controversial.csv``, atomically."""
        import pandas as pd

        c, cal = self.choice, self.calibration
        scores = np.array([self.scores[int(i)] for i in c.ids], dtype=float)
        table = pd.DataFrame(
            {
                "source_id": c.ids,
                "rank": c.rank,
                "stream": c.streams,
                "propensity": c.propensity,
                "value": c.value,
                self.learned.score: scores,
                "calibrated": cal.predict(scores),
                "calibration_sd": cal.sd[cal.bin_of(scores)],
            }
        )
        written = [run / CHOICE_CSV]
        atomic_write(written[0], table.to_csv(index=False).encode("utf-8"))
        if self.controversial:
            written.append(run / CONTROVERSIAL_CSV)
            data = pd.DataFrame.from_records(self.controversial).to_csv(index=False)
            atomic_write(written[1], data.encode("utf-8"))
        return written

    def summary(self) -> str:
        """One line for the select result."""
        c = self.choice
        n_random = c.streams.count("random")
        text = (
            f"chose {len(c.ids)} of {self.candidates} candidates by {c.strategy} "
            f"({len(c.ids) - n_random} by the strategy, {n_random} at random; "
            f"{self.left_out} already shown left out; calibration error "
            f"{self.calibration.error():.3f} from {len(self.learned.table)} "
            "classified subjects)"
        )
        if self.controversial:
            text += (
                f"; {len(self.controversial)} split subjects to show again in "
                f"{CONTROVERSIAL_CSV}"
            )
        return text


def plan(
    run: Path,
    options: SelectOptions,
    reader: SourceReader,
    where: Expr | None,
    seed: int,
    saved: SelectOptions | None = None,
) -> NextPlan:
    """Choose the next batch (see the module's notes); nothing is written.

    Parameters
    ----------
    run : pathlib.Path
        The run being selected (not one of those learned from).
    options : SelectOptions
        ``next``, ``learn_from``, ``strategy``, ``random_share``,
        ``reshow_controversial``.
    reader : SourceReader
        The open source of the candidates.
    where : Expr or None
        The filter of the candidates.
    seed : int
        The choice's seed.
    saved : SelectOptions, optional
        The run's saved selection: its ``learned`` digest must match.

    Raises
    ------
    InputError
        What `learned_from` refuses, a run that is one of those learned
        from, a source without the score column, or ``next`` larger than the
        candidates.
    RunError
        The results learned from changed since this run's selection began.
    """
    flag = "--learn-from"
    assert options.learn_from
    assert options.next
    here = run.resolve()
    for p in options.learn_from:
        if Path(p).resolve() == here:
            raise InputError(f"{flag} {p}: that is the run being selected")
    learned = learned_from(options.learn_from, flag=flag)
    if saved is not None and saved.learned and saved.learned != learned.digest:
        raise RunError(
            f"{run}: the results of {', '.join(map(str, learned.runs))} changed since "
            "this selection began; choose a new run directory for a new batch"
        )
    if learned.score not in reader.columns():
        raise InputError(
            f"{reader.describe()}: no {learned.score} column, which the runs "
            "learned from are calibrated by"
        )
    reader.check(where, learned.score)
    ids_parts, score_parts = [], []
    for ids, values in reader.scan(where, learned.score):
        assert values is not None
        ids_parts.append(ids)
        score_parts.append(
            np.array([math.nan if v is None else float(v) for v in values], float)
        )
    ids = np.concatenate(ids_parts) if ids_parts else np.empty(0, np.int64)
    scores = np.concatenate(score_parts) if score_parts else np.empty(0)
    shown = (
        np.isin(ids, np.fromiter(learned.shown, np.int64))
        if learned.shown
        else np.zeros(len(ids), bool)
    )
    no_score = ~np.isfinite(scores) & ~shown
    if no_score.any():
        log.info("%d candidates without a %s left out", no_score.sum(), learned.score)
    keep = ~shown & ~no_score
    n = int(options.next)
    if n > int(keep.sum()):
        raise InputError(
            f"--next {n}: only {int(keep.sum())} candidates are left after leaving "
            f"out the {int(shown.sum())} already shown in "
            f"{', '.join(str(p) for p in learned.runs)}"
            + (f" and {int(no_score.sum())} without a score" if no_score.any() else "")
        )
    strategy = str(options.strategy)
    if strategy == "disagreement" and not (
        np.all((scores[keep] >= 0) & (scores[keep] <= 1))
        and np.all((learned.table["score"] >= 0) & (learned.table["score"] <= 1))
    ):
        raise InputError(
            f"--strategy disagreement compares the calibration with the score as a "
            f"probability, but {learned.score} goes outside [0, 1]; use uncertainty "
            "or stratified"
        )
    edges = learning.default_edges(
        np.concatenate([learned.table["score"], scores[keep]])
    )
    calibration = learned.calibration(edges)
    choice = learning.choose(
        ids[keep],
        scores[keep],
        calibration,
        n,
        strategy=strategy,
        random_share=float(options.random_share),
        seed=seed,
    )
    chosen = dict(zip(ids[keep].tolist(), scores[keep].tolist(), strict=True))
    return NextPlan(
        choice,
        calibration,
        learned,
        {int(i): chosen[int(i)] for i in choice.ids},
        int(keep.sum()),
        int(shown.sum()),
        _controversial(learned, options.reshow_controversial or 0),
    )


def _controversial(learned: Learned, k: int) -> list[dict[str, Any]]:
    """The ``k`` shown subjects whose votes are most split (most votes first on ties)."""
    if k <= 0:
        return []
    t = learned.table
    t = t[t["controversy"] > 0]
    order = np.lexsort(
        (t["source_id"].to_numpy(), -t["n_volunteers"].to_numpy(), -t["controversy"])
    )[:k]
    out = []
    for rank, i in enumerate(order, start=1):
        row: Mapping[str, Any] = t.iloc[int(i)]
        out.append(
            {
                "rank": rank,
                "run": str(learned.runs[int(row["run"])]),
                "source_id": int(row["source_id"]),
                "subject_id": int(row["subject_id"]),
                "n_volunteers": int(row["n_volunteers"]),
                "real_fraction": float(row["real_fraction"]),
                "controversy": float(row["controversy"]),
            }
        )
    if len(out) < k:
        log.warning(
            "only %d shown subjects have split votes (asked for %d)", len(out), k
        )
    return out
