"""Sources from an IVOA TAP service (the Rubin Science Platform), through pyvo.

Two ways to say what to read (README, "Rubin Science Platform"):

* ``table`` (``--table dp1.DiaSource``) with the usual filters: zooprep
  compiles them to ADQL and reads the table **in pages**, ``SELECT TOP n *
  ... WHERE diaSourceId > LAST ... ORDER BY diaSourceId``, so memory stays
  flat however many rows match, and a killed select continues after the
  last id it recorded (`TapReader` ``resume_after``) instead of reading
  again what it has.  Boolean columns are compared on the rows (services
  differ in how ADQL writes a boolean); everything else is filtered by the
  service.
* ``query`` (``--query "SELECT ... FROM dp1.DiaSource ..."``): the user's
  ADQL runs once; its result is kept in the run (``tap/<hash>.vot``), so a
  resumed select reads it from there, and ``--where`` and the other filters
  apply to its rows.

Every query runs as an asynchronous (UWS) job by default (``mode="sync"``
for small ones).  A result the service cut at its row limit (the VOTable's
``QUERY_STATUS`` is ``OVERFLOW``) is an error, never a silently short run;
pages are no larger than the service's advertised hard limit.

The RSP wants an access token as a bearer token: it is read from the
environment variable `TOKEN_ENV` (``RSP_TOKEN``) and sent only in the
``Authorization`` header of a `requests` session; a session of your own
(e.g. pyvo's ``AuthSession`` with its ``CredentialStore``) may be given
instead.  The token never reaches a file, a log line or an error message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.errors import InputError, RateLimited
from zooprep.files import atomic_write
from zooprep.readers.base import ReadFailure, image_group, kept_positions
from zooprep.readers.where import (
    And,
    Compare,
    Expr,
    In,
    IsNull,
    Not,
    Or,
    Truthy,
    check_columns,
    columns_of,
    to_mask,
    unknown_column,
)

__all__ = ["TOKEN_ENV", "TapReader", "release_schema", "tap_session", "to_adql"]

log = logging.getLogger(__name__)

#: The environment variable holding an RSP access token.
TOKEN_ENV = "RSP_TOKEN"
#: Rows per page when the service allows that many.
PAGE = 50_000
#: Longest wait for one UWS job (seconds).
JOB_TIMEOUT = 3600.0
#: Ids per ``IN (...)`` query.
ID_CHUNK = 500
#: The columns a source needs (for the message when a query lacks them).
NEEDED = "diaSourceId, visit, detector and ra, dec (or x, y)"


def release_schema(table_or_query: str | None) -> str:
    """The schema (data release) whose DiaSource a table or query reads.

    Examples
    --------
    >>> release_schema("dp1.DiaSource"), release_schema("SELECT * FROM dp02_dc2.DiaSource")
    ('dp1', 'dp02_dc2')
    """
    import re

    found = re.search(r"\b([A-Za-z_][A-Za-z0-9_]*)\.DiaSource\b", table_or_query or "")
    return found.group(1) if found else "dp1"


def tap_session(token: str | None = None) -> Any:
    """A `requests` session that sends the RSP token as a bearer token.

    Parameters
    ----------
    token : str, optional
        The token; by default the environment variable `TOKEN_ENV`.  Without
        one the session sends no credentials (pyvo's own mechanisms apply
        when you pass your own session to `TapReader`).
    """
    import requests

    session = requests.Session()
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    session.headers["User-Agent"] = "zooprep"
    return session


def _literal(value: Any) -> str:
    """An ADQL literal.

    Examples
    --------
    >>> _literal("it's"), _literal(3), _literal(0.5)
    ("'it''s'", '3', '0.5')
    """
    if isinstance(value, bool):
        raise TypeError("booleans are compared on the rows")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not np.isfinite(value):
            raise InputError(f"--where: {value!r} cannot be sent to a TAP service")
        return repr(float(value))
    return "'" + str(value).replace("'", "''") + "'"


def _quote(name: str) -> str:
    """A column name as an ADQL identifier (delimited when it needs it)."""
    if name.replace("_", "a").isalnum() and not name[0].isdigit():
        return name
    return '"' + name.replace('"', '""') + '"'


def to_adql(expr: Expr, prefix: str = "") -> str:
    """Compile a filter to an ADQL condition (the null rule of `zooprep.readers.where`).

    A comparison with a missing value is false, also under ``not``.

    Examples
    --------
    >>> from zooprep.readers.where import parse_where
    >>> to_adql(parse_where('reliability > 0.5 and band in ("g", "r")'))
    "((reliability IS NOT NULL AND reliability > 0.5) AND (band IS NOT NULL AND band IN ('g', 'r')))"
    """

    def col(name: str) -> str:
        return prefix + _quote(name)

    def build(e: Expr) -> str:
        if isinstance(e, And):
            return "(" + " AND ".join(build(i) for i in e.items) + ")"
        if isinstance(e, Or):
            return "(" + " OR ".join(build(i) for i in e.items) + ")"
        if isinstance(e, Not):
            return f"(NOT {build(e.item)})"
        c = col(e.column)
        if isinstance(e, IsNull):
            return f"{c} IS NOT NULL" if e.negate else f"{c} IS NULL"
        if isinstance(e, Truthy):
            return f"({c} IS NOT NULL AND {c} <> 0)"
        if isinstance(e, In):
            values = [v for v in e.values if v is not None]
            listed = ", ".join(_literal(v) for v in values)
            test = f"{c} IN ({listed})" if values else "1 = 0"
            if len(values) != len(e.values):
                test = f"({test} OR {c} IS NULL)"
            else:
                test = f"({c} IS NOT NULL AND {test})"
            return f"(NOT {test})" if e.negate else test
        assert isinstance(e, Compare)
        op = "<>" if e.op == "!=" else ("=" if e.op == "==" else e.op)
        return f"({c} IS NOT NULL AND {c} {op} {_literal(e.value)})"

    return build(expr)


def _pushable(expr: Expr | None, booleans: set[str]) -> Expr | None:
    """The part of a filter the service can apply: conjuncts without booleans."""
    if expr is None:
        return None

    def flat(e: Expr) -> list[Expr]:
        return [x for i in e.items for x in flat(i)] if isinstance(e, And) else [e]

    kept = tuple(i for i in flat(expr) if not set(columns_of(i)) & booleans)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else And(kept)


def _first_line(text: str, secret: str | None) -> str:
    """One line of a service's message, without the token."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else "no message"
    if secret:
        line = line.replace(secret, "***")
    return line[:300]


class TapReader:
    """DiaSource-like rows from a TAP service: a table read in pages, or a query.

    Parameters
    ----------
    url : str
        The TAP service, e.g. ``https://data.lsst.cloud/api/tap``.
    table : str, optional
        A table to read in pages (``dp1.DiaSource``); filters become ADQL.
    query : str, optional
        ADQL to run once instead (it must select the id column).
    id_column : str, optional
        The id column (``diaSourceId``).
    instrument : str, optional
        Instrument name for the rows.
    mode : {'async', 'sync'}
        Run queries as UWS jobs (default) or synchronously.
    page_size : int, optional
        Rows per page; by default 50 000 or the service's hard limit if lower.
    session : requests.Session, optional
        The HTTP session (default: `tap_session`, the token of ``RSP_TOKEN``).
    store : path, optional
        The run directory: a query's result is kept in ``store/tap``.
    resume_after : (int, int), optional
        ``(last id, count)`` of the rows this selection already recorded:
        reading continues after that id.

    Raises
    ------
    InputError
        A refused token, an ADQL error (the service's message), a result
        without the needed columns, a result cut at the row limit: one line.
    """

    kind = "tap"
    store: Path | None = None
    #: A TAP service has no rate limit that ends reading early.
    stopped: RateLimited | None = None

    def __init__(
        self,
        url: str,
        *,
        table: str | None = None,
        query: str | None = None,
        id_column: str | None = None,
        instrument: str | None = None,
        mode: str = "async",
        page_size: int | None = None,
        session: Any = None,
        store: str | os.PathLike[str] | None = None,
        resume_after: tuple[int, int] | None = None,
    ) -> None:
        if (table is None) == (query is None):
            raise InputError("--tap needs exactly one of --table or --query")
        self.url = url.rstrip("/")
        self.table = table
        self.query = " ".join(query.split()) if query else None
        self.id_column = id_column or "diaSourceId"
        self.instrument = instrument
        self.mode = mode
        self.page_size = page_size
        self.store = None if store is None else Path(store)
        self.resume_after = resume_after
        self._given_session = session
        self._session: Any = None
        self._service: Any = None
        self._columns: list[str] = []
        self._kinds: dict[str, str] = {}
        self._frame: Any = None
        self._ids: np.ndarray | None = None
        self._masks: dict[Expr, np.ndarray] = {}
        self._secret = os.environ.get(TOKEN_ENV) or None

    # -- opening ------------------------------------------------------------------

    def describe(self) -> str:
        """The service and what is read from it (never the token)."""
        what = f"table {self.table}" if self.table else f"query {self.query}"
        return f"{self.url} {what}"

    def open(self) -> TapReader:
        """Connect, learn the columns (``TOP 0``) and, for a query, run it."""
        import pyvo

        self._session = (
            self._given_session if self._given_session is not None else tap_session()
        )
        self._service = pyvo.dal.TAPService(self.url, session=self._session)
        if self.table is not None:
            table = self._run(f"SELECT TOP 1 * FROM {self.table}", maxrec=1, sync=True)
            self._learn(table)
            self._need_columns(f"table {self.table}")
        else:
            table = self._query_result()
            self._learn(table)
            self._need_columns("the query's result")
            self._frame_from(table)
        return self

    def close(self) -> None:
        """Close the HTTP session zooprep made."""
        if self._session is not None and self._given_session is None:
            self._session.close()
        self._session = None

    def __enter__(self) -> TapReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _learn(self, table: Any) -> None:
        self._columns = [str(n) for n in table.colnames]
        self._kinds = {}
        for name in self._columns:
            kind = table[name].dtype.kind
            self._kinds[name] = {"b": "bool", "i": "number", "u": "number"}.get(
                kind, "number" if kind == "f" else "str"
            )

    def _need_columns(self, what: str) -> None:
        have = set(self._columns)
        if self.id_column not in have or not (
            ({"visit", "detector"} <= have or "image" in have)
            and ({"ra", "dec"} <= have or {"x", "y"} <= have)
        ):
            lacking = self.id_column if self.id_column not in have else "an image key"
            raise InputError(
                f"--tap {self.url}: {what} has no {lacking} column; select needs "
                f"{NEEDED} (columns given: {', '.join(self._columns[:12])})"
            )

    def _limit(self) -> int:
        """Rows per page: the setting, else PAGE capped at the service's limit."""
        if self.page_size is not None:
            return int(self.page_size)
        try:
            hard = self._service.hardlimit
        except Exception as exc:  # capabilities unreadable: keep the default
            log.debug("TAP capabilities: %s", _first_line(str(exc), self._secret))
            hard = None
        return int(min(PAGE, hard)) if hard else PAGE

    def _error(self, exc: Exception) -> InputError:
        """One line for a failed call, naming the service, never the token."""
        response = getattr(exc, "response", None) or getattr(
            getattr(exc, "cause", None), "response", None
        )
        code = getattr(exc, "code", None) or getattr(response, "status_code", None)
        if code == 401:
            return InputError(
                f"--tap {self.url}: the service refused the credentials (401); set "
                f"{TOKEN_ENV} to a valid RSP access token"
            )
        if code == 403:
            return InputError(
                f"--tap {self.url}: access forbidden (403) for this token"
            )
        return InputError(f"--tap {self.url}: {_first_line(str(exc), self._secret)}")

    def _run(self, adql: str, maxrec: int, *, sync: bool = False) -> Any:
        """Run one query (async job or sync) and return its astropy table."""
        import pyvo
        import requests

        log.debug("TAP %s: %s", self.mode, adql)
        try:
            with warnings.catch_warnings():
                # an overflow is checked below, and is an error, not a warning
                warnings.simplefilter("ignore", pyvo.dal.DALOverflowWarning)
                if sync or self.mode == "sync":
                    result = self._service.run_sync(adql, maxrec=maxrec)
                else:
                    result = self._run_job(adql, maxrec)
        except (pyvo.dal.DALServiceError, pyvo.dal.DALQueryError) as exc:
            raise self._error(exc) from None
        except (pyvo.dal.DALFormatError, requests.RequestException) as exc:
            raise self._error(exc) from None
        if result.query_status == "OVERFLOW":
            raise InputError(
                f"--tap {self.url}: the service stopped at its row limit "
                f"({min(len(result), maxrec)} rows) for a query that matches more; "
                + (
                    "use --tap-page-size of at most that"
                    if self.table
                    else "narrow the query or read --table with filters, "
                    "which zooprep reads in pages"
                )
            )
        return result.to_table()

    def _run_job(self, adql: str, maxrec: int) -> Any:
        """One UWS job: submit, run, wait, read the result whole, delete."""
        import io

        import pyvo
        from astropy.io.votable import parse

        # create the job with a plain POST (pyvo's submit_job leaves its
        # streamed redirect open); UWS answers 303 with the job's URL
        with self._session.post(
            f"{self.url}/async",
            data={
                "LANG": "ADQL",
                "REQUEST": "doQuery",
                "QUERY": adql,
                "MAXREC": maxrec,
            },
            allow_redirects=False,
        ) as created:
            created.raise_for_status()
            location = created.headers.get("Location")
        if not location:
            raise InputError(f"--tap {self.url}: the service made no job (no Location)")
        job = pyvo.dal.AsyncTAPJob(location, session=self._session)
        try:
            job.run()
            job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=JOB_TIMEOUT)
            job.raise_if_error()
            # read whole (pyvo's fetch_result streams and leaves the connection open)
            with self._session.get(job.result_uri) as answer:
                answer.raise_for_status()
                content = answer.content
            votable = parse(io.BytesIO(content), verify="ignore")
            return pyvo.dal.TAPResults(
                votable, url=job.result_uri, session=self._session
            )
        finally:
            try:
                job.delete()
            except pyvo.dal.DALServiceError as exc:  # the result is in hand
                log.debug(
                    "TAP job not deleted: %s", _first_line(str(exc), self._secret)
                )

    # -- a query's result -----------------------------------------------------------

    def _query_result(self) -> Any:
        """The query's result: kept in the run, or run now (and kept)."""
        from astropy.table import Table

        assert self.query is not None
        digest = hashlib.sha256(f"{self.url}\n{self.query}".encode()).hexdigest()[:16]
        kept = None if self.store is None else self.store / "tap" / f"{digest}.vot"
        if kept is not None and kept.is_file():
            log.info("reading the query's result kept in %s", kept)
            return Table.read(kept, format="votable")
        table = self._run(self.query, maxrec=self._limit_for_query())
        if kept is not None:
            import io

            kept.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            table.write(buffer, format="votable")
            atomic_write(kept, buffer.getvalue())
        return table

    def _limit_for_query(self) -> int:
        try:
            hard = self._service.hardlimit
        except Exception:  # capabilities unreadable: ask for what the service gives
            hard = None
        return int(hard) if hard else 10_000_000

    def _frame_from(self, table: Any) -> None:
        import pandas as pd

        data = {name: self._values(table[name]) for name in self._columns}
        frame = pd.DataFrame(
            {n: pd.Series(v, dtype=object) for n, v in data.items()}, dtype=object
        )
        ids = np.asarray(
            [int(v) if v is not None else -1 for v in data[self.id_column]],
            dtype=np.int64,
        )
        if (ids < 0).any():
            row = int(np.flatnonzero(ids < 0)[0])
            raise InputError(
                f"--tap {self.url}: row {row + 1} of the query's result has no "
                f"{self.id_column}"
            )
        order = np.argsort(ids, kind="stable")
        self._frame = frame.iloc[order].reset_index(drop=True)
        self._ids = ids[order]

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def _values(column: Any) -> list[Any]:
        """A column's values as Python objects: exact ints, str, None if masked."""
        mask = np.ma.getmaskarray(column)
        data = np.asarray(getattr(column, "data", column))
        values = data.tolist()
        if data.dtype.kind == "S":
            values = [v.decode() if isinstance(v, bytes) else v for v in values]
        if data.dtype.kind == "f":
            values = [None if v != v else v for v in values]
        return [None if m else v for v, m in zip(values, mask.tolist(), strict=True)]

    def _records(self, table: Any) -> list[dict[str, Any]]:
        names = [str(n) for n in table.colnames]
        columns = [self._values(table[n]) for n in names]
        return [
            dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)
        ]

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """A TAP service has no per-file failures."""
        return ()

    @property
    def paths(self) -> Sequence[str]:
        """No files are read."""
        return ()

    def columns(self) -> list[str]:
        """The result's columns (plus ``instrument``)."""
        names = list(self._columns)
        return names if "instrument" in names else [*names, "instrument"]

    def check(self, where: Expr | None, column: str | None = None) -> None:
        """Raise InputError now if the filter or ``column`` cannot be used."""
        check_columns(where, self._columns, "--where")
        if column is not None and column not in self._columns:
            raise unknown_column(column, self.columns(), "--stratify")
        if self._frame is not None:
            self._mask(where)
        elif where is not None:
            pushed = _pushable(where, self._booleans())
            if pushed is not None:
                to_adql(pushed)  # literals the service cannot take fail now

    def _booleans(self) -> set[str]:
        return {n for n, k in self._kinds.items() if k == "bool"}

    def _mask(self, where: Expr | None) -> np.ndarray:
        assert self._frame is not None
        assert self._ids is not None
        if where is None:
            return np.ones(len(self._ids), dtype=bool)
        if where not in self._masks:
            self._masks[where] = np.asarray(to_mask(where, self._frame), dtype=bool)
        return self._masks[where]

    def _pages(
        self,
        where: Expr | None,
        select: str,
        after: int | None,
        ids: Sequence[int] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of matching rows of the table in ascending id order."""
        import pandas as pd

        page = self._limit()
        idq = _quote(self.id_column)
        pushed = _pushable(where, self._booleans())
        conditions = [] if pushed is None else [to_adql(pushed)]
        chunks: list[Sequence[int] | None] = [None]
        if ids is not None:
            chunks = [ids[i : i + ID_CHUNK] for i in range(0, len(ids), ID_CHUNK)]
        for chunk in chunks:
            last = after
            while True:
                terms = list(conditions)
                if chunk is not None:
                    terms.append(f"{idq} IN ({', '.join(str(int(i)) for i in chunk)})")
                if last is not None:
                    terms.append(f"{idq} > {int(last)}")
                clause = f" WHERE {' AND '.join(terms)}" if terms else ""
                table = self._run(
                    f"SELECT TOP {page} {select} FROM {self.table}{clause} "
                    f"ORDER BY {idq}",
                    maxrec=page,
                )
                records = self._records(table)
                if not records:
                    break
                last = int(records[-1][self.id_column])
                if where is not None and where != pushed:
                    mask = np.asarray(
                        to_mask(where, pd.DataFrame(records, dtype=object)), dtype=bool
                    )
                    kept = [r for r, m in zip(records, mask, strict=True) if m]
                else:
                    kept = records
                yield kept
                if len(records) < page:
                    break

    def scan(
        self, where: Expr | None, column: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(ids, values)`` chunks of matching rows in ascending id order."""
        if self._frame is not None:
            assert self._ids is not None
            mask = self._mask(where)
            values = None
            if column is not None:
                values = np.array(self._frame[column][mask].tolist(), dtype=object)
            yield self._ids[mask], values
            return
        wanted = [self.id_column, *columns_of(where)]
        if column is not None and column not in wanted:
            wanted.append(column)
        select = ", ".join(_quote(c) for c in wanted)
        for part in self._pages(where, select, None):
            ids = np.array([int(r[self.id_column]) for r in part], dtype=np.int64)
            values = (
                np.array([r[column] for r in part], dtype=object)
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
        after, done = self.resume_after or (None, 0)
        if after is not None:
            log.info("continuing after id %d (%d sources recorded)", after, done)
        if limit is not None:
            limit = max(0, int(limit) - done)
            if limit == 0:
                return
        wanted = None if ids is None else sorted(int(i) for i in ids)
        if wanted is not None and after is not None:
            wanted = [i for i in wanted if i > after]
        if self._frame is not None:
            assert self._ids is not None
            mask = self._mask(where)
            if after is not None:
                mask = mask & (self._ids > after)
            for p in kept_positions(mask, self._ids, wanted, limit):
                yield self._row({c: _py(self._frame[c].iat[p]) for c in self._columns})
            return
        count = 0
        for part in self._pages(where, "*", after if wanted is None else None, wanted):
            for row in part:
                yield self._row(row)
                count += 1
                if limit is not None and count >= limit:
                    return

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("instrument") is None and self.instrument is not None:
            row["instrument"] = self.instrument
        return row

    def group(self, row: Mapping[str, Any]) -> str | None:
        """``visit/detector``."""
        return image_group(row)


def _py(value: Any) -> Any:
    """A pandas cell as a plain Python value (None when missing)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
