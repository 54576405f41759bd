"""What hung requests cost an upload: 1 % of requests hang, the rest answer in 50 ms.

Starts the local Panoptes stand-in in its own process with 50 ms of latency
on every request and a seeded ``hang`` fault on a share of the API, storage
PUT and read-back requests (default 1 %): a hung request sleeps ``--delay``
seconds (default 30, 600 times the latency) and is then processed, as a
real server does after a slow database, which is the hard case for
exactly-once (a create given up on may still commit).  Builds a run of N
rendered sources (default 300) and times ``zooprep upload RUN --workers 8``
end to end as a subprocess.  Then it waits for every hung request to be
processed and prints the stand-in's count of duplicates, orphans and
subjects with a missing file.

The zooprep run is ``python -m zooprep`` with this checkout first on
``PYTHONPATH``, so a copy of an older commit's tree (``git archive``) with
this script in it measures that commit.  Run by hand::

    python benchmarks/bench_hang.py                      # 300 subjects, 1 %, 30 s
    python benchmarks/bench_hang.py -n 100 --probability 0.05 --seed 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_upload import make_run, standin, summary, timed  # noqa: E402

from zooprep.panoptes import Credentials, PanoptesAPI, TokenManager  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="subjects (default 300)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds/request")
    parser.add_argument("--workers", type=int, default=8, help="zooprep workers")
    parser.add_argument(
        "--probability", type=float, default=0.01, help="share of requests that hang"
    )
    parser.add_argument(
        "--delay", type=float, default=30.0, help="seconds a hung request sleeps"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults")
    args = parser.parse_args()

    faults = ("--hang-probability", str(args.probability))
    faults += ("--hang-delay", str(args.delay), "--seed", str(args.seed))
    with (
        standin(args.latency, *faults) as (info, env),
        tempfile.TemporaryDirectory() as tmp,
    ):
        url = info["url"]
        tokens = TokenManager(url, Credentials(info["username"], info["password"]))
        tokens.login()
        api = PanoptesAPI(tokens)
        # (set-up requests may hang too: retried by the client)
        set_id = str(api.create_subject_set(info["project_id"], "bench hang")["id"])
        tmpdir = Path(tmp)
        make_run(tmpdir / "run", args.n)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
        )
        elapsed = timed(
            [
                *(sys.executable, "-m", "zooprep", "-q", "upload", str(tmpdir / "run")),
                *("--project", info["project_id"], "--subject-set-id", set_id),
                *("--endpoint", url, "--workers", str(args.workers)),
            ],
            env,
            tmpdir,
        )
        time.sleep(args.delay + 1)  # every hung request processed by now
        stored = summary(url)
        api.close()

    print(
        f"{args.n} subjects, {args.latency * 1000:.0f} ms latency, "
        f"{args.probability:.0%} of requests hang {args.delay:g} s, "
        f"{args.workers} workers"
    )
    print(
        f"zooprep upload: {elapsed:7.1f} s  ({stored['subject_sets'].get(set_id)} linked)"
    )
    print(
        f"hangs: {stored['faults_fired'].get('hang', 0)} of {stored['requests']} requests"
    )
    print(
        f"stand-in: {stored['duplicates']} duplicates, {stored['orphans']} orphans, "
        f"{stored['broken']} with a missing file"
    )


if __name__ == "__main__":
    main()
