"""Per-request deadlines learned from the latencies a run has observed.

A request that normally answers in 50 ms and has not answered in two seconds
is almost certainly hung: waiting the whole ``--timeout`` for it (a minute)
only stalls the thread that sent it.  A `Deadline` keeps the durations of the
last requests of one kind (API calls, file uploads, read-backs, image range
reads) and gives each new request

    min(ceiling, max(floor + size / floor_rate, factor * p99 * (1 + size / size_unit)))

seconds, where ``p99`` is the high percentile of the recent durations, each
divided by its own ``1 + size / size_unit`` (so a 1 MB upload is allowed more
than a 1 kB one), and ``ceiling`` is the user's ``--timeout``.  Until
`Deadline.min_samples` requests have answered, the slowest one seen stands in
for the percentile, and with none seen the deadline is ``initial``.  A retry of
a request that ran out of time gets twice the time of the try before
(``attempt`` 2, 3, ...), up to the ceiling, so a server that really is slower
than the run has seen so far is waited for after a retry or two, and what it
answers is then learned.

It is the same rule for every remote reader: give `Deadline.timeout` to the
request, and on an answer (any status) call `Deadline.observe` with the time it
took (or wrap the request in `Deadline.timed`); a request that timed out is
not observed.  `host_deadline` gives the deadline shared by every request to
one host in this process (what the image readers use).

Examples
--------
>>> d = Deadline(ceiling=60.0, floor=2.0, factor=10.0)
>>> d.timeout()  # nothing seen yet
10.0
>>> for _ in range(50):
...     d.observe(0.05)
>>> d.timeout()  # 10 x 50 ms is below the floor
2.0
>>> d.timeout(attempt=3)  # a second retry after timeouts
8.0
>>> d.timeout(attempt=9)  # never more than the ceiling
60.0
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator

__all__ = ["Deadline", "host_deadline"]


class Deadline:
    """Time allowed for one request, from what this run has observed so far.

    Thread-safe: one instance is shared by all the threads sending one kind of
    request.

    Parameters
    ----------
    ceiling : float
        Upper bound in seconds (the user's ``--timeout``); never exceeded.
    floor : float
        Lower bound in seconds for a request without payload.
    factor : float
        Multiple of the recent high-percentile duration allowed.
    quantile : float
        The percentile, as a fraction (0.99).
    window : int
        How many recent durations are kept.
    min_samples : int
        Durations needed before the percentile is used (before that: the
        slowest one seen).
    initial : float
        Seconds allowed before any request has answered (at most ``ceiling``).
    size_unit : float
        Bytes of payload that double the expected duration.
    floor_rate : float
        Bytes per second assumed at worst when raising the floor for a
        payload (100 kB/s: a 1 MB file is given at least 10 s more).
    """

    def __init__(
        self,
        ceiling: float,
        *,
        floor: float = 2.0,
        factor: float = 10.0,
        quantile: float = 0.99,
        window: int = 256,
        min_samples: int = 20,
        initial: float = 10.0,
        size_unit: float = 256 * 1024,
        floor_rate: float = 100_000.0,
    ) -> None:
        if not ceiling > 0:
            raise ValueError(f"ceiling must be positive, not {ceiling}")
        self.ceiling = float(ceiling)
        self.floor = min(float(floor), self.ceiling)
        self.factor = float(factor)
        self.quantile = float(quantile)
        self.min_samples = int(min_samples)
        self.initial = min(float(initial), self.ceiling)
        self.size_unit = float(size_unit)
        self.floor_rate = float(floor_rate)
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self._high: float | None = None  # cached percentile, None: recompute
        self.observed = 0

    def _scale(self, size: int) -> float:
        """How many times a request of ``size`` bytes is expected to take."""
        return 1.0 + max(size, 0) / self.size_unit

    def high(self) -> float | None:
        """The recent high-percentile duration of a payload-free request (None: none seen)."""
        with self._lock:
            if self._high is None and self._recent:
                ordered = sorted(self._recent)
                if len(ordered) < self.min_samples:
                    self._high = ordered[-1]
                else:
                    rank = math.ceil(self.quantile * len(ordered)) - 1
                    self._high = ordered[min(max(rank, 0), len(ordered) - 1)]
            return self._high

    def timeout(self, size: int = 0, attempt: int = 1) -> float:
        """Seconds to allow a request carrying ``size`` bytes, try number ``attempt``.

        Parameters
        ----------
        size : int
            Bytes sent (a PUT's body) or expected; 0 for small requests.
        attempt : int
            1 for the first try; each further try after a timeout doubles
            the time allowed.

        Returns
        -------
        float
            Seconds, at most `ceiling`.
        """
        high = self.high()
        floor = self.floor + max(size, 0) / self.floor_rate
        if high is None:
            base = max(self.initial, floor)
        else:
            base = max(floor, self.factor * high * self._scale(size))
        return min(self.ceiling, base * 2.0 ** max(attempt - 1, 0))

    def observe(self, seconds: float, size: int = 0) -> None:
        """Record that a request of ``size`` bytes answered after ``seconds``."""
        with self._lock:
            self._recent.append(max(seconds, 0.0) / self._scale(size))
            self._high = None
            self.observed += 1

    @contextlib.contextmanager
    def timed(self, size: int = 0, attempt: int = 1) -> Iterator[float]:
        """Give the timeout of one request and observe it if it answers.

        The body of the ``with`` block sends the request with the yielded
        timeout; when the block raises (a timeout, a dropped connection),
        nothing is observed.

        Examples
        --------
        >>> d = Deadline(ceiling=5.0)
        >>> with d.timed() as seconds:
        ...     pass  # e.g. session.get(url, timeout=seconds)
        >>> d.observed
        1
        """
        started = time.monotonic()
        yield self.timeout(size, attempt)
        self.observe(time.monotonic() - started, size)


_hosts: dict[tuple[int, str, float], Deadline] = {}
_hosts_lock = threading.Lock()


def host_deadline(url: str, ceiling: float) -> Deadline:
    """The `Deadline` shared by this process's requests to ``url``'s host.

    One per scheme, host and port (and ``ceiling``), created on first use and
    learned from every request to that host; keyed by process id too, so a
    forked worker process learns afresh instead of sharing its parent's lock.

    Parameters
    ----------
    url : str
        Any URL of the host (``https://host:port/...``, ``s3://bucket/...``).
    ceiling : float
        The upper bound of its deadlines (the reader's timeout).

    Returns
    -------
    Deadline

    Examples
    --------
    >>> a = host_deadline("https://data.example.org/a.fits?sig=x", 30.0)
    >>> a is host_deadline("https://data.example.org/b.fits", 30.0)
    True
    >>> a is host_deadline("https://other.example.org/a.fits", 30.0)
    False
    """
    parts = urllib.parse.urlsplit(url)
    key = (os.getpid(), f"{parts.scheme}://{parts.netloc}".lower(), float(ceiling))
    with _hosts_lock:
        found = _hosts.get(key)
        if found is None:
            found = _hosts[key] = Deadline(ceiling)
        return found
