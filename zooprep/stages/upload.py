"""The upload stage: the reviewed manifest's rows become linked Zooniverse subjects.

Exactly once, whatever happens::

    plan        read the reviewed manifest; skip rows already linked
    reconcile   list the subject set; a source whose ``#zooprep_id`` is there
                but not in the run state (killed after the create) is adopted,
                extra copies are deleted
    quota       stop before starting if the new subjects do not fit
    per row     POST the subject (linked to the set in the same request)
                -> record its id in the run state (committed)
                -> PUT each file to its signed URL, check the 201
                -> read each file back from the subject's public location
                   (size, and MD5 where the store says it): the locations
                   of up to 100 subjects in one GET /subjects?id=..., then a
                   HEAD per file; a missing one is PUT again with fresh
                   signed URLs, and if it is still missing the subject is
                   taken out of the set and the row fails (repaired, and
                   linked again, by the next run)
                -> record status ``linked``
    uncertain   a create that answered 5xx or timed out is never re-POSTed
                blindly: the set is listed again and the row adopted or
                created in a further round

A subject whose PUT failed is repaired with fresh signed URLs (an update of
its ``locations``) on this run or the next one; it is never left broken.  Only
a subject created by this code can be in the set with our ``#zooprep_id``, and
every one is recorded or adopted, so there are no orphans.

The rows go through a pipeline (`_pool`): ``--workers`` threads send the API
requests (creates), as many PUT the files to the store, and as many read them
back, so the read-back overlaps the next creates.  Every thread owns a
`~zooprep.panoptes.PanoptesAPI`; they share one set of per-request deadlines
(`~zooprep.panoptes.RequestDeadlines`: a hung request is given up after a few
times the latency seen so far and retried; a create always gets the whole
``--timeout``) and write the run state through one lock-guarded connection
(commits are small and fast).

On SIGTERM, SIGINT or SIGHUP (`zooprep.interrupt`) no new row is started and
each worker stops at its next safe point: before a create, or after the
create is recorded and before its files are PUT (the row is then repaired by
the next run).  Nothing is half recorded.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import io
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from zooprep import interrupt
from zooprep.errors import (
    AuthError,
    InputError,
    PanoptesError,
    QuotaError,
    SettingsMismatch,
    UploadError,
)
from zooprep.feedback import FEEDBACK_PREFIX, TRAINING_KEY, check_rule
from zooprep.files import atomic_write, remove_temporary, storage_guard
from zooprep.manifest_format import header
from zooprep.options import MAX_FILE_BYTES, UploadOptions
from zooprep.panoptes import (
    CreateUncertain,
    Credentials,
    PanoptesAPI,
    RequestDeadlines,
    RetryPolicy,
    TokenManager,
    check_endpoint,
)
from zooprep.progress import NullReporter, Reporter
from zooprep.run import Run, saved_count
from zooprep.stages.nextbatch import CONTROVERSIAL_CSV
from zooprep.stages.review import mark_removed, read_reviewed
from zooprep.viewers import viewer_problem, viewer_to_set
from zooprep.vocabulary import (
    CONTENT_TYPES,
    ID_TEXT_KEY,
    KNOWN_ANSWER_KEY,
    KNOWN_MAG_KEY,
    KNOWN_SNR_KEY,
    RANK_COLUMN,
)

__all__ = ["MAX_FILE_BYTES", "UploadResult", "upload"]

logger = logging.getLogger(__name__)


#: Rows per server-side subject-set import (the Panoptes limit).
IMPORT_ROWS = 10_000

_PNG = b"\x89PNG\r\n\x1a\n"
_ROUNDS = 3  # reconcile-and-retry rounds for creates without a clear answer
_LINK_BATCH = 100


@dataclass
class UploadResult:
    """What `upload` did.

    Attributes
    ----------
    created : int
        Subjects created (with their media stored).
    linked : int
        Rows that ended linked to the subject set in this call.
    repaired : int
        Subjects whose media were (re-)uploaded, or adopted after a crash.
    failed : int
        Rows that failed (recorded in the run state with their reason).
    skipped : int
        Rows already linked before this call.
    removed : int
        Rows deleted from the reviewed manifest.
    deleted : int
        Duplicate subjects found in the set and deleted.
    subject_set_id : str or None
        The subject set used (None in a dry run that would create it).
    subject_set : str or None
        The subject set's name, when it was given by name.
    workflow_linked : bool
        The subject set was linked to ``options.workflow`` by this call
        (False when it already was, or no workflow was given).
    subject_viewer_set : bool
        This call set the workflow's ``configuration.subject_viewer`` to
        ``options.subject_viewer`` (False when it already had that value, an
        earlier upload set it, or in a dry run).
    dry_run : bool
        Nothing was uploaded.
    offline : bool
        A dry run without credentials: login, subject set and quota were not
        checked.
    to_create : int
        Subjects that need creating (what a dry run would do).
    controversial, controversial_set_id : int, str or None
        Shown subjects with split votes (``select --reshow-controversial``)
        added by this call to ``options.controversial_set``, and its id.
    prioritized : int
        Subjects of a ``select --next`` batch whose priority in the set was
        set to their rank by this call (see `PanoptesAPI.set_priorities
        <zooprep.panoptes.PanoptesAPI.set_priorities>`).
    """

    created: int = 0
    linked: int = 0
    repaired: int = 0
    failed: int = 0
    skipped: int = 0
    removed: int = 0
    deleted: int = 0
    subject_set_id: str | None = None
    subject_set: str | None = None
    dry_run: bool = False
    offline: bool = False
    to_create: int = 0
    seconds: float = 0.0
    workflow_linked: bool = False
    subject_viewer_set: bool = False
    training_set_id: str | None = None
    training: int = 0
    prioritized: int = 0
    controversial: int = 0
    controversial_set_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        name = f"'{self.subject_set}' " if self.subject_set else ""
        if self.offline:
            where = f"subject set {name}(not looked up: no credentials)"
        else:
            where = f"subject set {name}({self.subject_set_id or 'new'})"
        if self.dry_run:
            text = (
                f"upload dry run: {self.to_create} subjects to create, "
                f"{self.skipped} already linked, {self.failed} rows with "
                f"problems, for {where}; nothing uploaded"
            )
            return "; ".join([text, *self.notes])
        parts = [
            f"{self.created} created",
            f"{self.linked} linked",
            f"{self.repaired} repaired",
            f"{self.skipped} already linked",
            f"{self.failed} failed",
        ]
        if self.removed:
            parts.append(f"{self.removed} removed in review")
        if self.deleted:
            parts.append(f"{self.deleted} duplicates deleted")
        if self.prioritized:
            parts.append(f"{self.prioritized} priorities set")
        if self.controversial_set_id:
            parts.append(
                f"{self.controversial} split subjects added to set "
                f"{self.controversial_set_id}"
            )
        if self.workflow_linked:
            parts.append("set linked to the workflow")
        if self.training:
            parts.append(
                f"{self.training} training subjects in set {self.training_set_id}"
            )
        text = f"upload to {where}: {', '.join(parts)} in {self.seconds:.1f} s"
        return "; ".join([text, *self.notes])


@dataclass
class _Item:
    """One manifest row and what to do with it."""

    id: int
    files: list[Path]
    urls: list[str]
    metadata: dict[str, str]
    action: Literal["create", "repair", "link"] = "create"
    subject_id: str | None = None
    in_set: bool = True  # False once taken out of the set for missing media
    training: bool = False  # a training subject: its own subject set

    @property
    def content_types(self) -> list[str]:
        """The content type of each file, in location order."""
        return [content_type(p) for p in self.files]


def content_type(path: Path) -> str:
    """The content type Panoptes is told for a file (by its extension)."""
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


@dataclass
class _Outcome:
    """What a worker did with one item."""

    item: _Item
    kind: Literal[
        "done",
        "uncertain",
        "failed",
        "quota",
        "unlinked",
        "abandoned",
        "parked",  # a create still waiting for its answer (``pending``)
        "created",  # created (or given fresh URLs): files to PUT
        "put",  # files PUT, to be read back
        "recheck",  # read back and missing: PUT again with fresh URLs
    ]
    created: bool = False
    repaired: bool = False
    reason: str = ""
    linked: bool = True  # in the subject set (for "created", "put", "recheck")
    data: list[bytes] = field(default_factory=list, repr=False)
    urls: list[str] = field(default_factory=list, repr=False)  # signed PUT URLs
    pending: cf.Future[_Outcome] | None = field(default=None, repr=False)


class _State:
    """The run state, written by several threads through one lock."""

    def __init__(self, run: Run, set_id: str, project: str) -> None:
        self.run = run
        self.set_id = set_id
        self.project = project
        self.lock = threading.Lock()

    def created(self, source_id: int, subject_id: str) -> None:
        """Record a new subject before anything else happens to it."""
        with self.lock:
            self.run.update(
                source_id,
                subject_id=subject_id,
                upload={
                    "set": self.set_id,
                    "media": "pending",
                    "at": datetime.now().astimezone().isoformat(timespec="seconds"),
                },
            )

    def stored(self, source_id: int, subject_id: str, linked: bool) -> None:
        """The subject's media are stored (and it is linked, or not yet)."""
        with self.lock:
            self.run.update(
                source_id,
                status="linked" if linked else "uploaded",
                subject_id=subject_id,
                upload={"set": self.set_id, "media": "stored", "linked": linked},
            )

    def linked(self, source_ids: list[int]) -> None:
        """These rows are linked to the set."""
        with self.lock, self.run.transaction():
            for source_id in source_ids:
                src = self.run.get(source_id)
                upload = dict(src.upload) if src else {}
                upload.update({"set": self.set_id, "linked": True})
                self.run.update(source_id, status="linked", upload=upload)

    def out_of_set(self, source_id: int, subject_id: str) -> None:
        """The subject was taken out of the set: its media are missing."""
        with self.lock:
            self.run.update(
                source_id,
                subject_id=subject_id,
                upload={"set": self.set_id, "media": "missing", "linked": False},
            )

    def forget(self, source_id: int) -> None:
        """The recorded subject is gone (deleted): the row starts afresh."""
        with self.lock:
            self.run.update(source_id, subject_id=None, upload=None)

    def failed(self, source_id: int, reason: str) -> None:
        """A row finally failed."""
        with self.lock:
            self.run.mark_failed(source_id, "upload", reason)


class _SignIn:
    """A sign-in started on a thread of its own, joined by `wait`."""

    def __init__(self) -> None:
        self.tokens: TokenManager | None = None
        self.creds: Credentials | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    @classmethod
    def start(cls, endpoint: str, timeout: float) -> _SignIn:
        """Sign in with the environment's credentials, if they are all there."""
        started = cls()
        try:
            started.creds = Credentials.from_env()
        except AuthError:
            return started  # said again, in order, by the caller
        if started.creds is not None:
            tokens = TokenManager(endpoint, started.creds, timeout=timeout)

            def sign_in() -> None:
                try:
                    tokens.login()
                except BaseException as exc:  # re-raised by wait()
                    started.error = exc

            started.tokens = tokens
            started.thread = threading.Thread(
                target=sign_in, name="zooprep-sign-in", daemon=True
            )
            started.thread.start()
        return started

    def join(self) -> None:
        """Wait for the sign-in to end."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def wait(self) -> Credentials | None:
        """The credentials signed in with (None: not started); raise its error."""
        self.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.creds


# -- the stage ---------------------------------------------------------------


def upload(
    run: Run | str | os.PathLike[str],
    options: UploadOptions | Mapping[str, Any] | None = None,
    *,
    reporter: Reporter | None = None,
    publish: Callable[[str, bytes], str] | None = None,
    retry: RetryPolicy | None = None,
    **fields: Any,
) -> UploadResult:
    """Send the reviewed manifest's rows to a Zooniverse subject set, exactly once.

    Credentials come from the environment only (``PANOPTES_USERNAME`` and
    ``PANOPTES_PASSWORD``, or ``PANOPTES_CLIENT_ID`` and
    ``PANOPTES_CLIENT_SECRET``).  Calling it again after a crash, a kill or
    failed rows continues the upload without creating any subject twice.

    Parameters
    ----------
    run : Run, str or os.PathLike
        The run directory (opened and locked here when a path is given).
    options : UploadOptions or mapping
        Project, subject set, endpoint, workers, timeout, dry run, and
        ``via``: ``direct`` creates subjects and PUTs their files,
        ``import`` runs a server-side subject-set import per 10,000 rows of
        a manifest written with ``--url-root`` (the files must already be
        on the web).  The same fields may be given as keywords.
    reporter : Reporter, optional
        Progress reporting.
    publish : callable, optional
        For ``via='import'``: ``publish(name, csv_bytes) -> url`` makes one
        import CSV reachable by Panoptes.  By default the CSVs are written to
        ``RUN/imports/`` and expected at ``<url_root>/imports/<name>``.
    retry : RetryPolicy, optional
        Retries of safe requests (GET, media PUT, link, subject update).
    **fields
        The fields of `~zooprep.options.UploadOptions`, when ``options`` is
        not an object.

    Returns
    -------
    UploadResult
        Counts of created, linked, repaired, failed and skipped rows.

    Raises
    ------
    AuthError
        No or refused credentials.
    QuotaError
        The new subjects do not fit in the user's subject quota.
    InputError
        Bad endpoint or options, or no manifest.
    ManifestEditError
        The reviewed manifest damaged ids or file names.
    SettingsMismatch
        The run was already uploaded to another project, set or endpoint.
    StorageError
        The run directory is full, over quota or read-only; what was recorded
        is kept: free space (or make it writable) and call again.
    Interrupted
        A stop was asked for (SIGTERM, SIGINT, SIGHUP on the command line, or
        `zooprep.interrupt.request_stop`); finished rows are recorded.
    """
    options = UploadOptions.coerce(options, fields).resolved()
    where = run.path if isinstance(run, Run) else Path(run)
    kept = lambda: f"{saved_count(where, ('linked',))} sources uploaded"  # noqa: E731
    with storage_guard(where, kept):
        if isinstance(run, Run):
            return _upload(run, options, reporter, publish, retry)
        with Run.open(run) as opened:
            return _upload(opened, options, reporter, publish, retry)


def _upload(
    run: Run,
    options: UploadOptions,
    reporter: Reporter | None,
    publish: Callable[[str, bytes], str] | None,
    retry: RetryPolicy | None,
) -> UploadResult:
    """`upload` on an open run."""
    started = time.monotonic()
    reporter = reporter or NullReporter()
    endpoint = check_endpoint(options.endpoint)
    via = options.via

    result = UploadResult(dry_run=options.dry_run, subject_set=options.subject_set)
    if not options.dry_run:  # files a killed upload was writing
        remove_temporary(run.path)
        remove_temporary(run.path / "imports")
    # Sign in while the manifest is read (a few round trips saved).
    signing_in = _SignIn.start(endpoint, options.timeout)
    try:
        items, problems, index_fields = _plan(run, result, via, options.dry_run)
    except BaseException:
        signing_in.join()  # its outcome does not matter now
        raise
    for source_id, reason in problems:
        logger.warning("source %d: %s", source_id, reason)
    training = [i for i in items if i.training]
    items = [i for i in items if not i.training]
    split = _controversial(run, options)
    if training and not (options.training_set or options.training_set_id):
        signing_in.join()
        raise InputError(
            f"{len(training)} manifest rows are training subjects "
            f"({TRAINING_KEY} true, e.g. source {training[0].id}): give "
            "--training-set NAME (or --training-set-id ID) to upload them to "
            "their own subject set; nothing was uploaded"
        )

    creds = signing_in.wait() or Credentials.from_env()
    if creds is None:
        if options.dry_run:
            result.offline = True
            result.to_create = sum(1 for i in items + training if i.action == "create")
            result.failed = len(problems)
            result.subject_set_id = options.subject_set_id
            return result
        raise AuthError(
            "no Panoptes credentials: set PANOPTES_USERNAME and "
            "PANOPTES_PASSWORD (or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET)"
        )

    tokens = signing_in.tokens or TokenManager(endpoint, creds, timeout=options.timeout)
    if signing_in.tokens is None:
        tokens.login()
    api = PanoptesAPI(tokens, timeout=options.timeout, retry=retry)
    try:
        workflow = _check_workflow(api, options)
        if workflow is not None:
            _check_feedback(workflow, items + training)
            _check_viewer(run, api, options, workflow, endpoint, result)
        set_id = _resolve_set(api, options)
        result.subject_set_id = set_id
        training_id = _resolve_training_set(api, options) if training else None
        result.training_set_id = training_id
        _check_settings(run, options, endpoint, set_id, training_id)
        sets = [(set_id, items)] + ([(training_id, training)] if training else [])
        deletions = []
        for sid, group in sets:
            # zooprep id -> subject ids
            existing = _list_set(api, sid, via) if sid and group else {}
            deletions += [(sid, d) for d in _reconcile(group, existing)]
        to_create = sum(1 for i in items + training if i.action == "create")
        result.to_create = to_create
        _check_quota(api, to_create, options.dry_run)
        if options.dry_run:
            result.failed = len(problems)
            return result
        assert set_id is not None
        saved = run.settings.upload
        run.save(
            UploadOptions.record(
                project=str(options.project),
                subject_set_id=set_id,
                subject_set=options.subject_set,
                endpoint=endpoint,
                via=via,
                training_set_id=training_id
                or (saved.training_set_id if saved else None),
                training_set=options.training_set
                or (saved.training_set if saved else None),
            )
        )
        if index_fields:
            api.set_index_fields(set_id, index_fields)
        first = _State(run, set_id, str(options.project))
        for source_id, reason in problems:
            first.failed(source_id, reason)
        result.failed += len(problems)
        for sid, (keep_id, extra) in deletions:
            for subject_id in extra:
                logger.warning(
                    "source %d has a duplicate subject %s in set %s; deleting it",
                    keep_id,
                    subject_id,
                    sid,
                )
                api.delete_subject(subject_id)
                result.deleted += 1
        total = len(items) + len(training) + result.skipped + len(problems)
        reporter.start("upload", total)
        reporter.advance(result.skipped + len(problems), failed=len(problems))
        for sid, group in sets:
            assert sid is not None
            state = _State(run, sid, str(options.project))
            for item in group:
                if item.action != "create" and item.subject_id:
                    src = run.get(item.id)
                    if src is not None and src.subject_id != item.subject_id:
                        state.created(item.id, item.subject_id)  # adopted
            before = result.linked
            if via == "import":
                _run_imports(run, api, state, group, publish, result, reporter)
            else:
                _run_direct(api, tokens, state, group, options, retry, result, reporter)
            if sid == training_id:
                result.training = result.linked - before
            if interrupt.requested():
                break
        reporter.finish()
        if via == "direct" and not interrupt.requested():
            result.prioritized = _set_priorities(api, run, set_id)
        if split and not interrupt.requested():
            result.controversial_set_id, result.controversial = _add_controversial(
                api, options, split
            )
        if options.workflow:
            for sid, _ in sets:
                assert sid is not None
                linked = api.link_workflow(str(options.workflow), sid)
                if linked:
                    logger.info(
                        "linked subject set %s to workflow %s", sid, options.workflow
                    )
                if sid == set_id:
                    result.workflow_linked = linked
            if training_id and workflow is not None:
                result.notes += _training_notes(workflow, training_id)
    finally:
        api.close()
    interrupt.check(result.linked)
    result.seconds = time.monotonic() - started
    logger.info("%s", result)
    return result


def _controversial(run: Run, options: UploadOptions) -> list[str]:
    """The subject ids ``controversial.csv`` lists (refused without the file)."""
    if not options.controversial_set:
        return []
    path = run.path / CONTROVERSIAL_CSV
    if not path.is_file():
        raise InputError(
            f"--controversial-set: {run.path} has no {CONTROVERSIAL_CSV}; choose "
            "the batch with 'zooprep select --reshow-controversial K' first"
        )
    with open(path, newline="", encoding="utf-8") as fh:
        return [str(row["subject_id"]) for row in csv.DictReader(fh)]


def _add_controversial(
    api: PanoptesAPI, options: UploadOptions, subjects: list[str]
) -> tuple[str | None, int]:
    """Link the split subjects to their own set (only those not in it yet)."""
    set_id = _resolve_set(
        api, options.merge(subject_set=options.controversial_set, subject_set_id=None)
    )
    assert set_id is not None
    there = {str(s["id"]) for s in api.set_subjects(set_id)}
    missing = [s for s in dict.fromkeys(subjects) if s not in there]
    for start in range(0, len(missing), _LINK_BATCH):
        api.link(set_id, missing[start : start + _LINK_BATCH])
    logger.info("added %d split subjects to subject set %s", len(missing), set_id)
    return set_id, len(missing)


def _set_priorities(api: PanoptesAPI, run: Run, set_id: str) -> int:
    """The set's priorities from the ranks of a ``select --next`` batch (0 without)."""
    wanted = {
        str(src.subject_id): int(src.row[RANK_COLUMN])
        for src in run.iter_sources(["linked"])
        if src.subject_id and src.row.get(RANK_COLUMN) is not None
    }
    if not wanted:
        return 0
    changed = api.set_priorities(set_id, wanted)
    logger.info("set the priority of %d subjects in set %s", changed, set_id)
    return changed


def _resolve_training_set(api: PanoptesAPI, options: UploadOptions) -> str | None:
    """The training subject set's id (created when named and absent, except in a dry run)."""
    if options.training_set_id:
        return _resolve_set(
            api,
            options.merge(subject_set_id=options.training_set_id, subject_set=None),
        )
    return _resolve_set(
        api, options.merge(subject_set=options.training_set, subject_set_id=None)
    )


def _training_notes(workflow: dict[str, object], training_id: str) -> list[str]:
    """What the workflow's configuration still needs to serve the training set."""
    config = workflow.get("configuration") or {}
    listed = (
        [str(i) for i in (config.get("training_set_ids") or [])]
        if isinstance(config, dict)
        else []
    )
    if training_id in listed:
        return []
    return [
        f"note: workflow {workflow.get('id')} does not list training set "
        f"{training_id} in its configuration's training_set_ids, so its subjects "
        "are served as ordinary ones; set training_set_ids, training_chances and "
        "training_default_chance (README: Known answers)"
    ]


# -- planning ------------------------------------------------------------------


def _plan(
    run: Run, result: UploadResult, via: str, dry_run: bool
) -> tuple[list[_Item], list[tuple[int, str]], list[str]]:
    """The rows still to upload, rows with local problems (id, reason), index fields."""
    reviewed = read_reviewed(run)
    if dry_run:
        result.removed = sum(
            1 for i in reviewed.removed if (s := run.get(i)) and s.status == "rendered"
        )
    else:
        result.removed = mark_removed(run, reviewed).removed
    items: list[_Item] = []
    problems: list[tuple[int, str]] = []
    for row in reviewed.rows:
        src = run.get(row.source_id)
        if src is None:
            problems.append((row.source_id, "not in the run state"))
            continue
        if src.status == "linked" and src.subject_id:
            result.skipped += 1
            continue
        item = _Item(
            id=row.source_id,
            files=[Path(f) for f in row.files],
            urls=list(row.urls),
            # '%' marks an index field: Panoptes wants the key without it.
            # Known-answer keys are left out where the manifest left them empty.
            metadata={
                str(k).removeprefix("%"): str(v)
                for k, v in row.metadata.items()
                if not (_known_key(str(k)) and str(v).strip() in ("", "nan"))
            },
        )
        item.training = str(item.metadata.get(TRAINING_KEY, "")).lower() == "true"
        item.metadata[ID_TEXT_KEY] = str(row.source_id)
        if via == "import":
            if not item.urls:
                raise InputError(
                    f"manifest row {row.line} (source {row.source_id}) has no "
                    "URL; write the manifest with --url-root to use --via import"
                )
        else:
            reason = _check_files(item.files)
            if reason:
                problems.append((row.source_id, reason))
                continue
        if src.subject_id:
            item.subject_id = src.subject_id
            stored = src.upload.get("media") == "stored"
            item.action = "link" if stored else "repair"
            item.in_set = src.upload.get("linked") is not False
        items.append(item)
    return items, problems, reviewed.index_fields


def _known_key(key: str) -> bool:
    """Whether a metadata key is one zooprep writes only on known-answer subjects."""
    return key in (
        KNOWN_ANSWER_KEY,
        KNOWN_MAG_KEY,
        KNOWN_SNR_KEY,
        TRAINING_KEY,
    ) or key.startswith(FEEDBACK_PREFIX)


def _check_feedback(workflow: dict[str, object], items: list[_Item]) -> None:
    """Refuse feedback keys the workflow's task does not define (one line)."""
    rules: dict[str, set[str]] = {}
    for item in items:
        rule = item.metadata.get(f"{FEEDBACK_PREFIX}id")
        if rule:
            rules.setdefault(rule, set()).add(
                item.metadata.get(f"{FEEDBACK_PREFIX}answer", "")
            )
    for rule, answers in sorted(rules.items()):
        problem = check_rule(workflow, rule, answers)
        if problem:
            raise InputError(f"{problem}; nothing was uploaded")


def _check_files(files: list[Path]) -> str:
    """Why these files cannot be one subject's locations ('' when they can).

    Each file must be readable, at most `MAX_FILE_BYTES`, of a kind Zooniverse
    shows (a PNG must be a PNG, a JSON file valid JSON), and a JSON file must
    follow an image (the scatter-plot / light-curve viewer shows the image as
    the subject's thumbnail).
    """
    if not files:
        return "no image file in the manifest row"
    for n, path in enumerate(files):
        suffix = path.suffix.lower()
        if suffix not in CONTENT_TYPES:
            return f"{path.name}: Zooniverse does not take {suffix or 'extensionless'} files"
        try:
            size = path.stat().st_size
            with open(path, "rb") as fh:
                head = fh.read(8) if suffix != ".json" else fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        if size > MAX_FILE_BYTES:
            return f"{path} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit"
        if suffix == ".png" and head[:8] != _PNG:
            return f"{path} is not a PNG file"
        if suffix == ".json":
            if n == 0:
                return f"{path.name}: a JSON location must follow an image location"
            try:
                json.loads(head)
            except ValueError as exc:
                return f"{path} is not valid JSON ({exc})"
    return ""


def _check_workflow(
    api: PanoptesAPI, options: UploadOptions
) -> dict[str, object] | None:
    """Refuse a workflow that does not exist or belongs to another project."""
    if not options.workflow:
        return None
    wanted = str(options.workflow)
    if not wanted.isdigit():
        raise InputError(f"--workflow {wanted!r} is not a workflow id (digits)")
    try:
        found = api.workflow(wanted)
    except PanoptesError as exc:
        if exc.status in (403, 404):
            raise InputError(
                f"workflow {wanted} does not exist (or you cannot see it); nothing "
                "was uploaded"
            ) from None
        raise
    owner = str((found.get("links") or {}).get("project", ""))
    if owner != str(options.project):
        raise InputError(
            f"workflow {wanted} belongs to project {owner or '?'}, not "
            f"{options.project}; nothing was uploaded"
        )
    return found


def _subject_kinds(run: Run) -> list[list[str]]:
    """The distinct location content types of the manifest's subjects, commonest first."""
    kinds: Counter[tuple[str, ...]] = Counter()
    for row in read_reviewed(run).rows:
        names = [Path(urlsplit(u).path) for u in row.urls] if row.urls else row.files
        kinds[tuple(content_type(Path(n)) for n in names)] += 1
    return [list(k) for k, _ in kinds.most_common()]


def _check_viewer(
    run: Run,
    api: PanoptesAPI,
    options: UploadOptions,
    workflow: dict[str, Any],
    endpoint: str,
    result: UploadResult,
) -> None:
    """Make sure the workflow's classifier viewer shows the subjects (before uploading).

    Without ``--subject-viewer``, a ``configuration.subject_viewer`` (or its
    absence: the classifier's automatic choice) that cannot show every file
    of every subject is refused in one line naming the value to set
    (`zooprep.viewers`).  With it, the value is checked against the files
    and set on the workflow, once: the run notes it, so a resumed upload
    does not send it again (nor undo a later change made by hand, as long
    as that one shows the subjects too).
    """
    wid = str(workflow.get("id") or options.workflow)
    kinds = _subject_kinds(run)
    current = str((workflow.get("configuration") or {}).get("subject_viewer") or "")
    wanted = options.subject_viewer
    key = f"subject_viewer:{endpoint}:{wid}"
    done = "; nothing was uploaded"
    if wanted and run.noted(key) != wanted:
        problem = viewer_problem(wanted, kinds)
        if problem:
            raise InputError(f"--subject-viewer {wanted}: {problem}{done}")
        if current == wanted:
            if not options.dry_run:
                run.note(key, wanted)
            return
        if options.dry_run:
            result.notes.append(
                f"would set subject_viewer of workflow {wid} to {wanted} "
                f"(now {current or 'unset'})"
            )
            return
        result.subject_viewer_set = api.set_subject_viewer(wid, wanted)
        run.note(key, wanted)
        result.notes.append(f"subject_viewer of workflow {wid} set to {wanted}")
        logger.info("set subject_viewer of workflow %s to %s", wid, wanted)
        return
    problem = viewer_problem(current or None, kinds)
    if problem and wanted:  # set by this run before, changed since
        raise InputError(
            f"workflow {wid}: an earlier upload of this run set subject_viewer "
            f"to {wanted}, and it has been changed since: {problem} in the "
            f"project builder{done}"
        )
    if problem:
        fix = viewer_to_set(kinds)
        flag = f" (zooprep upload --subject-viewer {fix} sets it)" if fix else ""
        raise InputError(f"workflow {wid}: {problem}{flag}{done}")


def _resolve_set(api: PanoptesAPI, options: UploadOptions) -> str | None:
    """The subject set's id (created when named and absent, except in a dry run)."""
    project = str(options.project)
    if options.subject_set_id:
        found = api.subject_set(str(options.subject_set_id))
        owner = str(found.get("links", {}).get("project", ""))
        if owner and owner != project:
            raise InputError(
                f"subject set {options.subject_set_id} belongs to project "
                f"{owner}, not {project}"
            )
        return str(found["id"])
    name = str(options.subject_set)
    found_set = api.find_subject_set(project, name)
    if found_set is not None:
        return str(found_set["id"])
    if options.dry_run:
        logger.info("subject set %r would be created in project %s", name, project)
        return None
    created = api.create_subject_set(project, name)
    logger.info("created subject set %s (%r)", created["id"], name)
    return str(created["id"])


def _check_settings(
    run: Run,
    options: UploadOptions,
    endpoint: str,
    set_id: str | None,
    training_id: str | None = None,
) -> None:
    """Refuse to send a run already uploaded elsewhere to another place."""
    saved = run.settings.upload
    if saved is None:
        return
    if not run.count_subjects():
        return
    for key, now in (
        ("endpoint", endpoint),
        ("project", str(options.project)),
        ("subject_set_id", set_id),
        ("training_set_id", training_id),
    ):
        was = getattr(saved, key)
        if key == "training_set_id" and was is None:
            continue  # the first upload of training subjects
        if now is not None and str(was) != str(now):
            raise SettingsMismatch(
                f"run {run.path} was uploaded with {key} {was}, not "
                f"{now}; start a new run directory to upload elsewhere"
            )


def _list_set(api: PanoptesAPI, set_id: str, via: str) -> dict[str, list[str]]:
    """``{zooprep id: [subject ids]}`` of the set's subjects."""
    found: dict[str, list[str]] = {}
    for subject in api.set_subjects(set_id):
        key = (subject.get("metadata") or {}).get(ID_TEXT_KEY)
        if key is None and via == "import":
            key = subject.get("external_id")
        if key is not None:
            found.setdefault(str(key), []).append(str(subject["id"]))
    return found


def _reconcile(
    items: list[_Item], existing: dict[str, list[str]]
) -> list[tuple[int, list[str]]]:
    """Adopt subjects found in the set; return duplicates to delete."""
    deletions = []
    for item in items:
        there = existing.get(str(item.id), [])
        if not there:
            continue  # a recorded subject missing here is checked by its repair
        keep = item.subject_id if item.subject_id in there else min(there, key=int)
        extra = [s for s in there if s != keep]
        if extra:
            deletions.append((item.id, extra))
        item.in_set = True  # found in the set
        if item.subject_id != keep:
            item.subject_id = keep
            item.action = "repair"  # created, but its media were never confirmed
        elif item.action == "create":
            item.action = "repair"
    return deletions


def _check_quota(api: PanoptesAPI, needed: int, dry_run: bool) -> None:
    """Stop early if ``needed`` new subjects do not fit in the user's quota."""
    me = api.me()
    if me.get("upload_whitelist") or me.get("admin"):
        return
    limit = me.get("subject_limit")
    used = me.get("uploaded_subjects_count")
    if limit is None or used is None:
        logger.info("the server did not say the subject quota; not checked")
        return
    left = int(limit) - int(used)
    logger.info("subject quota: %s of %s used, %d needed", used, limit, needed)
    if needed > left:
        raise QuotaError(
            f"this upload needs {needed} new subjects but user "
            f"{me.get('login', me.get('id'))} has uploaded {used} of {limit} "
            f"allowed ({max(left, 0)} left); ask the project or Zooniverse "
            "for a larger quota or upload fewer rows"
        )


# -- direct upload -------------------------------------------------------------

#: Subjects read back with one ``GET /subjects?id=...`` (the Panoptes page size).
_CHECK_BATCH = 100


class _Workers:
    """One PanoptesAPI per thread (workers and read-back pool), closed at the end.

    All of them share one set of per-request deadlines, learned from every
    answer of this upload.
    """

    def __init__(
        self,
        tokens: TokenManager,
        timeout: float,
        retry: RetryPolicy | None,
        verify: bool = True,
        n_workers: int = 8,
    ) -> None:
        self._tokens, self._timeout, self._retry = tokens, timeout, retry
        self.verify = verify
        self.deadlines = RequestDeadlines(timeout)
        #: Where creates run: a worker waits for its create up to the API
        #: deadline, then leaves it to finish here (room for some parked ones).
        self.creates = cf.ThreadPoolExecutor(
            2 * n_workers + 4, thread_name_prefix="zooprep-create"
        )
        self._local = threading.local()
        self._all: list[PanoptesAPI] = []
        self._lock = threading.Lock()

    def api(self) -> PanoptesAPI:
        """The calling thread's client."""
        api: PanoptesAPI | None = getattr(self._local, "api", None)
        if api is None:
            api = PanoptesAPI(
                self._tokens,
                timeout=self._timeout,
                retry=self._retry,
                deadlines=self.deadlines,
            )
            self._local.api = api
            with self._lock:
                self._all.append(api)
        return api

    def close(self) -> None:
        """Close every client's session."""
        self.creates.shutdown()
        with self._lock:
            for api in self._all:
                api.close()


def _run_direct(
    api: PanoptesAPI,
    tokens: TokenManager,
    state: _State,
    items: list[_Item],
    options: UploadOptions,
    retry: RetryPolicy | None,
    result: UploadResult,
    reporter: Reporter,
) -> None:
    """Create/repair with a thread pool, reconcile uncertain creates, link leftovers."""
    workers = _Workers(tokens, options.timeout, retry, options.verify, options.workers)
    stop = threading.Event()
    to_link = [i for i in items if i.action == "link"]
    pending = [i for i in items if i.action != "link"]
    quota_reason = ""
    try:
        for round_ in range(1, _ROUNDS + 1):
            uncertain: list[_Item] = []
            for outcome in _pool(workers, state, pending, options.workers, stop):
                item = outcome.item
                if outcome.kind == "abandoned":
                    continue  # stopped by a signal: the next run does it
                if outcome.kind == "uncertain":
                    uncertain.append(item)
                    continue
                if outcome.kind in ("failed", "quota"):
                    if outcome.kind == "quota":
                        stop.set()
                        quota_reason = outcome.reason
                    state.failed(item.id, outcome.reason)
                    result.failed += 1
                    reporter.advance(1, failed=1)
                    continue
                result.created += outcome.created
                result.repaired += outcome.repaired
                if outcome.kind == "unlinked":
                    to_link.append(item)
                else:
                    result.linked += 1
                    reporter.advance(1)
            if not uncertain or interrupt.requested():
                break
            logger.info(
                "%d creates got no clear answer; checking the subject set "
                "before trying them again (round %d)",
                len(uncertain),
                round_,
            )
            existing = _list_set(api, state.set_id, "direct")
            for extra_owner, extra in _reconcile(uncertain, existing):
                for subject_id in extra:
                    api.delete_subject(subject_id)
                    result.deleted += 1
                    logger.warning(
                        "deleted duplicate subject %s of source %d",
                        subject_id,
                        extra_owner,
                    )
            for item in uncertain:
                if item.subject_id:
                    state.created(
                        item.id, item.subject_id
                    )  # adopt before anything else
            pending = uncertain
        else:
            for item in uncertain:
                reason = (
                    "the create request never got a clear answer and the "
                    "subject is not in the set; run again to retry"
                )
                state.failed(item.id, reason)
                result.failed += 1
                reporter.advance(1, failed=1)
        if not interrupt.requested():
            _link_leftovers(api, state, to_link, result, reporter)
    finally:
        workers.close()
    if quota_reason:
        logger.error("stopped: %s", quota_reason)


def _pool(
    workers: _Workers,
    state: _State,
    items: list[_Item],
    n_workers: int,
    stop: threading.Event,
) -> Iterator[_Outcome]:
    """Upload items as a pipeline; yield each row's final outcome.

    ``n_workers`` threads send the Panoptes API requests (`_process`: the
    create, or fresh upload URLs for a repair) and take the next row as soon
    as the subject is recorded; as many threads PUT the files to the store
    (`_put_files`).  With the read-back on, the subjects whose files are PUT
    are then read back in batches: one ``GET /subjects?id=...`` gives the
    public locations of up to 100 of them, and their HEADs run on a pool of
    their own (`_read_back`), beside the next creates.  A subject counts as
    uploaded (`_State.stored`) only once every one of its files is read back;
    one whose PUT failed or whose file is not there is given fresh upload URLs
    and PUT again by a worker (`_second_try`).  Rows in flight are bounded.
    """
    window = n_workers * 4
    queue = iter(items)
    work_pool = cf.ThreadPoolExecutor(n_workers, thread_name_prefix="zooprep-upload")
    put_pool = cf.ThreadPoolExecutor(n_workers, thread_name_prefix="zooprep-put")
    check_pool = cf.ThreadPoolExecutor(n_workers, thread_name_prefix="zooprep-verify")
    batch_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="zooprep-readback")
    with work_pool, put_pool, check_pool, batch_pool:
        work: set[cf.Future[_Outcome]] = set()
        parked: set[cf.Future[_Outcome]] = set()  # creates without an answer yet
        puts: set[cf.Future[_Outcome]] = set()
        checks: set[cf.Future[_Outcome]] = set()
        batches: dict[cf.Future[dict[str, list[str]]], list[_Outcome]] = {}
        waiting: list[_Outcome] = []  # files PUT, not yet read back

        def unverified() -> int:
            in_batches = sum(len(b) for b in batches.values())
            return len(parked) + len(puts) + len(waiting) + len(checks) + in_batches

        def fill() -> None:
            while (
                len(work) < window
                and unverified() < window + _CHECK_BATCH
                and not stop.is_set()
                and not interrupt.requested()
            ):
                item = next(queue, None)
                if item is None:
                    break
                work.add(work_pool.submit(_process, workers, state, item, stop))
            if waiting and not batches and not interrupt.requested():
                batch = waiting[:_CHECK_BATCH]
                del waiting[:_CHECK_BATCH]
                ids = [str(o.item.subject_id) for o in batch]
                future = batch_pool.submit(_locations_of, workers, ids)
                batches[future] = batch

        fill()
        while work or parked or puts or checks or batches or waiting:
            if interrupt.requested() and waiting:
                # Recorded with their media pending: the next run repairs them.
                yield from (_Outcome(o.item, "abandoned") for o in waiting)
                waiting.clear()
            running: set[cf.Future[Any]] = {*work, *parked, *puts, *checks, *batches}
            if not running:
                fill()
                continue
            # Wake up now and then so that a stop request is seen promptly.
            done, _ = cf.wait(running, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for future in done:
                if future in batches:
                    batch = batches.pop(future)
                    found = future.result()
                    for put in batch:
                        urls = found.get(str(put.item.subject_id))
                        checks.add(
                            check_pool.submit(_read_back, workers, state, put, urls)
                        )
                    continue
                work.discard(future)
                parked.discard(future)
                puts.discard(future)
                checks.discard(future)
                outcome = future.result()
                if outcome.kind == "parked":
                    assert outcome.pending is not None
                    parked.add(outcome.pending)
                elif outcome.kind in ("created", "recheck") and interrupt.requested():
                    # Recorded with their media pending: the next run repairs them.
                    yield _Outcome(outcome.item, "abandoned")
                elif outcome.kind == "created":
                    puts.add(put_pool.submit(_put_files, workers, state, outcome))
                elif outcome.kind == "put":
                    waiting.append(outcome)
                elif outcome.kind == "recheck":
                    work.add(work_pool.submit(_second_try, workers, state, outcome))
                else:
                    yield outcome
            fill()
    if interrupt.requested():
        return  # rows not started stay as they are, for the next run
    for item in queue:  # left over after a stop (quota)
        yield _Outcome(item, "failed", reason="not attempted: subject quota reached")


def _locations_of(workers: _Workers, subject_ids: list[str]) -> dict[str, list[str]]:
    """The public file URLs of these subjects (``{}`` if the batch read failed)."""
    try:
        return workers.api().media_locations_of(subject_ids)
    except UploadError as exc:
        # Each subject is then read back on its own by `_second_try`.
        logger.info("reading back %d subjects failed: %s", len(subject_ids), exc)
        return {}


def _read_back(
    workers: _Workers, state: _State, put: _Outcome, urls: list[str] | None
) -> _Outcome:
    """HEAD each file of a subject whose files were PUT; record it stored if all are there."""
    item = put.item
    assert item.subject_id is not None
    if urls is None:
        problems = [f"subject {item.subject_id} was not in the read-back answer"]
    else:
        try:
            problems = workers.api().check_files(item.subject_id, urls, put.data)
        except UploadError as exc:
            problems = [str(exc)]
    if problems:
        logger.warning(
            "source %d: the store answered 201 but %s; uploading again with fresh URLs",
            item.id,
            "; ".join(problems),
        )
        return dataclasses.replace(put, kind="recheck")
    state.stored(item.id, item.subject_id, put.linked)
    return _Outcome(
        item,
        "done" if put.linked else "unlinked",
        created=put.created,
        repaired=put.repaired,
    )


def _process(
    workers: _Workers,
    state: _State,
    item: _Item,
    stop: threading.Event,
) -> _Outcome:
    """Create a subject (or get fresh upload URLs for a repair); never raises for a row.

    The outcome is ``created``: the caller PUTs the files (`_put_files`) and
    reads them back.  A create not answered within its deadline is left to
    finish on its own thread (``parked``): the worker takes the next row.
    """
    if stop.is_set():
        return _Outcome(item, "failed", reason="not attempted: subject quota reached")
    if interrupt.requested():
        return _Outcome(item, "abandoned")
    api = workers.api()
    try:
        data = [path.read_bytes() for path in item.files]
    except OSError as exc:
        return _Outcome(item, "failed", reason=f"cannot read image: {exc.strerror}")
    if item.action == "create":
        future = workers.creates.submit(_create, workers, state, item, data)
        try:
            return future.result(timeout=workers.deadlines.api.timeout())
        except cf.TimeoutError:
            logger.info(
                "source %d: the create has no answer yet; going on with the "
                "next row while it finishes",
                item.id,
            )
            return _Outcome(item, "parked", data=data, pending=future)
    assert item.subject_id is not None
    try:
        urls = api.fresh_upload_urls(
            item.subject_id, len(data), content_types=item.content_types
        )
    except PanoptesError as exc:
        if exc.status != 404:
            item.action = "repair"
            return _Outcome(item, "failed", reason=str(exc))
        # The recorded subject is gone: start this row afresh.
        state.forget(item.id)
        item.subject_id, item.action = None, "create"
        return _process(workers, state, item, stop)
    except UploadError as exc:
        return _Outcome(item, "failed", reason=str(exc))
    return _Outcome(
        item, "created", repaired=True, linked=item.in_set, data=data, urls=urls
    )


def _create(
    workers: _Workers, state: _State, item: _Item, data: list[bytes]
) -> _Outcome:
    """POST the subject once (the whole ``--timeout``) and record it at once."""
    label = f"source {item.id}"
    try:
        subject_id, urls, linked = workers.api().create_subject(
            state.project,
            state.set_id,
            item.metadata,
            len(data),
            label=label,
            content_types=item.content_types,
        )
    except CreateUncertain as exc:
        logger.info("%s: %s", label, exc)
        return _Outcome(item, "uncertain", reason=str(exc))
    except QuotaError as exc:
        return _Outcome(item, "quota", reason=str(exc))
    except UploadError as exc:
        return _Outcome(item, "failed", reason=str(exc))
    state.created(item.id, subject_id)  # before anything else
    item.subject_id = subject_id
    return _Outcome(item, "created", created=True, linked=linked, data=data, urls=urls)


def _put_files(workers: _Workers, state: _State, made: _Outcome) -> _Outcome:
    """PUT the files of a subject just created; ``put`` (to read back) or final."""
    item = made.item
    assert item.subject_id is not None
    label = f"source {item.id}"
    try:
        _put_all(workers.api(), item, made.urls, made.data, label)
    except PanoptesError as exc:
        logger.info("%s: %s; trying again with fresh upload URLs", label, exc)
        return dataclasses.replace(made, kind="recheck", urls=[])
    if workers.verify:
        return dataclasses.replace(made, kind="put", urls=[])
    state.stored(item.id, item.subject_id, made.linked)
    return _Outcome(
        item,
        "done" if made.linked else "unlinked",
        created=made.created,
        repaired=made.repaired,
    )


def _second_try(workers: _Workers, state: _State, put: _Outcome) -> _Outcome:
    """PUT a subject's files again with fresh URLs after its read-back failed."""
    item = put.item
    try:
        return _again(workers.api(), state, item, put.data, put.created, put.linked)
    except UploadError as exc:
        item.action = "repair"
        return _Outcome(item, "failed", reason=str(exc))


def _again(
    api: PanoptesAPI,
    state: _State,
    item: _Item,
    data: list[bytes],
    created: bool,
    linked: bool,
) -> _Outcome:
    """Fresh upload URLs, PUT, read back on the spot; out of the set if still missing."""
    assert item.subject_id is not None
    label = f"source {item.id}"
    try:
        _put_fresh(api, item, data, label)
    except MediaMissing as exc:
        return _out_of_set(api, state, item, linked, exc)
    state.stored(item.id, item.subject_id, linked)
    return _Outcome(
        item, "done" if linked else "unlinked", created=created, repaired=not created
    )


def _out_of_set(
    api: PanoptesAPI, state: _State, item: _Item, linked: bool, exc: MediaMissing
) -> _Outcome:
    """Take a subject whose file is still missing out of the set; fail its row."""
    assert item.subject_id is not None
    if linked:
        api.unlink(state.set_id, [item.subject_id])
    state.out_of_set(item.id, item.subject_id)
    item.action, item.in_set = "repair", False
    return _Outcome(
        item,
        "failed",
        reason=f"{exc}; taken out of subject set {state.set_id} until "
        "the next run stores it",
    )


class MediaMissing(PanoptesError):
    """The store accepted a file (201) but does not have it when read back."""


def _put_all(
    api: PanoptesAPI, item: _Item, urls: list[str], data: list[bytes], label: str
) -> None:
    """PUT every file of a subject to its signed URL (each PUT retried)."""
    if len(urls) != len(data):
        raise PanoptesError(
            f"{label}: subject {item.subject_id} has {len(urls)} upload URLs "
            f"for {len(data)} files"
        )
    for url, blob, kind in zip(urls, data, item.content_types, strict=True):
        api.put_blob(url, blob, label=label, content_type=kind)


def _put_fresh(
    api: PanoptesAPI, item: _Item, data: list[bytes], label: str, verify: bool = True
) -> None:
    """The second try: fresh signed URLs, every file PUT and read back.

    Raises
    ------
    MediaMissing
        A file is still not stored.
    PanoptesError
        The PUTs failed.
    """
    assert item.subject_id is not None
    types = item.content_types
    urls = api.fresh_upload_urls(item.subject_id, len(data), content_types=types)
    _put_all(api, item, urls, data, label)
    problems = api.check_media(item.subject_id, data) if verify else []
    if problems:
        raise MediaMissing(
            f"{label}: subject {item.subject_id}: the store answered 201 twice "
            f"but {'; '.join(problems)}"
        )


def _link_leftovers(
    api: PanoptesAPI,
    state: _State,
    items: list[_Item],
    result: UploadResult,
    reporter: Reporter,
) -> None:
    """Link subjects that were not linked at creation, in batches."""
    for start in range(0, len(items), _LINK_BATCH):
        batch = items[start : start + _LINK_BATCH]
        ids = [i.subject_id for i in batch if i.subject_id]
        try:
            api.link(state.set_id, [str(i) for i in ids])
        except UploadError as exc:
            for item in batch:
                state.failed(item.id, f"linking to set {state.set_id}: {exc}")
            result.failed += len(batch)
            reporter.advance(len(batch), failed=len(batch))
            continue
        state.linked([i.id for i in batch])
        result.linked += len(batch)
        reporter.advance(len(batch))


# -- server-side import -----------------------------------------------------------


def _run_imports(
    run: Run,
    api: PanoptesAPI,
    state: _State,
    items: list[_Item],
    publish: Callable[[str, bytes], str] | None,
    result: UploadResult,
    reporter: Reporter,
    poll: float = 0.5,
) -> None:
    """One subject-set import per 10,000 rows, polled to completion."""
    if publish is None:
        publish = _default_publisher(run)
    for part, start in enumerate(range(0, len(items), IMPORT_ROWS), start=1):
        batch = items[start : start + IMPORT_ROWS]
        name = f"import-set{state.set_id}-part{part:03d}.csv"
        url = publish(name, _import_csv(batch))
        record = api.create_import(state.set_id, url)
        logger.info(
            "import %s of %d rows started from %s", record["id"], len(batch), url
        )
        done = 0
        while True:
            record = api.get_import(str(record["id"]))
            finished = int(record.get("imported_count", 0))
            reporter.advance(max(0, finished - done))
            done = max(done, finished)
            if (
                finished + int(record.get("failed_count", 0)) >= len(batch)
                or float(record.get("progress", 0)) >= 1.0
            ):
                break
            time.sleep(poll)
        failed_ids = {str(u) for u in record.get("failed_uuids") or []}
        by_external = {}
        for subject in api.set_subjects(state.set_id):
            if subject.get("external_id") is not None:
                by_external[str(subject["external_id"])] = str(subject["id"])
        for item in batch:
            subject_id = by_external.get(str(item.id))
            if subject_id and str(item.id) not in failed_ids:
                state.stored(item.id, subject_id, True)
                result.created += 1
                result.linked += 1
            else:
                state.failed(
                    item.id, f"server-side import {record['id']} failed this row"
                )
                result.failed += 1


def _import_csv(items: list[_Item]) -> bytes:
    """The CSV of a subject-set import: external_id, location:N, metadata:KEY."""
    n_loc = max(len(i.urls) for i in items)
    keys: list[str] = []
    for item in items:
        for key in item.metadata:
            if key not in keys:
                keys.append(key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # The import layout of zooprep.manifest_format, without the #zooprep_id
    # column (the import keeps the id as external_id).
    writer.writerow(header("import", n_loc, keys)[:-1])
    for item in items:
        locs = item.urls + [""] * (n_loc - len(item.urls))
        writer.writerow(
            [str(item.id), *locs, *(item.metadata.get(k, "") for k in keys)]
        )
    return out.getvalue().encode("utf-8")


def _default_publisher(run: Run) -> Callable[[str, bytes], str]:
    """Write import CSVs to RUN/imports/ and expect them at <url_root>/imports/."""
    manifest = run.settings.manifest
    url_root = str((manifest.url_root if manifest else None) or "").rstrip("/")
    if not url_root:
        raise InputError(
            "--via import needs a manifest written with --url-root (no url_root "
            f"in {run.path / Run.SETTINGS})"
        )

    def publish(name: str, data: bytes) -> str:
        atomic_write(run.path / "imports" / name, data)
        url = f"{url_root}/imports/{name}"
        logger.info(
            "wrote %s; it must be reachable at %s", run.path / "imports" / name, url
        )
        return url

    return publish
