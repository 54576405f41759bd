"""``zooprep results``: join volunteers' classifications back to the sources.

Reads a Zooniverse classification export (the CSV of a project's Data Exports
page: one row per classification with ``classification_id``, ``user_name``,
``user_id``, ``user_ip``, ``workflow_id``, ``workflow_name``,
``workflow_version``, ``created_at``, ``gold_standard``, ``expert`` and the JSON
columns ``metadata``, ``annotations``, ``subject_data``, plus ``subject_ids``),
extracts and reduces one question task with panoptes-aggregation (the
Zooniverse team's own ``question_extractor`` and ``question_reducer``), maps
each subject to its source and writes, atomically:

- ``RUN/results.csv`` and ``RUN/results.parquet``: one row per classified
  subject of the run (see `RESULT_COLUMNS` and `results`);
- ``RUN/results.html``: the report (`zooprep.results_report`).

`zooprep.stages.export` reads the export and sorts its rows; this module
reduces the votes and writes the files.  The rules applied to each row
(workflow, workflow version, unreadable rows, subject to source, gold
standard and expert rows, the task's answer, one vote per volunteer) and what
``n_classifications`` and ``n_volunteers`` count are written out in
``docs/results.md``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooprep import learning, skill
from zooprep.errors import InputError, RunError
from zooprep.files import atomic_write, storage_guard
from zooprep.options import ResultsOptions
from zooprep.panoptes import download_classification_export
from zooprep.progress import NullReporter, Reporter
from zooprep.results_report import render_report
from zooprep.run import Run
from zooprep.stages.export import (
    SKIP_REASONS,
    Aggregation,
    SubjectVotes,
    Vote,
    Wanted,
    choose_versions,
    choose_workflow,
    load_aggregation,
    parse_version,
    read_votes,
    scan_export,
    skip_text,
    version_text,
)
from zooprep.stages.known import KnownReport, analyse
from zooprep.stages.nextbatch import learned_from
from zooprep.vocabulary import (
    PROPENSITY_COLUMN,
    RANK_COLUMN,
    STREAM_COLUMN,
    is_flag_column,
)

__all__ = ["ResultsResult", "results"]

log = logging.getLogger(__name__)


#: Names of a pipeline score column, in order of preference.
SCORE_COLUMNS = ("reliability", "drb", "rb")
#: Pipeline columns copied next to the volunteers' answers when present.
PIPELINE_COLUMNS = ("ra", "dec", "band", "snr")

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
RESULTS_HTML = "results.html"
#: Written when the run has known answers (``zooprep fakes``).
COMPLETENESS_CSV = "completeness.csv"
VOLUNTEERS_CSV = "volunteers.csv"
#: Written for a batch chosen by ``select --next``: the calibration after each batch.
LEARNING_CSV = "learning.csv"

_REAL_WORDS = {"real", "yes", "true", "astrophysical", "transient"}
_BOGUS_WORDS = {"not", "no", "bogus", "fake", "artifact", "artefact", "false"}


@dataclass
class ResultsResult:
    """What `results` did.

    Attributes
    ----------
    subjects : int
        Subjects of the run with at least one volunteer vote (rows written).
    classifications : int
        Volunteer classifications used (after skipping and de-duplicating).
    rows : int
        Rows read from the export.
    skipped : dict of str to int
        Rows not used as votes, by reason (keys of `SKIP_REASONS`).
    versions : dict of str to dict
        Per workflow version: ``{"used": n, "skipped": n}`` rows.
    workflow_id : str
        The workflow used.
    task : str
        The task reduced.
    real_answer : str
        The answer (slug) counted as "real".
    paths : list of pathlib.Path
        Files written.
    """

    subjects: int = 0
    classifications: int = 0
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    versions: dict[str, dict[str, int]] = field(default_factory=dict)
    workflow_id: str = ""
    task: str = "T0"
    real_answer: str = ""
    paths: list[Path] = field(default_factory=list)
    known: KnownReport | None = None

    def __str__(self) -> str:
        skipped = sum(self.skipped.values())
        detail = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v)
        return (
            f"results: {self.subjects} subjects, {self.classifications} "
            f"classifications used of {self.rows} rows (workflow "
            f"{self.workflow_id}, task {self.task}); {skipped} skipped"
            + (f" ({detail})" if detail else "")
            + _known_text(self.known)
        )


def _known_text(known: KnownReport | None) -> str:
    """The known answers' part of the summary line."""
    if known is None:
        return ""
    fit = known.fits.get(("consensus", "mag"))
    m50 = ""
    if fit is not None:
        m50 = f", consensus 50 % at mag {fit.x50:.2f} " + (
            f"+- {fit.x50_err:.2f}"
            if math.isfinite(fit.x50_err)
            else "(error not measurable: no known answer near the step)"
        )
    return f"; known answers: {known.real} real, {known.bogus} bogus{m50}"


# -- reading the export --------------------------------------------------------


# -- the stage -----------------------------------------------------------------


def results(
    run: str | os.PathLike[str],
    options: ResultsOptions | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    reporter: Reporter | None = None,
    **fields: Any,
) -> ResultsResult:
    """Join a classification export to the run's sources.

    Parameters
    ----------
    run : str or path-like
        The run directory (its subjects were uploaded by ``zooprep upload`` or
        carry the hidden ``#zooprep_id`` metadata).
    options : ResultsOptions, mapping, str or path-like, optional
        The options (`~zooprep.options.ResultsOptions`), or only the
        classification export's path (``results(run, "export.csv")``); the
        fields may also be given as keywords:
    classifications : str or path-like, optional
        The classification export CSV.  Required unless ``download``.
    workflow_id : str or int, optional
        The workflow to use.  Needed when the export holds several workflows
        with subjects of this run.
    task : str
        The question task to reduce (``"T0"``).  A task that no used row has
        is an `~zooprep.errors.InputError` listing the tasks found.
    real_answer : str, optional
        The answer that means "real" (label or its slug, e.g. ``"Real"``).
        By default the one answer whose words include real/yes/true and no
        negation.
    workflow_version : str, optional
        ``"latest"`` (default: every minor version of the latest major),
        ``"all"``, a major (``"12"``) or an exact version (``"12.3"``).
    download : bool
        Fetch the project's latest classification export through the Panoptes
        API first (the project of the run's upload settings; credentials from
        ``PANOPTES_USERNAME``/``PANOPTES_PASSWORD`` or
        ``PANOPTES_CLIENT_ID``/``PANOPTES_CLIENT_SECRET``).  It is saved at
        ``classifications`` when given, else at
        ``RUN/exports/project-<id>-classifications.csv``.  The export itself
        is made on the project's Data Exports page (that takes a while);
        zooprep does not request a new one.
    endpoint : str
        Panoptes endpoint for ``download``.
    timeout : float
        Seconds before one request of ``download`` is abandoned and retried.
    force : bool
        Overwrite earlier results.
    reporter : zooprep.progress.Reporter, optional
        Progress over the export's rows.
    **fields
        The fields of `~zooprep.options.ResultsOptions`, when ``options`` is
        not an object.

    Returns
    -------
    ResultsResult
        Counts of subjects, votes and skipped rows, and the files written.

    Raises
    ------
    zooprep.errors.InputError
        A missing or unreadable export, an unknown workflow, version or task,
        no row matching the run, or panoptes-aggregation missing.
    zooprep.errors.RunError
        Results exist already and ``force`` is false.
    zooprep.errors.UploadError
        ``download`` failed (`~zooprep.errors.AuthError` for credentials).
    zooprep.errors.StorageError
        The run directory is full or cannot be written.

    Notes
    -----
    Columns of ``results.csv``: ``source_id`` (exact 64-bit), ``subject_id``,
    ``mapped_by`` (``state`` or ``zooprep_id``), ``n_classifications``,
    ``n_volunteers``, ``n_duplicates``, ``frac_<answer>`` per answer (answers
    slugified as panoptes-aggregation does, ``-`` as ``_``), ``real_fraction``,
    ``consensus`` (empty on a tie), ``agreement`` (fraction for the top
    answer), ``gold_answer``, ``retired``, ``retirement_reason``,
    ``workflow_versions``, then the pipeline's score (``reliability``, or
    ``drb``/``rb``), ``ra``, ``dec``, ``band``, ``snr`` and every flag column
    present in the sources (names containing ``flag``, and ``isDipole``).

    When the run has known answers (``zooprep fakes``) the table gains
    ``known`` (``real``/``bogus``), ``known_origin``, ``known_stream``,
    ``fake_mag``, ``fake_snr``, ``swap_real_probability`` and ``swap_real``
    (`zooprep.stages.known`), and ``RUN/completeness.csv`` (completeness per
    classifier and bin of magnitude and S/N, with the 50 % points) and
    ``RUN/volunteers.csv`` (each volunteer's confusion matrix and skill) are
    written beside it.

    When the run was chosen by ``select --next`` the table gains ``stream``,
    ``rank`` and ``propensity``, and ``RUN/learning.csv`` holds the
    calibration after each batch (the runs it learnt from, then this one):
    per batch and score bin the labels, the real-fraction's posterior mean
    and sd, the batch's stream shares, the calibration error and the labels
    spent per 0.01 of it (`zooprep.learning.history`).
    """
    if isinstance(options, str | os.PathLike):
        fields = {**fields, "classifications": options}
        options = None
    o = ResultsOptions.coerce(options, fields).resolved()
    workflow_id, task, real_answer = o.workflow_id, o.task, o.real_answer
    reporter = reporter or NullReporter()
    export = Path(o.classifications) if o.classifications else None
    if not o.download and export is not None and not export.is_file():
        raise InputError(f"classification export {export} not found")
    agg = load_aggregation()

    with storage_guard(run, lambda: "results not written"), Run.open(run) as r:
        outputs = [r.path / n for n in (RESULTS_CSV, RESULTS_PARQUET, RESULTS_HTML)]
        existing = [p.name for p in outputs if p.exists()]
        if existing and not o.force:
            raise RunError(
                f"{r.path} already has {', '.join(existing)}; pass --force to "
                "replace them"
            )
        if o.download:
            export = _download(r, o.endpoint, export, o.timeout)
        assert export is not None
        by_subject: dict[str, int] = {}
        for src in r.iter_sources():
            if src.subject_id:
                by_subject[str(src.subject_id)] = src.id

        scan = scan_export(export, by_subject)
        workflow = choose_workflow(
            scan, None if workflow_id is None else str(workflow_id), export
        )
        versions = scan.versions.get(workflow, Counter())
        use_version = choose_versions(versions, o.workflow_version, workflow)

        reporter.start("results", scan.rows)
        try:
            wanted = Wanted(workflow, use_version, task, by_subject)
            state = read_votes(export, r, agg, wanted, reporter)
        finally:
            reporter.finish()
        state.rows = scan.rows

        if task not in state.tasks_seen:
            found = ", ".join(sorted(state.tasks_seen)) or "none"
            raise InputError(
                f"task {task!r} is not in the classifications of workflow "
                f"{workflow} in {export}; tasks found: {found}"
            )
        subjects = {k: s for k, s in state.subjects.items() if s.votes}
        if not subjects:
            raise InputError(
                f"no volunteer classification in {export} matches a source of "
                f"{r.path} (workflow {workflow}, task {task}): "
                + skip_text(state.skipped)
            )
        table, answers = _reduce(agg, subjects, state.labels)
        state.skipped["duplicate"] += int(table["n_duplicates"].sum())
        real = _pick_real_answer(answers, state.labels, real_answer, agg)
        score, files = _add_columns(r, table, answers, real)
        known = _known_answers(r, table, subjects, real, score, o.reliability_threshold)
        steps = _learning(r, table, score)

        result = ResultsResult(
            subjects=len(table),
            classifications=int(table["n_volunteers"].sum()),
            rows=scan.rows,
            skipped={k: state.skipped[k] for k in SKIP_REASONS if state.skipped[k]},
            versions={
                version_text(v): {"used": state.used[v], "skipped": state.unused[v]}
                for v in sorted(set(state.used) | set(state.unused))
            },
            workflow_id=workflow,
            task=task,
            real_answer=real,
            known=known,
        )
        for reason, n in result.skipped.items():
            log.info("skipped %d rows: %s (%s)", n, reason, SKIP_REASONS[reason])

        page = render_report(
            r.path,
            table,
            result,
            uploaded=r.count_subjects(),
            answers=answers,
            labels=state.labels,
            export=export,
            workflow_name=scan.names.get(workflow, ""),
            aggregation_version=agg.version,
            examples=state.examples,
            score=score,
            files=files,
            known=known,
            learning=steps,
        )
        csv_bytes = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
        buf = io.BytesIO()
        _parquet_safe(table).to_parquet(buf, index=False)
        atomic_write(outputs[0], csv_bytes)
        atomic_write(outputs[1], buf.getvalue())
        atomic_write(outputs[2], page.encode("utf-8"))
        result.paths = outputs + _write_known(r, known) + _write_learning(r, steps)
        r.save(
            ResultsOptions.record(
                classifications=str(export.resolve()),
                workflow_id=workflow,
                task=task,
                real_answer=real,
                workflow_version=o.workflow_version or "latest",
            )
        )
    log.info("%s", result)
    return result


def _download(r: Run, endpoint: str, target: Path | None, timeout: float) -> Path:
    """Fetch the project's latest classification export; return where it is."""
    upload = r.settings.upload
    project = str((upload.project if upload else None) or "")
    if not project:
        raise InputError(
            f"{r.path} has no upload settings naming a project, so --download "
            "does not know which export to fetch; pass --classifications EXPORT.csv"
        )
    target = target or r.path / "exports" / f"project-{project}-classifications.csv"
    download_classification_export(endpoint, project, target, timeout=timeout)
    log.info(
        "downloaded the classification export of project %s to %s", project, target
    )
    return target


def _reduce(
    agg: Aggregation, subjects: dict[str, SubjectVotes], labels: dict[str, str]
) -> tuple[Any, list[str]]:
    """One row per subject: first vote per volunteer, reduced to counts."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    answers: set[str] = set()
    for sid, subject in subjects.items():
        first: dict[str, Vote] = {}
        for vote in sorted(
            subject.votes, key=lambda v: (v.created_at, v.classification_id)
        ):
            first.setdefault(vote.volunteer, vote)
        kept = list(first.values())
        reduced = agg.reduce(
            [v.extract for v in kept],
            user_id=[v.volunteer for v in kept],
            no_version=True,
        )
        counts = {str(k): int(n) for k, n in reduced.items() if isinstance(n, int)}
        answers.update(counts)
        gold = min(subject.gold)[2] if subject.gold else None
        records.append(
            {
                "source_id": subject.source_id,
                "subject_id": int(sid),
                "mapped_by": subject.mapped_by,
                "n_classifications": len(subject.votes),
                "n_volunteers": len(kept),
                "n_duplicates": len(subject.votes) - len(kept),
                "_counts": counts,
                "gold_answer": gold,
                "retired": subject.retired,
                "retirement_reason": subject.retirement_reason,
                "workflow_versions": ";".join(
                    sorted(subject.versions, key=lambda t: parse_version(t) or (0, 0))
                ),
            }
        )
    ordered = sorted(answers)
    for rec in records:
        votes: dict[str, int] = rec.pop("_counts")
        n = rec["n_volunteers"]
        for a in ordered:
            rec[_frac_column(a)] = votes.get(a, 0) / n
        top = max(votes.values()) if votes else 0
        leaders = [a for a in ordered if votes.get(a, 0) == top and top > 0]
        rec["consensus"] = leaders[0] if len(leaders) == 1 else None
        rec["agreement"] = top / n if n else float("nan")
    table = pd.DataFrame.from_records(records)
    table["source_id"] = table["source_id"].astype("int64")
    table["subject_id"] = table["subject_id"].astype("int64")
    table = table.sort_values(["source_id", "subject_id"], kind="stable")
    return table.reset_index(drop=True), ordered


def _frac_column(answer: str) -> str:
    """Column name of an answer's vote fraction."""
    return "frac_" + re.sub(r"[^0-9A-Za-z_]", "_", answer)


def _pick_real_answer(
    answers: list[str],
    labels: dict[str, str],
    wanted: str | None,
    agg: Aggregation,
) -> str:
    """The answer slug that means "real"."""
    listing = ", ".join(f"{a!r} ({labels.get(a, a)!r})" for a in answers)
    if wanted is not None:
        slug = agg.slugify(wanted)
        for a in answers:
            if wanted in (a, labels.get(a)) or slug == a:
                return a
        raise InputError(
            f"--real-answer {wanted!r} is not one of the answers given: {listing}"
        )
    found = []
    for a in answers:
        words = set(a.split("-"))
        if words & _REAL_WORDS and not words & _BOGUS_WORDS:
            found.append(a)
    if len(found) != 1:
        raise InputError(
            f"cannot tell which answer means 'real' among {listing}; pass --real-answer"
        )
    return found[0]


def _add_columns(
    r: Run, table: Any, answers: list[str], real: str
) -> tuple[str | None, dict[int, str | None]]:
    """Add real_fraction and the pipeline's columns in place.

    Returns the score column (None when the sources have none) and each
    source's first file (its cutout), relative to the run.
    """
    table.insert(
        table.columns.get_loc(_frac_column(answers[-1])) + 1,
        "real_fraction",
        table[_frac_column(real)],
    )
    rows: dict[int, dict[str, Any]] = {}
    files: dict[int, str | None] = {}
    wanted = set(int(i) for i in table["source_id"])
    for src in r.iter_sources():
        if src.id in wanted:
            rows[src.id] = src.row
            files[src.id] = src.files[0] if src.files else None
    keys: list[str] = []
    for row in rows.values():
        for k in row:
            if k not in keys:
                keys.append(k)
    score = next((c for c in SCORE_COLUMNS if c in keys), None)
    pipeline = ([score] if score else []) + [c for c in PIPELINE_COLUMNS if c in keys]
    pipeline += [k for k in keys if is_flag_column(k) and k not in pipeline]
    ids = [int(i) for i in table["source_id"]]
    for col in pipeline:
        table[col] = [rows.get(i, {}).get(col) for i in ids]
    if any(STREAM_COLUMN in row for row in rows.values()):  # a select --next batch
        for col, hidden in (
            ("stream", STREAM_COLUMN),
            ("rank", RANK_COLUMN),
            ("propensity", PROPENSITY_COLUMN),
        ):
            table[col] = [rows.get(i, {}).get(hidden) for i in ids]
        table["stream"] = table["stream"].fillna("blind")
    return score, {i: files.get(i) for i in ids}


def _learning(r: Run, table: Any, score: str | None) -> list[learning.BatchStep] | None:
    """The calibration after each batch, for a run chosen by ``select --next``."""
    import numpy as np
    import pandas as pd

    saved = r.settings.select
    if score is None or saved is None or not saved.learn_from:
        return None
    try:
        earlier = learned_from(saved.learn_from, flag="learn_from", minimum=0)
    except InputError as exc:
        log.warning("no calibration history: %s", exc)
        return None
    if earlier.score != score:
        log.warning(
            "no calibration history: the runs learnt from are scored by %s", score
        )
        return None
    t = earlier.table
    batches = [
        (
            str(run),
            t[t["run"] == k]["score"].to_numpy(float),
            t[t["run"] == k]["real_fraction"].to_numpy(float),
            list(t[t["run"] == k]["stream"]),
            t[t["run"] == k]["propensity"].to_numpy(float),
        )
        for k, run in enumerate(earlier.runs)
    ]
    n = len(table)
    streams = list(table["stream"]) if "stream" in table else ["blind"] * n
    propensity = (
        pd.to_numeric(table["propensity"], errors="coerce").to_numpy(float)
        if "propensity" in table
        else np.full(n, np.nan)
    )
    batches.append(
        (
            str(r.path),
            pd.to_numeric(table[score], errors="coerce").to_numpy(float),
            table["real_fraction"].to_numpy(float),
            streams,
            propensity,
        )
    )
    return learning.history(batches)


def _write_learning(r: Run, steps: list[learning.BatchStep] | None) -> list[Path]:
    """``learning.csv``: one row per batch and score bin (nothing without history)."""
    import pandas as pd

    if not steps:
        return []
    rows = []
    for k, step in enumerate(steps, start=1):
        shares = step.shares()
        for b in step.calibration.rows():
            rows.append(
                {
                    "batch": k,
                    "run": step.run,
                    "batch_labels": step.labels,
                    "total_labels": step.total,
                    "share_strategy": shares.get("strategy", 0.0),
                    "share_random": shares.get("random", 0.0),
                    "share_blind": shares.get("blind", 0.0),
                    "calibration_error": step.error,
                    "labels_per_0.01_error": step.labels_per_error,
                    **b,
                }
            )
    data = pd.DataFrame.from_records(rows).to_csv(index=False, lineterminator="\n")
    atomic_write(r.path / LEARNING_CSV, data.encode("utf-8"))
    return [r.path / LEARNING_CSV]


def _votes(subjects: dict[str, SubjectVotes], real: str) -> list[skill.Vote]:
    """Each volunteer's first vote on each subject: whether it said real."""
    out = []
    for subject in subjects.values():
        first: dict[str, Vote] = {}
        for vote in sorted(
            subject.votes, key=lambda v: (v.created_at, v.classification_id)
        ):
            first.setdefault(vote.volunteer, vote)
        out += [
            skill.Vote(v.volunteer, subject.source_id, bool(v.extract.get(real)))
            for v in first.values()
        ]
    return out


def _known_answers(
    r: Run,
    table: Any,
    subjects: dict[str, SubjectVotes],
    real: str,
    score: str | None,
    threshold: float,
) -> KnownReport | None:
    """Measure volunteers and pipeline on the run's known answers (None without)."""
    known = r.known_answers()
    if not known:
        return None
    return analyse(
        table,
        _votes(subjects, real),
        known,
        real_answer=real,
        score=score,
        threshold=threshold,
    )


def _write_known(r: Run, known: KnownReport | None) -> list[Path]:
    """``completeness.csv`` and ``volunteers.csv`` (nothing without known answers)."""
    import pandas as pd

    if known is None:
        return []
    written = []
    for name, rows in (
        (COMPLETENESS_CSV, known.completeness_rows()),
        (VOLUNTEERS_CSV, known.volunteer_rows()),
    ):
        data = pd.DataFrame.from_records(rows).to_csv(index=False, lineterminator="\n")
        atomic_write(r.path / name, data.encode("utf-8"))
        written.append(r.path / name)
    return written


def _parquet_safe(table: Any) -> Any:
    """A copy whose mixed-type object columns are strings (Parquet needs one type)."""
    out = table.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        kinds = {type(v) for v in out[col] if v is not None}
        if len(kinds - {int, float}) > 1 or (kinds & {str} and len(kinds) > 1):
            out[col] = [None if v is None else str(v) for v in out[col]]
    return out
