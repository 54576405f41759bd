"""ZTF (and Rubin) alert packets: cutouts from the stamps inside the packets.

Usage::

    python examples/ztf_alerts.py RUN ['alerts/*.avro']

With no glob it uses the real ZTF and Rubin packets shipped with zooprep.
Alert packets carry their own science / template / difference stamps, so
render needs no image flags; each stamp is shown whole at its native size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zooprep
from zooprep.demo import sample_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument(
        "alerts", nargs="?", default=str(sample_path() / "alerts" / "*" / "*.avro")
    )
    args = parser.parse_args()

    print(zooprep.select(args.run, alerts=args.alerts))
    print(zooprep.render(args.run))  # the packets' stamps, native size
    print(zooprep.manifest(args.run))
    print("preview:", zooprep.preview(args.run))
    # The low-score ZTF alerts of the sample, straight from the gallery's address bar:
    print(f"low scores: {args.run / 'preview.html'}#rel=:0.5&sort=reliability")


if __name__ == "__main__":
    main()
