"""Lasair objects to Zooniverse subjects: select, render with light curves, rehearse.

Usage::

    export LASAIR_TOKEN=...        # from your Lasair profile page
    python examples/lasair_objects.py RUN 170028485706776685,313893023095193658
    python examples/lasair_objects.py RUN --query 'nDiaSources > 5' --limit 20

Each object's sources that Lasair still has cutouts for become sources (the
newest only with ``--latest``); the light curves show the whole history.
Run it again after an interruption or a rate-limit stop: it goes on where it
stopped, asking Lasair only for what the run lacks.  ``--endpoint`` points
at another Lasair (e.g. a test server).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zooprep
from zooprep.errors import RateLimited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("objects", nargs="?", help="ids, comma-separated, or a file")
    parser.add_argument("--query", help="a --lasair-query instead of ids")
    parser.add_argument("--latest", action="store_true", help="newest source only")
    parser.add_argument("--endpoint", default="https://api.lasair.lsst.ac.uk/api")
    args = parser.parse_args()
    source = (
        {"lasair_query": args.query} if args.query else {"lasair_objects": args.objects}
    )
    try:
        selected = zooprep.select(
            args.run,
            **source,
            per_object="latest" if args.latest else "all",
            lasair_endpoint=args.endpoint,
        )
    except RateLimited as stop:
        print(stop)  # the sources read so far are in the run
        return
    print(selected)
    print(
        zooprep.render(
            args.run, lightcurve="mag", lightcurve_json=True, layout="frames"
        )
    )
    print(zooprep.manifest(args.run))
    print(zooprep.upload(args.run, project="1234", subject_set="lasair", dry_run=True))


if __name__ == "__main__":
    main()
