"""What every source reader offers the select stage.

A reader (`zooprep.readers.apdb.ApdbReader`, `zooprep.readers.catalog.CatalogReader`,
`zooprep.readers.alerts.AlertReader`) knows one kind of source.  The select
stage asks it for two things, always **in ascending id order** so that every
backend gives the same answer for the same filter:

* `SourceReader.scan`: chunks of ids (``int64``) and, optionally, the values
  of one more column, for counting, sampling and stratifying without loading
  whole rows;
* `SourceReader.rows`: the rows themselves (dicts keyed by DiaSource column
  names, plus ``instrument``), all of them, the first ``limit`` or only the
  given ids.

Select calls `SourceReader.open` before anything else and
`SourceReader.close` at the end, whatever happens (readers that hold nothing
open make both do nothing).  Readers that read files (alerts) also report
the files they could not read in `SourceReader.failures`, so that the stage
records them and carries on, and list every file in `SourceReader.paths`, so
that a file that failed before and reads well now is retired.

A reader may also offer a faster path, used by select when it has one:

* `SqliteCopyReader.sqlite_selection`: the SQLite file, table and SQL
  condition of the matching rows, which SQLite then copies into the run by
  itself (`zooprep.readers.apdb.ApdbReader` for an SQLite APDB);
* `ColumnBatchReader.column_batches`: the matching rows as columns
  (`zooprep.readers.catalog.CatalogReader`), stored with one call per batch.

Either may answer None (this source, filter or column types need the rows
one at a time); readers without them (brokers, streams, your own) are read
with `SourceReader.rows` as before.  Both paths give the later stages the
same rows.

A reader of your own plugs in as ``zooprep.select(run, reader=MyReader(...),
where=..., limit=...)``: its ``kind`` and ``describe()`` become the run's
``[select] kind`` and ``source``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from zooprep.errors import RateLimited
from zooprep.readers.where import Expr, to_mask, unknown_column

__all__ = [
    "ColumnBatch",
    "ColumnBatchReader",
    "ReadFailure",
    "SourceReader",
    "SqliteCopyReader",
    "SqliteSelection",
    "StreamReader",
    "failure_id",
    "image_group",
    "kept_positions",
]


@dataclass(frozen=True)
class ReadFailure:
    """A file (alert packet) that could not be read, and why (one line)."""

    path: str
    reason: str
    format: str | None = None


@runtime_checkable
class SourceReader(Protocol):
    """A source of DiaSource-like rows (APDB, catalog file, alert packets)."""

    #: ``'apdb'``, ``'catalog'``, ``'alerts'``, or the kind of your own source.
    kind: str
    #: The column holding each row's 64-bit integer id.
    id_column: str
    #: The instrument the source names (or the one given), None when unknown.
    instrument: str | None
    #: The run folder where the reader keeps what it read (a broker's
    #: answers, histories), or None: select makes the run first when set.
    store: Path | None
    #: Set when a rate limit ended reading early: select records what was
    #: read and raises it.  None for readers that are never rate limited.
    stopped: RateLimited | None

    def open(self) -> Any:
        """Connect or read what is needed before `check` (select calls it first)."""
        ...

    def close(self) -> None:
        """Release what `open` took (select calls it last, also after an error)."""
        ...

    @property
    def paths(self) -> Sequence[str]:
        """The files read (empty for databases), to retire their old failures."""
        ...

    def describe(self) -> str:
        """Where the rows come from, without secrets (for logs and settings)."""
        ...

    def columns(self) -> list[str]:
        """The columns rows will have."""
        ...

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """Files that could not be read (empty for databases)."""
        ...

    def check(self, where: Expr | None, column: str | None = None) -> None:
        """Raise InputError now if the filter or ``column`` cannot be used."""
        ...

    def scan(
        self, where: Expr | None, column: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(ids, values)`` chunks of matching rows in ascending id order.

        ``ids`` is an ``int64`` array; ``values`` holds ``column`` (None when no
        column is asked for), with None/NaN for missing values.
        """
        ...

    def rows(
        self,
        where: Expr | None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield matching rows as dicts in ascending id order.

        ``ids`` (sorted) restricts the rows to those ids; ``limit`` stops after
        that many rows.
        """
        ...

    def group(self, row: Mapping[str, Any]) -> str | None:
        """The image group of a row: rows of one group share their images."""
        ...


@dataclass(frozen=True)
class SqliteSelection:
    """The rows a filter keeps, as a table of an SQLite file and an SQL condition.

    Attributes
    ----------
    uri : str
        ``file:`` URI of the database (read-only), for ``ATTACH``.
    table : str
        The table holding the rows.
    condition : str or None
        SQL condition on the table's columns with ``?`` parameters (None: all
        rows).
    params : tuple
        The condition's parameters.
    kinds : mapping of str to str
        How each column reads back: ``'plain'`` (as stored), ``'bool'``
        (0/1 as False/True), ``'datetime'`` or ``'date'`` (ISO text).
    fill : mapping of str to object
        Values for columns a row lacks or holds NULL in (``instrument``).
    """

    uri: str
    table: str
    condition: str | None
    params: tuple[Any, ...]
    kinds: Mapping[str, str]
    fill: Mapping[str, Any]


@dataclass(frozen=True)
class ColumnBatch:
    """Rows as columns: ``columns[k][i]`` is column ``names[k]`` of row ``i``.

    Values are Python ints, floats, str, bool or None; ``kinds`` and ``fill``
    as in `SqliteSelection`.
    """

    names: Sequence[str]
    columns: Sequence[Sequence[Any]]
    kinds: Mapping[str, str]
    fill: Mapping[str, Any]


@runtime_checkable
class SqliteCopyReader(Protocol):
    """A reader whose rows SQLite can copy into the run by itself (optional)."""

    def sqlite_selection(self, where: Expr | None) -> SqliteSelection | None:
        """The file, table and condition of the rows ``where`` keeps, or None.

        None means "read my rows one at a time" (not an SQLite file, or a
        filter or column type only `SourceReader.rows` handles exactly).
        Rows are grouped by `image_group`.
        """
        ...


@runtime_checkable
class ColumnBatchReader(Protocol):
    """A reader that can hand over its rows as columns (optional)."""

    def column_batches(
        self,
        where: Expr | None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> Iterator[ColumnBatch] | None:
        """The rows `SourceReader.rows` would yield, as column batches, or None.

        Rows are grouped by `image_group`.
        """
        ...


@runtime_checkable
class StreamReader(Protocol):
    """A source read as it arrives (a Kafka topic), batch by batch.

    Select records each batch's rows and failures in the run, then calls
    `commit`: what was committed is never read again, what was not is.
    """

    kind: str
    id_column: str
    instrument: str | None
    #: The run folder where the reader keeps its schemas and histories.
    store: Path
    #: Stop after this many messages (None: until the topic is drained).
    max_messages: int | None

    def open(self) -> Any:
        """Connect (select calls it first)."""
        ...

    def close(self) -> None:
        """Disconnect (select calls it last, also after an error)."""
        ...

    def describe(self) -> str:
        """Where the rows come from, without secrets."""
        ...

    @property
    def paths(self) -> Sequence[str]:
        """Files read (none for a stream)."""
        ...

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """Failures outside batches (none for a stream)."""
        ...

    def batches(self) -> Iterator[Any]:
        """Batches with ``rows``, ``failures``, ``messages`` until the stream ends."""
        ...

    def commit(self, batch: Any) -> None:
        """Mark a recorded batch as read."""
        ...

    def group(self, row: Mapping[str, Any]) -> str | None:
        """The image group of a row."""
        ...


def image_group(row: Mapping[str, Any]) -> str | None:
    """``"visit/detector"`` of a row, or its ``image`` column, or None.

    Examples
    --------
    >>> image_group({"visit": 943296, "detector": 168})
    '943296/168'
    """
    visit, detector = row.get("visit"), row.get("detector")
    if visit is not None and detector is not None:
        return f"{visit}/{detector}"
    image = row.get("image")
    return None if image is None else str(image)


def kept_positions(
    mask: np.ndarray,
    row_ids: np.ndarray,
    ids: Sequence[int] | None,
    limit: int | None,
) -> np.ndarray:
    """Positions of the rows ``mask`` keeps, only those in ``ids``, at most ``limit``.

    For readers that hold all rows in memory, with ``row_ids`` (``int64``,
    ascending) the id of each row.
    """
    positions = np.flatnonzero(mask)
    if ids is not None:
        wanted = np.asarray(sorted(int(i) for i in ids), dtype=np.int64)
        positions = positions[np.isin(row_ids[positions], wanted)]
    if limit is not None:
        positions = positions[: int(limit)]
    return positions


class InMemoryFilter:
    """Filtering shared by readers that hold every row in memory.

    A subclass sets ``ids`` (the id of each row), an empty ``_masks`` dict
    and gives `columns` and `_filter_frame`; `_mask` then evaluates and caches
    each ``--where`` filter once, and `check` validates it up front.
    """

    ids: np.ndarray
    _masks: dict[Expr, np.ndarray]
    store: Path | None = None
    stopped: RateLimited | None = None

    def open(self) -> Any:
        """Nothing to open: the rows were read when the reader was made."""
        return self

    def close(self) -> None:
        """Nothing to close."""

    def columns(self) -> list[str]:
        """Every column the rows have."""
        raise NotImplementedError

    def _filter_frame(self) -> Any:
        """The rows as a pandas DataFrame aligned with ``ids``."""
        raise NotImplementedError

    def _mask(self, where: Expr | None) -> np.ndarray:
        """Rows kept by a filter (cached per filter)."""
        if where is None:
            return np.ones(len(self.ids), dtype=bool)
        if where not in self._masks:
            self._masks[where] = to_mask(where, self._filter_frame())
        return self._masks[where]

    def check(self, where: Expr | None, column: str | None = None) -> None:
        """Raise InputError now if the filter or ``column`` cannot be used."""
        self._mask(where)
        if column is not None and column not in self.columns():
            raise unknown_column(column, self.columns(), "--stratify")


def failure_id(path: str) -> int:
    """A stable negative 64-bit id for a file that yielded no source id.

    Failed packets are recorded in the run under this id (real source ids are
    never negative), so ``zooprep status`` lists them and a later successful
    read can retire them.

    Examples
    --------
    >>> failure_id("/data/a.avro") == failure_id("/data/a.avro") < 0
    True
    """
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return -(int.from_bytes(digest[:8], "big") >> 1) - 1
