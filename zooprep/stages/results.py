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

Rules, in the order they are applied to each row of the export:

1. Workflow: only one workflow is used (``workflow_id``; when not given and
   the export holds several, the only one with subjects of this run).  Rows of
   other workflows are skipped (``other_workflow``).
2. Workflow version (``major.minor``): a major version change means the tasks
   changed, so by default only rows of the latest major version are used (any
   minor version; the convention of panoptes-aggregation's version ranges);
   older ones are skipped (``older_workflow_version``).  ``workflow_version``
   may say ``"all"``, a major (``"12"``) or an exact version (``"12.3"``).
   Rows used and skipped are counted per version.
3. Rows whose ids or JSON columns cannot be read are skipped (``bad_row``,
   ``malformed_json``), and logged with their line number.
4. Subject to source: the subject id recorded in the run's upload state, or
   else the hidden ``#zooprep_id`` metadata of the subject (in
   ``subject_data``; digits, or ``id:<digits>`` as in the manifest's
   ``#zooprep_id`` column) when it names a source of this run (subjects uploaded by
   another tool or another run).  Others: ``subject_not_in_run``.
5. Gold-standard classifications are made by project experts (Panoptes only
   accepts them from a logged-in expert): they are not volunteer votes.  Their
   answer is kept as ``gold_answer``.  Classifications made in expert mode
   (``expert`` set) are set aside too (``expert``).
6. The task's annotation must be there (``task_missing``) and answered
   (``no_answer``: a null or empty value) with question answers
   (``not_a_question``: a drawing, text or survey value).
7. One vote per volunteer and subject: when a volunteer classified the same
   subject more than once, the first classification (earliest ``created_at``,
   then lowest ``classification_id``) is kept, as panoptes-aggregation's
   ``first`` filter does; the others are counted as ``duplicate``.
   Volunteers are told apart by ``user_id`` when logged in; logged-out
   volunteers by the classifier session (``metadata.session``), or when the
   export has none by ``user_ip`` (a hash of the IP address; Zooniverse's own
   ``not-logged-in-<hash>`` user names are per IP, which would merge a whole
   classroom behind one address).

``n_classifications`` counts the volunteer classifications of a subject that
passed rules 1-6 (duplicates included); ``n_volunteers`` counts distinct
volunteers, and is the denominator of every vote fraction.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import sys
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooprep.errors import InputError, RunError
from zooprep.files import atomic_file
from zooprep.progress import NullReporter, Reporter
from zooprep.run import Run, atomic_write
from zooprep.vocabulary import ID_TEXT_KEY, PRODUCTION, is_flag_column, truthy

__all__ = [
    "EXPORT_COLUMNS",
    "HIDDEN_ID_KEY",
    "SKIP_REASONS",
    "ResultsResult",
    "results",
]

log = logging.getLogger(__name__)

#: Columns every classification export has (Panoptes' CSV formatter).
EXPORT_COLUMNS = (
    "classification_id",
    "user_name",
    "user_id",
    "user_ip",
    "workflow_id",
    "workflow_name",
    "workflow_version",
    "created_at",
    "gold_standard",
    "expert",
    "metadata",
    "annotations",
    "subject_data",
    "subject_ids",
)

#: Hidden subject metadata key holding the source id (set by the manifest).
HIDDEN_ID_KEY = ID_TEXT_KEY

#: Why export rows were not counted as votes, in report order.
SKIP_REASONS = {
    "other_workflow": "classification of another workflow",
    "older_workflow_version": "workflow version not used (see versions)",
    "bad_row": "unreadable workflow version, subject id or classification id",
    "malformed_json": "metadata, annotations or subject_data is not valid JSON",
    "subject_not_in_run": "subject is not a source of this run",
    "gold_standard": "gold-standard classification by a project expert "
    "(kept as gold_answer, not a vote)",
    "expert": "made in expert mode (not a volunteer vote)",
    "task_missing": "no annotation for the task in this classification",
    "no_answer": "the task was left unanswered",
    "not_a_question": "the task's value is not a question answer",
    "duplicate": "the volunteer classified the subject before (first one kept)",
}

#: Names of a pipeline score column, in order of preference.
SCORE_COLUMNS = ("reliability", "drb", "rb")
#: Pipeline columns copied next to the volunteers' answers when present.
PIPELINE_COLUMNS = ("ra", "dec", "band", "snr")

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
RESULTS_HTML = "results.html"

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

    def __str__(self) -> str:
        skipped = sum(self.skipped.values())
        detail = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v)
        return (
            f"results: {self.subjects} subjects, {self.classifications} "
            f"classifications used of {self.rows} rows (workflow "
            f"{self.workflow_id}, task {self.task}); {skipped} skipped"
            + (f" ({detail})" if detail else "")
        )


@dataclass
class _Aggregation:
    """The panoptes-aggregation functions used, imported lazily."""

    annotation_by_task: Callable[..., Any]
    extract: Callable[..., Any]
    reduce: Callable[..., Any]
    slugify: Callable[[Any], str]
    version: str


@dataclass(slots=True)
class _Vote:
    """One usable volunteer classification."""

    created_at: str
    classification_id: int
    volunteer: str
    extract: dict[str, int]


@dataclass
class _Subject:
    """What the export says about one subject."""

    source_id: int
    mapped_by: str
    votes: list[_Vote] = field(default_factory=list)
    gold: list[tuple[str, int, str]] = field(default_factory=list)
    retired: bool | None = None
    retirement_reason: str | None = None
    versions: set[str] = field(default_factory=set)


def _load_aggregation() -> _Aggregation:
    """Import panoptes-aggregation's question extractor and reducer, or explain."""
    try:
        import panoptes_aggregation
        from panoptes_aggregation.extractors.question_extractor import (
            question_extractor,
            slugify_or_null,
        )
        from panoptes_aggregation.extractors.utilities import annotation_by_task
        from panoptes_aggregation.reducers.question_reducer import question_reducer
    except ImportError as exc:
        raise InputError(
            "zooprep results needs panoptes-aggregation (>= 4.0), which is "
            f"missing or broken here ({exc}); install it with "
            "pip install 'zooprep[results]'"
        ) from None
    return _Aggregation(
        annotation_by_task=annotation_by_task,
        extract=question_extractor,
        reduce=question_reducer,
        slugify=slugify_or_null,
        version=str(getattr(panoptes_aggregation, "__version__", "?")),
    )


# -- reading the export --------------------------------------------------------


class _Export:
    """The export's rows as lists of cells; ``ix`` maps column names to indices."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ix: dict[str, int] = {}

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(line number, cells)``; refuse files that are not an export."""
        path = self.path
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        try:
            fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, [])
                missing = [c for c in EXPORT_COLUMNS if c not in header]
                if missing:
                    raise InputError(
                        f"{path} is not a Zooniverse classification export: no "
                        f"column {', '.join(missing)} (a classification export "
                        f"has {', '.join(EXPORT_COLUMNS)})"
                    )
                self.ix = {name: i for i, name in enumerate(header)}
                width = len(header)
                for cells in reader:
                    if len(cells) < width:
                        cells += [""] * (width - len(cells))
                    yield reader.line_num, cells
            except UnicodeDecodeError as exc:
                raise InputError(f"{path} is not UTF-8 text: {exc.reason}") from None
            except csv.Error as exc:
                raise InputError(
                    f"{path} line {reader.line_num}: not readable as CSV: {exc}"
                ) from None


def _version(text: str) -> tuple[int, int] | None:
    """``"12.34"`` as ``(12, 34)``, None when unreadable."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def _vtext(v: tuple[int, int]) -> str:
    """A version tuple as Zooniverse writes it."""
    return f"{v[0]}.{v[1]}"


def _subject_id(text: str) -> str | None:
    """The single subject id of a row (``"123"``; ``"1;2"`` is not supported)."""
    text = text.strip()
    return text if text.isdigit() else None


def _as_source_id(value: Any) -> int | None:
    """A hidden-metadata source id as an exact int.

    ``zooprep upload`` writes the id as a digit string; a subject uploaded
    from the manifest by another tool carries its ``#zooprep_id`` cell,
    ``id:<digits>``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:id:)?(-?\d+)\s*", value)
        if m:
            return int(m.group(1))
    return None


@dataclass
class _Scan:
    """First pass over the export: which workflows and versions it holds."""

    rows: int = 0
    workflows: Counter[str] = field(default_factory=Counter)
    names: dict[str, str] = field(default_factory=dict)
    in_run: Counter[str] = field(default_factory=Counter)
    versions: dict[str, Counter[tuple[int, int]]] = field(default_factory=dict)


def _scan(path: Path, subjects: dict[str, int]) -> _Scan:
    """Count rows per workflow and version, and rows of this run's subjects."""
    scan = _Scan()
    export = _Export(path)
    for _, cells in export:
        ix = export.ix
        scan.rows += 1
        wid = cells[ix["workflow_id"]].strip()
        scan.workflows[wid] += 1
        scan.names.setdefault(wid, cells[ix["workflow_name"]])
        if cells[ix["subject_ids"]].strip() in subjects:
            scan.in_run[wid] += 1
        version = _version(cells[ix["workflow_version"]])
        if version is not None:
            scan.versions.setdefault(wid, Counter())[version] += 1
    return scan


def _choose_workflow(scan: _Scan, workflow_id: str | None, path: Path) -> str:
    """The workflow to use, or an InputError that lists the export's workflows."""
    listing = ", ".join(
        f"{w} {scan.names.get(w, '')!r} ({n} rows, {scan.in_run[w]} of this run)"
        for w, n in scan.workflows.most_common()
    )
    if workflow_id is not None:
        wanted = str(workflow_id).strip()
        if wanted not in scan.workflows:
            raise InputError(
                f"{path} has no classifications of workflow {wanted}; "
                f"workflows found: {listing or 'none'}"
            )
        return wanted
    if not scan.workflows:
        raise InputError(f"{path} holds no classifications")
    if len(scan.workflows) == 1:
        return next(iter(scan.workflows))
    with_run = [w for w in scan.workflows if scan.in_run[w]]
    if len(with_run) == 1:
        log.info(
            "export holds %d workflows; using %s, the only one with subjects "
            "of this run",
            len(scan.workflows),
            with_run[0],
        )
        return with_run[0]
    raise InputError(
        f"{path} holds several workflows; choose one with --workflow-id: {listing}"
    )


def _choose_versions(
    versions: Counter[tuple[int, int]], wanted: str | None, workflow: str
) -> Callable[[tuple[int, int]], bool]:
    """A predicate over versions: the latest major by default, or as asked."""
    found = ", ".join(_vtext(v) for v in sorted(versions)) or "none"
    if wanted is None or wanted.strip().lower() == "latest":
        if not versions:
            return lambda v: True
        latest = max(v[0] for v in versions)
        return lambda v: v[0] == latest
    if wanted.strip().lower() == "all":
        return lambda v: True
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*", wanted)
    if not m:
        raise InputError(
            f"workflow version {wanted!r} is not 'all', 'latest', MAJOR or MAJOR.MINOR"
        )
    major, minor = int(m.group(1)), m.group(2)
    if minor is None:
        pick = lambda v: v[0] == major  # noqa: E731
    else:
        pick = lambda v: v == (major, int(minor))  # noqa: E731
    if not any(pick(v) for v in versions):
        raise InputError(
            f"workflow {workflow} has no classifications of version {wanted}; "
            f"versions found: {found}"
        )
    return pick


def _logged_out(metadata: Any, user_ip: str, user_name: str) -> str:
    """Who classified, when not logged in: the session, else the hashed IP."""
    session = metadata.get("session") if isinstance(metadata, dict) else None
    if session:
        return f"session:{session}"
    if user_ip.strip():
        return "ip:" + user_ip.strip()
    return "name:" + user_name.strip()


def _is_answer(value: Any) -> bool:
    """True for a question answer: a label or index, or a list of them."""
    scalar = (str, int)
    if isinstance(value, list):
        return all(isinstance(v, scalar) and not isinstance(v, bool) for v in value)
    return isinstance(value, scalar) and not isinstance(value, bool)


def _is_empty(value: Any) -> bool:
    """True for an unanswered task."""
    return value is None or value == "" or value == []


# -- the stage -----------------------------------------------------------------


def results(
    run: str | os.PathLike[str],
    classifications: str | os.PathLike[str] | None = None,
    *,
    workflow_id: str | int | None = None,
    task: str = "T0",
    real_answer: str | None = None,
    workflow_version: str | None = None,
    download: bool = False,
    endpoint: str = PRODUCTION,
    force: bool = False,
    reporter: Reporter | None = None,
) -> ResultsResult:
    """Join a classification export to the run's sources.

    Parameters
    ----------
    run : str or path-like
        The run directory (its subjects were uploaded by ``zooprep upload`` or
        carry the hidden ``#zooprep_id`` metadata).
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
    force : bool
        Overwrite earlier results.
    reporter : zooprep.progress.Reporter, optional
        Progress over the export's rows.

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
    """
    reporter = reporter or NullReporter()
    if classifications is None and not download:
        raise InputError(
            "give the classification export with --classifications, or fetch it "
            "with --download"
        )
    export = Path(classifications) if classifications is not None else None
    if not download and export is not None and not export.is_file():
        raise InputError(f"classification export {export} not found")
    agg = _load_aggregation()

    with Run.open(run) as r:
        outputs = [r.path / n for n in (RESULTS_CSV, RESULTS_PARQUET, RESULTS_HTML)]
        existing = [p.name for p in outputs if p.exists()]
        if existing and not force:
            raise RunError(
                f"{r.path} already has {', '.join(existing)}; pass --force to "
                "replace them"
            )
        if download:
            export = _download(r, endpoint, export)
        assert export is not None
        by_subject: dict[str, int] = {}
        for src in r.iter_sources():
            if src.subject_id:
                by_subject[str(src.subject_id)] = src.id

        scan = _scan(export, by_subject)
        workflow = _choose_workflow(
            scan, None if workflow_id is None else str(workflow_id), export
        )
        versions = scan.versions.get(workflow, Counter())
        use_version = _choose_versions(versions, workflow_version, workflow)

        reporter.start("results", scan.rows)
        try:
            state = _read_votes(
                export, r, agg, by_subject, workflow, use_version, task, reporter
            )
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
                + _skip_text(state.skipped)
            )
        table, answers = _reduce(agg, subjects, state.labels)
        state.skipped["duplicate"] += int(table["n_duplicates"].sum())
        real = _pick_real_answer(answers, state.labels, real_answer, agg)
        score, files = _add_columns(r, table, answers, real)

        result = ResultsResult(
            subjects=len(table),
            classifications=int(table["n_volunteers"].sum()),
            rows=scan.rows,
            skipped={k: state.skipped[k] for k in SKIP_REASONS if state.skipped[k]},
            versions={
                _vtext(v): {"used": state.used[v], "skipped": state.unused[v]}
                for v in sorted(set(state.used) | set(state.unused))
            },
            workflow_id=workflow,
            task=task,
            real_answer=real,
        )
        for reason, n in result.skipped.items():
            log.info("skipped %d rows: %s (%s)", n, reason, SKIP_REASONS[reason])

        from zooprep.results_report import render_report

        page = render_report(
            r,
            table,
            result,
            answers=answers,
            labels=state.labels,
            export=export,
            workflow_name=scan.names.get(workflow, ""),
            aggregation_version=agg.version,
            examples=state.examples,
            score=score,
            files=files,
        )
        csv_bytes = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
        buf = io.BytesIO()
        _parquet_safe(table).to_parquet(buf, index=False)
        atomic_write(outputs[0], csv_bytes)
        atomic_write(outputs[1], buf.getvalue())
        atomic_write(outputs[2], page.encode("utf-8"))
        result.paths = outputs
        r.save_settings(
            "results",
            {
                "classifications": str(export.resolve()),
                "workflow_id": workflow,
                "task": task,
                "real_answer": real,
                "workflow_version": workflow_version or "latest",
            },
        )
    log.info("%s", result)
    return result


def _download(r: Run, endpoint: str, target: Path | None) -> Path:
    """Fetch the project's latest classification export; return where it is."""
    import requests

    from zooprep.errors import AuthError, PanoptesError
    from zooprep.panoptes import Credentials, PanoptesAPI, TokenManager, check_endpoint

    project = str(r.settings.get("upload", {}).get("project") or "")
    if not project:
        raise InputError(
            f"{r.path} has no upload settings naming a project, so --download "
            "does not know which export to fetch; pass --classifications EXPORT.csv"
        )
    creds = Credentials.from_env()
    if creds is None:
        raise AuthError(
            "no Panoptes credentials for --download: set PANOPTES_USERNAME and "
            "PANOPTES_PASSWORD (or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET)"
        )
    tokens = TokenManager(endpoint, creds, timeout=60.0)
    tokens.login()
    api = PanoptesAPI(tokens, timeout=60.0)
    try:
        answer = api.get(f"/projects/{project}/classifications_export")
    except PanoptesError as exc:
        if exc.status == 404:
            raise InputError(
                f"project {project} has no classification export yet; request one "
                "on the project's Lab > Data Exports page and run again when it "
                "is ready"
            ) from None
        raise
    finally:
        api.close()
    media = answer.body.get("media") or [{}]
    src = str(media[0].get("src") or "")
    if not src:
        raise PanoptesError(f"project {project}: the export answer has no file URL")
    parsed = urllib.parse.urlparse(src)
    if parsed.scheme != "https":
        check_endpoint(f"{parsed.scheme}://{parsed.netloc}")  # loopback only
    target = target or r.path / "exports" / f"project-{project}-classifications.csv"
    # The file is a signed storage URL: no Authorization header goes there.
    try:
        with requests.get(src, stream=True, timeout=60.0) as got:
            if got.status_code != 200:
                raise PanoptesError(
                    f"downloading the export of project {project}: HTTP "
                    f"{got.status_code}",
                    got.status_code,
                )
            with atomic_file(target) as fh:
                for chunk in got.iter_content(1 << 20):
                    fh.write(chunk)
    except requests.RequestException as exc:
        raise PanoptesError(
            f"downloading the export of project {project} failed: {type(exc).__name__}"
        ) from None
    log.info(
        "downloaded the classification export of project %s to %s", project, target
    )
    return target


def _skip_text(skipped: Counter[str]) -> str:
    """Skip counts as one line."""
    parts = [f"{n} {k}" for k, n in skipped.items() if n]
    return "; ".join(parts) if parts else "no rows"


@dataclass
class _State:
    """Everything the second pass collects."""

    rows: int = 0
    subjects: dict[str, _Subject] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    used: Counter[tuple[int, int]] = field(default_factory=Counter)
    unused: Counter[tuple[int, int]] = field(default_factory=Counter)
    tasks_seen: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)


#: How many example rows are kept per skip reason (for the log and the report).
EXAMPLES = 5


def _read_votes(
    export: Path,
    r: Run,
    agg: _Aggregation,
    by_subject: dict[str, int],
    workflow: str,
    use_version: Callable[[tuple[int, int]], bool],
    task: str,
    reporter: Reporter,
) -> _State:
    """Second pass: filter the rows and extract the task's answers."""
    st = _State()
    known: dict[int, bool] = {}

    def in_run(source_id: int) -> bool:
        if source_id not in known:
            known[source_id] = r.get(source_id) is not None
        return known[source_id]

    def skip(reason: str, line: int, cid: str, why: str = "") -> None:
        st.skipped[reason] += 1
        ex = st.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES:
            ex.append(
                f"line {line} (classification {cid})" + (f": {why}" if why else "")
            )
            if reason in ("malformed_json", "bad_row"):
                log.warning("%s line %d skipped: %s %s", export, line, reason, why)

    # The extract depends only on the answer: extract each distinct one once.
    extracts: dict[tuple[str, Any], dict[str, int]] = {}
    not_in_run: set[str] = set()
    rows = _Export(export)
    done = 0
    for line, cells in rows:
        ix = rows.ix
        done += 1
        if done % 5000 == 0:
            reporter.advance(5000)
        cid = cells[ix["classification_id"]].strip()
        wid = cells[ix["workflow_id"]].strip()
        if wid != workflow:
            skip("other_workflow", line, cid, f"workflow {wid}")
            continue
        vtext = cells[ix["workflow_version"]]
        version = _version(vtext)
        sid = _subject_id(cells[ix["subject_ids"]])
        if version is None or sid is None or not cid.isdigit():
            ids = cells[ix["subject_ids"]]
            skip("bad_row", line, cid, f"version {vtext!r}, subject ids {ids!r}")
            continue
        if not use_version(version):
            st.unused[version] += 1
            skip("older_workflow_version", line, cid, _vtext(version))
            continue
        if sid in not_in_run:
            st.unused[version] += 1
            skip("subject_not_in_run", line, cid, f"subject {sid}")
            continue
        # JSON columns are parsed only when needed: annotations always,
        # subject_data once per subject, metadata for logged-out volunteers.
        subject = st.subjects.get(sid)
        user_id = cells[ix["user_id"]].strip()
        try:
            annotations = json.loads(cells[ix["annotations"]])
            if not isinstance(annotations, list):
                raise ValueError("annotations is not a list")
            subject_meta: Any = None
            if subject is None:
                subject_data = json.loads(cells[ix["subject_data"]] or "{}")
                if not isinstance(subject_data, dict):
                    raise ValueError("subject_data is not an object")
                subject_meta = subject_data.get(sid)
            metadata = None if user_id else json.loads(cells[ix["metadata"]] or "{}")
        except ValueError as exc:
            st.unused[version] += 1
            skip("malformed_json", line, cid, str(exc).split("\n")[0])
            continue
        st.tasks_seen.update(
            str(a.get("task")) for a in annotations if isinstance(a, dict)
        )
        if subject is None:
            meta = subject_meta if isinstance(subject_meta, dict) else {}
            source_id, mapped_by = by_subject.get(sid), "state"
            if source_id is None:
                hidden = _as_source_id(meta.get(HIDDEN_ID_KEY))
                if hidden is not None and in_run(hidden):
                    source_id, mapped_by = hidden, "zooprep_id"
            if source_id is None:
                not_in_run.add(sid)
                st.unused[version] += 1
                skip("subject_not_in_run", line, cid, f"subject {sid}")
                continue
            subject = st.subjects[sid] = _Subject(source_id, mapped_by)
            retired = meta.get("retired")
            subject.retired = bool(retired)
            if isinstance(retired, dict):
                subject.retirement_reason = retired.get("retirement_reason")

        mine = [
            a
            for a in annotations
            if isinstance(a, dict) and str(a.get("task", "")).split(".")[0] == task
        ]
        gold = truthy(cells[ix["gold_standard"]])
        if not mine:
            st.unused[version] += 1
            skip("gold_standard" if gold else "task_missing", line, cid)
            continue
        value = mine[0].get("value")
        if _is_empty(value):
            st.unused[version] += 1
            skip("gold_standard" if gold else "no_answer", line, cid)
            continue
        if not _is_answer(value):
            st.unused[version] += 1
            skip("not_a_question", line, cid, f"value {str(value)[:60]}")
            continue
        key = (type(value).__name__, tuple(value) if isinstance(value, list) else value)
        extract = extracts.get(key)
        if extract is None:
            for label in value if isinstance(value, list) else [value]:
                st.labels.setdefault(agg.slugify(label), str(label))
            extract = extracts[key] = dict(
                agg.extract(
                    agg.annotation_by_task({"annotations": [mine[0]]}),
                    task=task,
                    no_version=True,
                )
            )
        created = cells[ix["created_at"]].strip()
        if gold:
            st.unused[version] += 1
            subject.gold.append((created, int(cid), "+".join(sorted(extract))))
            skip("gold_standard", line, cid)
            continue
        expert = cells[ix["expert"]].strip()
        if expert:
            st.unused[version] += 1
            skip("expert", line, cid, f"expert {expert}")
            continue
        st.used[version] += 1
        subject.versions.add(_vtext(version))
        volunteer = (
            f"user:{user_id}"
            if user_id
            else _logged_out(metadata, cells[ix["user_ip"]], cells[ix["user_name"]])
        )
        subject.votes.append(_Vote(created, int(cid), volunteer, extract))
    reporter.advance(done % 5000)
    return st


def _reduce(
    agg: _Aggregation, subjects: dict[str, _Subject], labels: dict[str, str]
) -> tuple[Any, list[str]]:
    """One row per subject: first vote per volunteer, reduced to counts."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    answers: set[str] = set()
    for sid, subject in subjects.items():
        first: dict[str, _Vote] = {}
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
                    sorted(subject.versions, key=lambda t: _version(t) or (0, 0))
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
    agg: _Aggregation,
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
    return score, {i: files.get(i) for i in ids}


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
