"""Fault injection for the Panoptes stand-in.

A test arms faults on a running stand-in through ``standin.faults``::

    standin.faults.add("error_after", method="POST", path=r"^/api/subjects$", times=1)

Each request the server receives is checked against the armed faults in the
order they were added; the first one that matches (and still has shots left)
fires.  The kinds are:

``"error_after"``
    The request is processed (a subject really is created, a link really is
    made) but the client is answered ``status`` (default 502) with a JSON:API
    error body.  This is how Panoptes behaves when a proxy or the app times out
    after the database commit, and what makes panoptes-client duplicate
    subjects.
``"error"``
    The request is not processed; the client gets ``status`` (default 500).
    Use it for failed blob PUTs, 503s, or ``status=409`` for a stale-object
    conflict on a link request.
``"conflict"``
    Shorthand for ``"error"`` with status 409 and the message Panoptes gives on
    a concurrent update of one subject set
    (``Attempted to update a stale object: SubjectSet.``).
``"not_stored"``
    Only meaningful for blob PUTs: the storage answers 201 but keeps nothing,
    so the subject's image stays broken.
``"hang"``
    The server sleeps ``delay`` seconds (default 30, bounded by the server's
    ``max_hang``) before doing anything, longer than a sane client timeout.
    With ``process=True`` (default) the request is processed after the sleep,
    as a real server would after a slow database; with ``process=False`` the
    connection is closed without an answer.
``"expire_token"``
    The bearer token the request carries is expired on the spot, so the
    request (and every later one with that token) is answered 401.
``"quota"``
    A subject create is refused with 403 ``User has uploaded N subjects of M
    maximum``, as if the user's quota were exhausted.
``"delay"``
    Adds ``delay`` seconds before the request is processed (latency for one
    route; the server-wide ``latency`` applies to every request).

A fault matches a request when its ``method`` (case-insensitive, ``None`` for
any) equals the request's and its ``path`` regular expression is found in the
request path (without the query string; ``None`` for any), and its ``query``
regular expression, if given, is found in the query string (``r"(^|&)id="``
for the batched read-back ``GET /api/subjects?id=1,2,3``).  ``skip`` lets the
first N matching requests through untouched, ``times`` limits how often the
fault fires (``None``: every time), and ``probability`` fires it only on a
random share of matches, drawn from a generator seeded by ``seed`` (so a test
is reproducible).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field

__all__ = ["KINDS", "Fault", "Faults"]

#: The fault kinds the stand-in understands.
KINDS = frozenset(
    {
        "error_after",
        "error",
        "conflict",
        "not_stored",
        "hang",
        "expire_token",
        "quota",
        "delay",
    }
)

_DEFAULT_STATUS = {"error_after": 502, "error": 500, "conflict": 409, "quota": 403}


@dataclass
class Fault:
    """One armed fault; see the module docstring for the kinds.

    Attributes
    ----------
    kind : str
        One of `KINDS`.
    method : str or None
        HTTP method to match, or ``None`` for any.
    path : str or None
        Regular expression searched in the request path, or ``None`` for any.
    query : str or None
        Regular expression searched in the query string, or ``None`` for any.
    times : int or None
        How many times the fault fires; ``None`` for no limit.
    skip : int
        Matching requests to let through before the fault starts firing.
    status : int
        HTTP status answered by ``error``, ``error_after``, ``conflict`` and
        ``quota`` faults.
    delay : float
        Seconds slept by ``hang`` and ``delay`` faults.
    process : bool
        Whether a ``hang`` fault processes the request after sleeping.
    probability : float
        Share of matching requests on which the fault fires.
    fired : int
        How many times the fault has fired so far.
    seen : int
        How many requests matched so far (fired or not).
    """

    kind: str
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    skip: int = 0
    status: int = 0
    delay: float = 30.0
    process: bool = True
    probability: float = 1.0
    fired: int = 0
    seen: int = 0
    query: str | None = None
    _regex: re.Pattern[str] | None = field(default=None, repr=False)
    _query_regex: re.Pattern[str] | None = field(default=None, repr=False)

    def matches(self, method: str, path: str, query: str = "") -> bool:
        """Whether this fault applies to a request (ignoring shots left)."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self._query_regex is not None and self._query_regex.search(query) is None:
            return False
        return self._regex is None or self._regex.search(path) is not None

    @property
    def exhausted(self) -> bool:
        """Whether the fault has no shots left."""
        return self.times is not None and self.fired >= self.times


class Faults:
    """The faults armed on one stand-in server (thread-safe).

    Parameters
    ----------
    seed : int
        Seed of the random generator used by faults with ``probability < 1``.
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)

    def add(
        self,
        kind: str,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
        skip: int = 0,
        status: int | None = None,
        delay: float = 30.0,
        process: bool = True,
        probability: float = 1.0,
        query: str | None = None,
    ) -> Fault:
        """Arm a fault and return it (its ``fired`` count can be checked later).

        Parameters
        ----------
        kind : str
            One of `KINDS` (see the module docstring).
        method : str, optional
            HTTP method to match (``"POST"``); any method if omitted.
        path : str, optional
            Regular expression searched in the request path, e.g.
            ``r"^/api/subjects$"`` or ``r"^/blob/"``; any path if omitted.
        times : int or None
            How many times to fire (default once); ``None`` for every match.
        skip : int
            Let this many matching requests through first.
        status : int, optional
            Status for ``error``/``error_after``/``conflict``/``quota``.
        delay : float
            Seconds for ``hang`` and ``delay``.
        process : bool
            For ``hang``: process the request after sleeping (default) or drop
            the connection.
        probability : float
            Fire on this share of matching requests (seeded, reproducible).
        query : str, optional
            Regular expression searched in the query string, e.g.
            ``r"(^|&)id="``; any query if omitted.

        Returns
        -------
        Fault
            The armed fault.

        Raises
        ------
        ValueError
            If ``kind`` is unknown.
        """
        if kind not in KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {sorted(KINDS)}"
            )
        fault = Fault(
            kind=kind,
            method=method,
            path=path,
            times=times,
            skip=skip,
            status=status if status is not None else _DEFAULT_STATUS.get(kind, 500),
            delay=delay,
            process=process,
            probability=probability,
            query=query,
            _regex=re.compile(path) if path is not None else None,
            _query_regex=re.compile(query) if query is not None else None,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def armed(self) -> list[Fault]:
        """The faults added so far (fired or not), in order."""
        with self._lock:
            return list(self._faults)

    def take(self, method: str, path: str, query: str = "") -> Fault | None:
        """Return the fault that fires on this request, if any, and count it."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path, query):
                    continue
                fault.seen += 1
                if fault.seen <= fault.skip:
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                return fault
        return None
