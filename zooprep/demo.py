"""``zooprep demo``: the whole pipeline on the sample data shipped in the package.

No network, no credentials.  Two runs are made under ``OUT``:

``OUT/apdb-run``
    select from the bundled SQLite APDB (``sqlite:///OUT/data/apdb/...``: 32
    synthetic DiaSources found on a real DECam difference image), render
    annotated two-size cutouts from the real DECam science / template /
    difference images, write the manifest and the preview, and rehearse the
    upload (``dry_run``).
``OUT/alerts-run``
    select real ZTF and Rubin alert packets, render their own stamps (plain,
    native size), manifest, preview, upload rehearsal.

The sample is copied to ``OUT/data`` first, so the runs' settings point at
files that stay put.  Running the demo again on the same ``OUT`` resumes the
runs and redoes the cheap steps.  See ``zooprep/data/README.md`` for what the
sample holds and its licences.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from zooprep.errors import RunError
from zooprep.options import UploadOptions
from zooprep.preview import preview
from zooprep.progress import Reporter
from zooprep.run import Run
from zooprep.stages.manifest import manifest
from zooprep.stages.render import render
from zooprep.stages.select import select as select_sources
from zooprep.stages.upload import upload
from zooprep.vocabulary import STAGING

__all__ = ["DemoResult", "DemoRun", "demo", "sample_path"]

log = logging.getLogger(__name__)

#: Marks a directory made by the demo, so a second demo may reuse it.
MARKER = ".zooprep-demo"

#: Environment variables that hold Panoptes credentials: hidden from the
#: demo's rehearsal upload so that it never reaches the network.
_CREDENTIALS = (
    "PANOPTES_USERNAME",
    "PANOPTES_PASSWORD",
    "PANOPTES_CLIENT_ID",
    "PANOPTES_CLIENT_SECRET",
)


@dataclass
class DemoRun:
    """What the demo did in one run directory.

    Attributes
    ----------
    name : str
        What the run shows.
    path : pathlib.Path
        The run directory.
    selected, rendered, padded, failed : int
        Sources in the run, rendered PNGs, cutouts padded at an image edge,
        rows that failed (with their reasons in ``zooprep status``).
    pngs : list of pathlib.Path
        The rendered PNGs.
    manifest : pathlib.Path
        The manifest CSV.
    manifest_rows : int
        Its data rows.
    preview : pathlib.Path
        The HTML gallery.
    upload : str
        The dry-run upload's summary.
    to_upload : int
        Subjects the dry run would create.
    """

    name: str
    path: Path
    selected: int = 0
    rendered: int = 0
    padded: int = 0
    failed: int = 0
    pngs: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    manifest_rows: int = 0
    preview: Path | None = None
    upload: str = ""
    to_upload: int = 0


@dataclass
class DemoResult:
    """What `demo` made; ``str()`` is the friendly printout of what to look at.

    Attributes
    ----------
    out : pathlib.Path
        The demo directory.
    runs : list of DemoRun
        One entry per run directory made.
    seconds : float
        Wall-clock time of the whole demo.
    """

    out: Path
    runs: list[DemoRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Rows that failed in any run."""
        return sum(r.failed for r in self.runs)

    def __str__(self) -> str:
        q = shlex.quote
        lines = [f"zooprep demo finished in {self.seconds:.1f} s, in {self.out}", ""]
        for n, r in enumerate(self.runs, 1):
            lines.append(f"{n}. {r.name}: {r.path}")
            padded = f" ({r.padded} padded at an image edge)" if r.padded else ""
            lines.append(
                f"   {r.selected} selected, {r.rendered} rendered{padded}, "
                f"{r.failed} failed"
            )
            if r.pngs:
                more = f"  (+{len(r.pngs) - 1} more)" if len(r.pngs) > 1 else ""
                lines.append(f"   cutouts:  {r.pngs[0]}{more}")
            if r.manifest is not None:
                lines.append(f"   manifest: {r.manifest} ({r.manifest_rows} rows)")
            if r.preview is not None:
                lines.append(f"   preview:  {r.preview}")
            if r.upload:
                lines.append(f"   {r.upload}")
            lines.append("")
        first = self.runs[0].path if self.runs else self.out
        lines += [
            "Look next:",
            *(f"  open {q(str(r.preview))}" for r in self.runs if r.preview),
            f"  zooprep status {q(str(first))}",
            f"  open {q(str(first / 'manifest.csv'))} in a spreadsheet, delete "
            "rows, save as CSV: upload sends what is left",
            "",
            "Your own data, on the Zooniverse staging server first:",
            "  zooprep select run1 --apdb sqlite:///path/to/apdb.sqlite3 "
            "--where 'reliability > 0.5' --limit 500",
            "  zooprep render run1 --science 'img/{visit}/{detector}/sci.fits' "
            "--template 'img/{visit}/{detector}/tmpl.fits' "
            "--difference 'img/{visit}/{detector}/diff.fits' --annotate",
            "  zooprep manifest run1 && zooprep preview run1",
            "  export PANOPTES_USERNAME=... PANOPTES_PASSWORD=...",
            f"  zooprep upload run1 --project ID --subject-set 'batch 1' --endpoint {STAGING}",
        ]
        if self.failed:
            lines += ["", f"{self.failed} rows failed: see 'zooprep status RUN'."]
        return "\n".join(lines)


def sample_path() -> Path:
    """The folder of the sample data shipped in the package.

    Returns
    -------
    pathlib.Path
        ``zooprep/data`` inside the installed package.
    """
    return Path(str(resources.files("zooprep") / "data"))


def demo(
    out: str | os.PathLike[str],
    *,
    reporter: Reporter | None = None,
    jobs: int | None = 1,
) -> DemoResult:
    """Run select, render, manifest, preview and a dry-run upload on the bundled sample.

    Parameters
    ----------
    out : str or path-like
        A new (or empty) directory, or one made by an earlier demo.
    reporter : Reporter, optional
        Progress reporting, passed to each stage.
    jobs : int or None
        Render worker processes (1: in this process, fastest for the small
        sample; None: all cores).

    Returns
    -------
    DemoResult
        Paths and counts; ``str()`` of it says what to look at next.

    Raises
    ------
    zooprep.errors.RunError
        When ``out`` holds something that is not an earlier demo.

    Examples
    --------
    >>> import zooprep
    >>> print(zooprep.demo("/tmp/zooprep-demo"))  # doctest: +SKIP
    """
    started = time.perf_counter()
    root = Path(out)
    _prepare(root)
    data = root / "data"
    if not (data / "apdb" / "demo_apdb.sqlite3").is_file():
        shutil.copytree(sample_path(), data, dirs_exist_ok=True)
    result = DemoResult(out=root)
    result.runs.append(
        _pipeline(
            "Rubin-style APDB + real DECam images, annotated at two sizes",
            root / "apdb-run",
            select={
                "apdb": f"sqlite:///{(data / 'apdb' / 'demo_apdb.sqlite3').resolve()}"
            },
            images={
                "science": str((data / "decam" / "science.fits").resolve()),
                "template": str((data / "decam" / "template.fits").resolve()),
                "difference": str((data / "decam" / "difference.fits").resolve()),
            },
            options={"sizes": (32, 64), "annotate": True},
            reporter=reporter,
            jobs=jobs,
        )
    )
    result.runs.append(
        _pipeline(
            "real ZTF and Rubin alert packets, plain stamps at native size",
            root / "alerts-run",
            select={"alerts": str((data / "alerts").resolve() / "*" / "*.avro")},
            images=None,
            options=None,
            reporter=reporter,
            jobs=jobs,
        )
    )
    result.seconds = time.perf_counter() - started
    return result


def _prepare(root: Path) -> None:
    """Make ``root`` (or accept an earlier demo there); refuse anything else."""
    if root.exists() and not root.is_dir():
        raise RunError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
        raise RunError(
            f"{root} is not empty and was not made by 'zooprep demo'; "
            "choose a new directory"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text("made by zooprep demo\n", encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write the demo to {root}: {exc.strerror}") from None


def _pipeline(
    name: str,
    path: Path,
    *,
    select: dict[str, Any],
    images: dict[str, Any] | None,
    options: dict[str, Any] | None,
    reporter: Reporter | None,
    jobs: int | None,
) -> DemoRun:
    """Run select, render, manifest, preview and a dry-run upload on one run."""
    existing = (path / Run.STATE).is_file()
    log.info("demo: %s in %s", name, path)
    select_sources(path, append=existing, reporter=reporter, **select)
    render(path, {**(options or {}), "jobs": jobs}, images=images, reporter=reporter)
    written = manifest(path, reporter=reporter)
    page = preview(path)
    with _no_credentials():
        rehearsal = upload(
            path,
            UploadOptions(
                project="1", subject_set="zooprep demo", endpoint=STAGING, dry_run=True
            ),
            reporter=reporter,
        )
    report = DemoRun(name=name, path=path)
    with Run.open(path, lock=False) as run:
        counts = run.counts()
        report.selected = len(run)
        for src in run.iter_sources(["rendered", "uploaded", "linked"]):
            report.rendered += 1
            report.padded += int(src.padded)
            report.pngs += [path / f for f in src.files if f.endswith(".png")]
        report.failed = counts["failed"]
    report.manifest = Path(written.path)
    report.manifest_rows = written.rows
    report.preview = page
    report.upload = str(rehearsal)
    report.to_upload = rehearsal.to_create
    return report


@contextlib.contextmanager
def _no_credentials() -> Iterator[None]:
    """Hide Panoptes credentials, so the rehearsal upload stays offline."""
    saved = {k: os.environ.pop(k) for k in _CREDENTIALS if k in os.environ}
    if saved:
        log.info("demo: Panoptes credentials ignored; the demo never uploads")
    try:
        yield
    finally:
        os.environ.update(saved)
