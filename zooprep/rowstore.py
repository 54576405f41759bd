"""Row blocks: the columns of bulk-selected sources, in SQLite files beside the state.

::

    RUN/rows/1.sqlite    one block: the rows one select copied, keyed by id
    RUN/rows/2.sqlite    ...

``state.sqlite`` keeps, for every source, its status, files and subject; the
source's own columns (its *row*) are either JSON in the state (sources added
row by row: brokers, streams, fakes, runs made before blocks existed) or a
row of a block, which the state names (``sources.block``).  A block is a copy
of the source's table made by SQLite itself (an APDB's ``DiaSource`` table
through ``ATTACH`` and ``INSERT INTO ... SELECT``), or written from a reader's
column batches, so no value passes through Python one at a time while
selecting.  The values are stored as the source has them; `BlockInfo.kinds`
says which columns read back as booleans or ISO dates, so a row read from a
block equals the row the JSON form gives.

A block is written under a temporary name (``rows/.N.sqlite.PID.tmp``),
flushed to disk and renamed into place before the state refers to it, and is
never changed afterwards: a process killed at any moment leaves at most a
temporary file or a block nobody refers to, both removed by the next select.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as quote_uri

if TYPE_CHECKING:
    from zooprep.readers.base import ColumnBatch, SqliteSelection

__all__ = [
    "BLOCK_DIR",
    "BlockInfo",
    "BlockRows",
    "BuiltBlock",
    "Stopped",
    "build_from_batches",
    "build_from_sqlite",
    "quote",
]

#: The folder of the run directory holding the blocks.
BLOCK_DIR = "rows"

#: How a stored value reads back: as it is, as a bool, or as ISO date text.
KINDS = ("plain", "bool", "datetime", "date")


class Stopped(Exception):
    """A stop was asked for while a block was being written (nothing kept)."""


def quote(name: str) -> str:
    """An SQL identifier in double quotes.

    Examples
    --------
    >>> quote('diaSourceId'), quote('odd"name')
    ('"diaSourceId"', '"odd""name"')
    """
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class BlockInfo:
    """What the state records about one block.

    Attributes
    ----------
    number : int
        The block's number (``rows/<number>.sqlite``).
    table : str
        The table in the block file.
    id_column : str
        The column holding the source id (indexed).
    kinds : dict
        Columns that do not read back as stored: ``'bool'``, ``'datetime'``
        or ``'date'`` (see `KINDS`).
    fill : dict
        Values for columns a row lacks or holds NULL in (the instrument).
    """

    number: int
    table: str
    id_column: str
    kinds: dict[str, str] = field(default_factory=dict)
    fill: dict[str, Any] = field(default_factory=dict)

    @property
    def file(self) -> str:
        """The block's path, relative to the run directory."""
        return f"{BLOCK_DIR}/{self.number}.sqlite"


@dataclass(frozen=True)
class BuiltBlock:
    """A block written by `build_from_sqlite` or `build_from_batches`.

    Attributes
    ----------
    info : BlockInfo
        To record in the state.
    rows : int
        Rows the block holds.
    columns : list of str
        Its columns, in row order.
    """

    info: BlockInfo
    rows: int
    columns: list[str]


def _to_bool(value: Any) -> Any:
    return value if value is None else bool(value)


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).isoformat()
        except ValueError:
            return value
    return value


def _to_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            return value
    return value


_CONVERT: dict[str, Callable[[Any], Any] | None] = {
    "plain": None,
    "bool": _to_bool,
    "datetime": _to_datetime,
    "date": _to_date,
}


def _fsync(path: Path) -> None:
    """Flush a file, then its directory, to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scratch(path: Path) -> sqlite3.Connection:
    """A connection to a new block file: no journal (the file is temporary)."""
    path.unlink(missing_ok=True)
    # URI filenames, so that the source can be attached read-only by URI
    con = sqlite3.connect(
        f"file:{quote_uri(os.fspath(path))}", uri=True, isolation_level=None
    )
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    return con


def _watch(con: sqlite3.Connection, stop: Callable[[], bool] | None) -> None:
    """Make a long statement on ``con`` end early when ``stop()`` says so."""
    if stop is not None:
        con.set_progress_handler(lambda: 1 if stop() else 0, 100_000)


def _discard(con: sqlite3.Connection, tmp: Path) -> None:
    """Close a block being built and remove its unfinished file."""
    con.close()
    tmp.unlink(missing_ok=True)


def _finish(
    con: sqlite3.Connection, tmp: Path, table: str, id_column: str
) -> int | None:
    """Check ids and index them; the row count, or None when rows need Python.

    None when an id is not an integer (empty, text, float: the row-by-row
    path gives the exact error) or repeats (it keeps the first and lists the
    rest).
    """
    t, idc = quote(table), quote(id_column)
    bad = con.execute(
        f"SELECT 1 FROM {t} WHERE typeof({idc}) != 'integer' LIMIT 1"
    ).fetchone()
    if bad:
        return None
    indexed = False
    for _, name, unique, *_ in con.execute(f"PRAGMA index_list({t})"):
        first = con.execute(f"PRAGMA index_info({quote(name)})").fetchall()
        if len(first) == 1 and first[0][2] == id_column:
            indexed = True
            if (
                not unique
                and con.execute(
                    f"SELECT 1 FROM {t} GROUP BY {idc} HAVING COUNT(*) > 1 LIMIT 1"
                ).fetchone()
            ):
                return None
            break
    if not indexed:
        try:
            con.execute(f"CREATE UNIQUE INDEX zooprep_id ON {t} ({idc})")
        except sqlite3.IntegrityError:
            return None  # a repeated id
    count = int(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
    con.close()
    _fsync(tmp)
    return count


def build_from_sqlite(
    tmp: Path,
    selection: SqliteSelection,
    id_column: str,
    *,
    number: int,
    ids: Sequence[int] | None = None,
    limit: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> BuiltBlock | None:
    """Copy the rows ``selection`` names into a new block file ``tmp``, by SQLite.

    The block's table is made with the source's own ``CREATE TABLE``
    statement, so that copying every row is SQLite's page-level transfer;
    with a filter, ids or a limit the rows are copied in ascending id order
    by one ``INSERT ... SELECT``.

    Parameters
    ----------
    tmp : pathlib.Path
        The file to write (replaced).
    selection : SqliteSelection
        The source file, table, condition and column kinds.
    id_column : str
        The id column.
    number : int
        The block's number.
    ids : sequence of int, optional
        Copy only these ids (and at most ``limit`` of them, smallest first).
    limit : int, optional
        Copy only the first ``limit`` matching rows by id.
    stop : callable, optional
        Polled during the copy; True ends it (`Stopped`).

    Returns
    -------
    BuiltBlock or None
        None when the rows need the row-by-row path (ids that are not
        unique integers); ``tmp`` is then removed.
    """
    con = _scratch(tmp)
    try:
        con.execute("ATTACH DATABASE ? AS zp_source", (selection.uri,))
        found = con.execute(
            "SELECT sql FROM zp_source.sqlite_master WHERE type = 'table' AND name = ?",
            (selection.table,),
        ).fetchone()
        if found is None or not found[0]:
            _discard(con, tmp)
            return None
        con.execute(found[0])  # the same table, in the block
        t, idc = quote(selection.table), quote(id_column)
        columns = [str(r[1]) for r in con.execute(f"PRAGMA main.table_info({t})")]
        _watch(con, stop)
        con.execute("BEGIN")
        params: list[Any] = list(selection.params)
        if selection.condition is None and ids is None and limit is None:
            con.execute(f"INSERT INTO main.{t} SELECT * FROM zp_source.{t}")
        else:
            where = [f"({selection.condition})" if selection.condition else "1"]
            if ids is not None:
                wanted = sorted(int(i) for i in ids)
                if limit is not None:
                    wanted = wanted[: int(limit)]
                con.execute("CREATE TEMP TABLE zp_wanted (id INTEGER PRIMARY KEY)")
                con.executemany(
                    "INSERT OR IGNORE INTO temp.zp_wanted VALUES (?)",
                    ((i,) for i in wanted),
                )
                where.append(f"zp_source.{t}.{idc} IN (SELECT id FROM temp.zp_wanted)")
            sql = (
                f"INSERT INTO main.{t} SELECT * FROM zp_source.{t} WHERE "
                f"{' AND '.join(where)} ORDER BY zp_source.{t}.{idc}"
            )
            if limit is not None:
                sql += " LIMIT ?"
                params.append(int(limit))
            con.execute(sql, params)
        con.execute("COMMIT")
        con.set_progress_handler(None, 0)
        con.execute("DETACH DATABASE zp_source")
        count = _finish(con, tmp, selection.table, id_column)
    except sqlite3.OperationalError as exc:
        _discard(con, tmp)
        if "interrupted" in str(exc) and stop is not None and stop():
            raise Stopped from None
        raise
    except BaseException:
        _discard(con, tmp)
        raise
    if count is None:
        _discard(con, tmp)
        return None
    info = BlockInfo(
        number,
        selection.table,
        id_column,
        {k: v for k, v in selection.kinds.items() if v != "plain"},
        dict(selection.fill),
    )
    return BuiltBlock(info, count, columns)


def build_from_batches(
    tmp: Path,
    batches: Iterable[ColumnBatch],
    id_column: str,
    *,
    number: int,
    stop: Callable[[], bool] | None = None,
) -> BuiltBlock | None:
    """Write a reader's column batches into a new block file ``tmp``.

    Each batch is one ``executemany`` (SQLite binds the values in C); the
    columns have no declared type, so every value is stored as given.

    Returns
    -------
    BuiltBlock or None
        None when the rows need the row-by-row path (ids that are not unique
        integers, or batches of different columns).
    """
    table = "rows"
    con = _scratch(tmp)
    columns: list[str] | None = None
    kinds: dict[str, str] = {}
    fill: dict[str, Any] = {}
    try:
        con.execute("BEGIN")
        for batch in batches:
            if stop is not None and stop():
                raise Stopped
            if columns is None:
                columns = list(batch.names)
                kinds = dict(batch.kinds)
                fill = dict(batch.fill)
                con.execute(
                    f"CREATE TABLE {quote(table)} "
                    f"({', '.join(quote(c) for c in columns)})"
                )
                insert = (
                    f"INSERT INTO {quote(table)} VALUES "
                    f"({', '.join('?' * len(columns))})"
                )
            elif list(batch.names) != columns:
                _discard(con, tmp)
                return None
            con.executemany(insert, zip(*batch.columns, strict=True))
        con.execute("COMMIT")
        if columns is None:
            _discard(con, tmp)
            return None
        count = _finish(con, tmp, table, id_column)
    except BaseException:
        _discard(con, tmp)
        raise
    if count is None:
        _discard(con, tmp)
        return None
    info = BlockInfo(
        number, table, id_column, {k: v for k, v in kinds.items() if v != "plain"}, fill
    )
    return BuiltBlock(info, count, columns)


def block_info(
    number: int, table: str, id_column: str, kinds: str, fill: str
) -> BlockInfo:
    """A `BlockInfo` from its state record (JSON ``kinds`` and ``fill``)."""
    return BlockInfo(number, table, id_column, json.loads(kinds), json.loads(fill))


class BlockRows:
    """Reads rows from the blocks of one run (read-only, connections kept open).

    Parameters
    ----------
    root : pathlib.Path
        The run directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[int, tuple[sqlite3.Connection, str, list[Any]]] = {}

    def close(self) -> None:
        """Close every block file."""
        for con, _, _ in self._open.values():
            con.close()
        self._open.clear()

    def _connection(self, info: BlockInfo) -> tuple[sqlite3.Connection, str, list[Any]]:
        found = self._open.get(info.number)
        if found is None:
            path = self.root / info.file
            if not path.is_file():
                raise FileNotFoundError(path)
            con = sqlite3.connect(
                f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False
            )
            t = quote(info.table)
            names = [str(r[1]) for r in con.execute(f"PRAGMA table_info({t})")]
            sql = (
                f"SELECT * FROM {t} WHERE {quote(info.id_column)} IN "
                "(SELECT value FROM json_each(?))"
            )
            found = (con, sql, [_CONVERT[info.kinds.get(n, "plain")] for n in names])
            self._open[info.number] = found
        return found

    def rows(self, info: BlockInfo, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The rows of ``ids`` in block ``info``, by id (missing ids left out)."""
        con, sql, convert = self._connection(info)
        cur = con.execute(sql, (json.dumps([int(i) for i in ids]),))
        names = [d[0] for d in cur.description]
        position = names.index(info.id_column)
        fill = info.fill
        out: dict[int, dict[str, Any]] = {}
        for values in cur:
            row: dict[str, Any] = {}
            for name, value, conv in zip(names, values, convert, strict=True):
                if type(value) is bytes:
                    continue  # blobs stay out of rows, as in the JSON form
                row[name] = value if conv is None or value is None else conv(value)
            for key, value in fill.items():
                if row.get(key) is None:
                    row[key] = value
            out[int(values[position])] = row
        return out

    def columns(self, info: BlockInfo) -> Iterator[str]:
        """The columns of a block's rows."""
        con, _, _ = self._connection(info)
        for r in con.execute(f"PRAGMA table_info({quote(info.table)})"):
            yield str(r[1])


def kinds_json(info: BlockInfo) -> tuple[str, str]:
    """``(kinds, fill)`` of a block as JSON, for its state record."""
    return json.dumps(info.kinds), json.dumps(info.fill)


def is_block_file(name: str) -> bool:
    """Whether a file name in ``rows/`` is a block or a block being written."""
    return name.endswith(".sqlite") or ".sqlite." in name


def block_number(name: str) -> int | None:
    """The number of a block file name (``3.sqlite``), or None."""
    stem = name[: -len(".sqlite")] if name.endswith(".sqlite") else ""
    return int(stem) if stem.isdigit() else None


def tmp_name(root: Path, number: int) -> Path:
    """Where block ``number`` is written before it is renamed into place."""
    return root / BLOCK_DIR / f".{number}.sqlite.{os.getpid()}.tmp"
