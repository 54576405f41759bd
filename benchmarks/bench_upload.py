"""Upload benchmark: zooprep vs panoptes-cli, same manifest, same stand-in.

Starts the local Panoptes stand-in in its own process with 50 ms of latency
on every request (about what a European or American user sees from
zooniverse.org), builds a run of N rendered sources with small real PNGs and
its manifest, then uploads that manifest twice into two fresh subject sets:

* ``zooprep upload RUN --workers 8`` and
* ``panoptes subject-set upload-subjects SET manifest.csv`` (the real
  panoptes-cli, configured for the stand-in).

Prints the wall time of each, their ratio (target: zooprep at least 3x
faster) and checks that both sets hold N subjects.  Run by hand, not in CI::

    python benchmarks/bench_upload.py            # 500 subjects, 50 ms latency
    python benchmarks/bench_upload.py -n 100 --latency 0.02
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zooprep  # noqa: E402
from zooprep.files import atomic_write  # noqa: E402
from zooprep.panoptes import Credentials, PanoptesAPI, TokenManager  # noqa: E402
from zooprep.run import Run  # noqa: E402


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (60, 180), dtype=np.uint8), mode="L").save(
        out, format="PNG"
    )
    return out.getvalue()


def make_run(path: Path, n: int) -> None:
    with Run.create(path) as run:
        run.add_sources(
            [
                {"diaSourceId": 506428274000265570 + i, "visit": 1000 + i, "band": "r"}
                for i in range(n)
            ],
            id_column="diaSourceId",
        )
        for src in run.iter_sources():
            rel = run.cutout_path(src)
            atomic_write(run.path / rel, png(src.seq))
            run.update(src.id, status="rendered", files=[rel])
    zooprep.manifest(path)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


@contextlib.contextmanager
def standin(
    latency: float, *extra: str
) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """Start the Panoptes stand-in in its own process with ``latency`` s per request.

    ``extra``: more flags of ``python -m tests.panoptes_standin`` (faults).
    Yields its start-up answer (url, credentials, project id) and an
    environment for commands run against it (no real credentials or proxies).
    """
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.panoptes_standin"),
            *("--latency", str(latency), *extra),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PANOPTES_") and not k.lower().endswith("_proxy")
        }
        env.update(info["env"])
        yield info, env
    finally:
        server.terminate()
        server.wait(timeout=10)


def summary(url: str) -> dict[str, Any]:
    """The stand-in's own account of what it stores."""
    with urllib.request.urlopen(f"{url}/_standin/summary") as answer:
        return dict(json.load(answer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="subjects (default 500)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds/request")
    parser.add_argument("--workers", type=int, default=8, help="zooprep workers")
    args = parser.parse_args()

    bindir = Path(sys.executable).parent
    with standin(args.latency) as (info, env), tempfile.TemporaryDirectory() as tmp:
        url = info["url"]
        tmpdir = Path(tmp)
        run = tmpdir / "run"
        make_run(run, args.n)
        home = tmpdir / "home"
        (home / ".panoptes").mkdir(parents=True)
        (home / ".panoptes" / "config.yml").write_text(
            f"endpoint: {url}\nusername: {info['username']}\n"
            f"password: {info['password']}\n"
        )
        env["HOME"] = str(home)
        creds = Credentials(info["username"], info["password"])
        tokens = TokenManager(url, creds)
        tokens.login()
        api = PanoptesAPI(tokens)
        set_zp = api.create_subject_set(info["project_id"], "bench zooprep")["id"]
        set_cli = api.create_subject_set(info["project_id"], "bench panoptes-cli")["id"]

        t_zp = timed(
            [
                str(bindir / "zooprep"),
                "-q",
                "upload",
                str(run),
                "--project",
                info["project_id"],
                "--subject-set-id",
                str(set_zp),
                "--endpoint",
                url,
                "--workers",
                str(args.workers),
            ],
            env,
            tmpdir,
        )
        t_cli = timed(
            [
                str(bindir / "panoptes"),
                "subject-set",
                "upload-subjects",
                str(set_cli),
                str(run / "manifest.csv"),
            ],
            env,
            tmpdir,
        )
        stored = summary(url)
        api.close()

    n_zp = stored["subject_sets"].get(str(set_zp))
    n_cli = stored["subject_sets"].get(str(set_cli))
    print(f"{args.n} subjects, {args.latency * 1000:.0f} ms latency per request")
    print(f"zooprep upload --workers {args.workers}: {t_zp:7.1f} s  ({n_zp} linked)")
    print(f"panoptes-cli upload-subjects:      {t_cli:7.1f} s  ({n_cli} linked)")
    print(f"ratio (panoptes-cli / zooprep):    {t_cli / t_zp:7.1f}x  (target >= 3x)")
    print(
        f"stand-in: {stored['duplicates']} duplicates, {stored['broken']} broken, "
        f"{stored['orphans']} orphans"
    )
    if n_zp != args.n:
        sys.exit(f"zooprep linked {n_zp} subjects, expected {args.n}")


if __name__ == "__main__":
    main()
