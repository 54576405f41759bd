"""What reading every file back after its PUT costs: upload with and without --no-verify.

Starts the local Panoptes stand-in in its own process with 50 ms of latency on
every request (also on the read-back HEADs), builds a run of N rendered
sources with small real PNGs and its manifest, and uploads it twice, into two
fresh subject sets, as subprocesses timed end to end:

* ``zooprep upload RUN --workers 8`` (read-back on: the default), and
* ``zooprep upload RUN --workers 8 --no-verify`` (the store's 201 trusted),

then prints both times and their ratio, and checks that both sets hold N
subjects with no broken image.  The obvious alternative to reading back is
trusting the 201; the ratio is the price of knowing.  Run by hand::

    python benchmarks/bench_verify.py            # 500 subjects, 50 ms latency
    python benchmarks/bench_verify.py -n 100 --latency 0.02
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_upload import make_run, standin, summary, timed  # noqa: E402

from zooprep.panoptes import Credentials, PanoptesAPI, TokenManager  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="subjects (default 500)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds/request")
    parser.add_argument("--workers", type=int, default=8, help="zooprep workers")
    args = parser.parse_args()

    zooprep = str(Path(sys.executable).parent / "zooprep")
    times: dict[str, float] = {}
    sets: dict[str, str] = {}
    with standin(args.latency) as (info, env), tempfile.TemporaryDirectory() as tmp:
        url = info["url"]
        tokens = TokenManager(url, Credentials(info["username"], info["password"]))
        tokens.login()
        api = PanoptesAPI(tokens)
        tmpdir = Path(tmp)
        make_run(tmpdir / "template", args.n)
        for name, extra in (("verify", []), ("no-verify", ["--no-verify"])):
            run = tmpdir / name
            shutil.copytree(tmpdir / "template", run)
            sets[name] = str(
                api.create_subject_set(info["project_id"], f"bench {name}")["id"]
            )
            times[name] = timed(
                [
                    *(zooprep, "-q", "upload", str(run)),
                    *("--project", info["project_id"]),
                    *("--subject-set-id", sets[name], "--endpoint", url),
                    *("--workers", str(args.workers), *extra),
                ],
                env,
                tmpdir,
            )
        stored = summary(url)
        api.close()

    print(
        f"{args.n} subjects, {args.latency * 1000:.0f} ms latency, {args.workers} workers"
    )
    for name in ("verify", "no-verify"):
        linked = stored["subject_sets"].get(sets[name])
        print(f"zooprep upload ({name}): {times[name]:7.1f} s  ({linked} linked)")
    print(f"ratio (verify / no-verify): {times['verify'] / times['no-verify']:5.2f}x")
    # (Both sets hold the same sources, so every #zooprep_id is there twice.)
    print(f"stand-in: {stored['broken']} subjects with a missing file")
    for name in ("verify", "no-verify"):
        if stored["subject_sets"].get(sets[name]) != args.n:
            sys.exit(f"{name}: expected {args.n} linked subjects")


if __name__ == "__main__":
    main()
