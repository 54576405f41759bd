"""Rubin: sources from an APDB, pixels from a Butler repository, annotated cutouts.

Usage::

    python examples/rubin_apdb_butler.py RUN --apdb sqlite:///apdb.sqlite3 \\
        --butler /repo/main --collections u/me/ap_run [--limit 200]

Without ``--butler`` it runs on the sample shipped with zooprep (a small APDB
and the matching DECam FITS images), so it can be tried anywhere.  The Butler
path needs the optional extra: ``pip install 'zooprep[butler]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zooprep
from zooprep.demo import sample_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--apdb", help="SQLAlchemy URL of the APDB")
    parser.add_argument("--butler", help="Butler repository")
    parser.add_argument("--collections", nargs="*", default=[])
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()

    data = sample_path()
    apdb = args.apdb or f"sqlite:///{data / 'apdb' / 'demo_apdb.sqlite3'}"
    if args.butler:
        images = {"butler": args.butler, "collections": args.collections}
    else:
        images = {
            role: str(data / "decam" / f"{role}.fits")
            for role in ("science", "template", "difference")
        }

    # Likely-real sources away from the detector edge; --limit keeps the smallest ids.
    print(
        zooprep.select(
            args.run,
            apdb=apdb,
            where="reliability > 0.2 and not pixelFlags_edge",
            limit=args.limit,
        )
    )
    print(
        zooprep.render(
            args.run, images=images, options={"sizes": (32, 64), "annotate": True}
        )
    )
    print(
        zooprep.manifest(
            args.run, metadata=["diaSourceId", "visit", "detector", "band"]
        )
    )
    print("preview:", zooprep.preview(args.run))
    status = zooprep.status(args.run)
    print("counts:", {k: v for k, v in status["counts"].items() if v})
    print("next:", status["next"])


if __name__ == "__main__":
    main()
