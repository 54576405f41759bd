"""A synthetic DiaSource catalog big enough for kill, signal and disk-full tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_big_catalog(path: Path, n: int, seed: int) -> Path:
    """Write ``n`` DiaSource-like rows (64-bit ids, 40 visits, 189 detectors) as CSV.

    The values are random but fixed by ``seed``; positions fall on a 4k x 4k
    detector, so the catalog selects but is not meant to be rendered.
    """
    rng = np.random.default_rng(seed)
    pd.DataFrame(
        {
            "diaSourceId": 506428274000265570 + np.arange(n, dtype=np.int64) * 3,
            "visit": rng.integers(900000, 900040, n),
            "detector": rng.integers(0, 189, n),
            "band": rng.choice(list("ugrizy"), n),
            "x": rng.uniform(0, 4000, n),
            "y": rng.uniform(0, 4000, n),
            "reliability": rng.uniform(0, 1, n),
            "snr": rng.uniform(5, 100, n),
        }
    ).to_csv(path, index=False)
    return path


def write_big_apdb(path: Path, real: Path, n: int) -> Path:
    """An SQLite APDB holding ``n`` DiaSources: the rows of ``real`` repeated.

    ``real`` is an APDB file (tests/data/apdb); its ``DiaSource`` schema (144
    columns) and ``metadata`` are kept, and each copy of its rows gets new
    64-bit ids and its own visit, so ids and image groups stay distinct.
    """
    import sqlite3

    db = sqlite3.connect(path)
    db.execute(f"ATTACH DATABASE 'file:{real}?mode=ro' AS real")
    for (sql,) in db.execute(
        "SELECT sql FROM real.sqlite_master WHERE type = 'table' "
        "AND name IN ('DiaSource', 'metadata')"
    ).fetchall():
        db.execute(sql)
    db.execute("INSERT INTO metadata SELECT * FROM real.metadata")
    columns = [r[1] for r in db.execute("PRAGMA real.table_info('DiaSource')")]
    picked = []
    for c in columns:
        if c == "diaSourceId":
            picked.append(f'600000000000000000 + k.i * 1000 + b.rn AS "{c}"')
        elif c == "visit":
            picked.append(f'2000000 + k.i AS "{c}"')
        else:
            picked.append(f'b."{c}"')
    base = db.execute("SELECT COUNT(*) FROM real.DiaSource").fetchone()[0]
    db.execute(
        f"""
        WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k
                                WHERE i + 1 < {-(-n // base)}),
        b AS (SELECT row_number() OVER (ORDER BY "diaSourceId") AS rn, *
              FROM real.DiaSource)
        INSERT INTO DiaSource SELECT {", ".join(picked)} FROM k CROSS JOIN b
        ORDER BY k.i, b.rn LIMIT {n}
        """
    )
    db.commit()
    db.close()
    return path
