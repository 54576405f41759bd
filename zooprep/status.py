"""``zooprep status``: what the run holds, what failed and why, and what to do next.

`status` returns a plain dict; the command line prints it (``zooprep.cli``).
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from zooprep.options import Settings
from zooprep.run import Run
from zooprep.vocabulary import reason_key

__all__ = ["status"]

#: How many example source ids are shown per failure reason.
EXAMPLES = 5


def status(run: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a run directory.

    Parameters
    ----------
    run : str or path-like
        The run directory.  It is read without taking the lock, so status
        works while another command is running.

    Returns
    -------
    dict
        ``run`` (path), ``total``, ``counts`` (per status), ``failures``
        (per stage: a list of ``{"reason", "count", "examples", "example"}``:
        what went wrong (`zooprep.vocabulary.reason_key`, without the URL,
        path or id that differs row by row), how many rows, a few of their
        source ids and the first one's full reason),
        ``settings`` (the stages that ran), ``results`` (when classifications
        were joined), ``notes`` (counts worth knowing that are not failures,
        e.g. ``"no light curve (no point to draw)"``: rendered sources that
        got no light-curve file) and ``next`` (the command to run next, or
        None).
    """
    path = Path(run)
    with Run.open(path, lock=False) as r:
        counts = r.counts()
        total = len(r)
        groups: dict[str, Counter[str]] = {}
        examples: dict[tuple[str, str], list[int]] = {}
        first: dict[tuple[str, str], str] = {}
        for src in r.iter_sources(["failed"]):
            stage = src.stage or "unknown"
            key = reason_key(src.reason)
            groups.setdefault(stage, Counter())[key] += 1
            ex = examples.setdefault((stage, key), [])
            first.setdefault((stage, key), src.reason or "")
            if len(ex) < EXAMPLES:
                ex.append(src.id)
        failures = {
            stage: [
                {
                    "reason": reason,
                    "count": n,
                    "examples": examples[(stage, reason)],
                    "example": first[(stage, reason)],
                }
                for reason, n in counter.most_common()
            ]
            for stage, counter in groups.items()
        }
        settings = r.settings
        results_info = _results_info(r)
        notes = _notes(r, settings)
    report: dict[str, Any] = {
        "run": str(path),
        "total": total,
        "counts": counts,
        "failures": failures,
        "stages": sorted(settings.sections),
        "results": results_info,
        "notes": notes,
    }
    report["next"] = _next_command(path, counts, failures, settings)
    return report


#: Statuses of sources whose files are written.
_RENDERED = ("rendered", "uploaded", "linked")


def _notes(r: Run, settings: Settings) -> dict[str, int]:
    """Counts of things that are not failures but change what volunteers see."""
    notes: dict[str, int] = {}
    render = settings.render
    if render is not None and render.lightcurve:
        n = r.count_without(("_lightcurve.json", "_lightcurve.png"), _RENDERED)
        if n:
            notes["no light curve (no point to draw)"] = n
    return notes


def _results_info(r: Run) -> dict[str, Any] | None:
    """Counts from ``results.csv`` when classifications were joined."""
    path = r.path / "results.csv"
    if not path.exists():
        return None
    import pandas as pd

    table = pd.read_csv(
        path, usecols=lambda c: c in {"subject_id", "n_classifications"}
    )
    uploaded = r.count_subjects()
    return {
        "uploaded_subjects": uploaded,
        "subjects_with_results": len(table),
        "classifications": int(table["n_classifications"].sum())
        if "n_classifications" in table
        else 0,
    }


def _next_command(
    path: Path,
    counts: dict[str, int],
    failures: dict[str, Any],
    settings: Settings,
) -> str | None:
    """The command that moves the run on, as a user would type it."""
    run = shlex.quote(str(path))
    if counts["selected"] or "render" in failures:
        if settings.render is not None:
            return f"zooprep render {run}"
        return f"zooprep render {run} --science ... --template ... --difference ..."
    manifest = path / "manifest.csv"
    if counts["rendered"] and not manifest.exists():
        return f"zooprep manifest {run}"
    if counts["rendered"] or counts["uploaded"] or "upload" in failures:
        up = settings.upload
        project = up.project if up and up.project else "ID"
        target = (
            f"--subject-set-id {up.subject_set_id}"
            if up and up.subject_set_id
            else "--subject-set NAME"
        )
        return f"zooprep upload {run} --project {project} {target}"
    if counts["linked"]:
        return f"zooprep results {run} --classifications EXPORT.csv"
    return None
