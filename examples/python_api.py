"""The Python API end to end: select, render, review the manifest in pandas, rehearse the upload.

Usage::

    python examples/python_api.py RUN

Runs on the sample shipped with zooprep.  Shows the review step a person would
do in a spreadsheet, done in pandas instead: drop rows, save the CSV, and let
the (dry-run) upload see what is left.  Ids are read as strings: they are
64-bit and would lose digits as floats.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import zooprep
from zooprep.demo import sample_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    data = sample_path()

    zooprep.select(args.run, apdb=f"sqlite:///{data / 'apdb' / 'demo_apdb.sqlite3'}")
    result = zooprep.render(
        args.run,
        images={
            r: str(data / "decam" / f"{r}.fits")
            for r in ("science", "template", "difference")
        },
        options=zooprep.RenderOptions(sizes=(30,), annotate=False),
    )
    print(result)
    written = zooprep.manifest(
        args.run, metadata=["diaSourceId", "band", "reliability"]
    )
    print(written)

    # Review: keep only the sources with reliability >= 0.5.
    table = pd.read_csv(written.path, dtype=str, keep_default_na=False)
    # Metadata columns are named metadata:<name> ('#' marks a column hidden
    # from volunteers).
    rel = next(c for c in table.columns if c.endswith("reliability"))
    keep = table[table[rel].astype(float) >= 0.5]
    keep.to_csv(written.path, index=False)
    print(f"review kept {len(keep)} of {len(table)} rows")

    upload = zooprep.upload(
        args.run,
        zooprep.UploadOptions(project="1", subject_set="review demo", dry_run=True),
    )
    print(upload)
    print("preview:", zooprep.preview(args.run))


if __name__ == "__main__":
    main()
