"""Sources from the ``DiaSource`` table of a Rubin APDB, through SQLAlchemy.

Works with SQLite files (opened read-only) and PostgreSQL (``--schema`` names
the namespace holding the APDB tables).  Rows are streamed in ascending
``diaSourceId`` order with a server-side cursor (``stream_results``) in chunks
of ``chunk`` rows, so memory stays flat however large the table.  Filters are
compiled to SQL with bound parameters (`zooprep.readers.where`).

The instrument comes from the APDB's ``metadata`` table (key ``instrument``,
e.g. ``LSSTCam-imSim``), which every APDB written by ``lsst.dax.apdb`` has.

A ``postgresql://`` URL uses the psycopg (3) driver.  Passwords are never
logged, saved or shown: `safe_url` removes them, and error messages are
scrubbed of them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.errors import InputError, RateLimited
from zooprep.readers.base import (
    ColumnBatch,
    ReadFailure,
    SqliteSelection,
    image_group,
)
from zooprep.readers.where import Expr, columns_of, to_sqlalchemy, unknown_column

__all__ = ["ApdbReader", "parse_description", "safe_url", "sqlite_uri"]

log = logging.getLogger(__name__)

#: Rows fetched per round trip, and ids per ``IN (...)`` query.
CHUNK = 10_000
ID_CHUNK = 1000


def safe_url(url: Any) -> str:
    """An SQLAlchemy URL as text, with any password removed.

    Examples
    --------
    >>> safe_url("postgresql://alice:s3cret@db.example.org:5432/apdb")
    'postgresql://alice@db.example.org:5432/apdb'
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        text = str(url)
        # Not a URL SQLAlchemy understands; drop anything like user:pass@.
        if "@" in text and "://" in text:
            scheme, rest = text.split("://", 1)
            return f"{scheme}://{rest.split('@', 1)[1]}"
        return text
    if "password" in parsed.query:
        parsed = parsed.difference_update_query(["password"])
    # URL.set(password=None) means "unchanged"; replace the field itself.
    return str(parsed._replace(password=None).render_as_string(hide_password=False))


def sqlite_uri(path: str | os.PathLike[str]) -> str:
    """A read-only ``file:`` URI of an SQLite file (for ``ATTACH``).

    Examples
    --------
    >>> sqlite_uri("/data/my apdb.sqlite3")
    'file:/data/my%20apdb.sqlite3?mode=ro'
    """
    from urllib.parse import quote

    return f"file:{quote(os.fspath(path))}?mode=ro"


def _iso(value: Any) -> Any:
    """A date or datetime as ISO text (as the JSON form stores it)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _column_kind(kind: Any, dialect: Any) -> str | None:
    """How SQLAlchemy reads a column type: 'plain', 'bool', 'datetime', 'date'.

    None for a type whose values it converts otherwise (decimals, JSON ...).
    """
    import sqlalchemy as sa

    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.DateTime):
        return "datetime"
    if isinstance(kind, sa.Date):
        return "date"
    try:
        processor = kind.result_processor(dialect, None)
    except Exception:  # a type that needs more than we give: read it row by row
        return None
    return "plain" if processor is None else None


def parse_description(text: str) -> tuple[str, str | None]:
    """The URL and schema of an `ApdbReader.describe` text (the run's ``source``).

    Examples
    --------
    >>> parse_description("postgresql://alice@db/apdb (schema dr1)")
    ('postgresql://alice@db/apdb', 'dr1')
    >>> parse_description("sqlite:////data/apdb.sqlite3")
    ('sqlite:////data/apdb.sqlite3', None)
    """
    match = re.fullmatch(r"(.*) \(schema (.+)\)", text)
    if match is None:
        return text, None
    return match.group(1), match.group(2)


def _first_line(exc: BaseException, secret: str | None) -> str:
    """The first meaningful line of a driver error, without the password."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    text = lines[0] if lines else type(orig).__name__
    if secret:
        text = text.replace(secret, "***")
    return text


class ApdbReader:
    """The ``DiaSource`` table of an APDB in SQLite or PostgreSQL.

    Use it as a context manager: it opens one engine and disposes of it on exit.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:///path/apdb.sqlite3``,
        ``postgresql://user@host:5432/db``).  A PostgreSQL password may be in
        the URL, or in ``PGPASSWORD`` / ``~/.pgpass``.
    schema : str or None
        Database schema (PostgreSQL namespace) of the APDB tables.
    id_column : str or None
        Id column (default ``diaSourceId``).
    instrument : str or None
        Instrument name used when the APDB's ``metadata`` table has none.
    table : str
        Table name (``DiaSource``).
    chunk : int
        Rows per round trip.

    Raises
    ------
    InputError
        Unreachable database, wrong password, missing file, table or column:
        one line naming the URL (without its password).

    Examples
    --------
    >>> with ApdbReader("sqlite:///" + apdb_path) as reader:  # doctest: +SKIP
    ...     reader.instrument
    'LSSTCam-imSim'
    """

    kind = "apdb"
    store: Path | None = None
    stopped: RateLimited | None = None

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        id_column: str | None = None,
        instrument: str | None = None,
        table: str = "DiaSource",
        chunk: int = CHUNK,
    ) -> None:
        self.url = url
        self.schema = schema
        self.id_column = id_column or "diaSourceId"
        self.table_name = table
        self.chunk = int(chunk)
        self.instrument: str | None = instrument
        self._fallback_instrument = instrument
        self._engine: Any = None
        self._table: Any = None
        self._secret: str | None = None
        self._sqlite_path: Path | None = None

    # -- opening ----------------------------------------------------------------

    def describe(self) -> str:
        """The URL without password, plus the schema."""
        text = safe_url(self.url)
        return f"{text} (schema {self.schema})" if self.schema else text

    def engine_url(self) -> Any:
        """The URL to connect with: psycopg for PostgreSQL, read-only SQLite."""
        import sqlalchemy as sa

        try:
            url = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            if Path(self.url).is_file():  # a newcomer's first try: a bare path
                raise InputError(
                    f"--apdb {self.url!r} is a file, not a database URL; for an "
                    f"SQLite APDB write sqlite:///{Path(self.url).resolve()}"
                ) from None
            raise InputError(
                f"--apdb {safe_url(self.url)!r} is not a database URL; use e.g. "
                "sqlite:///apdb.sqlite3 or postgresql://user@host/dbname"
            ) from None
        self._secret = url.password if url.password else None
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                raise InputError(
                    f"--apdb {safe_url(self.url)!r}: give the path of an APDB "
                    "SQLite file, e.g. sqlite:///apdb.sqlite3"
                )
            path = Path(os.path.expanduser(database)).resolve()
            if not path.is_file():
                raise InputError(f"--apdb: no SQLite file at {path}")
            if self.schema:
                raise InputError(
                    f"--schema {self.schema!r}: SQLite APDBs have no schemas; "
                    "leave --schema out"
                )
            self._sqlite_path = path
            url = url.set(database=f"file:{path}?mode=ro").update_query_dict(
                {"uri": "true"}
            )
        return url

    def open(self) -> ApdbReader:
        """Connect, reflect the table and read the instrument."""
        import sqlalchemy as sa

        url = self.engine_url()
        try:
            self._engine = sa.create_engine(url)
        except (sa.exc.NoSuchModuleError, ImportError) as exc:
            raise InputError(
                f"--apdb {self.describe()}: no database driver for "
                f"{url.drivername!r} ({exc})"
            ) from None
        try:
            with self._engine.connect() as conn:
                self._table = self._reflect(conn)
                self.instrument = self._read_instrument(conn)
        except InputError:
            self.close()
            raise
        except sa.exc.SQLAlchemyError as exc:
            self.close()
            raise InputError(
                f"--apdb {self.describe()}: cannot read the APDB: "
                f"{_first_line(exc, self._secret)}"
            ) from None
        if self.id_column not in self._table.c:
            raise unknown_column(
                self.id_column, self.columns(), f"table {self.table_name} (--id-column)"
            )
        return self

    def _reflect(self, conn: Any) -> Any:
        """Reflect the DiaSource table, or explain what is there instead."""
        import sqlalchemy as sa

        metadata = sa.MetaData(schema=self.schema)
        try:
            return sa.Table(self.table_name, metadata, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            inspector = sa.inspect(conn)
            if self.schema and self.schema not in inspector.get_schema_names():
                raise InputError(
                    f"--apdb {self.describe()}: no schema {self.schema!r}; "
                    f"schemas: {', '.join(inspector.get_schema_names())}"
                ) from None
            tables = inspector.get_table_names(schema=self.schema)
            where = f" in schema {self.schema!r}" if self.schema else ""
            hint = (
                f"; tables: {', '.join(sorted(tables))}"
                if tables
                else "; it has no tables (wrong database or --schema?)"
            )
            raise InputError(
                f"--apdb {self.describe()}: no table {self.table_name!r}{where}{hint}"
            ) from None

    def _read_instrument(self, conn: Any) -> str | None:
        """The ``instrument`` entry of the APDB's ``metadata`` table, if any."""
        import sqlalchemy as sa

        try:
            meta = sa.Table(
                "metadata", sa.MetaData(schema=self.schema), autoload_with=conn
            )
        except sa.exc.NoSuchTableError:
            return self._fallback_instrument
        if "name" not in meta.c or "value" not in meta.c:
            return self._fallback_instrument
        value = conn.execute(
            sa.select(meta.c.value).where(meta.c.name == "instrument")
        ).scalar()
        if value is None:
            return self._fallback_instrument
        found = str(value)
        if self._fallback_instrument and self._fallback_instrument != found:
            log.warning(
                "the APDB names its instrument %r; --instrument %r is ignored",
                found,
                self._fallback_instrument,
            )
        return found

    def close(self) -> None:
        """Dispose of the engine."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> ApdbReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------

    @property
    def table(self) -> Any:
        """The reflected SQLAlchemy table."""
        if self._table is None:
            raise RuntimeError("ApdbReader is not open")
        return self._table

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """Databases have no per-file failures."""
        return ()

    @property
    def paths(self) -> Sequence[str]:
        """Databases have no files."""
        return ()

    def columns(self) -> list[str]:
        """The table's column names (plus ``instrument``)."""
        names = [str(c.name) for c in self.table.columns]
        return names if "instrument" in names else [*names, "instrument"]

    def _clause(self, where: Expr | None) -> Any:
        """The SQL clause of a filter (``true`` when there is none)."""
        import sqlalchemy as sa

        if where is None:
            return sa.true()
        return to_sqlalchemy(where, self.table.c)

    def _stream(self, statement: Any, *, tuples: bool = False) -> Iterator[list[Any]]:
        """Run a statement with a server-side cursor; yield lists of row dicts.

        ``tuples``: lists of the rows as they come (tuples in column order).
        """
        import sqlalchemy as sa

        try:
            with self._engine.connect() as conn:
                result = conn.execution_options(
                    stream_results=True, yield_per=self.chunk
                ).execute(statement)
                keys = [str(k) for k in result.keys()]  # noqa: SIM118 - a Result, not a dict
                for part in result.partitions(self.chunk):
                    if tuples:
                        yield part
                        continue
                    # dict(zip()) over plain rows is much faster than RowMapping.
                    yield [dict(zip(keys, r, strict=True)) for r in part]
        except sa.exc.SQLAlchemyError as exc:
            raise InputError(
                f"--apdb {self.describe()}: query failed: "
                f"{_first_line(exc, self._secret)}"
            ) from None

    def check(self, where: Expr | None, column: str | None = None) -> None:
        """Raise InputError now if the filter or ``column`` cannot be used."""
        self._clause(where)
        if column is not None and column not in self.table.c:
            raise unknown_column(column, self.columns(), "--stratify")

    def scan(
        self, where: Expr | None, column: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(ids, values)`` chunks of matching rows in ascending id order."""
        import sqlalchemy as sa

        t = self.table
        idc = t.c[self.id_column]
        cols = [idc.label("_id")]
        if column is not None:
            if column not in t.c:
                raise unknown_column(column, self.columns(), "--stratify")
            cols.append(t.c[column].label("_value"))
        statement = sa.select(*cols).where(self._clause(where)).order_by(idc)
        for part in self._stream(statement):
            ids = np.array([r["_id"] for r in part], dtype=np.int64)
            values = (
                np.array([r["_value"] for r in part], dtype=object)
                if column is not None
                else None
            )
            yield ids, values

    def rows(
        self,
        where: Expr | None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield matching rows as dicts in ascending id order."""
        for statement in self._statements(where, ids, limit):
            for part in self._stream(statement):
                for found in part:
                    yield self._row(found)

    def _statements(
        self, where: Expr | None, ids: Sequence[int] | None, limit: int | None
    ) -> list[Any]:
        """The queries of `rows`: one, or one per `ID_CHUNK` of ``ids``."""
        import sqlalchemy as sa

        t = self.table
        idc = t.c[self.id_column]
        clause = self._clause(where)
        if ids is None:
            statement = sa.select(t).where(clause).order_by(idc)
            if limit is not None:
                statement = statement.limit(int(limit))
            statements = [statement]
        else:
            wanted = sorted(int(i) for i in ids)
            if limit is not None:
                wanted = wanted[: int(limit)]
            statements = [
                sa.select(t)
                .where(sa.and_(clause, idc.in_(wanted[i : i + ID_CHUNK])))
                .order_by(idc)
                for i in range(0, len(wanted), ID_CHUNK)
            ]
        return statements

    def column_batches(
        self,
        where: Expr | None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> Iterator[ColumnBatch] | None:
        """The rows `rows` yields, as column batches: for a PostgreSQL APDB.

        (An SQLite APDB is copied by SQLite: `sqlite_selection`.)  Each chunk
        of rows from the server-side cursor is turned into columns at once,
        with no dict per row; dates become the ISO text the JSON form holds.
        None for a column type SQLAlchemy converts otherwise (decimals ...).
        """
        if self._sqlite_path is not None or self._engine is None:
            return None
        dialect = self._engine.dialect
        names = [str(c.name) for c in self.table.columns]
        kinds: dict[str, str] = {}
        dates: list[int] = []
        for k, column in enumerate(self.table.columns):
            kind = _column_kind(column.type, dialect)
            if kind is None:
                return None
            if kind in ("datetime", "date"):
                dates.append(k)
                kind = "plain"
            kinds[names[k]] = kind
        fill = {} if self.instrument is None else {"instrument": self.instrument}
        statements = self._statements(where, ids, limit)

        def batches() -> Iterator[ColumnBatch]:
            for statement in statements:
                for part in self._stream(statement, tuples=True):
                    columns: list[Any] = list(zip(*part, strict=True))
                    for k in dates:
                        columns[k] = [_iso(v) for v in columns[k]]
                    yield ColumnBatch(names, columns, kinds, fill)

        return batches()

    def sqlite_selection(self, where: Expr | None) -> SqliteSelection | None:
        """The APDB file, table and SQL condition of the rows ``where`` keeps.

        For an SQLite APDB, so that select lets SQLite copy the rows itself
        (`zooprep.readers.base.SqliteCopyReader`); None for PostgreSQL, for a
        column type whose values SQLAlchemy converts in other ways than
        booleans and dates, and for a filter on a date column (the
        row-by-row path compares those as SQLAlchemy does).
        """
        if self._sqlite_path is None or self._engine is None:
            return None
        dialect = self._engine.dialect
        kinds: dict[str, str] = {}
        for column in self.table.columns:
            kind = _column_kind(column.type, dialect)
            if kind is None:
                return None
            kinds[str(column.name)] = kind
        condition: str | None = None
        params: tuple[Any, ...] = ()
        if where is not None:
            if any(kinds.get(c) in ("datetime", "date") for c in columns_of(where)):
                return None
            compiled = self._clause(where).compile(
                dialect=dialect, compile_kwargs={"render_postcompile": True}
            )
            condition = str(compiled)
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        return SqliteSelection(
            uri=sqlite_uri(self._sqlite_path),
            table=self.table_name,
            condition=condition,
            params=params,
            kinds=kinds,
            fill={} if self.instrument is None else {"instrument": self.instrument},
        )

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row with the instrument."""
        if row.get("instrument") is None and self.instrument is not None:
            row["instrument"] = self.instrument
        return row

    def group(self, row: Mapping[str, Any]) -> str | None:
        """``visit/detector``."""
        return image_group(row)
