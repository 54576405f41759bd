"""How fast the ``zooprep`` command answers, against a bare interpreter.

Run by hand::

    python benchmarks/bench_startup.py            # 20 rounds
    python benchmarks/bench_startup.py -n 50 --tree /path/to/other/checkout

Builds a small run (select of 30 catalogue rows, a few marked failed) in a
temporary directory, then times, in alternating rounds so machine load hits
them alike, each as a fresh subprocess:

* ``python -c pass`` (the interpreter alone, the baseline);
* ``python -m zooprep --help``;
* ``python -m zooprep status RUN``;
* ``python -c "import zooprep"``.

Prints the median and best wall time of each, and each command's median
overhead over the bare interpreter.  ``--tree`` runs the commands against
another checkout's ``zooprep`` package (first on ``sys.path``, with an
editable install's finder taken out of the way), to compare before and after
a change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def _run(path: Path) -> Path:
    """A run directory with 30 sources, 3 of them failed."""
    catalog = path / "cat.csv"
    pd.DataFrame(
        {
            "diaSourceId": [506428274000265570 + i for i in range(30)],
            "visit": 1,
            "detector": 37,
            "x": 40.0,
            "y": 40.0,
        }
    ).to_csv(catalog, index=False)
    run = path / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "zooprep",
            "-q",
            "select",
            str(run),
            "--catalog",
            str(catalog),
        ],
        check=True,
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="rounds")
    parser.add_argument("--tree", type=Path, help="another checkout to time")
    args = parser.parse_args()
    env = dict(os.environ)
    prelude = "import sys\n"
    if args.tree:
        prelude += (
            f"sys.path.insert(0, {str(args.tree.resolve())!r})\n"
            "sys.meta_path[:] = [f for f in sys.meta_path "
            "if 'editable' not in type(f).__module__]\n"
        )

    def zooprep(*argv: str) -> list[str]:
        code = (
            prelude + "import runpy; runpy.run_module('zooprep', run_name='__main__')"
        )
        return [sys.executable, "-c", code, *argv]

    with tempfile.TemporaryDirectory() as tmp:
        run = _run(Path(tmp))
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "zooprep --help": zooprep("--help"),
            "zooprep status RUN": zooprep("status", str(run)),
            "import zooprep": [sys.executable, "-c", prelude + "import zooprep"],
        }
        where = subprocess.run(
            [sys.executable, "-c", prelude + "import zooprep; print(zooprep.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"zooprep from {where}")
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.n):
            for name, cmd in cases.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<22} {'median s':>9} {'best s':>8} {'over python':>12}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<22} {med:9.3f} {min(values):8.3f} {med - base:12.3f}")


if __name__ == "__main__":
    main()
