"""Reading a Zooniverse classification export for ``zooprep results``.

`scan_export` makes a first pass over the export (workflows, versions, subjects of
this run), `choose_workflow` and `choose_versions` apply the workflow and
version rules, and `read_votes` makes the second pass: it skips the rows
that are not votes (see `SKIP_REASONS`), maps each subject to its source and
extracts the task's answer with panoptes-aggregation's question extractor.
The rules, in the order they are applied, are listed in
`zooprep.stages.results`, which reduces the votes and writes the results.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooprep.errors import InputError
from zooprep.progress import Reporter
from zooprep.run import Run
from zooprep.vocabulary import ID_TEXT_KEY, truthy

__all__ = [
    "EXPORT_COLUMNS",
    "SKIP_REASONS",
    "Aggregation",
    "ExportScan",
    "ExportVotes",
    "SubjectVotes",
    "Vote",
    "Wanted",
    "choose_versions",
    "choose_workflow",
    "load_aggregation",
    "parse_version",
    "read_votes",
    "scan_export",
    "skip_text",
    "version_text",
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


@dataclass
class Aggregation:
    """The panoptes-aggregation functions used, imported lazily."""

    annotation_by_task: Callable[..., Any]
    extract: Callable[..., Any]
    reduce: Callable[..., Any]
    slugify: Callable[[Any], str]
    version: str


@dataclass(slots=True)
class Vote:
    """One usable volunteer classification."""

    created_at: str
    classification_id: int
    volunteer: str
    extract: dict[str, int]


@dataclass
class SubjectVotes:
    """What the export says about one subject."""

    source_id: int
    mapped_by: str
    votes: list[Vote] = field(default_factory=list)
    gold: list[tuple[str, int, str]] = field(default_factory=list)
    retired: bool | None = None
    retirement_reason: str | None = None
    versions: set[str] = field(default_factory=set)


def load_aggregation() -> Aggregation:
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
    return Aggregation(
        annotation_by_task=annotation_by_task,
        extract=question_extractor,
        reduce=question_reducer,
        slugify=slugify_or_null,
        version=str(getattr(panoptes_aggregation, "__version__", "?")),
    )


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


def parse_version(text: str) -> tuple[int, int] | None:
    """``"12.34"`` as ``(12, 34)``, None when unreadable."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def version_text(v: tuple[int, int]) -> str:
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
class ExportScan:
    """First pass over the export: which workflows and versions it holds."""

    rows: int = 0
    workflows: Counter[str] = field(default_factory=Counter)
    names: dict[str, str] = field(default_factory=dict)
    in_run: Counter[str] = field(default_factory=Counter)
    versions: dict[str, Counter[tuple[int, int]]] = field(default_factory=dict)


def scan_export(path: Path, subjects: dict[str, int]) -> ExportScan:
    """Count rows per workflow and version, and rows of this run's subjects."""
    scan = ExportScan()
    export = _Export(path)
    for _, cells in export:
        ix = export.ix
        scan.rows += 1
        wid = cells[ix["workflow_id"]].strip()
        scan.workflows[wid] += 1
        scan.names.setdefault(wid, cells[ix["workflow_name"]])
        if cells[ix["subject_ids"]].strip() in subjects:
            scan.in_run[wid] += 1
        version = parse_version(cells[ix["workflow_version"]])
        if version is not None:
            scan.versions.setdefault(wid, Counter())[version] += 1
    return scan


def choose_workflow(scan: ExportScan, workflow_id: str | None, path: Path) -> str:
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


def choose_versions(
    versions: Counter[tuple[int, int]], wanted: str | None, workflow: str
) -> Callable[[tuple[int, int]], bool]:
    """A predicate over versions: the latest major by default, or as asked."""
    found = ", ".join(version_text(v) for v in sorted(versions)) or "none"
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


def skip_text(skipped: Counter[str]) -> str:
    """Skip counts as one line."""
    parts = [f"{n} {k}" for k, n in skipped.items() if n]
    return "; ".join(parts) if parts else "no rows"


@dataclass
class ExportVotes:
    """Everything the second pass collects."""

    rows: int = 0
    subjects: dict[str, SubjectVotes] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    used: Counter[tuple[int, int]] = field(default_factory=Counter)
    unused: Counter[tuple[int, int]] = field(default_factory=Counter)
    tasks_seen: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)


#: How many example rows are kept per skip reason (for the log and the report).
EXAMPLES = 5


@dataclass(frozen=True)
class Wanted:
    """Which rows of the export are votes: the choices made after the first pass.

    Attributes
    ----------
    workflow : str
        The workflow used.
    use_version : callable
        Whether a ``(major, minor)`` workflow version is used.
    task : str
        The question task.
    by_subject : dict of str to int
        Subject id to source id, from the run's upload state.
    """

    workflow: str
    use_version: Callable[[tuple[int, int]], bool]
    task: str
    by_subject: dict[str, int]


def read_votes(
    export: Path, r: Run, agg: Aggregation, wanted: Wanted, reporter: Reporter
) -> ExportVotes:
    """Second pass: filter the rows and extract the task's answers."""
    workflow, use_version = wanted.workflow, wanted.use_version
    task, by_subject = wanted.task, wanted.by_subject
    st = ExportVotes()
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
        version = parse_version(vtext)
        sid = _subject_id(cells[ix["subject_ids"]])
        if version is None or sid is None or not cid.isdigit():
            ids = cells[ix["subject_ids"]]
            skip("bad_row", line, cid, f"version {vtext!r}, subject ids {ids!r}")
            continue
        if not use_version(version):
            st.unused[version] += 1
            skip("older_workflow_version", line, cid, version_text(version))
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
                hidden = _as_source_id(meta.get(ID_TEXT_KEY))
                if hidden is not None and in_run(hidden):
                    source_id, mapped_by = hidden, "zooprep_id"
            if source_id is None:
                not_in_run.add(sid)
                st.unused[version] += 1
                skip("subject_not_in_run", line, cid, f"subject {sid}")
                continue
            subject = st.subjects[sid] = SubjectVotes(source_id, mapped_by)
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
        subject.versions.add(version_text(version))
        volunteer = (
            f"user:{user_id}"
            if user_id
            else _logged_out(metadata, cells[ix["user_ip"]], cells[ix["user_name"]])
        )
        subject.votes.append(Vote(created, int(cid), volunteer, extract))
    reporter.advance(done % 5000)
    return st
