"""The manifest stage: a CSV that people review in a spreadsheet and Zooniverse accepts.

`manifest` writes ``RUN/manifest.csv``, one row per rendered source, in the
format of `zooprep.manifest_format` (by default the column layout of
Zooniverse's server-side subject-set import; ``layout="panoptes-cli"`` for
``panoptes subject-set upload-subjects``).  It chooses the metadata columns
and their visibility (ids, scores and flags hidden from volunteers by
default), records which source is on which line, and never overwrites a
manifest someone edited.

`zooprep.stages.review` reads the file back after a person edited it.

``manifests/README.md`` documents every column and how each Zooniverse tool
reads the file.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from zooprep import interrupt
from zooprep.errors import InputError
from zooprep.feedback import TRAINING_KEY, feedback_keys
from zooprep.files import atomic_file, remove_temporary, storage_guard
from zooprep.manifest_format import (
    UPLOADABLE,
    escape,
    header,
    id_text,
    join_url,
    relative_prefix,
    text,
    uploadable,
)
from zooprep.options import ManifestOptions
from zooprep.progress import NullReporter, Reporter
from zooprep.run import KnownAnswer, Run, Source
from zooprep.vocabulary import (
    ID_TEXT_KEY,
    KNOWN_ANSWER_KEY,
    KNOWN_MAG_KEY,
    KNOWN_SNR_KEY,
    PRIORITY_KEY,
    RANK_COLUMN,
    STREAM_COLUMN,
    STREAM_KEY,
    is_flag_column,
)

__all__ = ["DEFAULT_METADATA", "LISTED", "ManifestResult", "manifest"]

logger = logging.getLogger(__name__)

#: Metadata columns written when ``--metadata`` is not given (those present).
DEFAULT_METADATA = (
    "id",
    "visit",
    "detector",
    "band",
    "ra",
    "dec",
    "reliability",
    "snr",
    "diaObjectId",
    "objectId",
)
#: Statuses of the sources a manifest lists (failed ones: failed in upload).
LISTED = ("rendered", "uploaded", "linked", "failed")
_ID_COLUMNS = ("diaSourceId", "candid", "sourceId", "id")
#: Columns that could bias a volunteer, besides flag columns (hidden by default).
_BIASING = re.compile(
    r"(reliability|snr|^s_?n$|^rb$|^drb|^is[A-Z_]|score|prob|bogus|classtar)",
    re.IGNORECASE,
)
_TALK_ONLY = {"visit", "detector", "ra", "dec", "ccdid", "exposure"}


# -- results -------------------------------------------------------------------


@dataclass
class ManifestResult:
    """What `manifest` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The manifest file.
    rows : int
        Data rows written (one per source).
    columns : list of str
        The header, in order.
    parts : list of pathlib.Path
        Numbered parts written with ``split`` (empty without it).
    failed : int
        Rendered sources left out because their file is missing (they are
        marked failed in the render stage, so ``zooprep render`` redoes them).
    layout : str
        The column layout written, one of `~zooprep.manifest_format.LAYOUTS`.
    """

    path: Path
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)
    failed: int = 0
    layout: str = "import"

    def __str__(self) -> str:
        text = f"manifest: {self.rows} rows written to {self.path}"
        if self.parts:
            text += f" and {len(self.parts)} parts ({self.parts[0].name} ...)"
        if self.failed:
            text += f"; {self.failed} sources left out (file missing)"
        return text


# -- writing -------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The resolved columns of a manifest."""

    id_column: str
    columns: tuple[str, ...]  # catalog columns, metadata order
    keys: tuple[str, ...]  # Zooniverse metadata keys, with prefixes
    locations: int
    url_root: str | None
    kind: str = "import"  # one of LAYOUTS

    @property
    def header(self) -> list[str]:
        """The CSV header row."""
        return header(self.kind, self.locations, self.keys)


def manifest(
    run: str | os.PathLike[str] | Run,
    options: ManifestOptions | Mapping[str, Any] | None = None,
    *,
    reporter: Reporter | None = None,
    **fields: Any,
) -> ManifestResult:
    """Write the run's manifest: one CSV row per rendered source.

    Choices not given are taken from the ``[manifest]`` section of
    ``zooprep.toml`` (an earlier call), then from the defaults; the choices
    used are saved there.

    Parameters
    ----------
    run : str, path-like or Run
        The run directory (or an open `~zooprep.run.Run`).
    options : ManifestOptions or mapping, optional
        The choices (or give its fields as keywords):

        - ``url_root``: where the run directory's files will be hosted:
          locations become ``URL_ROOT/cutouts/<chunk>/<id>.png`` (a query
          string is kept at the end).
        - ``output``: write here instead of ``RUN/manifest.csv``; relative
          locations are then relative to this file's folder.
        - ``metadata``: catalog columns to include (``id`` is the source id
          column). Default: those of `DEFAULT_METADATA` that the sources have.
        - ``hidden``: columns hidden from volunteers (``#``).  Id columns and
          columns that could bias a classification (reliability, S/N, flags,
          scores) are hidden unless named in ``talk_only`` or ``index``.
        - ``talk_only``: columns hidden in the classifier but shown in Talk
          (``!``). Default: visit, detector, ra, dec.
        - ``index``: index fields of the subject set (``%``).  Default: none.
        - ``split``: also write numbered parts of at most ``split`` rows
          beside the manifest (``manifest-001.csv``, ...), e.g. 10000 for
          Zooniverse's server-side import.
        - ``layout``: ``"import"`` (default): ``external_id``,
          ``location:N``, ``metadata:<key>``, ``#zooprep_id``, for
          Zooniverse's server-side import and ``zooprep upload``.
          ``"panoptes-cli"``: ``#zooprep_id``, ``#location:N`` and bare
          ``<key>`` headers, so that ``panoptes subject-set upload-subjects``
          gives subjects the intended metadata keys (``zooprep upload`` reads
          it too).
    reporter : Reporter, optional
        Progress callbacks.
    **fields
        The fields of `~zooprep.options.ManifestOptions`, when ``options`` is
        not an object.

    Returns
    -------
    ManifestResult
        The path, row count, header and parts written.

    Raises
    ------
    zooprep.errors.InputError
        A named column is not a catalog column, a column is given two
        visibilities, the layout is unknown, the run has no rendered source,
        or the existing
        manifest was edited since zooprep wrote it (it is never overwritten).
    zooprep.errors.StorageError
        The disk is full or read-only; the old manifest (if any) is kept and
        no temporary file is left.
    zooprep.errors.Interrupted
        A stop was asked for; the manifest was not written.
    """
    given = ManifestOptions.coerce(options, fields)
    where = run.path if isinstance(run, Run) else Path(run)
    with storage_guard(where, lambda: "manifest not written"):
        if isinstance(run, Run):
            return _write(run, given, reporter)
        with Run.open(run) as r:
            return _write(r, given, reporter)


def _write(
    run: Run, given: ManifestOptions, reporter: Reporter | None
) -> ManifestResult:
    """Body of `manifest` on an open run."""
    reporter = reporter or NullReporter()
    saved = run.settings.manifest
    options = (saved or ManifestOptions.defaults()).merge(given)
    kind = options.layout
    url_root, split = options.url_root, options.split
    if options.output:
        path = Path(options.output).absolute()
    else:
        path = run.path / "manifest.csv"
    _refuse_overwriting_review(path, saved)

    first = next(run.iter_sources(["rendered", "uploaded", "linked"], page=1), None)
    if first is None:
        raise InputError(
            f"run {run.path} has no rendered source; run 'zooprep render' first"
        )
    id_column = _id_column(run, first)
    known = _KnownCells.of(run, options)
    known.choice = bool(run.settings.select and run.settings.select.next)
    layout = _layout(
        first,
        id_column,
        options.metadata,
        options.hidden,
        options.talk_only,
        options.index,
        _max_locations(run),
        url_root,
        kind,
        known.keys,
    )
    total = _count_listed(run)
    prefix = relative_prefix(run.path, path.parent.resolve())
    result = ManifestResult(path=path, columns=layout.header, layout=kind)
    reporter.start("manifest", total)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_temporary(run.path)  # left by a killed manifest (or settings write)
    if path.parent != run.path:
        _remove_own_temporary(path)
    parts = _Parts(path, int(split), total, layout.header) if split else None
    written: list[tuple[int, int]] = []
    try:
        with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
            out = _HashingWriter(fh, digest)
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(layout.header)
            line = 1
            for src in _listed(run):
                # Stopped (SIGTERM, Ctrl-C): abandon; the old manifest stays.
                interrupt.check(0, "(manifest not written)")
                cells = _cells(run, src, layout, prefix, known)
                if cells is None:
                    result.failed += 1
                    reporter.advance(1, failed=1)
                    continue
                writer.writerow(cells)
                line += 1
                written.append((src.id, line))
                if parts is not None:
                    parts.write(cells)
                reporter.advance(1)
            fh.flush()
            # Remember the new file's hash before it replaces the old one (at
            # the end of this block): a kill between the two leaves a manifest
            # whose hash zooprep knows, so the next run does not mistake it
            # for a reviewed (edited) one.
            run.save(
                (saved or ManifestOptions.record()).merge(
                    sha256_pending=digest.hexdigest()
                )
            )
        if parts is not None:
            result.parts = parts.close()
    finally:
        if parts is not None:
            parts.discard()
        reporter.finish()
    result.rows = len(written)
    _record_written(run, written)
    visibility = _visibility_lists(layout)
    run.save(
        ManifestOptions(
            hidden=visibility["hidden"],
            talk_only=visibility["talk_only"],
            index=visibility["index"],
            metadata=[c for c in layout.columns if c not in known.keys],
            keys=[k for k in layout.keys if k not in known.keys],
            id_column=id_column,
            feedback=options.feedback,
            real_answer=options.real_answer,
            bogus_answer=options.bogus_answer,
            success_message=options.success_message,
            failure_message=options.failure_message,
            truth_metadata=options.truth_metadata,
            url_root=url_root,
            layout=kind,
            output=str(path) if path != run.path / "manifest.csv" else None,
            split=split,
            rows=result.rows,
            sha256=digest.hexdigest(),
            written=datetime.now().astimezone().isoformat(timespec="seconds"),
        )
    )
    logger.info("%s", result)
    return result


class _KnownCells:
    """The known answers' metadata: truth, training flag and feedback keys.

    On a known-answer subject: ``#known_answer`` (``real``/``bogus``),
    ``#fake_mag`` and ``#fake_snr`` (injected), ``#training_subject``
    (``true`` on training subjects, Caesar's key), and with a `Feedback` the
    ``#feedback_1_*`` keys on training subjects only.  Other subjects' cells
    are empty (upload leaves empty known-answer keys out).
    """

    def __init__(self, known: dict[int, KnownAnswer], options: ManifestOptions) -> None:
        self.known = known
        self.options = options
        self.truth = bool(options.truth_metadata) and bool(known)
        keys: list[str] = []
        if self.truth:
            keys += [KNOWN_ANSWER_KEY, KNOWN_MAG_KEY, KNOWN_SNR_KEY, TRAINING_KEY]
        if options.feedback:
            keys += list(feedback_keys(str(options.feedback), 0, "x", "x"))
        self.known_keys: tuple[str, ...] = tuple(keys)
        self.choice = False  # a batch of select --next: #priority, #zooprep_stream

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys zooprep writes itself, after the catalog columns."""
        return self.known_keys + ((PRIORITY_KEY, STREAM_KEY) if self.choice else ())

    def row_cells(self, src: Source) -> dict[str, str]:
        """`cells`, and a chosen batch's rank and stream (from the source's row)."""
        out = self.cells(src.id)
        if self.choice:
            rank = src.row.get(RANK_COLUMN)
            out[PRIORITY_KEY] = "" if rank is None else str(int(rank))
            out[STREAM_KEY] = str(src.row.get(STREAM_COLUMN) or "")
        return out

    @classmethod
    def of(cls, run: Run, options: ManifestOptions) -> _KnownCells:
        """The run's known answers with these choices; refuse feedback that cannot be."""
        known = run.known_answers()
        rule = options.feedback
        if rule:
            training = [a for a in known.values() if a.stream == "training"]
            if not training:
                raise InputError(
                    f"--feedback {rule}: {run.path} has no training subjects (zooprep "
                    "fakes --training chooses them); feedback on blind fakes would "
                    "tell volunteers which subjects are fakes"
                )
            if options.bogus_answer is None and any(
                a.truth == "bogus" for a in training
            ):
                raise InputError(
                    f"--feedback {rule}: some training subjects are known bogus; give "
                    "--bogus-answer (the index of the answer that means bogus)"
                )
        return cls(known, options)

    def cells(self, source_id: int) -> dict[str, str]:
        """The known-answer cells of one source (empty strings where none)."""
        out = dict.fromkeys(self.known_keys, "")
        answer = self.known.get(source_id)
        if answer is None:
            return out
        if self.truth:
            out[KNOWN_ANSWER_KEY] = answer.truth
            out[KNOWN_MAG_KEY] = "" if answer.mag is None else f"{answer.mag:.3f}"
            out[KNOWN_SNR_KEY] = "" if answer.snr is None else f"{answer.snr:.2f}"
            out[TRAINING_KEY] = "true" if answer.stream == "training" else ""
        o = self.options
        if o.feedback and answer.stream == "training":
            index = o.real_answer if answer.truth == "real" else o.bogus_answer
            assert index is not None
            fields = {
                "mag": "" if answer.mag is None else f"{answer.mag:.1f}",
                "snr": "" if answer.snr is None else f"{answer.snr:.0f}",
            }
            out.update(
                feedback_keys(
                    str(o.feedback),
                    int(index),
                    o.success_message.format(**fields) if o.success_message else None,
                    o.failure_message.format(**fields) if o.failure_message else None,
                )
            )
        return out


def _remove_own_temporary(path: Path) -> None:
    """Remove temporary copies of ``path`` (and its parts) left by a killed run."""
    stem = re.escape(path.stem)
    pattern = re.compile(rf"\.{stem}(-\d{{3,}})?{re.escape(path.suffix)}\.\d+\.tmp")
    for old in path.parent.glob(".*.tmp"):
        if pattern.fullmatch(old.name):
            old.unlink(missing_ok=True)


class _HashingWriter:
    """A text file that also feeds what is written to a hash."""

    def __init__(self, fh: IO[str], digest: Any) -> None:
        self.fh = fh
        self.digest = digest

    def write(self, text: str) -> int:
        """Write and hash."""
        self.digest.update(text.encode("utf-8"))
        return self.fh.write(text)


class _Parts:
    """Numbered manifest parts of at most ``size`` rows, each written atomically."""

    def __init__(self, path: Path, size: int, total: int, header: list[str]) -> None:
        self.path, self.size, self.header = path, size, header
        self.width = max(3, len(str(max(1, math.ceil(total / size)))))
        self.done: list[Path] = []
        self.fh: IO[str] | None = None
        self.writer: Any = None
        self.count = 0
        self._file: Any = None  # the atomic_file of the part being written

    def name(self, n: int) -> Path:
        """Path of part ``n`` (1-based)."""
        return self.path.with_name(
            f"{self.path.stem}-{n:0{self.width}d}{self.path.suffix}"
        )

    def write(self, cells: list[str]) -> None:
        """Add one row, starting a new part when the current one is full."""
        if self.fh is None or self.count >= self.size:
            self._close_current()
            target = self.name(len(self.done) + 1)
            self._file = atomic_file(target, "w", encoding="utf-8", newline="")
            self.fh = self._file.__enter__()
            self.writer = csv.writer(self.fh, lineterminator="\n")
            self.writer.writerow(self.header)
            self.count = 0
        self.writer.writerow(cells)
        self.count += 1

    def _close_current(self) -> None:
        """Move the part being written into place."""
        if self._file is None:
            return
        self._file.__exit__(None, None, None)
        self.done.append(self.name(len(self.done) + 1))
        self.fh, self._file = None, None

    def close(self) -> list[Path]:
        """Finish the last part and delete stale parts of an earlier, longer run."""
        self._close_current()
        pattern = re.compile(
            rf"{re.escape(self.path.stem)}-\d{{3,}}{re.escape(self.path.suffix)}"
        )
        keep = {p.name for p in self.done}
        for old in self.path.parent.iterdir():
            if pattern.fullmatch(old.name) and old.name not in keep:
                old.unlink()
        return self.done

    def discard(self) -> None:
        """Remove a half-written part after an error."""
        if self._file is not None:
            # Leaving the block with an error removes the temporary file.
            self._file.__exit__(OSError, OSError("manifest part discarded"), None)
            self.fh, self._file = None, None


def _refuse_overwriting_review(path: Path, saved: ManifestOptions | None) -> None:
    """Raise when ``path`` is a manifest someone edited since zooprep wrote it."""
    if not path.exists():
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if saved is not None and digest.hexdigest() in (saved.sha256, saved.sha256_pending):
        return
    raise InputError(
        f"{path} was edited after zooprep wrote it; zooprep will not overwrite "
        "a reviewed manifest: upload it as it is, or move it away and run "
        "'zooprep manifest' again"
    )


def _listed(run: Run) -> Iterator[Source]:
    """Sources that belong in the manifest, in selection order."""
    return run.iter_sources(LISTED, stage="upload")


def _count_listed(run: Run) -> int:
    """How many sources `_listed` yields."""
    return run.count(LISTED, stage="upload")


def _max_locations(run: Run) -> int:
    """The largest number of uploadable files of one source (at least 1)."""
    return max(1, run.max_files(UPLOADABLE, LISTED, stage="upload"))


def _id_column(run: Run, first: Source) -> str:
    """Name of the catalog column that holds the source id."""
    for section in (run.settings.select, run.settings.manifest):
        if section is not None and section.id_column:
            return str(section.id_column)
    for name in _ID_COLUMNS:
        if first.row.get(name) == first.id:
            return name
    for name, value in first.row.items():
        if value == first.id and not isinstance(value, bool):
            return str(name)
    return "id"


def _layout(
    first: Source,
    id_column: str,
    metadata: Sequence[str] | None,
    hidden: Sequence[str] | None,
    talk_only: Sequence[str] | None,
    index: Sequence[str] | None,
    locations: int,
    url_root: str | None,
    kind: str = "import",
    known_keys: Sequence[str] = (),
) -> _Layout:
    """Resolve the metadata columns and their prefixes.

    ``known_keys`` (the known answers' keys, `_KnownCells`) come after the
    catalog columns, already prefixed.
    """
    available = [k for k in first.row if not str(k).startswith("_")]
    if id_column not in available:
        available.insert(0, id_column)

    def name(col: str) -> str:
        return id_column if col == "id" else col

    if metadata is None:
        columns = [name(c) for c in DEFAULT_METADATA if name(c) in available]
    else:
        columns = [name(c) for c in metadata]
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise InputError(
                f"--metadata names {', '.join(unknown)}, not columns of the sources; "
                f"they have: {', '.join(available)}"
            )
    columns = list(dict.fromkeys(columns))
    choices = {
        "--hidden": [name(c) for c in hidden or []],
        "--talk-only": [name(c) for c in talk_only or []],
        "--index": [name(c) for c in index or []],
    }
    for flag, cols in choices.items():
        stray = [c for c in cols if c not in columns]
        if stray:
            raise InputError(
                f"{flag} names {', '.join(stray)}, which are not metadata columns; "
                "add them to --metadata"
            )
    explicit: dict[str, str] = {}
    for flag, cols in choices.items():
        for col in cols:
            if col in explicit and explicit[col] != flag:
                raise InputError(
                    f"column {col} is given to both {explicit[col]} and {flag}; choose one"
                )
            explicit[col] = flag
    prefix = {"--hidden": "#", "--talk-only": "!", "--index": "%"}
    keys = []
    for col in columns:
        if col.startswith(("#", "!", "%", "/")) or ":" in col:
            raise InputError(
                f"metadata column {col!r} cannot be a Zooniverse key (it starts "
                "with a prefix character or holds ':'); rename it in the catalog"
            )
        if col in explicit:
            keys.append(prefix[explicit[col]] + col)
        elif (
            col == id_column
            or _is_id(col)
            or is_flag_column(col)
            or _BIASING.search(col)
        ):
            keys.append("#" + col)
        elif col in _TALK_ONLY:
            keys.append("!" + col)
        else:
            keys.append(col)
    clash = [k for k in known_keys if k in keys]
    if clash:
        raise InputError(
            f"metadata column {clash[0][1:]} would give the key {clash[0]}, which "
            "zooprep writes for the known answers; leave it out of --metadata"
        )
    columns += list(known_keys)
    keys += list(known_keys)
    if kind == "panoptes-cli" and ID_TEXT_KEY in keys:
        raise InputError(
            f"metadata column {ID_TEXT_KEY[1:]} would give the key "
            f"{ID_TEXT_KEY}, which the panoptes-cli layout uses for the "
            "source id; leave it out of --metadata or do not hide it"
        )
    return _Layout(id_column, tuple(columns), tuple(keys), locations, url_root, kind)


def _is_id(col: str) -> bool:
    """True for internal id columns (``diaObjectId``, ``objectId``, ``candid``)."""
    return col.endswith(("Id", "ID", "_id")) or col in {"candid", "id", "objectId"}


def _visibility_lists(layout: _Layout) -> dict[str, list[str]]:
    """The resolved ``hidden``/``talk_only``/``index`` lists, for zooprep.toml."""
    out: dict[str, list[str]] = {"hidden": [], "talk_only": [], "index": []}
    names = {"#": "hidden", "!": "talk_only", "%": "index"}
    for col, key in zip(layout.columns, layout.keys, strict=True):
        if key[0] in names and key[1:] == col:
            out[names[key[0]]].append(col)
    return out


def _cells(
    run: Run, src: Source, layout: _Layout, prefix: str, known: _KnownCells
) -> list[str] | None:
    """The CSV cells of one source, or None (recorded as failed) when its file is gone."""
    files = uploadable(src.files)
    root = str(run.path)
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if not files or missing:
        if src.status == "rendered":
            what = missing[0] if missing else "no image file"
            run.mark_failed(
                src.id,
                "render",
                f"manifest: {what} is missing; run 'zooprep render' again",
            )
            return None
        logger.warning("source %d (%s): file missing on disk", src.id, src.status)
    if layout.url_root:
        locations = [join_url(layout.url_root, f) for f in files]
    else:
        locations = [prefix + f for f in files]
    locations += [""] * (layout.locations - len(locations))
    values = []
    extra = known.row_cells(src)
    for col in layout.columns:
        if col in extra:
            values.append(escape(extra[col]))
            continue
        value = src.id if col == layout.id_column else src.row.get(col)
        values.append(escape(text(value)))
    if layout.kind == "panoptes-cli":
        return [id_text(src.id), *locations, *values]
    return [str(src.id), *locations, *values, id_text(src.id)]


def _record_written(run: Run, written: list[tuple[int, int]]) -> None:
    """Remember which sources the manifest lists (to tell deleted rows later)."""
    run.record_manifest(written)
