"""Kafka messages made from the real alerts of ``tests/data``, as brokers send them."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from typing import Any

import fastavro

from tests.brokers.stamps import RUBIN_RAW, rubin_alerts, rubin_schema

#: Schema id of ``lsst.v10_0`` (major * 100 + minor), the version of the
#: Fink-redistributed alerts in tests/data.
RUBIN_V10 = 1000


def lsst_schema(major: int, minor: int) -> dict[str, Any]:
    """An ``lsst-alert-packet`` alert schema, resolved."""
    from lsst.alert.packet import Schema, get_schema_path

    path = os.path.join(
        get_schema_path(major, minor), f"lsst.v{major}_{minor}.alert.avsc"
    )
    return dict(Schema.from_file(path).definition)


def confluent(schema_id: int, record: Mapping[str, Any], schema: Any) -> bytes:
    """A Rubin alert in the Confluent wire format: 0, the schema id, schemaless Avro."""
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), dict(record))
    return out.getvalue()


def rubin_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A Fink-redistributed alert as Rubin's own record: Fink's empty rows
    (all-null ``ssSource``, ``diaObject``, ``mpc_orbits``) become null."""
    out = dict(record)
    for key, value in out.items():
        if isinstance(value, dict) and all(v is None for v in value.values()):
            out[key] = None
    return out


def rubin_messages(records: Any = None) -> list[bytes]:
    """The real Rubin alerts as Rubin's stream sends them (schema lsst.v10_0)."""
    schema = lsst_schema(10, 0)
    return [
        confluent(RUBIN_V10, rubin_record(r), schema) for r in records or rubin_alerts()
    ]


def rubin_raw() -> bytes:
    """The real raw Rubin Kafka payload (schema id 900) of tests/data/rubin_alerts/boom."""
    return RUBIN_RAW.read_bytes()


def fink_messages() -> list[tuple[bytes, bytes]]:
    """Fink's way: ``(key, value)`` with the writer schema as the key."""
    schema = rubin_schema()
    parsed = fastavro.parse_schema(schema)
    key = json.dumps(schema).encode()
    out = []
    for record in rubin_alerts()[10:]:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, dict(record))
        out.append((key, buf.getvalue()))
    return out


def lasair_messages() -> list[bytes]:
    """Lasair filter output with the lite light curve (objects of real alerts)."""
    out = []
    for record in rubin_alerts():
        src = record["diaSource"]
        if not src.get("diaObjectId"):
            continue
        history = [*(record.get("prvDiaSources") or []), src]
        lite = ("diaSourceId", "midpointMjdTai", "band", "psfFlux", "psfFluxErr")
        doc = {
            "diaObjectId": src["diaObjectId"],
            "nDiaSources": len(history),
            "UTC": "2026-03-05 02:20:00",
            "alert": {
                "diaSourcesList": [{k: h.get(k) for k in lite} for h in history],
                "diaForcedSourcesList": [
                    {k: f.get(k) for k in lite[1:]}
                    for f in record.get("prvDiaForcedSources") or []
                ],
            },
        }
        out.append(json.dumps(doc).encode())
    return out
