"""Memory and throughput of ``zooprep select`` on a large generated APDB.

Run by hand::

    python benchmarks/bench_select.py                 # 1,000,000 DiaSources
    python benchmarks/bench_select.py --rows 200000   # quicker

It builds an SQLite APDB with the real ci_dc2 ``DiaSource`` schema (144
columns) holding ``--rows`` rows (the 290 real rows repeated with new 64-bit
ids, visits and detectors), then measures, each in a fresh subprocess (peak
RSS from ``getrusage``):

* ``stream``: `ApdbReader.rows` over every row (the reader alone);
* ``select-all``: ``zooprep.select`` of every row into a run (reader + run state);
* ``sample``: ``zooprep.select --sample 10000 --seed 1`` (id scan + fetch);
* ``stratify``: the same with ``--stratify reliability:10``;
* ``pandas``: the obvious alternative, ``pandas.read_sql`` of the whole table.

Prints one line per case: seconds, rows/s, peak RSS in MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APDB = ROOT / "tests" / "data" / "apdb" / "ci_dc2_apdb.sqlite3"


def build_apdb(path: Path, rows: int) -> None:
    """An APDB file with the real DiaSource schema and ``rows`` rows."""
    src = sqlite3.connect(f"file:{APDB}?mode=ro", uri=True)
    schema = src.execute(
        "SELECT sql FROM sqlite_master WHERE type='table' AND name IN ('DiaSource', 'metadata')"
    ).fetchall()
    columns = [r[1] for r in src.execute('PRAGMA table_info("DiaSource")')]
    src.close()
    db = sqlite3.connect(path)
    for (sql,) in schema:
        db.execute(sql)
    db.execute(f"ATTACH DATABASE 'file:{APDB}?mode=ro' AS real")
    db.execute("INSERT INTO metadata SELECT * FROM real.metadata")
    db.execute(
        'CREATE TEMP TABLE base AS SELECT row_number() OVER (ORDER BY "diaSourceId") - 1 '
        "AS k, * FROM real.DiaSource"
    )
    n_base = db.execute("SELECT COUNT(*) FROM base").fetchone()[0]
    select_cols = []
    for c in columns:
        q = f'"{c}"'
        if c == "diaSourceId":
            select_cols.append(f"500000000000000000 + n.i * 1000 + b.k AS {q}")
        elif c == "visit":
            select_cols.append(f"1000000 + n.i / 300 AS {q}")
        elif c == "detector":
            select_cols.append(f"n.i % 189 AS {q}")
        else:
            select_cols.append(f"b.{q}")
    reps = (rows + n_base - 1) // n_base
    db.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {reps})
        INSERT INTO DiaSource ({", ".join(f'"{c}"' for c in columns)})
        SELECT {", ".join(select_cols)} FROM n CROSS JOIN base AS b
        ORDER BY n.i, b.k LIMIT {rows}
        """
    )
    db.commit()
    db.close()


CASES = {
    "stream": """
from zooprep.readers.apdb import ApdbReader
n = 0
with ApdbReader(URL) as reader:
    for row in reader.rows(None):
        n += 1
""",
    "select-all": """
import zooprep
n = zooprep.select(WORK + "/run-all", apdb=URL).selected
""",
    "sample": """
import zooprep
zooprep.select(WORK + "/run-sample", apdb=URL, sample=10000, seed=1)
n = ROWS
""",
    "stratify": """
import zooprep
zooprep.select(WORK + "/run-strat", apdb=URL, sample=10000, seed=1,
               stratify="reliability:10")
n = ROWS
""",
    "pandas": """
import pandas as pd, sqlalchemy as sa
engine = sa.create_engine(URL)
frame = pd.read_sql_table("DiaSource", engine)
n = len(frame)
""",
}


def measure(case: str, url: str, work: str, rows: int) -> dict[str, float]:
    """Run one case in a fresh interpreter; return seconds, rows and peak RSS."""
    code = (
        f"import resource, time, json\nURL = {url!r}\nWORK = {work!r}\nROWS = {rows}\n"
        "t0 = time.perf_counter()\n"
        + CASES[case]
        + "\nprint(json.dumps({'seconds': time.perf_counter() - t0, 'rows': n, "
        "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zooprep-bench-select-"))
    try:
        apdb = work / "apdb.sqlite3"
        t0 = time.perf_counter()
        build_apdb(apdb, args.rows)
        size = apdb.stat().st_size / 2**20
        print(
            f"built {apdb} with {args.rows} DiaSources ({size:.0f} MB) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        url = f"sqlite:///{apdb}"
        for case in args.cases.split(","):
            r = measure(case, url, str(work), args.rows)
            rate = r["rows"] / r["seconds"] if r["seconds"] else float("nan")
            print(
                f"{case:>10}: {r['seconds']:8.1f} s  {rate:10.0f} rows/s  "
                f"peak RSS {r['rss_mb']:7.0f} MB"
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
