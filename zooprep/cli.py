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
from zooprep.options import (
    FakesOptions,
    ImageOptions,
    ManifestOptions,
    Options,
    RenderOptions,
    ResultsOptions,
    SelectOptions,
    UploadOptions,
)

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
_STOPPABLE = {"select", "fakes", "render", "manifest", "upload", "demo"}


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
        failed.add_column("what went wrong")
        failed.add_column("rows", justify="right")
        failed.add_column("e.g. source ids")
        failed.add_column("first, in full")
        for item in items:
            failed.add_row(
                item["reason"],
                str(item["count"]),
                ", ".join(str(i) for i in item["examples"]),
                item["example"],
            )
        console.print(failed)
    for what, n in (report.get("notes") or {}).items():
        console.print(f"note: {n} sources: {what}")
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


def flag(
    options: type[Options], name: str, *, decl: str | None = None, **kw: Any
) -> Callable[[F], F]:
    """The click option of field ``name`` of an options class.

    Its flag, help line (with the default) and choices come from
    `zooprep.options`; ``kw`` gives what only click needs (``type``,
    ``is_flag``, ``multiple``, ``metavar``...).  A flag that is not given
    passes nothing, so the stage merges what was given over the run's saved
    settings.
    """
    spelled = decl or options.flag(name)
    assert spelled, f"{options.__name__}.{name} has no flag"
    choices = options.choices(name)
    if choices and "type" not in kw:
        kw["type"] = click.Choice(choices)
    kw.setdefault("default", None)
    return click.option(spelled, name, help=options.help(name), **kw)


def _given(kw: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given (click passes None, or () for a repeatable one)."""
    return {k: v for k, v in kw.items() if v is not None and v != ()}


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
@flag(SelectOptions, "apdb", metavar="URL")
@flag(SelectOptions, "catalog", type=click.Path(dir_okay=False, path_type=Path))
@flag(SelectOptions, "alerts", metavar="GLOB")
@flag(SelectOptions, "apdb_config", type=click.Path(dir_okay=False, path_type=Path))
@flag(SelectOptions, "lasair_query", metavar="QUERY")
@flag(SelectOptions, "lasair_objects", metavar="IDS|FILE")
@flag(SelectOptions, "fink_objects", metavar="IDS|FILE")
@flag(SelectOptions, "fink_tag", metavar="TAG")
@flag(SelectOptions, "alerce_objects", metavar="IDS|FILE")
@flag(SelectOptions, "alerce_query", metavar="KEY=VALUE...")
@flag(SelectOptions, "kafka", metavar="HOST:PORT")
@flag(SelectOptions, "tap", metavar="URL")
@flag(SelectOptions, "table", metavar="SCHEMA.TABLE")
@flag(SelectOptions, "query", metavar="ADQL")
@flag(SelectOptions, "tap_mode")
@flag(SelectOptions, "tap_page_size", type=int, metavar="N")
@flag(SelectOptions, "topic", metavar="T")
@flag(SelectOptions, "group", metavar="G")
@flag(SelectOptions, "max", type=int, metavar="N")
@flag(SelectOptions, "until_idle", type=float, metavar="S")
@flag(SelectOptions, "schema_registry", metavar="URL")
@flag(SelectOptions, "kafka_config", multiple=True, metavar="KEY=VALUE")
@flag(SelectOptions, "per_object")
@flag(SelectOptions, "lasair_endpoint", metavar="URL")
@flag(SelectOptions, "lasair_rate", metavar="N[/SECONDS]")
@flag(SelectOptions, "lasair_web", metavar="URL")
@flag(SelectOptions, "fink_endpoint", metavar="URL")
@flag(SelectOptions, "broker_wait", type=float, metavar="SECONDS")
@flag(SelectOptions, "schema", metavar="NAME")
@flag(SelectOptions, "where", metavar="EXPR")
@flag(SelectOptions, "visit", multiple=True, type=int)
@flag(SelectOptions, "detector", multiple=True, type=int)
@flag(SelectOptions, "band", multiple=True)
@flag(SelectOptions, "reliability_min", type=float)
@flag(SelectOptions, "reliability_max", type=float)
@flag(SelectOptions, "limit", type=int)
@flag(SelectOptions, "sample", type=int)
@flag(SelectOptions, "seed", type=int)
@flag(SelectOptions, "stratify", metavar="COLUMN:BINS")
@flag(SelectOptions, "id_column", metavar="NAME")
@flag(SelectOptions, "rename", multiple=True, metavar="OLD=NEW")
@flag(SelectOptions, "instrument")
@flag(SelectOptions, "append", is_flag=True)
@flag(SelectOptions, "next", type=int, metavar="N")
@flag(SelectOptions, "learn_from", multiple=True, metavar="RUN")
@flag(SelectOptions, "strategy")
@flag(SelectOptions, "random_share", type=float, metavar="SHARE")
@flag(SelectOptions, "reshow_controversial", type=int, metavar="K")
@command
def select(run: Path, **kw: Any) -> None:
    """Choose the sources to show volunteers and start (or extend) RUN.

    Exactly one source is needed: a Rubin APDB (--apdb, --apdb-config), a
    catalog file (--catalog), alert packets (--alerts), a TAP service such as
    the Rubin Science Platform's (--tap with --table or --query; extra
    'zooprep[rsp]'), an alert broker
    (--lasair-query, --lasair-objects, --fink-objects, --fink-tag,
    --alerce-objects, --alerce-query;
    extra 'zooprep[brokers]') or a Kafka alert stream (--kafka with
    --topic; extra 'zooprep[kafka]').
    Sources are taken in ascending id order; --sample draws a reproducible
    random sample. A catalog needs an id (diaSourceId or --id-column), visit
    and detector (or image), and x and y (or ra and dec), under DiaSource
    names (map others with --rename). Re-running the same select continues
    it; a different one on a run with sources needs --append. --next N
    --learn-from RUN chooses the next batch from what volunteers said in the
    runs named (README, "The next batch").

    \b
    Example:
      zooprep select run1 --apdb sqlite:///apdb.sqlite3 \\
          --where 'reliability > 0.2' --sample 500 --seed 1
      LASAIR_TOKEN=... zooprep select run2 --lasair-query 'nDiaSources > 5'
      zooprep select run3 --kafka broker:9092 --topic alerts --until-idle 60
      zooprep select run4 --apdb sqlite:///apdb.sqlite3 --next 500 \\
          --learn-from run1 --learn-from run2 --strategy uncertainty
    """
    kw = _given(kw)
    if "rename" in kw:
        rename = {}
        for item in kw["rename"]:
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                raise click.BadParameter(
                    f"{item!r}: use OLD=NEW", param_hint="--rename"
                )
            rename[old] = new
        kw["rename"] = rename
    result = zooprep.select(run, reporter=_reporter(), **kw)
    _finish(result)


# -- render -------------------------------------------------------------------


@cli.command()
@RUN
@flag(ImageOptions, "science", metavar="TEMPLATE")
@flag(ImageOptions, "template", metavar="TEMPLATE")
@flag(ImageOptions, "difference", metavar="TEMPLATE")
@flag(ImageOptions, "butler", metavar="REPO")
@flag(ImageOptions, "collections", multiple=True, metavar="C")
@flag(ImageOptions, "science_type", metavar="NAME")
@flag(ImageOptions, "template_type", metavar="NAME")
@flag(ImageOptions, "difference_type", metavar="NAME")
@flag(ImageOptions, "soda", metavar="SIA_URL")
@flag(RenderOptions, "position")
@flag(RenderOptions, "sizes", callback=_sizes, metavar="N[,N...]")
@flag(RenderOptions, "annotate", decl="--annotate/--no-annotate", is_flag=True)
@flag(RenderOptions, "use_footprint", is_flag=True)
@flag(RenderOptions, "numpy", is_flag=True)
@flag(RenderOptions, "chunk_size", type=int)
@flag(RenderOptions, "cmap")
@flag(RenderOptions, "scale", type=int)
@flag(RenderOptions, "nan_color")
@flag(RenderOptions, "difference_stretch")
@flag(RenderOptions, "pixel_scale", type=float)
@flag(RenderOptions, "instrument")
@flag(RenderOptions, "layout")
@flag(RenderOptions, "lightcurve", is_flag=False, flag_value="flux")
@flag(RenderOptions, "lightcurve_json", is_flag=True)
@flag(RenderOptions, "jobs", type=int)
@flag(RenderOptions, "executor")
@flag(RenderOptions, "scheduler", metavar="ADDR")
@flag(RenderOptions, "force", is_flag=True)
@command
def render(run: Path, **kw: Any) -> None:
    """Cut template, science and difference images and draw one PNG per source.

    Image flags are remembered in RUN/zooprep.toml, so 'zooprep render RUN'
    alone resumes.  Alert runs need no image flags: the packets hold the stamps.
    Templates may be URLs (s3://, https://, gs://): only the byte ranges under
    each cutout are read, retried on transient errors; a missing object, a 403
    or a truncated file fails that image's rows, named without the URL's query.
    A signed URL's token goes in an environment variable, named in the
    template as {env:NAME} (zooprep.toml keeps the template, not the token).

    \b
    Example:
      zooprep render run1 --science 'img/{visit}/{detector}/sci.fits' \\
          --template 'img/{visit}/{detector}/tmpl.fits' \\
          --difference 'img/{visit}/{detector}/diff.fits' --sizes 30,64 --annotate
      zooprep render run2 --science 's3://survey/{visit}/{detector}/calexp.fits' \\
          --template 's3://survey/{visit}/{detector}/template.fits' \\
          --difference 's3://survey/{visit}/{detector}/diff.fits'
      zooprep render alerts1 --layout frames --lightcurve mag --lightcurve-json

    \b
    Subjects (files in location order -> workflow subject_viewer):
      --layout triplet               <id>.png -> singleImage (automatic)
      --layout frames                <id>_<n>_template|science|difference.png
                                     -> flipbook (automatic): blink
      triplet + --lightcurve         <id>.png, <id>_lightcurve.png (same size)
                                     -> flipbook (automatic)
      triplet|frames + --lightcurve --lightcurve-json
                                     the images, <id>_lightcurve.json
                                     -> dataImage: the chart beside them
    A light curve without a point to draw gives no light-curve file.  --layout
    both and frames with a light-curve PNG are refused (mixed image sizes).

    \b
    Injected fakes (zooprep fakes --count) must look like the real sources, so
    render refuses, before any work, what would give them away:
      --lightcurve   a fake has no history, only its own point
      --annotate     when the real sources have an RB score (reliability):
                     the fakes have none; use --no-annotate
    """
    kw = _given(kw)
    images = {k: kw.pop(k) for k in ImageOptions.field_names() if k in kw}
    result = zooprep.render(run, images=images or None, reporter=_reporter(), **kw)
    _finish(result)


# -- fakes --------------------------------------------------------------------


@cli.command()
@RUN
@flag(FakesOptions, "count", type=int, metavar="N")
@flag(FakesOptions, "mag", metavar="BRIGHT:FAINT")
@flag(FakesOptions, "seed", type=int)
@flag(FakesOptions, "training", type=float, metavar="SHARE")
@flag(FakesOptions, "psf")
@flag(FakesOptions, "zeropoint", type=float, metavar="MAG")
@flag(FakesOptions, "gain", type=float, metavar="E/COUNT")
@flag(FakesOptions, "separation", type=float, metavar="PX")
@flag(FakesOptions, "truth_column", metavar="COL")
@flag(FakesOptions, "truth_mag", metavar="COL")
@flag(FakesOptions, "force", is_flag=True)
@flag(ImageOptions, "science", metavar="TEMPLATE")
@flag(ImageOptions, "template", metavar="TEMPLATE")
@flag(ImageOptions, "difference", metavar="TEMPLATE")
@flag(ImageOptions, "butler", metavar="REPO")
@flag(ImageOptions, "collections", multiple=True, metavar="C")
@flag(ImageOptions, "science_type", metavar="NAME")
@flag(ImageOptions, "template_type", metavar="NAME")
@flag(ImageOptions, "difference_type", metavar="NAME")
@command
def fakes(run: Path, **kw: Any) -> None:
    """Add known answers to RUN: injected fakes, or sources a column names.

    --count N injects N point sources of known magnitude (uniform in --mag)
    into the science and difference images, never the template: flux times
    the image's PSF (its PSFIMAGE, else an effective PSF built from its stars
    with photutils, else a Gaussian of the measured seeing) plus the photon
    noise, at random places away from edges, masked pixels, detected sources
    and the run's own sources. They become sources of the run, mixed in
    among the real ones and looking like them; the truth is kept in the run
    (and, by the manifest, in hidden metadata). --training SHARE makes that
    share training subjects (feedback, their own subject set); the rest are
    blind. Every image is planned and checked before anything is written;
    the same --seed gives the same fakes. Needs photutils: pip install
    'zooprep[fakes]'. The images are those of render (give them here or to a
    render before); each image's PSF, zero point and gain are recorded in
    RUN/fakes/plans.json.

    --truth-column COL injects nothing: it marks the sources the column says
    are known real (true, 1, real: the pipeline's own injections matched to
    DiaSources; --truth-mag their magnitude) or known bogus (bogus,
    artefact: an expert's labels). It works on alert runs too.

    \b
    Example:
      zooprep fakes run1 --count 300 --mag 20:25 --seed 7 --training 0.2
      zooprep fakes run1 --science 'img/{visit}/{detector}/sci.fits' \\
          --template 'img/{visit}/{detector}/tmpl.fits' \\
          --difference 'img/{visit}/{detector}/diff.fits' --count 100 --zeropoint 31.4
      zooprep fakes alerts1 --truth-column is_injected --truth-mag injected_mag
    """
    kw = _given(kw)
    images = {k: kw.pop(k) for k in ImageOptions.field_names() if k in kw}
    result = zooprep.fakes(run, images=images or None, reporter=_reporter(), **kw)
    _finish(result)


# -- manifest -----------------------------------------------------------------


@cli.command()
@RUN
@flag(ManifestOptions, "url_root", metavar="URL")
@flag(ManifestOptions, "output", type=click.Path(dir_okay=False, path_type=Path))
@flag(ManifestOptions, "metadata", metavar="COL,...")
@flag(ManifestOptions, "hidden", metavar="COL,...")
@flag(ManifestOptions, "talk_only", metavar="COL,...")
@flag(ManifestOptions, "index", metavar="COL,...")
@flag(ManifestOptions, "split", type=int, metavar="N")
@flag(ManifestOptions, "layout")
@flag(ManifestOptions, "feedback", metavar="RULE_ID")
@flag(ManifestOptions, "real_answer", type=int, metavar="K")
@flag(ManifestOptions, "bogus_answer", type=int, metavar="K")
@flag(ManifestOptions, "success_message", metavar="TEXT")
@flag(ManifestOptions, "failure_message", metavar="TEXT")
@flag(ManifestOptions, "truth_metadata", decl="--truth-metadata/--no-truth-metadata")
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

    Runs with known answers (zooprep fakes) get hidden #known_answer,
    #fake_mag, #fake_snr and #training_subject keys; --feedback RULE_ID
    --real-answer K writes the Zooniverse feedback keys (#feedback_1_id,
    #feedback_1_answer as text) on the training subjects only.

    \b
    Example:
      zooprep manifest run1 --metadata diaSourceId,visit,band,reliability --hidden reliability
      zooprep manifest run1 --layout panoptes-cli
      zooprep manifest run1 --feedback fake-check --real-answer 0 --bogus-answer 1
    """
    kw = _given(kw)
    for key in ("metadata", "hidden", "talk_only", "index"):
        if key in kw:
            kw[key] = _csv(kw[key])
    result = zooprep.manifest(run, reporter=_reporter(), **kw)
    _finish(result)


# -- upload -------------------------------------------------------------------


@cli.command()
@RUN
@flag(UploadOptions, "project", required=True, metavar="ID")
@flag(UploadOptions, "subject_set_id", metavar="ID")
@flag(UploadOptions, "subject_set", metavar="NAME")
@flag(UploadOptions, "endpoint")
@flag(UploadOptions, "workers", type=int)
@flag(UploadOptions, "timeout", type=float)
@flag(UploadOptions, "dry_run", is_flag=True)
@flag(UploadOptions, "verify", decl="--verify/--no-verify")
@flag(UploadOptions, "workflow", metavar="ID")
@flag(UploadOptions, "subject_viewer")
@flag(UploadOptions, "via")
@flag(UploadOptions, "training_set", metavar="NAME")
@flag(UploadOptions, "training_set_id", metavar="ID")
@flag(UploadOptions, "controversial_set", metavar="NAME")
@command
def upload(run: Path, **kw: Any) -> None:
    """Send the manifest's rows to a Zooniverse subject set, exactly once.

    Credentials come only from the environment: PANOPTES_USERNAME and
    PANOPTES_PASSWORD, or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET.
    A killed or failed upload resumes with the same command and never makes a
    second subject for a source.

    --workflow ID links the set to the workflow and first checks that the
    workflow's configuration.subject_viewer shows every file of the subjects
    (PNGs plus a light-curve JSON need dataImage; unset, the classifier
    draws nothing for them): if not, nothing is uploaded and the one-line
    error names the value. --subject-viewer NAME sets it, once, keeping the
    rest of the workflow's configuration.  It also checks the feedback keys
    written by 'manifest --feedback' against the workflow's task: a rule id
    the task's feedback.rules do not define, a rule the classifier would
    ignore, or an answer index the task does not have is refused, in one
    line, before anything is uploaded.

    \b
    Example:
      export PANOPTES_USERNAME=me PANOPTES_PASSWORD=...
      zooprep upload run1 --project 1234 --subject-set 'DIA batch 1' \\
          --endpoint https://panoptes-staging.zooniverse.org
      zooprep upload run1 --project 1234 --subject-set 'DIA batch 1' \\
          --workflow 5678 --subject-viewer dataImage
    """
    result = zooprep.upload(run, reporter=_reporter(), **_given(kw))
    _finish(result)


# -- results ------------------------------------------------------------------


@cli.command()
@RUN
@flag(
    ResultsOptions,
    "classifications",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="EXPORT.csv",
)
@flag(ResultsOptions, "workflow_id", metavar="ID")
@flag(ResultsOptions, "task")
@flag(ResultsOptions, "real_answer")
@flag(ResultsOptions, "workflow_version", metavar="all|latest|MAJOR[.MINOR]")
@flag(ResultsOptions, "download", is_flag=True)
@flag(ResultsOptions, "endpoint")
@flag(ResultsOptions, "timeout", type=float)
@flag(ResultsOptions, "force", is_flag=True)
@flag(ResultsOptions, "reliability_threshold", type=float, metavar="SCORE")
@command
def results(run: Path, **kw: Any) -> None:
    """Join volunteers' classifications back to the sources.

    Writes RUN/results.csv, RUN/results.parquet and the report RUN/results.html.
    With known answers in the run (zooprep fakes: injected fakes, or sources
    a --truth-column names) it also writes RUN/completeness.csv (completeness
    of the consensus, single votes, the skill-weighted vote and the pipeline
    per bin of magnitude and S/N, with the 50 % points), RUN/volunteers.csv
    (each volunteer's confusion matrix and skill), the known_* and swap_*
    columns of the results, and the report's Known answers part (purity on
    known bogus subjects).  On a run chosen by select --next it also writes
    RUN/learning.csv (each batch's calibration per score bin) and the
    report's batches part.

    \b
    Example:
      zooprep results run1 --classifications my-project-classifications.csv --task T0
    """
    result = zooprep.results(run, **_given(kw))
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
