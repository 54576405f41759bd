"""The rows of the tests' DP1 tables, made from the test data.

* The real ci_dc2 APDB (``tests/data/apdb``): its 290 DiaSources, their
  DiaObjects and DiaForcedSources (as ``ForcedSourceOnDiaObject``: the
  APDB's forced ``psfFlux`` is measured on the difference image, so it is
  DP1's ``psfDiffFlux``; its ``scienceFlux`` is DP1's ``psfFlux``), and its
  two visits.
* The DECam triplet (``tests/data/decam_sfft``): `DECAM_SOURCES`, sources at
  fixed pixels of the 256x256 images, with RA/Dec from the images' own WCS,
  in one visit (`DECAM_VISIT`) whose images the SIA/SODA stand-in serves.

Only DP1 column names are written; a DP1 column a row does not have is NULL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The visit of the DECam triplet's sources (a DP1-style visit id).
DECAM_VISIT = 2024110800245
#: Its detector (DECam CCDNUM of the images) and band.
DECAM_DETECTOR = 37
DECAM_BAND = "i"
#: The images' MJD-OBS.
DECAM_MJD = 58334.39133794
#: Ids above 2**62, so that any float on the way would show.
DECAM_FIRST_ID = 4611686018427390001
#: 0-based pixel positions (x, y) of the DECam sources.
DECAM_PIXELS: tuple[tuple[float, float], ...] = (
    (40.0, 40.0),
    (128.0, 128.0),
    (200.5, 60.25),
    (75.3, 190.7),
    (220.0, 220.0),
    (100.0, 30.0),
    (30.0, 150.0),
    (160.0, 100.0),
)


def decam_sources(decam: Path) -> list[dict[str, Any]]:
    """DiaSource rows at `DECAM_PIXELS` of the DECam difference image."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(decam / "FinalDifference.fits") as hdus:
        header = hdus[0].header
        data = hdus[0].data
        wcs = WCS(header)
    rows = []
    for k, (x, y) in enumerate(DECAM_PIXELS):
        ra, dec = (float(v) for v in wcs.pixel_to_world_values(x, y))
        flux = float(data[round(y), round(x)])
        rows.append(
            {
                "diaSourceId": DECAM_FIRST_ID + k,
                "diaObjectId": DECAM_FIRST_ID + 1000 + k,
                "visit": DECAM_VISIT,
                "detector": DECAM_DETECTOR,
                "band": DECAM_BAND,
                "midpointMjdTai": DECAM_MJD,
                "ra": ra,
                "dec": dec,
                "coord_ra": ra,
                "coord_dec": dec,
                "x": x,
                "y": y,
                "psfFlux": flux,
                "psfFluxErr": 10.0,
                "snr": abs(flux) / 10.0,
                "reliability": 0.1 * (k + 1),
            }
        )
    return rows


def _columns(rd: Path) -> dict[str, dict[str, str]]:
    """Column names and types of each table in the RD."""
    import xml.etree.ElementTree as ET

    root = ET.parse(rd).getroot()
    return {
        t.get("id", ""): {
            c.get("name", ""): c.get("type", "") for c in t.findall("column")
        }
        for t in root.findall("table")
    }


def _cell(value: Any, type_: str) -> Any:
    """A JSON value DaCHS reads as ``type_`` (SQLite keeps booleans as 0/1)."""
    if value is None:
        return None
    if type_ == "boolean":
        return bool(value)
    if type_ == "real" and not abs(value) < 3.4e38:
        return None  # a few APDB doubles do not fit DP1's 32-bit floats
    if type_ == "timestamp":
        return None  # not needed by the tests; DP1 writes them, the APDB as text
    return value


def _apdb(path: Path, sql: str) -> Iterator[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        for row in conn.execute(sql):
            yield dict(row)
    finally:
        conn.close()


def table_rows(test_data: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows, keyed by DP1 column name."""
    apdb = test_data / "apdb" / "ci_dc2_apdb.sqlite3"
    sources = list(_apdb(apdb, 'SELECT * FROM "DiaSource" ORDER BY diaSourceId'))
    for s in sources:
        s["coord_ra"], s["coord_dec"] = s["ra"], s["dec"]
    # the APDB keeps each version of an object; DP1 has one row per object
    latest: dict[int, dict[str, Any]] = {}
    for o in _apdb(apdb, 'SELECT * FROM "DiaObject" ORDER BY "validityStart"'):
        latest[o["diaObjectId"]] = o
    objects = list(latest.values())
    positions = {o["diaObjectId"]: (o["ra"], o["dec"]) for o in objects}
    forced = []
    for f in _apdb(apdb, 'SELECT * FROM "DiaForcedSource"'):
        ra, dec = positions.get(f["diaObjectId"], (None, None))
        forced.append(
            {
                "diaObjectId": f["diaObjectId"],
                "visit": f["visit"],
                "detector": f["detector"],
                "band": f["band"],
                "coord_ra": ra,
                "coord_dec": dec,
                "psfDiffFlux": f["psfFlux"],
                "psfDiffFluxErr": f["psfFluxErr"],
                "psfFlux": f["scienceFlux"],
                "psfFluxErr": f["scienceFluxErr"],
            }
        )
    visits: dict[int, dict[str, Any]] = {}
    for s in [*sources, *_apdb(apdb, 'SELECT * FROM "DiaForcedSource"')]:
        visits.setdefault(
            s["visit"],
            {
                "visit": s["visit"],
                "band": s["band"],
                "expMidptMJD": s["midpointMjdTai"],
            },
        )
    decam = decam_sources(test_data / "decam_sfft")
    sources.extend(decam)
    objects.extend(
        {
            "diaObjectId": s["diaObjectId"],
            "ra": s["ra"],
            "dec": s["dec"],
            "nDiaSources": 1,
            "radecMjdTai": DECAM_MJD,
        }
        for s in decam
    )
    visits[DECAM_VISIT] = {
        "visit": DECAM_VISIT,
        "band": DECAM_BAND,
        "physical_filter": "i DECam SDSS c0003 7835.0 1470.0",
        "expMidptMJD": DECAM_MJD,
        "expTime": 330.0,
    }
    return {
        "DiaSource": sources,
        "DiaObject": objects,
        "ForcedSourceOnDiaObject": forced,
        "Visit": list(visits.values()),
    }


def write_tables(rd: Path, folder: Path, test_data: Path) -> dict[str, int]:
    """Write ``<table>.jsonl`` for the RD's import; return the row counts."""
    columns = _columns(rd)
    counts = {}
    for table, rows in table_rows(test_data).items():
        types = columns[table]
        with (folder / f"{table}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                cells = {n: _cell(row.get(n), t) for n, t in types.items()}
                f.write(json.dumps(cells) + "\n")
        counts[table] = len(rows)
    return counts
