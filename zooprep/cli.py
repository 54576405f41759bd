"""The ``zooprep`` command: a thin layer over the Python API with the same words.

Each command parses its flags, calls the function of the same name in
`zooprep`, shows progress on stderr, and turns a `~zooprep.errors.ZooprepError`
into a one-line message.  Exit status: 0 all done, 1 some rows failed (run the
same command again to resume), 2 usage or input error (a full or read-only
run directory included), 128 + N after signal N (SIGTERM 143, SIGINT 130,
SIGHUP 129) stopped the command cleanly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

import zooprep
from zooprep import interrupt
from zooprep.errors import Interrupted, ZooprepError
from zooprep.options import PICTURE_OPTIONS, SelectOptions, UploadOptions
from zooprep.vocabulary import PRODUCTION, STAGING

F = TypeVar("F", bound=Callable[..., Any])


# -- output: progress on stderr, machine output on stdout ----------------------


class RichReporter:
    """Progress on stderr: a rich bar on a terminal, plain lines otherwise.

    When stderr is not a terminal (a batch job, a pipe, CI) the reporter
    prints ``stage: N to do``, a line every `PLAIN_EVERY` seconds with counts,
    rate and failures, and a last line when the stage ends.
    """

    PLAIN_EVERY = 10.0

    def __init__(self, quiet: bool = False, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None
        self._failed = 0
        self._done = 0
        self._total: int | None = None
        self._stage = ""
        self._t0 = self._last = 0.0

    def _line(self, text: str) -> None:
        """Print one plain progress line."""
        self.console.print(f"zooprep: {text}", highlight=False, soft_wrap=True)

    def start(self, stage: str, total: int | None) -> None:
        """Begin a progress bar for ``stage``."""
        self._stage, self._failed, self._done, self._total = stage, 0, 0, total
        self._t0 = self._last = time.monotonic()
        if self.quiet:
            return
        if not self.console.is_terminal:
            self._line(
                f"{stage}: started" if total is None else f"{stage}: {total} to do"
            )
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TextColumn("[red]{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(stage, total=total, failed="", rate="?")

    def _summary(self) -> str:
        """``done/total (pct), N failed, rate/s``."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        total = f"/{self._total}" if self._total else ""
        pct = f" ({100 * self._done / self._total:.0f}%)" if self._total else ""
        return (
            f"{self._stage}: {self._done}{total} done{pct}, {self._failed} failed, "
            f"{self._done / elapsed:.1f}/s"
        )

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """Move the bar on."""
        self._done += n
        self._failed += failed
        if self.quiet:
            return
        if self._progress is None:
            now = time.monotonic()
            if now - self._last >= self.PLAIN_EVERY:
                self._last = now
                self._line(self._summary())
            return
        task = self._progress.tasks[0]
        rate = f"{task.speed:.0f}" if task.speed else "?"
        self._progress.update(
            self._task,
            advance=n,
            rate=rate,
            failed=f"{self._failed} failed" if self._failed else "",
        )

    def finish(self) -> None:
        """Close the bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif not self.quiet:
            self._line(self._summary())


def _setup_logging(verbose: bool, debug: bool, quiet: bool) -> None:
    """Log to stderr: warnings by default, per-row info with -v, debug with --debug."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    if quiet:
        level = logging.ERROR
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("zooprep: %(levelname)s: %(message)s"))
    root = logging.getLogger("zooprep")
    root.handlers[:] = [handler]
    root.setLevel(level)


def _finish(result: Any) -> None:
    """Print a stage's one-line summary and exit 1 when rows failed."""
    if not click.get_current_context().find_root().params.get("quiet", False):
        click.echo(str(result), err=True)
    if getattr(result, "failed", 0):
        click.echo(
            "Some rows failed; see 'zooprep status RUN'. Run the same command "
            "again to retry them.",
            err=True,
        )
        sys.exit(1)


#: Commands that stop cleanly on SIGTERM, SIGINT and SIGHUP (`zooprep.interrupt`).
_STOPPABLE = {"select", "render", "manifest", "upload", "demo"}


def command(fn: F) -> F:
    """Turn zooprep errors into one-line messages and the documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = ctx.find_root().params.get("debug", False)
        # SIGTERM, SIGINT and SIGHUP ask a stage to stop at a safe point; the
        # other commands write nothing half-done and keep the default handling.
        stoppable = ctx.command.name in _STOPPABLE
        with (
            interrupt.handle_signals(restore=False)
            if stoppable
            else contextlib.nullcontext()
        ):
            try:
                return fn(*args, **kwargs)
            except Interrupted as exc:
                click.echo(str(exc), err=True)
                sys.exit(exc.exit_code)
            except ZooprepError as exc:
                if debug:
                    raise
                click.echo(f"Error: {exc}", err=True)
                sys.exit(exc.exit_code)
            except KeyboardInterrupt:
                click.echo("interrupted; run the same command to continue", err=True)
                sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _json_ids(report: dict[str, Any]) -> dict[str, Any]:
    """A status report with source ids as strings, for JSON output.

    Source ids are 64-bit integers; JSON numbers are doubles to ``jq`` and
    every JavaScript reader, which would round them.
    """
    failures = {
        stage: [
            {**item, "examples": [str(i) for i in item["examples"]]} for item in items
        ]
        for stage, items in report["failures"].items()
    }
    return {**report, "failures": failures}


def _print_status(report: dict[str, Any]) -> None:
    """Print a `zooprep.status` report as tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"zooprep run {report['run']}", show_lines=False)
    table.add_column("status")
    table.add_column("sources", justify="right")
    for name, n in report["counts"].items():
        if n or name in ("selected", "rendered", "linked", "failed"):
            style = "red" if name == "failed" and n else None
            table.add_row(name, str(n), style=style)
    table.add_row("total", str(report["total"]), style="bold")
    console.print(table)
    for stage, items in report["failures"].items():
        failed = Table(title=f"failed in {stage}")
        failed.add_column("reason")
        failed.add_column("rows", justify="right")
        failed.add_column("e.g. source ids")
        for item in items:
            failed.add_row(
                item["reason"],
                str(item["count"]),
                ", ".join(str(i) for i in item["examples"]),
            )
        console.print(failed)
    if report.get("results"):
        res = report["results"]
        console.print(
            f"results: {res['subjects_with_results']} of "
            f"{res['uploaded_subjects']} uploaded subjects have "
            f"{res['classifications']} classifications"
        )
    if report["next"]:
        console.print(f"next: [bold]{report['next']}[/bold]")
    else:
        console.print("nothing left to do")


def _reporter() -> RichReporter:
    root = click.get_current_context().find_root()
    return RichReporter(quiet=root.params.get("quiet", False))


def _csv(value: str | None) -> list[str] | None:
    """Split ``a,b,c`` into a list (None stays None)."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse ``--sizes 30,64``."""
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give sizes in pixels, e.g. 30 or 32,64", ctx, param
        ) from None
    return sizes


RUN = click.argument("run", type=click.Path(file_okay=False, path_type=Path))


# -- the group ----------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(zooprep.__version__, prog_name="zooprep")
@click.option("-v", "--verbose", is_flag=True, help="Log each row's progress.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; errors only.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def cli(verbose: bool, quiet: bool, debug: bool) -> None:
    """Put difference-imaging sources in front of Zooniverse volunteers.

    \b
    The four stages share one run directory, RUN, that records progress:
      zooprep select   RUN --apdb sqlite:///apdb.db --limit 1000
      zooprep render   RUN --science 'img/{visit}/{detector}/sci.fits' ...
      zooprep manifest RUN
      zooprep upload   RUN --project 1234 --subject-set 'batch 1'
    Interrupt any of them and run it again: it continues where it stopped.
    SIGTERM, Ctrl-C or SIGHUP stop a command cleanly (exit 128 + signal; a
    second Ctrl-C stops at once); a full or read-only disk stops it with one
    line (exit 2): free space and run the same command again.
    Try 'zooprep demo /tmp/zp' for the whole pipeline on bundled data.
    """
    _setup_logging(verbose, debug, quiet)


# -- select -------------------------------------------------------------------


@cli.command()
@RUN
@click.option(
    "--apdb",
    metavar="URL",
    help="SQLAlchemy URL of a Rubin APDB, e.g. sqlite:///apdb.sqlite3 or "
    "postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass).",
)
@click.option(
    "--catalog",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A catalog file: CSV, Parquet, FITS or ECSV table with DiaSource "
    "column names.",
)
@click.option(
    "--alerts",
    metavar="GLOB",
    help="ZTF or Rubin Avro alert packets, e.g. 'alerts/*.avro'.",
)
@click.option(
    "--apdb-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An APDB config file read through lsst-dax-apdb (optional extra).",
)
@click.option(
    "--schema",
    metavar="NAME",
    help="Database schema (PostgreSQL namespace) holding the APDB tables.",
)
@click.option(
    "--where",
    metavar="EXPR",
    help='Filter, e.g. \'reliability > 0.5 and band == "r" and not '
    "pixelFlags_edge'. Comparisons joined by and/or/not.",
)
@click.option(
    "--visit", multiple=True, type=int, help="Only these visits (repeatable)."
)
@click.option(
    "--detector", multiple=True, type=int, help="Only these detectors (repeatable)."
)
@click.option("--band", multiple=True, help="Only these bands (repeatable).")
@click.option("--reliability-min", type=float, help="Keep reliability >= this.")
@click.option("--reliability-max", type=float, help="Keep reliability <= this.")
@click.option("--limit", type=int, help="At most N sources.")
@click.option(
    "--sample",
    type=int,
    help="A random sample of N sources (reproducible with --seed).",
)
@click.option("--seed", type=int, default=None, help="Random seed for --sample.")
@click.option(
    "--stratify",
    metavar="COLUMN:BINS",
    help="Spread --sample evenly over BINS bins of COLUMN, e.g. reliability:10.",
)
@click.option(
    "--id-column",
    metavar="NAME",
    help="Column holding the source id (default diaSourceId, or candid for ZTF).",
)
@click.option(
    "--rename",
    multiple=True,
    metavar="OLD=NEW",
    help="Rename a catalog column to its DiaSource name (repeatable).",
)
@click.option("--instrument", help="Instrument name, when the source does not say.")
@click.option(
    "--append",
    is_flag=True,
    help="Add new sources to an existing run (ids already there are kept).",
)
@command
def select(run: Path, **kwargs: Any) -> None:
    """Choose the sources to show volunteers and start (or extend) RUN.

    Exactly one of --apdb, --catalog, --alerts (or --apdb-config) is needed.
    Sources are taken in ascending id order; --sample draws a reproducible
    random sample. A catalog needs an id (diaSourceId or --id-column), visit
    and detector (or image), and x and y (or ra and dec), under DiaSource
    names (map others with --rename). Re-running the same select continues
    it; a different one on a run with sources needs --append.

    \b
    Example:
      zooprep select run1 --apdb sqlite:///apdb.sqlite3 \\
          --where 'reliability > 0.2' --sample 500 --seed 1
    """
    kwargs["visit"] = kwargs["visit"] or None
    kwargs["detector"] = kwargs["detector"] or None
    kwargs["band"] = kwargs["band"] or None
    rename = {}
    for item in kwargs.pop("rename"):
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"{item!r}: use OLD=NEW", param_hint="--rename")
        rename[old] = new
    options = SelectOptions(rename=rename or None, **kwargs)
    result = zooprep.select(run, options, reporter=_reporter())
    _finish(result)


# -- render -------------------------------------------------------------------


@cli.command()
@RUN
@click.option(
    "--science",
    metavar="TEMPLATE",
    help="Path template of science images, e.g. 'data/{visit}/{detector}/"
    "calexp.fits' (Python format over the source's columns). May be a URL "
    "(s3://, https://, gs://, ...; extra 'zooprep[cloud]'): only the bytes "
    "under the cutouts are read; credentials from the store's usual "
    "environment variables and files.",
)
@click.option(
    "--template",
    "template_",
    metavar="TEMPLATE",
    help="Path template of template (reference) images.",
)
@click.option(
    "--difference", metavar="TEMPLATE", help="Path template of difference images."
)
@click.option(
    "--butler",
    metavar="REPO",
    help="A Butler repository (optional extra 'zooprep[butler]'); remote "
    "datastores are read by byte ranges (extra 'zooprep[cloud]').",
)
@click.option(
    "--collections",
    multiple=True,
    metavar="C",
    help="Butler collections to search (repeatable).",
)
@click.option(
    "--science-type",
    default=None,
    metavar="NAME",
    help="Butler dataset type of science images [preliminary_visit_image].",
)
@click.option(
    "--template-type",
    default=None,
    metavar="NAME",
    help="Butler dataset type of templates [template_matched].",
)
@click.option(
    "--difference-type",
    default=None,
    metavar="NAME",
    help="Butler dataset type of differences [difference_image].",
)
@click.option(
    "--position",
    type=click.Choice(["auto", "xy", "radec"]),
    default=None,
    help="Locate sources by catalog x/y (images share a pixel grid) or by "
    "ra/dec through each image's WCS. auto: x/y when present [auto].",
)
@click.option(
    "--sizes",
    callback=_sizes,
    metavar="N[,N...]",
    help="Cutout size(s) in pixels; several give one row each [30; alert "
    "stamps: their native size].",
)
@click.option(
    "--annotate",
    is_flag=True,
    default=None,
    help="Add the metadata block (ids, fluxes, flags, RB) and a labelled scale bar (a round length, 10-35 % of the panel).",
)
@click.option(
    "--use-footprint",
    is_flag=True,
    default=None,
    help="Grow each cutout to the source's footprint (bboxSize).",
)
@click.option(
    "--numpy",
    is_flag=True,
    default=None,
    help="Also save the float32 cutouts as .npy beside each PNG.",
)
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="At most this many files per cutouts/ sub-directory [10000].",
)
@click.option(
    "--cmap", default=None, help="Matplotlib colour map [gray]; the seed uses bone."
)
@click.option(
    "--scale",
    type=int,
    default=None,
    help="Screen pixels per cutout pixel [about 200 px per panel].",
)
@click.option(
    "--nan-color", default=None, help="Colour of pixels with no data [#ff00ff]."
)
@click.option(
    "--difference-stretch",
    type=click.Choice(["zscale", "asinh-central"]),
    default=None,
    help="zscale + linear (the seed) or min/max + asinh on "
    "the central 15x15 pixels [zscale].",
)
@click.option(
    "--pixel-scale",
    type=float,
    default=None,
    help="Arcsec per pixel for the scale bar when images have no WCS.",
)
@click.option("--instrument", default=None, help="Instrument name for the annotation.")
@click.option(
    "--layout",
    type=click.Choice(["triplet", "frames", "both"]),
    default=None,
    help="triplet: one PNG of the three panels [default]; frames: one PNG per "
    "panel (template, science, difference per size) for a flipbook; both: "
    "the triplet, then the frames.",
)
@click.option(
    "--lightcurve",
    type=click.Choice(["flux", "mag"]),
    is_flag=False,
    flag_value="flux",
    default=None,
    help="Also draw each source's light curve from its object's history "
    "(alerts: prv_candidates / prvDiaSources; APDB: DiaSource and "
    "DiaForcedSource): flux in nJy [flux] or AB magnitude (mag).",
)
@click.option(
    "--lightcurve-json",
    is_flag=True,
    default=None,
    help="Also write the light curve as JSON for Zooniverse's scatter-plot / "
    "light-curve viewer, after its PNG (needs --lightcurve).",
)
@click.option(
    "--jobs",
    type=int,
    default=None,
    help="Worker processes [all cores].",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Where rendering runs: local processes or Dask.",
)
@click.option(
    "--scheduler",
    metavar="ADDR",
    help="Dask scheduler address (tcp://host:8786); a LocalCluster when absent.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Re-render everything, e.g. after changing picture settings.",
)
@command
def render(run: Path, **kw: Any) -> None:
    """Cut template, science and difference images and draw one PNG per source.

    Image flags are remembered in RUN/zooprep.toml, so 'zooprep render RUN'
    alone resumes.  Alert runs need no image flags: the packets hold the stamps.
    Templates may be URLs (s3://, https://, gs://): only the byte ranges under
    each cutout are read, retried on transient errors; a missing object, a 403
    or a truncated file fails that image's rows, named without the URL's query.

    \b
    Example:
      zooprep render run1 --science 'img/{visit}/{detector}/sci.fits' \\
          --template 'img/{visit}/{detector}/tmpl.fits' \\
          --difference 'img/{visit}/{detector}/diff.fits' --sizes 30,64 --annotate
      zooprep render run2 --science 's3://survey/{visit}/{detector}/calexp.fits' \\
          --template 's3://survey/{visit}/{detector}/template.fits' \\
          --difference 's3://survey/{visit}/{detector}/diff.fits'
      zooprep render alerts1 --layout both --lightcurve mag --lightcurve-json

    Files per source, in this order (the subject's locations): <id>.png (the
    triplet), <id>_<n>_template|science|difference.png (frames, size n),
    <id>_lightcurve.png, <id>_lightcurve.json.
    """
    images = {
        k: v
        for k, v in {
            "science": kw.pop("science"),
            "template": kw.pop("template_"),
            "difference": kw.pop("difference"),
            "butler": kw.pop("butler"),
            "collections": list(kw.pop("collections")) or None,
            "science_type": kw.pop("science_type"),
            "template_type": kw.pop("template_type"),
            "difference_type": kw.pop("difference_type"),
            "position": kw.pop("position"),
        }.items()
        if v is not None
    }
    options = {k: kw.pop(k) for k in PICTURE_OPTIONS if kw.get(k) is not None}
    result = zooprep.render(
        run,
        images=images or None,
        options=options or None,
        jobs=kw["jobs"],
        executor=kw["executor"],
        scheduler=kw["scheduler"],
        force=kw["force"],
        reporter=_reporter(),
    )
    _finish(result)


# -- manifest -----------------------------------------------------------------


@cli.command()
@RUN
@click.option(
    "--url-root",
    metavar="URL",
    help="Where you will host the PNGs; locations become URL_ROOT/cutouts/...",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of RUN/manifest.csv.",
)
@click.option(
    "--metadata",
    metavar="COL,...",
    help="Catalog columns to include as subject metadata ('id' is the source id; "
    "default: id,visit,detector,band,ra,dec,reliability,snr).",
)
@click.option(
    "--hidden",
    metavar="COL,...",
    help="Columns hidden from volunteers ('#' prefix; ids, reliability, S/N and "
    "flags are hidden by default).",
)
@click.option(
    "--talk-only",
    metavar="COL,...",
    help="Columns hidden in the classifier but shown in Talk ('!' prefix; "
    "default: visit,detector,ra,dec).",
)
@click.option(
    "--index", metavar="COL,...", help="Index fields of the subject set ('%')."
)
@click.option(
    "--split",
    type=int,
    metavar="N",
    help="Also write numbered parts of at most N rows (10000 for "
    "Zooniverse's server-side import).",
)
@click.option(
    "--layout",
    type=click.Choice(["import", "panoptes-cli"]),
    help="Column layout: import (default) or panoptes-cli (for 'panoptes "
    "subject-set upload-subjects').",
)
@command
def manifest(run: Path, **kw: Any) -> None:
    """Write RUN/manifest.csv: one row per rendered source, for review and upload.

    Open it in a spreadsheet, delete rows or fix metadata, save as CSV: upload
    sends what is left, and refuses ids a spreadsheet has mangled.

    Two layouts; 'zooprep upload' reads both. --layout import (the default):
    external_id, location:N, metadata:KEY columns, for zooprep upload and
    Zooniverse's server-side import (with --url-root and --split 10000).
    --layout panoptes-cli: #zooprep_id, #location:N and bare KEY columns, so
    that 'panoptes subject-set upload-subjects SET RUN/manifest.csv' gives the
    subjects the intended metadata keys (#reliability stays hidden).

    \b
    Example:
      zooprep manifest run1 --metadata diaSourceId,visit,band,reliability --hidden reliability
      zooprep manifest run1 --layout panoptes-cli
    """
    for key in ("metadata", "hidden", "talk_only", "index"):
        kw[key] = _csv(kw[key])
    result = zooprep.manifest(run, reporter=_reporter(), **kw)
    _finish(result)


# -- upload -------------------------------------------------------------------


@cli.command()
@RUN
@click.option("--project", required=True, metavar="ID", help="Zooniverse project id.")
@click.option("--subject-set-id", metavar="ID", help="An existing subject set's id.")
@click.option(
    "--subject-set",
    metavar="NAME",
    help="A subject set's display name; created if the project has none.",
)
@click.option(
    "--endpoint",
    default=PRODUCTION,
    show_default=True,
    help=f"Panoptes endpoint; rehearse on {STAGING}.",
)
@click.option(
    "--workers",
    type=int,
    default=8,
    show_default=True,
    help="Concurrent upload threads (1 to 64).",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds before one HTTP request is abandoned and retried.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check manifest, files, login and quota; upload nothing.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Read each file back from the subject's public location after its PUT "
    "(size, and MD5 where the store gives one) before the subject counts as "
    "uploaded; a missing file is PUT again. --no-verify trusts the store's 201.",
)
@click.option(
    "--workflow",
    metavar="ID",
    help="Link the subject set to this workflow of the project (once; a "
    "missing workflow or one of another project is refused before uploading).",
)
@click.option(
    "--via",
    type=click.Choice(["direct", "import"]),
    default="direct",
    show_default=True,
    help="direct: create subjects and put PNGs; import: a server-side "
    "import of a manifest written with --url-root (PNGs hosted by you).",
)
@command
def upload(run: Path, **kw: Any) -> None:
    """Send the manifest's rows to a Zooniverse subject set, exactly once.

    Credentials come only from the environment: PANOPTES_USERNAME and
    PANOPTES_PASSWORD, or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET.
    A killed or failed upload resumes with the same command and never makes a
    second subject for a source.

    \b
    Example:
      export PANOPTES_USERNAME=me PANOPTES_PASSWORD=...
      zooprep upload run1 --project 1234 --subject-set 'DIA batch 1' \\
          --endpoint https://panoptes-staging.zooniverse.org
    """
    via = kw.pop("via")
    options = UploadOptions(**kw)
    result = zooprep.upload(run, options, via=via, reporter=_reporter())
    _finish(result)


# -- results ------------------------------------------------------------------


@cli.command()
@RUN
@click.option(
    "--classifications",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="EXPORT.csv",
    help="A classification export (project Data Exports).",
)
@click.option(
    "--workflow-id", metavar="ID", help="Only this workflow's classifications."
)
@click.option(
    "--task", default="T0", show_default=True, help="The question task to reduce."
)
@click.option(
    "--real-answer",
    default=None,
    help="The answer that means 'real' (default: an answer containing 'real' "
    "or 'yes').",
)
@click.option(
    "--workflow-version",
    default=None,
    metavar="all|latest|MAJOR[.MINOR]",
    help="Workflow versions to use (default: every minor version of the latest "
    "major one; a major version change means the tasks changed).",
)
@click.option(
    "--download",
    is_flag=True,
    help="Fetch the export through the API (needs upload credentials).",
)
@click.option(
    "--endpoint", default=PRODUCTION, show_default=True, help="Panoptes endpoint."
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds before one --download request is abandoned and retried.",
)
@click.option("--force", is_flag=True, help="Overwrite earlier results.")
@command
def results(run: Path, **kw: Any) -> None:
    """Join volunteers' classifications back to the sources.

    Writes RUN/results.csv, RUN/results.parquet and the report RUN/results.html.

    \b
    Example:
      zooprep results run1 --classifications my-project-classifications.csv --task T0
    """
    result = zooprep.results(run, **kw)
    _finish(result)


# -- status, preview, demo ----------------------------------------------------


@cli.command()
@RUN
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output on stdout."
)
@command
def status(run: Path, as_json: bool) -> None:
    """Show counts per stage and status, failures by reason, and the next command.

    \b
    Example:
      zooprep status run1 --json | jq .counts   # source ids are strings
    """
    report = zooprep.status(run)
    if as_json:
        click.echo(json.dumps(_json_ids(report), indent=2))
    else:
        _print_status(report)


@cli.command()
@RUN
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of RUN/preview.html.",
)
@command
def preview(run: Path, output: Path | None) -> None:
    """Write RUN/preview.html, a self-contained gallery of the cutouts.

    \b
    Example:
      zooprep preview run1 && xdg-open run1/preview.html
    """
    path = zooprep.preview(run, output=output)
    click.echo(str(path))


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@command
def demo(out: Path) -> None:
    """Run the whole pipeline on the bundled sample data (no network, no credentials).

    \b
    Example:
      zooprep demo /tmp/zooprep-demo
    """
    result = zooprep.demo(out, reporter=_reporter())
    click.echo(str(result))


def main() -> None:
    """Entry point for ``python -m zooprep``."""
    cli(prog_name="zooprep")
