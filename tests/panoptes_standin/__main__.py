"""Run the Panoptes stand-in standalone: ``python -m tests.panoptes_standin``.

Prints one JSON line on stdout with the endpoint URL, credentials, project and
subject set ids, then serves until interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from .server import PanoptesStandin


def main(argv: list[str] | None = None) -> int:
    """Parse flags, start the stand-in, wait for a signal."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.panoptes_standin", description=__doc__
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every request"
    )
    parser.add_argument(
        "--token-lifetime", type=float, default=7200.0, help="access token lifetime (s)"
    )
    parser.add_argument(
        "--subject-limit", type=int, default=10_000, help="the user's subject quota"
    )
    parser.add_argument(
        "--link-conflicts", action="store_true", help="409 on concurrent link requests"
    )
    parser.add_argument(
        "--hang-probability",
        type=float,
        default=0.0,
        help="share of API, blob and media requests that hang (seeded)",
    )
    parser.add_argument(
        "--hang-delay",
        type=float,
        default=30.0,
        help="seconds a hung request sleeps before it is processed",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    args = parser.parse_args(argv)

    standin = PanoptesStandin.with_defaults(
        port=args.port,
        latency=args.latency,
        token_lifetime=args.token_lifetime,
        subject_limit=args.subject_limit,
        link_conflicts=args.link_conflicts,
        seed=args.seed,
    )
    if args.hang_probability > 0:
        standin.faults.add(
            "hang",
            path=r"^/(api|blob|media)/",
            times=None,
            delay=args.hang_delay,
            probability=args.hang_probability,
        )
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with standin:
        info = {
            "url": standin.url,
            "username": standin.username,
            "password": standin.password,
            "client_id": standin.client_id,
            "client_secret": standin.client_secret,
            "project_id": standin.project_id,
            "subject_set_id": standin.subject_set_id,
            "env": standin.client_env(),
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        while not done.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
