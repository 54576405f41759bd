"""Sources from the ALeRCE broker (LSST), through its own client (``alerce``).

``zooprep select RUN --alerce-objects IDS|FILE`` (extra ``zooprep[brokers]``).
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

from collections.abc import Sequence
from typing import Any

from zooprep.errors import InputError
from zooprep.readers.brokers import BrokerAnswer, BrokerObject, BrokerReader

__all__ = ["AlerceReader", "alerce_columns"]

_STAMP_TYPES = ("cutoutTemplate", "cutoutScience", "cutoutDifference")


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
    ids : sequence of int
        Object ids (ALeRCE's ``oid``, Rubin's ``diaObjectId``).
    client : alerce.core.Alerce, optional
        A ready client (by default one is made, configured as the client is).
    **kwargs
        `~zooprep.readers.brokers.BrokerReader`'s (``per_object``, ``store``,
        ``rate``, ``max_wait``, ``instrument``).
    """

    kind = "alerce"
    broker = "alerce"

    def __init__(
        self, ids: Sequence[int], *, client: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(ids, **kwargs)
        self._client = client

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
