"""Sources from the ALeRCE broker (LSST), through its own client (``alerce``).

``zooprep select RUN --alerce-objects IDS|FILE``, or ``--alerce-query
'classifier=C class_name=SN probability=0.7'`` (its query form, the client's
``query_objects``: every page of objects that match; extra
``zooprep[brokers]``).
Per object ``query_detections(survey="lsst", oid=...)`` and
``query_forced_photometry(...)`` give the diaSources (``measurement_id`` is
the diaSourceId, ``band_name`` the band, ``mjd`` the time, ``has_stamp``
whether ALeRCE keeps its stamps) and the forced photometry.  The stamp URLs
are the ones the client's ``get_stamps`` asks (its
``ms_stamp_utils.create_stamp_parameters``, ``file_format=fits``): ALeRCE
answers them gzipped; render fetches the three of a source concurrently,
where the client fetches them one after the other.

Where the client is pointed comes from the client itself: its default
configuration, or the JSON file named by ``ALERCE_CONFIG_PATH``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from zooprep.errors import InputError
from zooprep.readers.brokers import BrokerAnswer, BrokerObject, BrokerReader

__all__ = ["AlerceReader", "alerce_columns", "parse_query"]

_STAMP_TYPES = ("cutoutTemplate", "cutoutScience", "cutoutDifference")
#: Objects per ``query_objects`` page.
PAGE = 1000


def parse_query(text: str) -> dict[str, str]:
    """``KEY=VALUE`` words of an ``--alerce-query`` as ``query_objects`` arguments.

    Examples
    --------
    >>> parse_query("classifier=stamp_classifier class_name='SN'")
    {'classifier': 'stamp_classifier', 'class_name': 'SN'}
    """
    import shlex

    out: dict[str, str] = {}
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InputError(f"--alerce-query {text!r}: {exc}") from None
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InputError(
                f"--alerce-query {text!r}: {word!r} is not KEY=VALUE "
                "(e.g. classifier=stamp_classifier class_name=SN)"
            )
        if key in ("survey", "page", "page_size", "format"):
            raise InputError(f"--alerce-query: zooprep sets {key} itself")
        out[key] = value
    return out


def alerce_columns(row: dict[str, Any]) -> dict[str, Any]:
    """An ALeRCE LSST detection with Rubin's names.

    ``measurement_id`` -> ``diaSourceId``, ``mjd`` -> ``midpointMjdTai``,
    ``band_name`` -> ``band`` (the number stays as ``alerce_band``), ``oid``
    -> ``diaObjectId``.

    Examples
    --------
    >>> alerce_columns({"oid": 5, "measurement_id": 7, "mjd": 61000.5,
    ...                 "band": 2, "band_name": "r"})["band"]
    'r'
    """
    out = dict(row)
    if "measurement_id" in out:
        out["diaSourceId"] = out.pop("measurement_id")
    if "mjd" in out:
        out["midpointMjdTai"] = out.pop("mjd")
    if "band_name" in out:
        out["alerce_band"] = out.get("band")
        out["band"] = out.pop("band_name")
    if "oid" in out:
        out.setdefault("diaObjectId", out.pop("oid"))
    out.pop("band_map", None)
    return out


class AlerceReader(BrokerReader):
    """Sources of ALeRCE (LSST) objects, one per diaSource with stamps.

    Parameters
    ----------
    ids : sequence of int or None
        Object ids (ALeRCE's ``oid``, Rubin's ``diaObjectId``); None when
        ``query`` finds them.
    query : str or None
        ``KEY=VALUE`` words for the client's ``query_objects`` (see
        `parse_query`).
    client : alerce.core.Alerce, optional
        A ready client (by default one is made, configured as the client is).
    **kwargs
        `~zooprep.readers.brokers.BrokerReader`'s (``per_object``, ``store``,
        ``rate``, ``max_wait``, ``instrument``).
    """

    kind = "alerce"
    broker = "alerce"

    def __init__(
        self,
        ids: Sequence[int] | None = None,
        *,
        query: str | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(ids, **kwargs)
        if (ids is None) == (query is None):
            raise InputError("ALeRCE: give object ids or a query, not both")
        self.query = query
        self.query_params = parse_query(query) if query is not None else None
        self._client = client

    def _candidates(self) -> list[int]:
        if self.query_params is None:
            return super()._candidates()
        found: list[int] = []
        page = 1
        while True:
            params = {**self.query_params, "page": page, "page_size": PAGE}
            key = "query_objects?" + "&".join(f"{k}={v}" for k, v in params.items())
            items = self._call(key, functools.partial(self._objects, params))
            for item in items:
                oid = item.get("oid") if isinstance(item, dict) else None
                if oid is not None and int(oid) not in found:
                    found.append(int(oid))
            if len(items) < PAGE:
                break
            page += 1
        self.object_list = found
        return found

    def _objects(self, params: dict[str, Any]) -> list[Any]:
        """One page of ``query_objects`` (a bad query is an InputError)."""
        import requests
        from alerce.exceptions import APIError

        try:
            answer = self._alerce().query_objects(
                survey="lsst", format="json", **params
            )
        except ValueError as exc:
            raise InputError(f"--alerce-query {self.query!r}: {exc}") from None
        except APIError as exc:
            message = " ".join(str(getattr(exc, "message", exc)).split())[:200]
            raise InputError(
                f"--alerce-query {self.query!r}: ALeRCE says {message}"
            ) from None
        except requests.ConnectionError as exc:
            raise InputError(
                f"cannot reach ALeRCE ({type(exc).__name__}); check its "
                "configuration (ALERCE_CONFIG_PATH)"
            ) from None
        return list(answer) if isinstance(answer, list) else []

    def describe(self) -> str:
        """The objects or the query."""
        if self.query is not None:
            return f"alerce query {self.query}"
        return super().describe()

    def _alerce(self) -> Any:
        if self._client is None:
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from alerce.core import Alerce
            except ImportError:
                raise InputError(
                    "reading ALeRCE needs the alerce client: "
                    "pip install 'zooprep[brokers]'"
                ) from None
            self._client = Alerce()
        return self._client

    @property
    def stamp_url(self) -> str:
        """The stamps route the client asks (``.../stamps_api/stamp``)."""
        config = self._alerce().multisurvey_stamps_client.config
        return str(config["STAMP_URL"]) + str(config["AVRO_ROUTES"]["get_stamp"])

    def _ask(self, method: str, object_id: int) -> list[dict[str, Any]]:
        import requests
        from alerce.exceptions import APIError

        def call() -> Any:
            try:
                return getattr(self._alerce(), method)(
                    survey="lsst", oid=object_id, format="json"
                )
            except APIError as exc:
                code = getattr(exc, "code", None)
                message = " ".join(str(getattr(exc, "message", exc)).split())[:200]
                raise BrokerAnswer(
                    f"ALeRCE {method} {object_id}: HTTP {code} {message}"
                ) from None
            except requests.ConnectionError as exc:
                raise InputError(
                    f"cannot reach ALeRCE ({type(exc).__name__}); check its "
                    "configuration (ALERCE_CONFIG_PATH)"
                ) from None
            except (requests.RequestException, ValueError, KeyError) as exc:
                raise BrokerAnswer(
                    f"ALeRCE {method} {object_id}: {type(exc).__name__}"
                ) from None

        answer = self._call(f"{method}?{object_id}", call)
        if not isinstance(answer, list):
            raise BrokerAnswer(f"ALeRCE {method} {object_id}: answer is not a list")
        return [alerce_columns(r) for r in answer if isinstance(r, dict)]

    def _fetch(self, object_id: int) -> BrokerObject:
        from alerce.ms_stamp_utils import create_stamp_parameters

        sources = self._ask("query_detections", object_id)
        if not sources:
            raise BrokerAnswer(
                f"ALeRCE object {object_id}: unknown to ALeRCE (no detections)"
            )
        forced = self._ask("query_forced_photometry", object_id)
        base = self.stamp_url
        cutouts: dict[int, tuple[str, str, str]] = {}
        for s in sources:
            if s.get("diaSourceId") is None or not s.get("has_stamp"):
                continue
            sid = int(s["diaSourceId"])
            t, sc, d = (
                create_stamp_parameters(object_id, "lsst", sid, kind, base, "get")
                for kind in _STAMP_TYPES
            )
            cutouts[sid] = (t, sc, d)
        return BrokerObject(object_id, sources, forced, cutouts)

    def _expiry_note(self) -> str:
        return "ALeRCE marks none of its detections has_stamp"
