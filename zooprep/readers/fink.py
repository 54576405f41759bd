"""Sources from the Fink broker's LSST REST API (plain HTTP: Fink has no REST client).

``zooprep select RUN --fink-objects IDS|FILE``, or ``--fink-tag TAG``: the
objects of the latest alerts (`TAG_ALERTS`) Fink gave that tag
(``/api/v1/tags``, its query form).  Per object two calls,
``POST {endpoint}/api/v1/sources`` and ``/api/v1/fp`` with
``{"diaObjectId": "...", "output-format": "json"}``, give every diaSource
and the forced photometry as rows keyed ``r:<column>`` (Rubin's own names;
Fink's added values, ``f:...``, are kept as ``f_...``).  The cutouts of a
diaSource are ``/api/v1/cutouts?diaSourceId=...&kind=Science&output-format=FITS``
(and ``Template``, ``Difference``): the FITS stamps of the alert, fetched at
render time.  Fink answers an empty body when it has no cutout for a
source: that row then fails at render with the reason.

Requests are tried again on time-outs, dropped connections and 429/5xx
(tenacity, exponential back-off); Fink documents no rate limit, but one can
be given (``rate``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

from zooprep.errors import InputError
from zooprep.readers.brokers import BrokerAnswer, BrokerObject, BrokerReader

__all__ = ["DEFAULT_ENDPOINT", "FinkReader", "fink_columns"]

#: Fink's LSST API.
DEFAULT_ENDPOINT = "https://api.lsst.fink-portal.org"
_KINDS = ("Template", "Science", "Difference")
#: Latest alerts of a tag asked for (``n`` of ``/api/v1/tags``).
TAG_ALERTS = 1000
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def fink_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A Fink row with Rubin's names: ``r:psfFlux`` -> ``psfFlux``, ``f:x`` -> ``f_x``.

    Examples
    --------
    >>> fink_columns({"r:psfFlux": 1.0, "f:xm_simbad_otype": "Star"})
    {'psfFlux': 1.0, 'f_xm_simbad_otype': 'Star'}
    """
    out: dict[str, Any] = {}
    for key, value in row.items():
        family, _, name = str(key).partition(":")
        if not name:
            out[family] = value
        elif family == "r":
            out[name] = value
        else:
            out[f"{family}_{name}"] = value
    return out


class _Transient(Exception):
    """An answer worth asking for again."""


class FinkReader(BrokerReader):
    """Sources of Fink (LSST) objects, one per diaSource.

    Parameters
    ----------
    ids : sequence of int or None
        Object ids (``diaObjectId``); None when ``tag`` finds them.
    tag : str or None
        A Fink tag (``/api/v1/tags``): the objects of its latest alerts.
    endpoint : str
        The API root (``https://api.lsst.fink-portal.org``).
    timeout : float
        Seconds allowed per request.
    tries : int
        Attempts per request for transient failures.
    **kwargs
        `~zooprep.readers.brokers.BrokerReader`'s (``per_object``, ``store``,
        ``rate``, ``max_wait``, ``instrument``).
    """

    kind = "fink"
    broker = "fink"

    def __init__(
        self,
        ids: Sequence[int] | None = None,
        *,
        tag: str | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 60.0,
        tries: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(ids, **kwargs)
        if (ids is None) == (tag is None):
            raise InputError("Fink: give object ids or a tag, not both")
        self.tag = tag
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.tries = tries
        self._session: Any = None

    def _post(self, route: str, payload: dict[str, Any]) -> Any:
        """One API call (retried on transient failures); the decoded JSON."""
        import requests
        from tenacity import (
            retry,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
        )

        if self._session is None:
            self._session = requests.Session()
        url = f"{self.endpoint}/api/v1/{route}"

        @retry(
            retry=retry_if_exception_type(
                (_Transient, requests.ConnectionError, requests.Timeout)
            ),
            stop=stop_after_attempt(self.tries),
            wait=wait_exponential(multiplier=0.5, max=30),
            reraise=True,
        )
        def call() -> Any:
            answer = self._session.post(url, json=payload, timeout=self.timeout)
            if answer.status_code in RETRY_STATUS:
                raise _Transient(f"HTTP {answer.status_code}")
            if answer.status_code >= 400:
                text = " ".join(answer.text.split())[:200]
                raise BrokerAnswer(
                    f"Fink {route} {payload.get('diaObjectId')}: HTTP "
                    f"{answer.status_code} {text}"
                )
            try:
                return answer.json()
            except ValueError:
                raise BrokerAnswer(
                    f"Fink {route} {payload.get('diaObjectId')}: answer is not JSON"
                ) from None

        try:
            return call()
        except _Transient as exc:
            raise BrokerAnswer(
                f"Fink {route} {payload.get('diaObjectId')}: {exc} after "
                f"{self.tries} tries"
            ) from None
        except requests.RequestException as exc:
            if isinstance(exc, requests.ConnectionError):
                raise InputError(
                    f"cannot reach Fink at {self.endpoint} ({type(exc).__name__})"
                ) from None
            raise BrokerAnswer(
                f"Fink {route} {payload.get('diaObjectId')}: {type(exc).__name__}"
            ) from None

    def _table(self, route: str, object_id: int) -> list[dict[str, Any]]:
        payload = {"diaObjectId": str(object_id), "output-format": "json"}
        answer = self._call(f"{route}?{object_id}", lambda: self._post(route, payload))
        if not isinstance(answer, list):
            raise BrokerAnswer(
                f"Fink {route} {object_id}: answer is a {type(answer).__name__}, "
                "not a list of rows"
            )
        return [fink_columns(r) for r in answer if isinstance(r, dict)]

    def _candidates(self) -> list[int]:
        if self.tag is None:
            return super()._candidates()
        payload = {
            "tag": self.tag,
            "n": TAG_ALERTS,
            "columns": "r:diaObjectId",
            "output-format": "json",
        }
        try:
            answer = self._call(f"tags?{self.tag}", lambda: self._post("tags", payload))
        except BrokerAnswer as exc:
            raise InputError(f"--fink-tag {self.tag!r}: {exc}") from None
        if not isinstance(answer, list):
            raise InputError(f"--fink-tag {self.tag!r}: Fink answered no rows")
        found: list[int] = []
        for row in answer:
            oid = (
                fink_columns(row).get("diaObjectId") if isinstance(row, dict) else None
            )
            if oid and int(oid) not in found:
                found.append(int(oid))
        self.object_list = found
        return found

    def cutout_urls(self, source_id: int) -> tuple[str, str, str]:
        """The three FITS cutout URLs of a diaSource (template, science, difference)."""
        urls = []
        for kind in _KINDS:
            query = urllib.parse.urlencode(
                {"diaSourceId": str(source_id), "kind": kind, "output-format": "FITS"}
            )
            urls.append(f"{self.endpoint}/api/v1/cutouts?{query}")
        return urls[0], urls[1], urls[2]

    def _fetch(self, object_id: int) -> BrokerObject:
        sources = self._table("sources", object_id)
        if not sources:
            raise BrokerAnswer(f"Fink object {object_id}: unknown to Fink (no sources)")
        forced = self._table("fp", object_id)
        cutouts = {
            int(s["diaSourceId"]): self.cutout_urls(int(s["diaSourceId"]))
            for s in sources
            if s.get("diaSourceId") is not None
        }
        return BrokerObject(object_id, sources, forced, cutouts)

    def describe(self) -> str:
        """The endpoint and the objects or tag."""
        if self.tag is not None:
            return f"fink {self.endpoint} tag {self.tag}"
        return f"fink {self.endpoint} {super().describe().removeprefix('fink ')}"
