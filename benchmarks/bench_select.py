"""Memory and throughput of ``zooprep select`` on a large generated APDB.

Run by hand::

    python benchmarks/bench_select.py                 # 1,000,000 DiaSources
    python benchmarks/bench_select.py --rows 200000   # quicker
    python benchmarks/bench_select.py --zooprep /tmp/old-checkout  # another version

It builds an SQLite APDB with the real ci_dc2 ``DiaSource`` schema (144
columns) holding ``--rows`` rows (or reuses ``--apdb FILE``), then measures,
each in a fresh subprocess (peak RSS from ``getrusage``):

* ``sqlite3``: Python's own ``sqlite3`` fetching every row (the bare fetch);
* ``stream``: `ApdbReader.rows` over every row (the reader alone);
* ``select-all``: ``zooprep.select`` of every row into a run (reader + run state);
* ``select-where``: the same with ``--where "reliability > 0.5"``;
* ``sample``: ``zooprep.select --sample 10000 --seed 1`` (id scan + fetch);
* ``stratify``: the same with ``--stratify reliability:10``;
* ``pandas``: the obvious alternative, ``pandas.read_sql`` of the whole table;
* ``catalog-parquet``, ``catalog-csv``, ``catalog-fits``: ``zooprep.select``
  of every row of a catalog file holding 16 of the APDB's columns;
* ``alerts``: ``zooprep.select`` of a folder of Avro alert packets (the test
  data's ZTF and Rubin packets, copied ``--alert-copies`` times; repeated ids
  are read and skipped), rows/s counting every packet record read.

``--zooprep DIR`` runs the cases against the zooprep package in checkout
DIR (e.g. the commit before a change, for a before/after in one run).

Prints one line per case: wall seconds, rows/s, CPU seconds of the process
(user + system: on a loaded machine the fairer comparison), peak RSS in MB.
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


#: The columns of the catalog files (a catalog's usual few, from the APDB).
CATALOG_COLUMNS = [
    "diaSourceId", "visit", "detector", "ra", "dec", "x", "y", "band",
    "reliability", "snr", "psfFlux", "psfFluxErr", "isDipole", "ssObjectId",
    "pixelFlags_edge", "midpointMjdTai",
]  # fmt: skip


def build_catalogs(apdb: Path, work: Path) -> None:
    """``catalog.parquet``, ``.csv`` and ``.fits`` with `CATALOG_COLUMNS` of every row."""
    import pandas as pd
    from astropy.table import Table

    cols = ", ".join(f'"{c}"' for c in CATALOG_COLUMNS)
    with sqlite3.connect(f"file:{apdb}?mode=ro", uri=True) as db:
        frame = pd.read_sql_query(f"SELECT {cols} FROM DiaSource", db)
    for flag in ("isDipole", "pixelFlags_edge"):
        frame[flag] = frame[flag].astype(bool)
    frame["ssObjectId"] = frame["ssObjectId"].astype("Int64")
    frame.to_parquet(work / "catalog.parquet")
    frame.to_csv(work / "catalog.csv", index=False)
    table = Table.from_pandas(frame.assign(ssObjectId=frame["ssObjectId"].fillna(0)))
    table.write(work / "catalog.fits")


def build_alerts(folder: Path, copies: int) -> int:
    """Copy the test data's alert packets ``copies`` times; return the records."""
    sys.path.insert(0, str(ROOT))
    from zooprep.avro import read_records
    from zooprep.errors import InputError

    sources, records = [], 0
    for path in sorted((ROOT / "tests" / "data").glob("*_alerts/**/*.avro")):
        try:
            records += len(list(read_records(str(path))))
        except InputError:
            continue  # a bare Confluent payload: not an alert file on its own
        sources.append(path)
    for k in range(copies):
        for n, path in enumerate(sources):
            target = folder / str(k) / f"{n}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return records * copies


CASES = {
    "sqlite3": """
import sqlite3
db = sqlite3.connect("file:" + URL[len("sqlite:///"):] + "?mode=ro", uri=True)
n = 0
for row in db.execute('SELECT * FROM DiaSource ORDER BY "diaSourceId"'):
    n += 1
""",
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
    "select-where": """
import zooprep
n = zooprep.select(WORK + "/run-where", apdb=URL, where="reliability > 0.5").selected
""",
    "catalog-parquet": """
import zooprep
n = zooprep.select(WORK + "/run-parquet", catalog=WORK + "/catalog.parquet").selected
""",
    "catalog-csv": """
import zooprep
n = zooprep.select(WORK + "/run-csv", catalog=WORK + "/catalog.csv").selected
""",
    "catalog-fits": """
import zooprep
n = zooprep.select(WORK + "/run-fits", catalog=WORK + "/catalog.fits").selected
""",
    "alerts": """
import zooprep
r = zooprep.select(WORK + "/run-alerts", alerts=WORK + "/alerts")
n = r.selected + r.duplicates + r.already_in_run
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


def measure(
    case: str, url: str, work: str, rows: int, checkout: str | None = None
) -> dict[str, float]:
    """Run one case in a fresh interpreter; return seconds, rows and peak RSS."""
    path = f"import sys; sys.path.insert(0, {checkout!r})\n" if checkout else ""
    code = (
        path
        + f"import resource, time, json\nURL = {url!r}\nWORK = {work!r}\nROWS = {rows}\n"
        "t0 = time.perf_counter()\n"
        + CASES[case]
        + "\nprint(json.dumps({'seconds': time.perf_counter() - t0, 'rows': n, "
        "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'cpu_s': sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}))\n"
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
    parser.add_argument("--apdb", type=Path, help="use this APDB file (not built)")
    parser.add_argument(
        "--zooprep", help="run the cases with the zooprep of this checkout"
    )
    parser.add_argument("--alert-copies", type=int, default=40)
    parser.add_argument("--work", type=Path, help="work directory (kept; reused)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="zooprep-bench-select-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = args.cases.split(",")
    try:
        apdb = args.apdb or work / "apdb.sqlite3"
        if not apdb.exists():
            t0 = time.perf_counter()
            build_apdb(apdb, args.rows)
            size = apdb.stat().st_size / 2**20
            print(
                f"built {apdb} with {args.rows} DiaSources ({size:.0f} MB) in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        with sqlite3.connect(f"file:{apdb}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT COUNT(*) FROM DiaSource").fetchone()[0]
        if (
            any(c.startswith("catalog") for c in cases)
            and not (work / "catalog.fits").exists()
        ):
            # in a child, so that this process stays small: a child's peak
            # RSS starts from its parent's on Linux
            subprocess.run(
                [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                 "from bench_select import build_catalogs; from pathlib import Path; "
                 "build_catalogs(Path(sys.argv[2]), Path(sys.argv[3]))",
                 str(Path(__file__).parent), str(apdb), str(work)],
                check=True,
            )  # fmt: skip
        if "alerts" in cases and not (work / "alerts").exists():
            print(f"alerts: {build_alerts(work / 'alerts', args.alert_copies)} records")
        url = f"sqlite:///{apdb}"
        for case in cases:
            for old in work.glob("run-*"):
                shutil.rmtree(old)
            r = measure(case, url, str(work), rows, args.zooprep)
            rate = r["rows"] / r["seconds"] if r["seconds"] else float("nan")
            print(
                f"{case:>15}: {r['seconds']:8.1f} s  {rate:10.0f} rows/s  "
                f"CPU {r['cpu_s']:6.1f} s  peak RSS {r['rss_mb']:7.0f} MB",
                flush=True,
            )
    finally:
        for old in work.glob("run-*"):
            shutil.rmtree(old)
        if args.keep or args.work:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
