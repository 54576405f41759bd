"""Light curves of sources read from an alert broker or a stream.

The broker readers (and the Kafka reader, for Lasair's JSON messages) write
each object's whole history into the run (``RUN/history/<broker>-<id>.json``:
``sources`` and ``forced`` entries with ``diaSourceId``, ``midpointMjdTai``,
``band``, ``psfFlux``, ``psfFluxErr``; see
`zooprep.readers.brokers.write_history`) and name the file in each row's
``_history_path``.  `BrokerHistory` reads each file once per batch and draws
every source's light curve from it: the other sources as detections, the
forced photometry as forced points, the source itself ringed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from zooprep.lightcurves import LightCurve, row_light_curve, rubin_light_curve

__all__ = ["BrokerHistory"]


class BrokerHistory:
    """Light curves from the object histories a broker select wrote in the run."""

    def light_curves(
        self, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> Iterator[tuple[int, LightCurve | str]]:
        """``(source_id, light curve or why not)`` per row; each file read once."""
        histories: dict[str, dict[str, Any] | str] = {}
        for sid, row in rows:
            path = row.get("_history_path")
            if not path:
                yield sid, row_light_curve(sid, row)
                continue
            path = str(path)
            if path not in histories:
                try:
                    with open(path, encoding="utf-8") as f:
                        histories[path] = json.load(f)
                except (OSError, ValueError) as exc:
                    histories[path] = f"light curve: cannot read {path} ({exc})"
            doc = histories[path]
            if isinstance(doc, str):
                yield sid, doc
                continue
            sources = [s for s in doc.get("sources") or [] if isinstance(s, Mapping)]
            own = next(
                (s for s in sources if s.get("diaSourceId") == sid),
                {
                    k: row.get(k)
                    for k in (
                        "diaSourceId",
                        "midpointMjdTai",
                        "band",
                        "psfFlux",
                        "psfFluxErr",
                    )
                },
            )
            record = {
                "diaSource": {**own, "diaObjectId": doc.get("diaObjectId")},
                "prvDiaSources": sources,
                "prvDiaForcedSources": doc.get("forced") or [],
            }
            yield sid, rubin_light_curve(sid, record)
