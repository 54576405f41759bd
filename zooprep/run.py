"""The run directory: the only state zooprep keeps.

::

    RUN/
      zooprep.toml     settings of the run (source, render and upload options)
      state.sqlite     one row per source: status, reason, files, subject id
      manifest.csv     the human-facing table, written by ``zooprep manifest``
      rows/1.sqlite    the columns of bulk-selected sources (`zooprep.rowstore`)
      cutouts/0/...    PNG (and .npy) files, at most ``chunk_size`` per folder
      .lock            held (flock) by the one process working on the run

The per-source state is an SQLite database in WAL mode.  Each change is a
small transaction, so recording one row's progress costs the same in a run of
ten rows or of a million, and a process killed at any instant (``kill -9``
included) leaves the last committed state intact: SQLite's write-ahead log is
replayed or discarded on the next open.  Files (PNGs, settings, manifest) are
written to a temporary name beside the target and moved into place, so nobody
ever sees half a file.

A source moves through these statuses::

    selected -> rendered -> uploaded -> linked
        \\           \\           \\
         +-----------+-----------+--> failed (with the stage and the reason)

``removed`` marks rows that a person deleted from a reviewed manifest.  A
failed row is retried when its stage runs again.

A source's columns (its row) are JSON in the state, or, for sources a reader
handed over in bulk (`add_selection`, `add_batches`), a row of a block file
in ``rows/`` that the state names; `Source.row` is the same dict either way.
Runs made before blocks existed (format 1) open as they are; the first block
a run records makes it format 2.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from zooprep.errors import InputError, RunError, RunLocked
from zooprep.files import STATE_FILE, atomic_write, storage_error, temporary_name
from zooprep.options import Options, RenderOptions, Settings
from zooprep.rowstore import (
    BLOCK_DIR,
    BlockInfo,
    BlockRows,
    BuiltBlock,
    Stopped,
    block_info,
    block_number,
    build_from_batches,
    build_from_sqlite,
    kinds_json,
    quote,
    tmp_name,
)

if TYPE_CHECKING:
    from zooprep.readers.base import ColumnBatch, SqliteSelection

__all__ = [
    "STATUSES",
    "AddResult",
    "KnownAnswer",
    "Run",
    "Source",
    "cutout_relpath",
    "decode_row",
    "encode_row",
    "saved_count",
]

#: Version of the run directory layout; a newer one is refused.  Format 2
#: adds row blocks (``rows/``); a run is made as format 1 and becomes 2 when
#: it records its first block, so older zooprep versions open it until then.
FORMAT_VERSION = 2
_FIRST_FORMAT = 1

STATUSES = ("selected", "rendered", "uploaded", "linked", "failed", "removed")

#: The sources the last written manifest listed, and on which line; the
#: manifest stage fills it, reading a reviewed manifest compares against it.
#: (Runs made before it was part of the schema get it when first written.)
_MANIFEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest_rows (id INTEGER PRIMARY KEY, line INTEGER NOT NULL);
"""

#: Subjects whose answer is known: injected fakes (real) and sources a
#: column says are real or bogus.  (Created when first written.)
_KNOWN_SCHEMA = """
CREATE TABLE IF NOT EXISTS known_answers (
    id INTEGER PRIMARY KEY,        -- the source id
    truth TEXT NOT NULL,           -- 'real' or 'bogus'
    origin TEXT NOT NULL,          -- 'injected' (zooprep fakes) or 'column'
    stream TEXT NOT NULL,          -- 'blind' or 'training'
    mag REAL,                      -- injected AB magnitude
    snr REAL,                      -- expected S/N on the difference image
    flux REAL,                     -- injected flux, nJy
    plan INTEGER                   -- the image plan a fake is drawn from
);
"""

#: Row blocks (`zooprep.rowstore`): each ``rows/<block>.sqlite`` and how to
#: read it.  (Created when first written.)
_BLOCKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS row_blocks (
    block INTEGER PRIMARY KEY,     -- rows/<block>.sqlite
    tbl TEXT NOT NULL,             -- the table in it
    id_column TEXT NOT NULL,       -- its (indexed) id column
    kinds TEXT NOT NULL,           -- JSON {column: 'bool'|'datetime'|'date'}
    fill TEXT NOT NULL             -- JSON {column: value for NULL or missing}
);
"""

#: Sources per transaction when adding them from a block.
_BLOCK_CHUNK = 100_000

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    seq INTEGER PRIMARY KEY,        -- selection order, 0-based
    id INTEGER NOT NULL UNIQUE,     -- the source id (64-bit)
    status TEXT NOT NULL,
    stage TEXT,                     -- stage that failed the row
    reason TEXT,                    -- why it failed (one line)
    grp TEXT,                       -- image group, for rendering
    row TEXT NOT NULL,              -- the source's columns, JSON
    files TEXT,                     -- JSON list of paths relative to the run
    padded INTEGER,                 -- 1 when a cutout reached past an image edge
    subject_id TEXT,                -- Panoptes subject id, once created
    upload TEXT,                    -- JSON of upload details (media, links)
    block INTEGER                   -- row in rows/<block>.sqlite (row is then '')
);
CREATE INDEX IF NOT EXISTS sources_status ON sources(status);
CREATE INDEX IF NOT EXISTS sources_subject ON sources(subject_id);
CREATE INDEX IF NOT EXISTS sources_grp ON sources(COALESCE(grp, ''), seq);
"""
    + _MANIFEST_SCHEMA
)

_UPDATABLE = {
    "status",
    "stage",
    "reason",
    "grp",
    "files",
    "padded",
    "subject_id",
    "upload",
    "row",
}


def _json_default(value: Any) -> Any:
    """Turn numpy, pandas and datetime scalars into JSON-able Python values."""
    if hasattr(value, "item") and callable(value.item):  # numpy / pandas scalars
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    if value is None or _is_na(value):
        return None
    return str(value)


def _is_na(value: Any) -> bool:
    """True for pandas' NA / NaT."""
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean(value: Any) -> Any:
    """Map NaN and pandas missing values to None, keep everything else."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, bytes):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return value
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


_ENCODER = json.JSONEncoder(
    default=_json_default, allow_nan=False, separators=(",", ":")
)


def encode_row(row: Mapping[str, Any]) -> str:
    """Serialise a source's columns to JSON, keeping 64-bit integers exact.

    NaN and missing values become ``null``; numpy scalars become Python ones;
    bytes (e.g. alert stamps) are dropped: they stay in their files.
    """
    clean: dict[str, Any] = {}
    for k, v in row.items():
        kind = type(v)
        if kind is str or kind is int or kind is bool or v is None:
            clean[str(k)] = v  # the common case, as fast as possible
        elif kind is float:
            clean[str(k)] = None if v != v else v  # NaN is not equal to itself
        elif not isinstance(v, bytes):
            clean[str(k)] = _clean(v)
    return _ENCODER.encode(clean)


def decode_row(text: str) -> dict[str, Any]:
    """Inverse of `encode_row`."""
    value: dict[str, Any] = json.loads(text)
    return value


def saved_count(run: str | os.PathLike[str], statuses: Iterable[str]) -> int:
    """Sources of a closed run in ``statuses`` (read-only; for error messages)."""
    wanted = list(statuses)
    with Run.open(run, lock=False) as r:
        return r.count(wanted) if wanted else 0


@dataclass
class Source:
    """One source of the run, as the state holds it."""

    seq: int
    id: int
    status: str
    stage: str | None = None
    reason: str | None = None
    grp: str | None = None
    row: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    padded: bool = False
    subject_id: str | None = None
    upload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KnownAnswer:
    """A subject whose answer is known (see ``zooprep fakes``).

    Attributes
    ----------
    id : int
        The source id.
    truth : {'real', 'bogus'}
        The answer.
    origin : {'injected', 'column'}
        A fake drawn by zooprep, or a source a column named.
    stream : {'blind', 'training'}
        Shown like any subject (no feedback), or a training subject.
    mag, snr, flux : float or None
        Injected AB magnitude, expected S/N, flux in nJy.
    plan : int or None
        Index of the image plan (``RUN/fakes/<plan>.npz``) of a fake.
    """

    id: int
    truth: str
    origin: str
    stream: str = "blind"
    mag: float | None = None
    snr: float | None = None
    flux: float | None = None
    plan: int | None = None


@dataclass
class AddResult:
    """What `Run.add_sources` did."""

    added: int = 0
    already_in_run: int = 0
    duplicates: list[int] = field(default_factory=list)


class Run:
    """An open run directory.

    Use `Run.create` for a new run and `Run.open` for an existing one, as a
    context manager.  Unless ``lock=False`` (read-only commands such as
    ``status``), the run is locked for this process: a second process gets
    `~zooprep.errors.RunLocked`, naming the holder's pid.

    Parameters
    ----------
    path : str or pathlib.Path
        The run directory.
    lock : bool
        Take the run's lock (every stage does; ``status`` and ``preview`` do not).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, Run.create(tmp + "/run") as run:
    ...     added = run.add_sources([{"diaSourceId": 506428274000265570, "visit": 1}],
    ...                             id_column="diaSourceId").added
    ...     run.save(RenderOptions(sizes=(32, 64)))
    ...     added, run.settings.render.sizes, run.settings.select
    (1, (32, 64), None)
    """

    STATE = STATE_FILE
    SETTINGS = "zooprep.toml"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike[str], *, lock: bool = True) -> None:
        self.path = Path(path)
        self._lock_fh: Any = None
        self._connection: sqlite3.Connection | None = None
        self._lock = lock
        self._document: dict[str, Any] | None = None
        self._settings: Settings | None = None
        self._has_block = True  # the state has sources.block (format 1 may not)
        self._blocks: dict[int, BlockInfo] | None = None
        self._block_rows: BlockRows | None = None

    # -- opening and closing --------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, exist_ok: bool = False) -> Run:
        """Create a new run directory (or open it when ``exist_ok`` and it is a run).

        The state file appears whole or not at all: it is built under a
        temporary name and renamed into place, so a run killed while it was
        being created is created again by the same command.
        """
        p = Path(path)
        if (p / cls.STATE).exists():
            if exist_ok:
                return cls.open(p)
            raise RunError(f"{p} is already a zooprep run; use --append to add sources")
        if p.exists() and not p.is_dir():
            raise RunError(f"{p} exists and is not a directory")
        if p.is_dir() and any(not _creation_leftover(f.name) for f in p.iterdir()):
            raise RunError(
                f"{p} is not empty and is not a zooprep run directory; "
                "choose a new directory"
            )
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run directory {p}: {exc.strerror}") from None
        run = cls(p)
        run._acquire_lock()
        try:
            run._build_state()
            run._connect()
        except BaseException:
            run.close()
            raise
        return run

    def _build_state(self) -> None:
        """Write a new, empty state file under a temporary name, then rename it."""
        for leftover in self.path.glob(f".{self.STATE}.*.tmp*"):
            leftover.unlink()
        tmp = temporary_name(self.path / self.STATE)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            _init_state(db)
        finally:
            db.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / self.STATE)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, lock: bool = True) -> Run:
        """Open an existing run directory."""
        p = Path(path)
        if not p.is_dir():
            raise RunError(
                f"no run directory at {p}; start one with 'zooprep select {p} ...'"
            )
        if not (p / cls.STATE).is_file():
            raise RunError(
                f"{p} is not a zooprep run directory (no {cls.STATE}); start a run "
                f"there with 'zooprep select {p} ...'"
            )
        run = cls(p, lock=lock)
        run._connect()
        return run

    def _acquire_lock(self) -> None:
        """Take the run's exclusive lock, or say who holds it."""
        lock_path = self.path / self.LOCK
        try:
            fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the run's life
        except OSError as exc:
            raise RunError(
                f"run directory {self.path} is not writable: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunLocked(
                f"run directory {self.path} is in use by process {holder}; "
                "wait for it to finish or stop it"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def _connect(self) -> None:
        """Open the state database and check its format version."""
        if self._lock and self._lock_fh is None:
            self._acquire_lock()
        state = self.path / self.STATE
        try:
            if self._lock and not os.access(self.path, os.W_OK):
                self.close()
                raise RunError(f"run directory {self.path} is not writable")
            uri = f"file:{state}" + ("" if self._lock else "?mode=ro")
            db = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30
            )
            if self._lock:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            if self._lock and _unfinished(db):
                # made by an older zooprep that was killed while creating it
                _init_state(db)
            version = db.execute(
                "SELECT value FROM meta WHERE key='format_version'"
            ).fetchone()
            columns = {r[1] for r in db.execute("PRAGMA table_info(sources)")}
            if self._lock and columns and "block" not in columns:
                # a run made before row blocks: add the column (NULL: JSON row)
                db.execute("ALTER TABLE sources ADD COLUMN block INTEGER")
                columns.add("block")
            self._has_block = "block" in columns
        except sqlite3.DatabaseError as exc:
            self.close()
            full = storage_error(exc, self.path, "nothing was changed")
            if full is not None:
                raise full from None
            raise RunError(
                f"run state {state} is unreadable ({exc}); it is not a "
                "zooprep state file or it is damaged"
            ) from None
        if version is None:
            db.close()
            self.close()
            raise RunError(f"run state {state} has no format version; it is damaged")
        if int(version[0]) > FORMAT_VERSION:
            db.close()
            self.close()
            raise RunError(
                f"run {self.path} was made by a newer zooprep (format "
                f"{version[0]} > {FORMAT_VERSION}); upgrade zooprep"
            )
        self._connection = db

    def close(self) -> None:
        """Close the state and release the lock."""
        if self._block_rows is not None:
            self._block_rows.close()
            self._block_rows = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing the file releases the flock
            self._lock_fh = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _db(self) -> sqlite3.Connection:
        """The state database connection (this module's queries only)."""
        if self._connection is None:
            raise RunError(f"run {self.path} is closed")
        return self._connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several updates into one commit (faster for bulk progress)."""
        with _tx(self._db):
            yield

    # -- settings -------------------------------------------------------------

    def _read_document(self) -> dict[str, Any]:
        """``zooprep.toml`` parsed (empty when absent); read once, then cached."""
        if self._document is None:
            path = self.path / self.SETTINGS
            if not path.exists():
                return {}
            try:
                self._document = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise RunError(f"{path} is not valid TOML: {exc}") from None
        return self._document

    @property
    def settings(self) -> Settings:
        """The saved settings of each stage, typed (`~zooprep.options.Settings`).

        ``run.settings.select.kind``, ``run.settings.render.chunk_size``:
        each section resolved with its defaults, None for a stage that never
        saved one.

        Raises
        ------
        RunError
            ``zooprep.toml`` is not valid TOML, or holds a bad value.
        """
        if self._settings is None:
            document = self._read_document()
            try:
                settings = Settings.from_toml(document)
            except InputError as exc:
                raise RunError(f"{self.path / self.SETTINGS} {exc}") from None
            if not document:
                return settings  # not cached: a new run's file may appear
            self._settings = settings
        return self._settings

    def save(self, options: Options) -> None:
        """Replace the options' section of ``zooprep.toml`` (atomically).

        The other sections, also those zooprep does not know, stay as they
        are.  What is written is `~zooprep.options.Options.to_toml`.
        """
        document = dict(self._read_document())
        document[options.SECTION] = options.to_toml()
        text = _HEADER + tomli_w.dumps(document)
        atomic_write(self.path / self.SETTINGS, text.encode("utf-8"), fsync=True)
        self._document = document
        self._settings = None

    # -- notes ----------------------------------------------------------------

    def note(self, key: str, value: str) -> None:
        """Remember one fact about the run in its state (committed at once).

        For what a stage did once outside the run and must not do again on
        resume, e.g. ``upload`` setting a workflow's ``subject_viewer``.
        """
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (f"note:{key}", value),
            )

    def noted(self, key: str) -> str | None:
        """The value `note` remembered under ``key``, or None."""
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (f"note:{key}",)
        ).fetchone()
        return None if row is None else str(row[0])

    # -- sources --------------------------------------------------------------

    def add_sources(
        self,
        rows: Iterable[Mapping[str, Any]],
        id_column: str,
        *,
        group: Any = None,
        batch: int = 5000,
    ) -> AddResult:
        """Add sources with status ``selected``; ids already in the run are kept as they are.

        Parameters
        ----------
        rows : iterable of mapping
            The sources' columns; streamed, never held all at once.
        id_column : str
            Column holding each source's integer id.
        group : callable, optional
            ``group(row) -> str``: the image group of a row (render partitions by it).
        batch : int
            Rows per transaction.

        Returns
        -------
        AddResult
            Counts of added rows and rows already present, and ids that were
            duplicated within ``rows``.
        """
        db = self._db
        result = AddResult()
        seq = db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM sources").fetchone()[0]
        pending: list[tuple[Any, ...]] = []
        seen_new: set[int] = set()

        def flush() -> None:
            nonlocal seq
            if not pending:
                return
            with _tx(db):
                for item in pending:
                    cur = db.execute(
                        "INSERT INTO sources (seq, id, status, grp, row) "
                        "VALUES (?, ?, 'selected', ?, ?) ON CONFLICT(id) DO NOTHING",
                        (seq, *item),
                    )
                    if cur.rowcount:
                        seq += 1
                        result.added += 1
                    else:
                        result.already_in_run += 1
            pending.clear()

        for n, row in enumerate(rows):
            source_id = _as_id(row.get(id_column), id_column, n)
            if source_id in seen_new:
                result.duplicates.append(source_id)
                continue
            seen_new.add(source_id)
            grp = group(row) if group is not None else None
            pending.append(
                (source_id, None if grp is None else str(grp), encode_row(row))
            )
            if len(pending) >= batch:
                flush()
        flush()
        return result

    # -- rows in blocks (zooprep.rowstore) ------------------------------------------

    def add_selection(
        self,
        selection: SqliteSelection,
        id_column: str,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
        progress: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> AddResult | None:
        """Add the rows of an SQLite source, copied by SQLite into a new block.

        Like `add_sources` (ids already in the run are kept as they are),
        for the rows of ``selection`` in ascending id order, only ``ids`` and
        at most ``limit`` of them; rows are grouped by
        `~zooprep.readers.base.image_group`.

        Parameters
        ----------
        selection : SqliteSelection
            The source file, table and filter condition.
        id_column : str
            The id column.
        ids : sequence of int, optional
            Only these ids.
        limit : int, optional
            Only the first ``limit`` matching rows (by id).
        progress : callable, optional
            Called with the number of rows recorded, after each transaction.
        stop : callable, optional
            Polled; True stops after the rows recorded so far.

        Returns
        -------
        AddResult or None
            None when these rows need `add_sources` (ids that are not unique
            integers): nothing was added.
        """
        number = self._next_block()
        tmp = tmp_name(self.path, number)
        try:
            built = build_from_sqlite(
                tmp,
                selection,
                id_column,
                number=number,
                ids=ids,
                limit=limit,
                stop=stop,
            )
        except Stopped:
            return AddResult()
        if built is None:
            return None
        return self._add_block(built, tmp, progress, stop)

    def add_batches(
        self,
        batches: Iterable[ColumnBatch],
        id_column: str,
        *,
        progress: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> AddResult | None:
        """Add sources from column batches (in ascending id order) through a new block.

        As `add_selection`; None when the rows need `add_sources` (nothing
        was added).
        """
        number = self._next_block()
        tmp = tmp_name(self.path, number)
        try:
            built = build_from_batches(
                tmp, batches, id_column, number=number, stop=stop
            )
        except Stopped:
            return AddResult()
        if built is None:
            return None
        return self._add_block(built, tmp, progress, stop)

    def _next_block(self) -> int:
        """The number of the next block; removes block files nobody refers to."""
        folder = self.path / BLOCK_DIR
        folder.mkdir(exist_ok=True)
        known = set(self._block_infos())
        for entry in folder.iterdir():
            number = block_number(entry.name)
            if number is None or number not in known:
                entry.unlink(missing_ok=True)  # left by a killed select
        return max(known, default=0) + 1

    def _add_block(
        self,
        built: BuiltBlock,
        tmp: Path,
        progress: Callable[[int], None] | None,
        stop: Callable[[], bool] | None,
    ) -> AddResult:
        """Move a written block into place and add its sources, in transactions."""
        info = built.info
        final = self.path / info.file
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        db = self._db
        result = AddResult()
        seq = db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM sources").fetchone()[0]
        t, idc = f"zp_block.{quote(info.table)}", quote(info.id_column)
        chunk = f"SELECT {idc} AS i FROM {t} WHERE {idc} > ? ORDER BY {idc}"
        first = f"SELECT {idc} AS i FROM {t} ORDER BY {idc}"
        bounds = f"SELECT MIN(i), MAX(i), COUNT(*) FROM ({{}} LIMIT {_BLOCK_CHUNK})"
        insert = (
            "INSERT INTO main.sources (seq, id, status, grp, row, block) "
            f"SELECT ? + row_number() OVER (ORDER BY {idc}) - 1, {idc}, 'selected', "
            f"{_group_sql(built.columns)}, '', ? FROM {t} "
            f"WHERE {idc} BETWEEN ? AND ?"
        )
        kinds, fill = kinds_json(info)
        db.execute("ATTACH DATABASE ? AS zp_block", (f"file:{final}?mode=ro",))
        try:
            last: int | None = None
            recorded = False
            while True:
                if last is None:
                    lo, hi, n = db.execute(bounds.format(first)).fetchone()
                else:
                    lo, hi, n = db.execute(bounds.format(chunk), (last,)).fetchone()
                if not n:
                    break
                with _tx(db):
                    if not recorded:
                        for statement in _BLOCKS_SCHEMA.strip().split(";"):
                            if statement.strip():
                                db.execute(statement)
                        db.execute(
                            "INSERT INTO row_blocks VALUES (?, ?, ?, ?, ?)",
                            (info.number, info.table, info.id_column, kinds, fill),
                        )
                        db.execute(
                            "UPDATE meta SET value = ? WHERE key = 'format_version' "
                            "AND CAST(value AS INTEGER) < ?",
                            (str(FORMAT_VERSION), FORMAT_VERSION),
                        )
                    overlap = db.execute(
                        "SELECT 1 FROM main.sources WHERE id BETWEEN ? AND ? LIMIT 1",
                        (lo, hi),
                    ).fetchone()
                    sql = insert
                    if overlap:
                        sql += f" AND {idc} NOT IN (SELECT id FROM main.sources)"
                    added = db.execute(sql, (seq, info.number, lo, hi)).rowcount
                if not recorded:
                    recorded = True
                    if self._blocks is not None:
                        self._blocks[info.number] = info
                seq += added
                result.added += added
                result.already_in_run += n - added
                last = hi
                if progress is not None:
                    progress(n)
                if stop is not None and stop():
                    break
        finally:
            db.execute("DETACH DATABASE zp_block")
        if not recorded:
            final.unlink(missing_ok=True)
        self._drop_unused_blocks()
        return result

    def _drop_unused_blocks(self) -> None:
        """Forget and delete the blocks no source refers to (after a killed select)."""
        db = self._db
        for number in list(self._block_infos()):
            used = db.execute(
                "SELECT 1 FROM sources WHERE block = ? LIMIT 1", (number,)
            ).fetchone()
            if used:
                continue
            info = self._block_infos().pop(number)
            with _tx(db):
                db.execute("DELETE FROM row_blocks WHERE block = ?", (number,))
            (self.path / info.file).unlink(missing_ok=True)

    def _block_infos(self) -> dict[int, BlockInfo]:
        """The blocks the state records, by number (read once, then kept)."""
        if self._blocks is None:
            blocks: dict[int, BlockInfo] = {}
            if self._has_table("row_blocks"):
                for r in self._db.execute(
                    "SELECT block, tbl, id_column, kinds, fill FROM row_blocks"
                ):
                    blocks[int(r[0])] = block_info(*r)
            self._blocks = blocks
        return self._blocks

    def _block_rows_of(
        self, refs: Iterable[tuple[int, int | None]]
    ) -> dict[int, dict[str, Any]]:
        """The rows of ``(source id, block)`` pairs that are in blocks, by id."""
        wanted: dict[int, list[int]] = {}
        for sid, block in refs:
            if block is not None:
                wanted.setdefault(int(block), []).append(int(sid))
        found: dict[int, dict[str, Any]] = {}
        if not wanted:
            return found
        if self._block_rows is None:
            self._block_rows = BlockRows(self.path)
        blocks = self._block_infos()
        for block, ids in wanted.items():
            info = blocks.get(block)
            try:
                if info is None:
                    raise FileNotFoundError(block)
                rows = self._block_rows.rows(info, ids)
            except (FileNotFoundError, sqlite3.DatabaseError):
                raise RunError(
                    f"run {self.path}: the rows of {len(ids)} sources are in "
                    f"{BLOCK_DIR}/{block}.sqlite, which is missing or unreadable; "
                    "the run directory is damaged"
                ) from None
            missing = [i for i in ids if i not in rows]
            if missing:
                raise RunError(
                    f"run {self.path}: source {missing[0]} has no row in "
                    f"{BLOCK_DIR}/{block}.sqlite; the run directory is damaged"
                )
            found.update(rows)
        return found

    def _sources(self, rows: Sequence[tuple[Any, ...]]) -> list[Source]:
        """Sources from state rows (`_COLUMNS` plus block), rows read from blocks."""
        stored = self._block_rows_of((r[1], r[11]) for r in rows)
        out = [_to_source(r) for r in rows]
        if stored:
            for src, r in zip(out, rows, strict=True):
                if r[11] is not None:
                    src.row = stored[src.id]
        return out

    @property
    def _columns(self) -> str:
        """The state columns `_to_source` reads (block NULL in an old read-only run)."""
        return _COLUMNS + (", block" if self._has_block else ", NULL")

    def update(self, source_id: int, **values: Any) -> None:
        """Set state columns of one source (``status``, ``reason``, ``files``, ...)."""
        bad = set(values) - _UPDATABLE
        if bad:
            raise ValueError(f"not a state column: {sorted(bad)}")
        sets, params = [], []
        for key, value in values.items():
            if key in ("files", "upload", "row") and value is not None:
                value = json.dumps(value) if key != "row" else encode_row(value)
            if key == "padded" and value is not None:
                value = int(bool(value))
            sets.append(f"{key} = ?")
            params.append(value)
        if values.get("status") not in (None, "failed"):
            sets += ["stage = NULL", "reason = NULL"]
        if "row" in values and self._has_block:
            sets.append("block = NULL")  # the row is JSON from now on
        self._db.execute(
            f"UPDATE sources SET {', '.join(sets)} WHERE id = ?",
            (*params, int(source_id)),
        )

    def mark_failed(self, source_id: int, stage: str, reason: str) -> None:
        """Record that a stage failed on one source, and why."""
        self.update(
            source_id,
            status="failed",
            stage=stage,
            reason=" ".join(str(reason).split()),
        )

    def get(self, source_id: int) -> Source | None:
        """One source by id, or None."""
        cur = self._db.execute(
            f"SELECT {self._columns} FROM sources WHERE id = ?", (int(source_id),)
        )
        found = cur.fetchone()
        return self._sources([found])[0] if found else None

    def iter_sources(
        self,
        statuses: Iterable[str] | None = None,
        *,
        stage: str | None = None,
        page: int = 2000,
    ) -> Iterator[Source]:
        """Stream sources in selection order, optionally only some statuses.

        ``stage`` restricts ``failed`` rows to those failed by that stage.
        Pages through the state by ``seq``, so updates made while iterating
        are safe and memory stays flat.
        """
        where: list[str] = ["seq > ?"]
        params: list[Any] = [-1]
        if statuses is not None:
            clause, wanted = _status_clause(statuses, stage)
            where.append(clause)
            params += wanted
        sql = (
            f"SELECT {self._columns} FROM sources WHERE {' AND '.join(where)} "
            f"ORDER BY seq LIMIT {int(page)}"
        )
        last = -1
        while True:
            params[0] = last
            rows = self._db.execute(sql, params).fetchall()
            if not rows:
                return
            yield from self._sources(rows)
            last = rows[-1][0]

    def counts(self) -> dict[str, int]:
        """Number of sources per status (every status present, zeros included)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._db.execute(
            "SELECT status, COUNT(*) FROM sources GROUP BY status"
        ):
            out[status] = n
        return out

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])

    # -- what the stages ask ------------------------------------------------------

    def count(self, statuses: Iterable[str], *, stage: str | None = None) -> int:
        """How many sources `iter_sources` would yield for these arguments."""
        clause, params = _status_clause(statuses, stage)
        sql = f"SELECT COUNT(*) FROM sources WHERE {clause}"
        return int(self._db.execute(sql, params).fetchone()[0])

    def count_subjects(self) -> int:
        """How many sources have a Zooniverse subject."""
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM sources WHERE subject_id IS NOT NULL"
            ).fetchone()[0]
        )

    def iter_to_render(
        self, statuses: Iterable[str], *, page: int = 2000
    ) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """Yield ``(id, seq, row)`` of rows to render, in image-group order.

        Rows with one of ``statuses``, and rows the render stage failed.
        Pages through the ``(grp, seq)`` index: within the current group by
        ``seq``, then on to the next groups, so each page is an index seek and
        planning a million rows stays linear.
        """
        clause, params = _status_clause([*statuses, "failed"], "render")
        cols = "seq, id, row, COALESCE(grp, ''), " + (
            "block" if self._has_block else "NULL"
        )
        same = (
            f"SELECT {cols} FROM sources INDEXED BY sources_grp WHERE "
            f"COALESCE(grp, '') = ? AND seq > ? AND {clause} ORDER BY seq "
            f"LIMIT {int(page)}"
        )
        later = (
            f"SELECT {cols} FROM sources INDEXED BY sources_grp WHERE "
            f"COALESCE(grp, '') > ? AND {clause} ORDER BY COALESCE(grp, ''), seq "
            f"LIMIT {int(page)}"
        )
        grp, seq = "", -1
        while True:
            rows = self._db.execute(same, (grp, seq, *params)).fetchall()
            if not rows:
                rows = self._db.execute(later, (grp, *params)).fetchall()
                if not rows:
                    return
            stored = self._block_rows_of([(r[1], r[4]) for r in rows])
            for found in rows:
                row = decode_row(found[2]) if found[4] is None else stored[found[1]]
                yield found[1], found[0], row
            seq, grp = rows[-1][0], rows[-1][3]

    def max_files(
        self,
        suffixes: Iterable[str],
        statuses: Iterable[str],
        *,
        stage: str | None = None,
    ) -> int:
        """The most files ending in one of ``suffixes`` that one source has.

        Counted over the sources `iter_sources` yields for ``statuses`` and
        ``stage``; case-insensitive suffixes; 0 when none has any.
        """
        ends = list(suffixes)
        like = " OR ".join("lower(j.value) LIKE ?" for _ in ends)
        clause, params = _status_clause(statuses, stage)
        found = self._db.execute(
            "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM sources, "
            f"json_each(sources.files) AS j WHERE ({like}) AND ({clause}) "
            "GROUP BY sources.id)",
            [f"%{e.lower()}" for e in ends] + params,
        ).fetchone()
        return int(found[0] or 0)

    def count_without(self, suffixes: Iterable[str], statuses: Iterable[str]) -> int:
        """How many sources of ``statuses`` have no file ending in one of ``suffixes``.

        Case-insensitive suffixes, like `max_files`.
        """
        ends = list(suffixes)
        like = " OR ".join("lower(j.value) LIKE ?" for _ in ends)
        clause, params = _status_clause(statuses, None)
        found = self._db.execute(
            f"SELECT COUNT(*) FROM sources WHERE ({clause}) AND NOT EXISTS "
            f"(SELECT 1 FROM json_each(sources.files) AS j WHERE {like})",
            params + [f"%{e.lower()}" for e in ends],
        ).fetchone()
        return int(found[0] or 0)

    def ids_between(self, low: int, high: int) -> list[int]:
        """Source ids from ``low`` to ``high`` (inclusive), ascending."""
        return [
            int(i)
            for (i,) in self._db.execute(
                "SELECT id FROM sources WHERE id BETWEEN ? AND ? ORDER BY id",
                (int(low), int(high)),
            )
        ]

    def last_id(self) -> int | None:
        """The largest source id recorded (None when there is none)."""
        row = self._db.execute("SELECT MAX(id) FROM sources WHERE id >= 0").fetchone()
        return None if row[0] is None else int(row[0])

    def record_manifest(self, written: Iterable[tuple[int, int]]) -> None:
        """Remember the ``(source id, line)`` pairs of the manifest just written."""
        with self.transaction():
            for statement in _MANIFEST_SCHEMA.strip().split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("DELETE FROM manifest_rows")
            self._db.executemany(
                "INSERT INTO manifest_rows (id, line) VALUES (?, ?)", written
            )

    def manifest_ids(self) -> list[int]:
        """Ids the last written manifest listed that are still sources, by ``seq``.

        Empty when no manifest was recorded.
        """
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='manifest_rows'"
        ).fetchone()
        if not exists:
            return []
        return [
            int(sid)
            for (sid,) in self._db.execute(
                "SELECT m.id FROM manifest_rows m JOIN sources s ON s.id = m.id "
                "ORDER BY s.seq"
            )
        ]

    # -- known answers -------------------------------------------------------------

    def _has_table(self, name: str) -> bool:
        """Whether the state has table ``name`` (older runs lack the newer ones)."""
        return (
            self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
            ).fetchone()
            is not None
        )

    def known_answers(self) -> dict[int, KnownAnswer]:
        """Every known answer of the run, by source id (empty when none)."""
        if not self._has_table("known_answers"):
            return {}
        return {
            int(r[0]): KnownAnswer(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7])
            for r in self._db.execute(
                "SELECT id, truth, origin, stream, mag, snr, flux, plan "
                "FROM known_answers ORDER BY id"
            )
        }

    def record_known(self, answers: Iterable[KnownAnswer]) -> int:
        """Record (or replace) known answers of sources already in the run."""
        listed = list(answers)
        with self.transaction():
            self._write_known(listed)
        return len(listed)

    def _write_known(self, answers: Iterable[KnownAnswer]) -> None:
        """Insert or replace known answers (inside a transaction)."""
        for statement in _KNOWN_SCHEMA.strip().split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.executemany(
            "INSERT OR REPLACE INTO known_answers "
            "(id, truth, origin, stream, mag, snr, flux, plan) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (a.id, a.truth, a.origin, a.stream, a.mag, a.snr, a.flux, a.plan)
                for a in answers
            ],
        )

    def clear_known(self, origin: str) -> int:
        """Forget the known answers of one origin; return how many."""
        if not self._has_table("known_answers"):
            return 0
        with self.transaction():
            cur = self._db.execute(
                "DELETE FROM known_answers WHERE origin = ?", (origin,)
            )
        return int(cur.rowcount)

    def add_fakes(
        self,
        rows: Sequence[tuple[Mapping[str, Any], str | None]],
        id_column: str,
        answers: Sequence[KnownAnswer],
        before: Sequence[int],
    ) -> int:
        """Add injected fakes as sources, mixed in among the run's sources.

        In one transaction: every source's selection order (``seq``) is
        renumbered so that fake ``k`` comes just before the source at
        position ``before[k]`` of the current order (the number of sources
        for the end), and the fakes and their known answers are recorded.
        Files already written keep their paths (they are stored).

        Parameters
        ----------
        rows : sequence of (mapping, str or None)
            Each fake's columns and image group.
        id_column : str
            The id column of the rows.
        answers : sequence of KnownAnswer
            One per row.
        before : sequence of int
            Where each fake goes in the selection order.

        Returns
        -------
        int
            Fakes added.
        """
        db = self._db
        ids = [
            _as_id(row.get(id_column), id_column, n) for n, (row, _) in enumerate(rows)
        ]
        taken = (
            db.execute(
                f"SELECT id FROM sources WHERE id IN ({', '.join('?' * len(ids))})", ids
            ).fetchall()
            if ids
            else []
        )
        if taken:
            raise InputError(f"fake id {taken[0][0]} is already a source of the run")
        with _tx(db):
            old = [
                int(s) for (s,) in db.execute("SELECT seq FROM sources ORDER BY seq")
            ]
            order = sorted(range(len(rows)), key=lambda k: (before[k], k))
            mapping: dict[int, int] = {}
            new_seq: dict[int, int] = {}
            nxt, pos = 0, 0
            for position, seq in enumerate([*old, None]):
                while pos < len(order) and before[order[pos]] <= position:
                    new_seq[order[pos]] = nxt
                    nxt += 1
                    pos += 1
                if seq is not None:
                    mapping[seq] = nxt
                    nxt += 1
            db.execute("UPDATE sources SET seq = -1 - seq")
            db.executemany(
                "UPDATE sources SET seq = ? WHERE seq = ?",
                [(new, -1 - seq) for seq, new in mapping.items()],
            )
            db.executemany(
                "INSERT INTO sources (seq, id, status, grp, row) "
                "VALUES (?, ?, 'selected', ?, ?)",
                [
                    (new_seq[k], ids[k], grp, encode_row(row))
                    for k, (row, grp) in enumerate(rows)
                ],
            )
            self._write_known(answers)
        return len(rows)

    def remove_fakes(self) -> int:
        """Delete the injected fakes (sources and known answers); return how many."""
        if not self._has_table("known_answers"):
            return 0
        with self.transaction():
            ids = [
                int(i)
                for (i,) in self._db.execute(
                    "SELECT id FROM known_answers WHERE origin = 'injected'"
                )
            ]
            self._db.executemany(
                "DELETE FROM sources WHERE id = ?", [(i,) for i in ids]
            )
            self._db.execute("DELETE FROM known_answers WHERE origin = 'injected'")
        return len(ids)

    def failures(self, limit: int | None = None) -> list[Source]:
        """Failed sources, in selection order."""
        sql = (
            f"SELECT {self._columns} FROM sources WHERE status = 'failed' ORDER BY seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._sources(self._db.execute(sql).fetchall())

    def cutout_path(self, source: Source, suffix: str = ".png") -> str:
        """Relative path of a source's file: ``cutouts/<chunk>/<id><suffix>``.

        Chunk folders are named by the first selection index they hold, as in
        lsst.analysis.ap (``(seq // chunk_size) * chunk_size``), so no folder
        holds more than ``chunk_size`` sources.
        """
        render = self.settings.render
        chunk = render.chunk_size if render else RenderOptions.default("chunk_size")
        return cutout_relpath(source.seq, source.id, chunk, suffix)


def cutout_relpath(
    seq: int, source_id: int, chunk_size: int, suffix: str = ".png"
) -> str:
    """``cutouts/<(seq // chunk_size) * chunk_size>/<id><suffix>``."""
    return f"cutouts/{(seq // chunk_size) * chunk_size}/{source_id}{suffix}"


#: The first line of ``zooprep.toml``.
_HEADER = "# zooprep run settings. Written by zooprep; safe to read, edit with care.\n"

_COLUMNS = "seq, id, status, stage, reason, grp, row, files, padded, subject_id, upload"


def _to_source(r: tuple[Any, ...]) -> Source:
    """A `Source` from one state row (its row left empty when it is in a block)."""
    return Source(
        seq=r[0],
        id=r[1],
        status=r[2],
        stage=r[3],
        reason=r[4],
        grp=r[5],
        row=decode_row(r[6]) if r[11] is None else {},
        files=json.loads(r[7]) if r[7] else [],
        padded=bool(r[8]),
        subject_id=r[9],
        upload=json.loads(r[10]) if r[10] else {},
    )


def _as_id(value: Any, column: str, index: int) -> int:
    """A source id as an exact int, refusing floats that may have lost digits."""
    if isinstance(value, bool) or value is None:
        raise InputError(f"row {index + 1}: id column {column!r} is empty")
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if not value.is_integer() or abs(value) >= 2**53:
            raise InputError(
                f"row {index + 1}: id {value!r} in column {column!r} is a "
                "float and may have lost digits; read ids as integers"
            )
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(
            f"row {index + 1}: id {value!r} in column {column!r} is not an integer"
        ) from None


def _group_sql(columns: Sequence[str]) -> str:
    """SQL for `~zooprep.readers.base.image_group` over a block's columns."""
    have = set(columns)
    cases = []
    if {"visit", "detector"} <= have:
        v, d = quote("visit"), quote("detector")
        cases.append(
            f"WHEN {v} IS NOT NULL AND {d} IS NOT NULL "
            f"THEN CAST({v} AS TEXT) || '/' || CAST({d} AS TEXT)"
        )
    if "image" in have:
        i = quote("image")
        cases.append(f"WHEN {i} IS NOT NULL THEN CAST({i} AS TEXT)")
    return f"CASE {' '.join(cases)} ELSE NULL END" if cases else "NULL"


def _fsync_dir(folder: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _creation_leftover(name: str) -> bool:
    """Whether a file name is what an interrupted ``Run.create`` leaves behind."""
    # The temporary state and SQLite's files beside it (``.tmp-journal``).
    return name == Run.LOCK or (name.startswith(f".{Run.STATE}.") and ".tmp" in name)


def _init_state(db: sqlite3.Connection) -> None:
    """Create the tables of a new run's state and record its format version."""
    db.executescript(_SCHEMA)
    with _tx(db):
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('format_version', ?)",
            (str(_FIRST_FORMAT),),
        )
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('created', ?)",
            (datetime.now().astimezone().isoformat(timespec="seconds"),),
        )


def _unfinished(db: sqlite3.Connection) -> bool:
    """Whether a state file was left unfinished by a killed ``Run.create``.

    That is: no format version recorded, and no source in it.
    """
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    if (
        "meta" in tables
        and db.execute("SELECT 1 FROM meta WHERE key='format_version'").fetchone()
    ):
        return False
    return (
        "sources" not in tables
        or not db.execute("SELECT 1 FROM sources LIMIT 1").fetchone()
    )


def _status_clause(statuses: Iterable[str], stage: str | None) -> tuple[str, list[str]]:
    """SQL condition and parameters: one of ``statuses``; failed only by ``stage``."""
    wanted = list(statuses)
    if stage is not None and "failed" in wanted:
        others = [s for s in wanted if s != "failed"]
        marks = ", ".join("?" * len(others))
        clause = f"(status IN ({marks}) OR (status = 'failed' AND stage = ?))"
        return clause, [*others, stage]
    return f"status IN ({', '.join('?' * len(wanted))})", wanted


@contextlib.contextmanager
def _tx(db: sqlite3.Connection) -> Iterator[None]:
    """An explicit transaction on an autocommit connection."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite ends the transaction by itself after some errors (a full
        # disk, an I/O error); a ROLLBACK then would raise "no transaction is
        # active" and hide the real error.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
