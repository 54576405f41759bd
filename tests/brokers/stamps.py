"""Real alerts and their stamps from ``tests/data``, as brokers would serve them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import fastavro

DATA = Path(__file__).resolve().parent.parent / "data"
RUBIN = sorted((DATA / "rubin_alerts" / "fink-filters-repacked").glob("*.avro"))
FINK_CONTAINER = DATA / "rubin_alerts" / "fink-client" / "part-2-918301.avro"
RUBIN_RAW = DATA / "rubin_alerts" / "boom" / "7912941781254298.avro"
ZTF = sorted((DATA / "ztf_alerts" / "ampel").glob("5*.avro"))
KINDS = ("Science", "Template", "Difference")


@functools.cache
def rubin_alerts() -> tuple[dict[str, Any], ...]:
    """The real Rubin alerts (Fink's transfer records), ten single-alert files and
    the seven of Fink's container, ascending by diaSourceId."""
    records: list[dict[str, Any]] = []
    for path in [*RUBIN, FINK_CONTAINER]:
        with open(path, "rb") as f:
            records.extend(fastavro.reader(f))
    records.sort(key=lambda r: int(r["diaSource"]["diaSourceId"]))
    return tuple(records)


def rubin_schema(path: Path = FINK_CONTAINER) -> dict[str, Any]:
    """The writer schema embedded in a Fink container (Fink's LSST transfer schema)."""
    with open(path, "rb") as f:
        return dict(fastavro.reader(f).writer_schema)


def rubin_stamp(record: dict[str, Any], kind: str) -> bytes:
    """Raw FITS bytes of one stamp of a Rubin alert (``kind`` Science, ...)."""
    return bytes(record[f"cutout{kind}"])


@functools.cache
def ztf_alerts() -> tuple[dict[str, Any], ...]:
    """Real ZTF alerts (AMPEL's test files)."""
    out: list[dict[str, Any]] = []
    for path in ZTF:
        with open(path, "rb") as f:
            out.extend(fastavro.reader(f))
    return tuple(out)


def ztf_stamp(record: dict[str, Any], kind: str) -> bytes:
    """Gzipped FITS ``stampData`` of one stamp of a ZTF alert."""
    return bytes(record[f"cutout{kind}"]["stampData"])
