"""Sources from the Lasair broker, through its own client (``lasair``).

``zooprep select RUN --lasair-objects IDS|FILE`` or ``--lasair-query Q``
(extra ``zooprep[brokers]``).  The token comes only from ``LASAIR_TOKEN``.

For each object one ``object(objectId, lite=False, lasair_added=True)`` call
gives ``diaSourcesList`` (every diaSource, full columns),
``diaForcedSourcesList`` and ``lasairData.imageUrls``: the Science, Template
and Difference FITS URLs of each source that still has cutouts (Lasair keeps
them for a year).  A query (``query(selected, tables, conditions, limit,
offset)``, 1000 rows a page) first finds the objects; ``Q`` is
``SELECT ... FROM tables WHERE conditions``, a watchlist (``watchlist:42``),
or conditions on the ``objects`` table alone.

Lasair allows an ordinary token 100 calls an hour (``rate``); the client
turns a 429 into ``LasairError('Request limit exceeded ...')``, a 401 into
``'Unauthorized'`` and an error answered with HTTP 200 is returned as
``{"error": ...}``: each is handled here (wait and retry, refuse before
starting, or fail that object with the reason).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from zooprep.errors import InputError
from zooprep.readers.brokers import BrokerAnswer, BrokerObject, BrokerReader

__all__ = ["DEFAULT_ENDPOINT", "LasairReader", "parse_query"]

#: The Lasair (LSST) API.
DEFAULT_ENDPOINT = "https://api.lasair.lsst.ac.uk/api"
#: Calls per hour of an ordinary Lasair token.
DEFAULT_RATE = (100, 3600.0)
#: Rows per ``query`` page.
PAGE = 1000
_KINDS = ("Template", "Science", "Difference")
#: Times an error answered with HTTP 200 is asked again before giving up.
ERROR_RETRIES = 1


def parse_query(text: str) -> tuple[str, str, str]:
    """``(selected, tables, conditions)`` of a ``--lasair-query``.

    Examples
    --------
    >>> parse_query("SELECT objects.diaObjectId FROM objects WHERE nDiaSources > 3")
    ('objects.diaObjectId', 'objects', 'nDiaSources > 3')
    >>> parse_query("watchlist:42")
    ('objects.diaObjectId', 'objects,watchlist:42', '')
    >>> parse_query("nDiaSources > 3")
    ('objects.diaObjectId', 'objects', 'nDiaSources > 3')
    """
    q = " ".join(text.split())
    if re.fullmatch(r"(?i)watchlist:\d+", q):
        return "objects.diaObjectId", f"objects,{q.lower()}", ""
    m = re.fullmatch(r"(?is)select\s+(.+?)\s+from\s+(.+?)(?:\s+where\s+(.*))?", q)
    if m:
        selected, tables, conditions = m.group(1), m.group(2), m.group(3) or ""
        if "diaobjectid" not in selected.lower():
            selected = f"objects.diaObjectId, {selected}"
        return selected, tables, conditions
    if re.match(r"(?i)(select|from)\b", q):
        raise InputError(
            f"--lasair-query {text!r}: write SELECT columns FROM tables [WHERE ...]"
        )
    return "objects.diaObjectId", "objects", q


def _message(exc: Exception) -> str:
    """One line of a LasairError (its ``message``), without the URL's host."""
    text = str(getattr(exc, "message", "") or exc)
    return " ".join(text.split())[:300]


class LasairReader(BrokerReader):
    """Sources of Lasair objects, one per diaSource with cutouts.

    Parameters
    ----------
    ids : sequence of int or None
        Object ids (``diaObjectId``); None when ``query`` finds them.
    query : str or None
        A ``--lasair-query`` (see `parse_query`).
    endpoint : str
        The API root (``https://api.lasair.lsst.ac.uk/api``).
    token : str or None
        The API token; by default ``LASAIR_TOKEN`` from the environment.
    limit : int or None
        Most objects a query may give.
    client : object, optional
        A ready ``lasair.lasair_client`` (tests, or a custom session).
    **kwargs
        `~zooprep.readers.brokers.BrokerReader`'s (``per_object``, ``store``,
        ``rate``, ``max_wait``, ``instrument``); ``rate`` defaults to 100/hour.
    """

    kind = "lasair"
    broker = "lasair"

    def __init__(
        self,
        ids: Sequence[int] | None = None,
        *,
        query: str | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        token: str | None = None,
        limit: int | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("rate", DEFAULT_RATE)
        super().__init__(ids, **kwargs)
        if (ids is None) == (query is None):
            raise InputError("Lasair: give object ids or a query, not both")
        self.query = query
        self.query_parts = parse_query(query) if query is not None else None
        self.endpoint = endpoint.rstrip("/")
        self.query_limit = limit
        self._token = token
        self._client = client

    def _lasair(self) -> Any:
        """The Lasair client (made on the first call that needs the server)."""
        if self._client is None:
            token = self._token or os.environ.get("LASAIR_TOKEN", "").strip()
            if not token:
                raise InputError(
                    "Lasair needs an API token: set LASAIR_TOKEN (your token is on "
                    "your Lasair profile page)"
                )
            try:
                from lasair import lasair_client
            except ImportError:
                raise InputError(
                    "reading Lasair needs the lasair client: "
                    "pip install 'zooprep[brokers]'"
                ) from None
            self._client = lasair_client(token, endpoint=self.endpoint, timeout=60.0)
        return self._client

    def _ask(self, key: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """One client call, cached, counted, with 429 and error answers handled."""
        from lasair import LasairError

        def call() -> Any:
            client = self._lasair()
            tries = 0
            while True:
                try:
                    answer = self._counted(
                        lambda: getattr(client, method)(*args, **kwargs)
                    )
                except LasairError as exc:
                    text = _message(exc)
                    if text.startswith("Request limit exceeded"):
                        self.limit.refused(len(self._rows))
                        continue
                    if text == "Unauthorized":
                        raise InputError(
                            f"Lasair refused the token in LASAIR_TOKEN ({self.endpoint}:"
                            " 401 Unauthorized); check it on your Lasair profile page"
                        ) from None
                    raise BrokerAnswer(f"Lasair {method} {args[0]!r}: {text}") from None
                if isinstance(answer, dict) and "error" in answer:
                    if tries < ERROR_RETRIES:
                        tries += 1
                        continue
                    error = " ".join(str(answer["error"]).split())[:300]
                    raise BrokerAnswer(f"Lasair {method} {args[0]!r}: {error}")
                return answer

        return self._call(key, call, counted=True)

    def open(self) -> LasairReader:
        """Check the token first when the broker will be asked, then read."""
        if not self._opened and (
            self.object_list is None
            or any(self.cache.get(f"object?{i}") is None for i in self.object_list)
        ):
            self._lasair()
        super().open()
        return self

    def _candidates(self) -> list[int]:
        if self.query_parts is None:
            return super()._candidates()
        selected, tables, conditions = self.query_parts
        found: list[int] = []
        offset = 0
        while self.query_limit is None or len(found) < self.query_limit:
            page = PAGE
            key = f"query?{selected}|{tables}|{conditions}|{page}|{offset}"
            try:
                rows = self._ask(
                    key, "query", selected, tables, conditions, page, offset
                )
            except BrokerAnswer as exc:
                raise InputError(f"--lasair-query: {exc}") from None
            if not isinstance(rows, list):
                raise InputError(
                    f"--lasair-query: Lasair answered {type(rows).__name__}"
                )
            for row in rows:
                oid = row.get("diaObjectId") if isinstance(row, dict) else None
                if oid is None and isinstance(row, dict):
                    oid = row.get("objects.diaObjectId")
                if oid is not None and int(oid) not in found:
                    found.append(int(oid))
            if len(rows) < page:
                break
            offset += page
        if self.query_limit is not None:
            found = found[: self.query_limit]
        self.object_list = found
        return found

    def _fetch(self, object_id: int) -> BrokerObject:
        answer = self._ask(
            f"object?{object_id}", "object", object_id, lite=False, lasair_added=True
        )
        if not isinstance(answer, dict) or "diaSourcesList" not in answer:
            raise BrokerAnswer(
                f"Lasair object {object_id}: answer has no diaSourcesList"
            )
        urls = (answer.get("lasairData") or {}).get("imageUrls") or []
        cutouts: dict[int, tuple[str, str, str]] = {}
        for entry in urls:
            if not isinstance(entry, dict) or entry.get("diaSourceId") is None:
                continue
            if all(entry.get(k) for k in _KINDS):
                tmpl, sci, diff = (str(entry[k]) for k in _KINDS)
                cutouts[int(entry["diaSourceId"])] = (tmpl, sci, diff)
        sources = [
            dict(s) for s in answer.get("diaSourcesList") or [] if isinstance(s, dict)
        ]
        for s in sources:
            s.setdefault("diaObjectId", object_id)
            if "decl" in s and "dec" not in s:
                s["dec"] = s["decl"]
        forced = [
            dict(f)
            for f in answer.get("diaForcedSourcesList") or []
            if isinstance(f, dict)
        ]
        return BrokerObject(object_id, sources, forced, cutouts)

    def _expiry_note(self) -> str:
        return "Lasair keeps cutouts for a year"

    def describe(self) -> str:
        """The endpoint and the objects or query (never the token)."""
        if self.query is not None:
            return f"lasair {self.endpoint} query {self.query}"
        ids = self.object_list or []
        shown = ",".join(str(i) for i in ids[:5]) + (",..." if len(ids) > 5 else "")
        return f"lasair {self.endpoint} objects {shown} ({len(ids)} objects)"
