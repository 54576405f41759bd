"""Rubin DP1 DiaSources to Zooniverse subjects through the Rubin Science Platform.

Usage::

    export RSP_TOKEN=...     # an RSP access token (https://data.lsst.cloud, Settings > Tokens)
    python examples/rsp_dp1.py RUN --band r --where 'reliability > 0.9' --limit 50

Select reads ``dp1.DiaSource`` by TAP in pages (the filters become ADQL),
render finds each source's visit_image, template_coadd and difference_image
through SIAv2 and cuts them by SODA, with each object's light curve from
``DiaSource`` and ``ForcedSourceOnDiaObject``; the upload is rehearsed
(``dry_run``).  Run it again after an interruption: it goes on where it
stopped.  ``--tap`` points at another TAP service (e.g. a test server); its
SIA is found next to it (``--sia`` to name another).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zooprep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tap", default="https://data.lsst.cloud/api/tap")
    parser.add_argument("--table", default="dp1.DiaSource")
    parser.add_argument("--sia", help="the SIAv2 query URL (default: next to --tap)")
    parser.add_argument("--where", help="a zooprep filter, e.g. 'reliability > 0.9'")
    parser.add_argument("--band", action="append", help="only this band (repeatable)")
    parser.add_argument("--visit", type=int, action="append", help="only this visit")
    parser.add_argument("--limit", type=int, help="at most N sources")
    args = parser.parse_args()
    print(
        zooprep.select(
            args.run,
            tap=args.tap,
            table=args.table,
            where=args.where,
            band=args.band,
            visit=args.visit,
            limit=args.limit,
        )
    )
    images = {"soda": args.sia} if args.sia else None
    print(zooprep.render(args.run, images=images, sizes=[30], lightcurve="flux"))
    print(zooprep.manifest(args.run))
    print(zooprep.upload(args.run, project="1234", subject_set="dp1", dry_run=True))


if __name__ == "__main__":
    main()
