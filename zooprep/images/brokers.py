"""Cutouts that an alert broker serves over HTTP (Lasair, Fink, ALeRCE).

`BrokerCutouts` is the image source of a run selected from a broker: each row
carries the URLs of its three cutouts (``_cutout_template``,
``_cutout_science``, ``_cutout_difference``, written by the broker readers in
`zooprep.readers.brokers`).  The three files of a row, and the rows of a
batch, are fetched concurrently (``workers`` requests in flight per render
worker), so a broker's latency is paid about once per batch, not three
times per source.  Each answer goes through the one cutout reader
(`zooprep.images.cutoutdata.read_cutout`): Lasair's plain FITS, Fink's FITS,
ALeRCE's gzipped FITS, base64 or JSON wrappings alike.

Time-outs, dropped connections and HTTP 429/5xx are tried again (up to
``tries`` times, exponential back-off, tenacity).  A cutout that is still
missing, an answer that is not FITS (an empty body: the broker no longer has
it; an HTML error page) fails its row with a one-line reason naming the
cutout and the URL without its query string; the other rows carry on.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from zooprep.deadlines import host_deadline
from zooprep.errors import InputError
from zooprep.images.base import Cutouts, Failed, column_listing
from zooprep.images.cutoutdata import CutoutError, read_cutout
from zooprep.images.stamps import (
    RUBIN_PIXEL_SCALE,
    AlertStamps,
    cut_stamps,
    stamp_pixel_scale,
)

__all__ = ["COLUMNS", "BrokerCutouts", "StreamImages"]

log = logging.getLogger(__name__)

#: Row columns of the three URLs (template, science, difference).
COLUMNS = ("_cutout_template", "_cutout_science", "_cutout_difference")
_NAMES = ("template", "science", "difference")
#: HTTP statuses worth asking again.
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """An answer worth asking for again."""


def _shown(url: str) -> str:
    """A URL without its query string (it may hold a signature or a token)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class BrokerCutouts:
    """The three cutouts of each source, fetched from a broker's URLs.

    Parameters
    ----------
    workers : int
        Requests in flight at once (per render worker process).
    timeout : float
        Upper bound in seconds of each request's deadline, which is learned
        from the broker's answers so far (`zooprep.deadlines.host_deadline`:
        a hung request is given up after seconds and tried again).
    tries : int
        Attempts per cutout for transient failures.
    wait : float
        First back-off in seconds (doubling, at most 30).

    Examples
    --------
    >>> BrokerCutouts().group_key({"diaObjectId": 7, "_broker": "lasair"})
    'lasair:7'
    """

    def __init__(
        self,
        *,
        workers: int = 12,
        timeout: float = 30.0,
        tries: int = 4,
        wait: float = 0.5,
    ) -> None:
        self.workers = max(1, int(workers))
        self.timeout = float(timeout)
        self.tries = max(1, int(tries))
        self.wait = float(wait)
        #: HTTP requests made (in this process).
        self.requests = 0

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def check(self, columns: Sequence[str]) -> None:
        """Raise InputError unless rows carry the three cutout URLs."""
        for name in COLUMNS:
            if name not in columns:
                raise InputError(
                    f"broker cutouts need column {name!r} (rows selected from a broker);"
                    f" available columns: {column_listing(columns)}"
                )

    def group_key(self, row: Mapping[str, Any]) -> str:
        """The broker's object: render keeps an object's sources together."""
        return f"{row.get('_broker', 'broker')}:{row.get('diaObjectId')}"

    def _get(self, session: Any, url: str) -> bytes:
        """One cutout's bytes, tried again on transient failures."""
        import requests
        from tenacity import (
            retry,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
        )

        deadline = host_deadline(url, self.timeout)
        tries = 0

        @retry(
            retry=retry_if_exception_type(
                (_Transient, requests.ConnectionError, requests.Timeout)
            ),
            stop=stop_after_attempt(self.tries),
            wait=wait_exponential(multiplier=self.wait, max=30),
            reraise=True,
        )
        def fetch() -> bytes:
            nonlocal tries
            tries += 1
            self.requests += 1
            with deadline.timed(attempt=tries) as seconds:
                answer = session.get(url, timeout=seconds)
            if answer.status_code in RETRY_STATUS:
                raise _Transient(f"HTTP {answer.status_code}")
            if answer.status_code >= 400:
                raise CutoutError(f"HTTP {answer.status_code}")
            return bytes(answer.content)

        return fetch()

    def _row(
        self, session: Any, pool: ThreadPoolExecutor, row: Mapping[str, Any]
    ) -> Any:
        """Futures of one row's three answers (an exception stands for a failure)."""
        return [pool.submit(self._one, session, str(row.get(c) or "")) for c in COLUMNS]

    def _one(self, session: Any, url: str) -> tuple[np.ndarray, Any] | str:
        """One cutout decoded, or why not."""
        import requests

        if not url:
            return "no URL"
        try:
            return read_cutout(self._get(session, url))
        except CutoutError as exc:
            return f"{exc} ({_shown(url)})"
        except _Transient as exc:
            return f"{exc} after {self.tries} tries ({_shown(url)})"
        except requests.RequestException as exc:
            kind = type(exc).__name__
            return f"{kind} after {self.tries} tries ({_shown(url)})"

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        """Yield one `Cutouts` or `Failed` per ``(source_id, row)``, in order.

        With no ``sizes`` each cutout is shown whole at its native size.
        """
        import requests

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=self.workers
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with ThreadPoolExecutor(self.workers) as pool:
                # Keep a few rows ahead in flight: latency overlaps, memory stays flat.
                ahead = max(2, self.workers // 3 * 2)
                pending: deque[tuple[int, Mapping[str, Any], Any]] = deque()
                for sid, row in rows:
                    pending.append((sid, row, self._row(session, pool, row)))
                    if len(pending) > ahead:
                        yield self._done(pending.popleft(), sizes, use_footprint)
                while pending:
                    yield self._done(pending.popleft(), sizes, use_footprint)
        finally:
            session.close()

    def _done(
        self,
        item: tuple[int, Mapping[str, Any], Any],
        sizes: Sequence[int],
        use_footprint: bool,
    ) -> Cutouts | Failed:
        sid, row, futures = item
        return self._cut(sid, row, [f.result() for f in futures], sizes, use_footprint)

    def _cut(
        self,
        source_id: int,
        row: Mapping[str, Any],
        answers: list[tuple[np.ndarray, Any] | str],
        sizes: Sequence[int],
        use_footprint: bool,
    ) -> Cutouts | Failed:
        broker = row.get("_broker", "broker")
        for name, answer in zip(_NAMES, answers, strict=True):
            if isinstance(answer, str):
                return Failed(source_id, f"{broker} {name} cutout: {answer}")
        images = [a[0] for a in answers if not isinstance(a, str)]
        header = answers[1][1] if not isinstance(answers[1], str) else None
        cut = cut_stamps(source_id, images, sizes, row, use_footprint)
        if isinstance(cut, str):
            return Failed(source_id, f"{broker} cutouts: {cut}")
        triplets, padded = cut
        scale = stamp_pixel_scale(header) if header is not None else RUBIN_PIXEL_SCALE
        return Cutouts(source_id, triplets, pixel_scale=scale, padded=padded)


class StreamImages:
    """The image source of a run read from Kafka: stamps or broker cutouts, per row.

    Rubin and Fink alerts were written into the run with their stamps
    (``_alert_path``: `~zooprep.images.stamps.AlertStamps` cuts them);
    Lasair's messages carry cutout URLs (`BrokerCutouts` fetches them).

    Parameters
    ----------
    **kwargs
        `BrokerCutouts`' settings.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.stamps = AlertStamps()
        self.remote = BrokerCutouts(**kwargs)

    def check(self, columns: Sequence[str]) -> None:
        """Raise InputError unless rows carry stamps or cutout URLs."""
        if "_alert_path" not in columns:
            self.remote.check(columns)

    def group_key(self, row: Mapping[str, Any]) -> str:
        """The stream file of an alert, or the broker's object."""
        if row.get("_alert_path") is not None:
            return self.stamps.group_key(row)
        return self.remote.group_key(row)

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        """Yield one `Cutouts` or `Failed` per row, in order."""
        run: list[tuple[int, Mapping[str, Any]]] = []
        stamped: bool | None = None
        for item in [*rows, None]:
            kind = None if item is None else item[1].get("_alert_path") is not None
            if run and (item is None or kind != stamped):
                source = self.stamps if stamped else self.remote
                yield from source.cutouts(run, sizes, use_footprint)
                run = []
            if item is not None:
                run.append(item)
                stamped = kind
