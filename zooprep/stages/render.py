"""``zooprep render``: cut each source's images and draw its PNG.

Sources are streamed from the run state in image order (their ``grp``, set
by select) and cut into tasks of at most `TASK_ROWS` rows that share images,
so a worker opens each image once per task.  Workers write the PNG (and
``.npy``) files themselves, atomically, and return one small result per row;
only this process writes the run state, one transaction per task.  A process
killed at any moment leaves finished rows recorded and at worst re-renders the
rows of the tasks that were in flight (the files are replaced whole).
"""

from __future__ import annotations

import copy
import ctypes
import functools
import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from zooprep import interrupt
from zooprep.errors import InputError, SettingsMismatch
from zooprep.executors import Executor, WorkerDied, make_executor
from zooprep.files import atomic_write, remove_temporary, storage_guard
from zooprep.images import absolute, from_options
from zooprep.images.base import Cutouts, Failed, FileImages, ImageSource
from zooprep.images.injected import load_injection, load_plans, plan_key
from zooprep.lightcurves import light_curve_plot
from zooprep.options import MAX_FILE_BYTES, ImageOptions, RenderOptions
from zooprep.progress import NullReporter, Reporter
from zooprep.renderers.base import Renderer
from zooprep.run import Run, cutout_relpath, saved_count
from zooprep.scatterplot import scatter_plot_json
from zooprep.vocabulary import STAMP_KINDS, finite_number, reason_key

__all__ = [
    "NO_LIGHT_CURVE",
    "RenderResult",
    "RowResult",
    "TaskResult",
    "check_fakes_hidden",
    "check_subject_kind",
    "render",
]

log = logging.getLogger(__name__)

#: Most rows per task sent to a worker (all from the same images); larger
#: image groups are split so that every core gets work.
TASK_ROWS = 2000


@dataclass
class RenderResult:
    """What one render call did."""

    rendered: int = 0
    failed: int = 0
    padded: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"render: {self.rendered} rendered ({self.padded} padded at an edge)"
        if self.notes:
            text += "; " + ", ".join(f"{n} {what}" for what, n in self.notes.items())
        if self.failed:
            top = ", ".join(
                f"{n} {r}"
                for r, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:3]
            )
            text += f", {self.failed} failed ({top})"
        if self.skipped:
            text += f", {self.skipped} already done"
        return text


class TaskRow(NamedTuple):
    """One source to render: its id, its selection order and its columns."""

    id: int
    seq: int
    row: dict[str, Any]


@dataclass(frozen=True)
class RowResult:
    """What a worker did with one source.

    Attributes
    ----------
    id : int
        The source.
    status : {'rendered', 'failed'}
        Whether its files were written.
    files : tuple of str
        The files written, relative to the run, in location order.
    reason : str
        Why it failed (one line).
    padded : bool
        A cutout reached past an image edge.
    notes : dict of str to int
        Counts for the summary line (e.g. light curves of one point).
    """

    id: int
    status: Literal["rendered", "failed"]
    files: tuple[str, ...] = ()
    reason: str = ""
    padded: bool = False
    notes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def failed(cls, source_id: int, reason: str) -> RowResult:
        """A failed row and its reason."""
        return cls(source_id, "failed", reason=reason)


@dataclass
class TaskResult:
    """What a worker did with one task: a result per row it finished.

    ``stopped`` says the worker was told to stop: the rows without a result
    are left for the next run, not failed.
    """

    rows: list[RowResult] = field(default_factory=list)
    stopped: bool = False


@dataclass(frozen=True)
class _Task:
    """One unit of work for a worker: rows sharing images."""

    run_path: str
    images: ImageSource
    renderer: Renderer
    rows: list[TaskRow]
    sizes: tuple[int, ...]
    use_footprint: bool
    numpy: bool
    chunk_size: int
    layout: str = "triplet"
    history: Any = None
    lightcurve: Any = None
    lightcurve_json: bool = False
    injection: Any = None  # the fakes of these rows' images (zooprep fakes)


#: What the files of one source are called after ``<id>``, in location order:
#: the triplet or the frames (``_<n>_<panel>``, n the size's 1-based
#: position), then the light curve: its JSON, or its PNG beside a triplet.
FRAME_PANELS = ("template", "science", "difference")

#: The summary's note of sources whose light curve has no point to draw (they
#: get no light-curve file; `zooprep.status` counts them too).
NO_LIGHT_CURVE = "sources without a light-curve point (no light curve)"


def check_subject_kind(opts: RenderOptions) -> None:
    """Refuse the picture settings whose subjects Zooniverse would letterbox.

    The classifier's flipbook (and the images beside ``dataImage``'s chart)
    draws every image in the box of the first one, so all images of a subject
    must have one pixel size: the triplet and the frames differ (``--layout
    both``), and a light-curve picture cannot be one of the frames.

    Raises
    ------
    zooprep.errors.InputError
        ``layout`` is ``both``, or ``frames`` with a light-curve PNG.
    """
    if opts.layout == "both":
        raise InputError(
            "--layout both is not offered: the triplet and the frames differ in "
            "size, and Zooniverse's flipbook shrinks every image into the first "
            "one's box; use --layout triplet or --layout frames (with --force on "
            "a rendered run)"
        )
    if opts.layout == "frames" and opts.lightcurve and not opts.lightcurve_json:
        raise InputError(
            "--layout frames with --lightcurve needs --lightcurve-json: a "
            "light-curve picture cannot be one of the blinked frames; the JSON "
            "is drawn beside them (subject_viewer dataImage)"
        )


def check_fakes_hidden(run: Run, opts: RenderOptions) -> None:
    """Refuse pictures that would tell the run's injected fakes from its sources.

    A fake (``zooprep fakes --count``) has no history and no pipeline score:
    light curves would show it as one point beside the real sources' curves,
    and the annotation would write ``RB:`` on the real sources only.  Known
    answers marked from a column are real rows and are not concerned.

    Raises
    ------
    zooprep.errors.InputError
        ``lightcurve`` on a run with injected fakes, or ``annotate`` when some
        real source has a ``reliability`` score and some fake has none.
    """
    if not (opts.annotate or opts.lightcurve):
        return
    fakes = {a.id for a in run.known_answers().values() if a.origin == "injected"}
    if not fakes:
        return
    n = len(fakes)
    if opts.lightcurve:
        raise InputError(
            f"--lightcurve would tell the {n} fakes of {run.path} from the real "
            "sources: a fake has no history, only its own point; render this run "
            "without --lightcurve (light curves need a run without injected fakes)"
        )
    unscored, scored = 0, False
    for src in run.iter_sources():
        has_score = finite_number(src.row.get("reliability")) is not None
        if src.id in fakes:
            unscored += not has_score
        else:
            scored = scored or has_score
    if unscored and scored:
        redraw = " --force" if run.counts()["rendered"] else ""
        raise InputError(
            f"--annotate would tell the {unscored} fakes of {run.path} from the "
            "real sources: it writes the pipeline's RB score, which the real "
            f"sources have and the fakes lack; render with --no-annotate{redraw}"
        )


class _RowFailed(Exception):
    """One row's picture cannot be used (the message is its one-line reason)."""


def _pictures(
    task: _Task, cutouts: Cutouts, row: dict[str, Any], curve: Any
) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """The files of one source, ``(suffix, bytes)`` in location order, and notes."""
    out: list[tuple[str, bytes]] = []
    notes: dict[str, int] = {}
    if task.layout in ("triplet", "both"):
        out.append((".png", task.renderer.render(cutouts, row)))
    if task.layout in ("frames", "both"):
        frames = task.renderer.render_frames(cutouts, row)
        for n, png in enumerate(frames):
            size, panel = divmod(n, 3)
            out.append((f"_{size + 1}_{FRAME_PANELS[panel]}.png", png))
    if task.lightcurve is not None:
        if isinstance(curve, str) or curve is None:
            raise _RowFailed(curve or "light curve: no history was read for it")
        if not curve.had_history:
            notes["light curves of one point (no history)"] = 1
        if curve.dropped:
            notes["history points without flux or time left out"] = curve.dropped
        if curve.malformed:
            notes["malformed history entries left out"] = curve.malformed
        mode = task.lightcurve.mode
        if task.lightcurve_json:
            # The chart JSON replaces the picture: dataImage and Talk draw it.
            body = scatter_plot_json(curve, mode)
            if body is None:
                notes[NO_LIGHT_CURVE] = 1
            else:
                out.append(("_lightcurve.json", body))
        elif not light_curve_plot(curve, mode).points:
            notes[NO_LIGHT_CURVE] = 1
        else:
            from zooprep.renderers.lightcurve import png_size

            # Blinked with the triplet: drawn at its pixel size, so the
            # flipbook shows both whole (it fits every image into the first's box).
            title = f"object {curve.object_id}" if curve.object_id is not None else ""
            box = png_size(out[0][1])
            out.append(("_lightcurve.png", task.lightcurve.render(curve, title, box)))
    return out, notes


class WriteFailed(OSError):
    """A worker could not write a cutout file (disk full, read-only, quota).

    Not a failure of the row: the driver stops the stage and reports it.
    """


def _write(path: str, data: bytes) -> None:
    """`atomic_write`, with write errors marked as `WriteFailed`."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise WriteFailed(exc.errno, exc.strerror, path) from None


def _npy_bytes(cutouts: Cutouts) -> tuple[str, bytes]:
    """The float32 cutouts as ``.npy`` (one size: shape (3, n, n)) or ``.npz``."""
    buf = io.BytesIO()
    stacks = [
        np.stack([t.template, t.science, t.difference]).astype(np.float32)
        for t in cutouts.rows
    ]
    if len(stacks) == 1:
        np.save(buf, stacks[0])
        return ".npy", buf.getvalue()
    arrays: dict[str, Any] = {f"size{s.shape[-1]}": s for s in stacks}
    np.savez(buf, **arrays)
    return ".npz", buf.getvalue()


#: glibc's ``mallopt`` parameters, and the values `keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 64 << 20, 4 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process reuse the memory of one picture for the next (glibc).

    Each picture allocates and frees a few arrays of 0.1-1 MB (an annotated
    picture is a 370x682 RGB canvas, 0.76 MB, and its filtered rows).  Above
    glibc's default thresholds each one is a new ``mmap``, or the heap is
    trimmed and grown again, so the kernel zeroes and faults in every page
    once per picture: 1.26 million page faults for 4,000 annotated pictures,
    ~15 % of the process's time.  With arrays below 4 MB taken from the heap
    and up to 64 MB of freed memory kept there, the same render takes 20,000.
    Returns whether the setting was made (not on a C library without
    ``mallopt``, e.g. macOS's).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)
        and mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)
    )


def _render_task(task: _Task) -> TaskResult:
    """Worker: cut, draw and write every row of a task.

    When the image source itself raises, the rows not yet done are retried
    one by one, so an error caused by one source fails that source only.
    """
    keep_freed_memory()
    out = TaskResult()
    try:
        _draw_rows(task, task.rows, out.rows)
    except WriteFailed:
        raise  # the disk, not the row: the driver stops the stage
    except Exception:
        log.debug("task failed; retrying its rows one by one", exc_info=True)
        done = {o.id for o in out.rows}
        for item in task.rows:
            if item.id in done:
                continue
            try:
                _draw_rows(task, [item], out.rows)
            except WriteFailed:
                raise
            except Exception as exc:  # this row's own error, recorded as its failure
                out.rows.append(
                    RowResult.failed(item.id, f"{type(exc).__name__}: {exc}")
                )
    # Told to stop (SIGTERM from the driver): the rows not answered are left
    # for the next run, not failed.
    out.stopped = interrupt.requested()
    return out


def _draw_rows(task: _Task, rows: list[TaskRow], out: list[RowResult]) -> None:
    """Cut and draw ``rows``, appending one result per row to ``out``."""
    run = task.run_path
    by_id = {item.id: item for item in rows}
    items = [(item.id, item.row) for item in rows]
    curves: dict[int, Any] = {}
    if task.lightcurve is not None:
        from zooprep.readers.history import light_curves_for

        curves = light_curves_for(task.history, items)
    images = task.images
    if task.injection is not None:  # the same source, cutting images with fakes
        assert isinstance(images, FileImages)  # _tasks checked it
        images = copy.copy(images)
        images.injection = task.injection
    for cut in images.cutouts(items, task.sizes, task.use_footprint):
        if interrupt.requested():
            return  # rendering in this process (--jobs 1): stop between rows
        if isinstance(cut, Failed):
            out.append(RowResult.failed(cut.source_id, cut.reason))
            continue
        item = by_id[cut.source_id]
        try:
            pictures, notes = _pictures(task, cut, item.row, curves.get(item.id))
        except _RowFailed as exc:
            out.append(RowResult.failed(item.id, str(exc)))
            continue
        except Exception as exc:  # one bad row must not stop the others
            log.debug("render of %s failed", item.id, exc_info=True)
            out.append(
                RowResult.failed(
                    item.id, f"drawing failed: {type(exc).__name__}: {exc}"
                )
            )
            continue
        big = [(sfx, len(data)) for sfx, data in pictures if len(data) > MAX_FILE_BYTES]
        if big:
            sfx, n = big[0]
            what = "light-curve JSON" if sfx.endswith(".json") else f"PNG {sfx!r}"
            hint = (
                "the history is too long for one file"
                if sfx.endswith(".json")
                else "use smaller --sizes or --scale"
            )
            out.append(
                RowResult.failed(
                    item.id,
                    f"{what} is {n} bytes, over Zooniverse's {MAX_FILE_BYTES}-byte "
                    f"limit; {hint}",
                )
            )
            continue
        files = []
        for sfx, data in pictures:
            rel = cutout_relpath(item.seq, item.id, task.chunk_size, sfx)
            _write(os.path.join(run, rel), data)
            files.append(rel)
        if task.numpy:
            suffix, data = _npy_bytes(cut)
            rel_np = cutout_relpath(item.seq, item.id, task.chunk_size, suffix)
            _write(os.path.join(run, rel_np), data)
            files.append(rel_np)
        out.append(RowResult(item.id, "rendered", tuple(files), "", cut.padded, notes))


def _columns(run: Run) -> list[str]:
    """Column names of the run's sources (from the first few rows)."""
    cols: dict[str, None] = {}
    for n, src in enumerate(run.iter_sources(page=50)):
        cols.update(dict.fromkeys(src.row))
        if n >= 50:
            break
    return list(cols)


def _resolve_options(run: Run, given: RenderOptions, kind: str | None) -> RenderOptions:
    """The given options merged over the run's saved ones; refuse silent changes."""
    saved = run.settings.render
    if saved is None:
        base = RenderOptions.defaults()
        if kind in STAMP_KINDS:
            base = base.merge(sizes=())
    else:
        base = saved
    if given.images:
        given = given.merge(images=absolute(given.images))
    merged = base.merge(given)
    check_subject_kind(merged)
    if saved is not None and not merged.force:
        changed = [
            k
            for k in RenderOptions.picture_fields()
            if getattr(merged, k) != getattr(saved, k)
        ]
        done = run.counts()["rendered"]
        if changed and done:
            raise SettingsMismatch(
                f"{done} sources were rendered with other settings "
                f"({', '.join(changed)}); use --force to re-render them all"
            )
    return merged


def _tasks(
    run: Run,
    images: ImageSource,
    renderer: Renderer,
    opts: RenderOptions,
    statuses: Sequence[str],
) -> Iterator[_Task]:
    """Stream pending rows in image order and cut them into tasks."""
    history: Any = None
    curve_renderer: Any = None
    if opts.lightcurve:
        from zooprep.readers.history import history_source
        from zooprep.renderers.lightcurve import LightCurveRenderer

        history = history_source(run.settings.select)
        curve_renderer = LightCurveRenderer(opts.lightcurve)

    plans = load_plans(run.path)
    if plans and not isinstance(images, FileImages):
        raise InputError(
            f"{run.path} has fakes drawn into its images by zooprep fakes, which "
            f"{type(images).__name__} cannot add to the cutouts; render it from "
            "the images they were planned on (--science/--template/--difference "
            "or --butler)"
        )
    injections: dict[str, Any] = {}

    def injection(key: Any) -> Any:
        """The fakes of one image, loaded once (None when it has none)."""
        text = plan_key(key)
        if text not in plans:
            return None
        if text not in injections:
            injections.clear()  # images come in order: keep one at a time
            injections[text] = load_injection(plans[text])
        return injections[text]

    def task(rows: list[TaskRow]) -> _Task:
        return _Task(
            str(run.path),
            images,
            renderer,
            rows,
            tuple(opts.sizes),
            opts.use_footprint,
            opts.numpy,
            opts.chunk_size,
            layout=opts.layout,
            history=history,
            lightcurve=curve_renderer,
            lightcurve_json=opts.lightcurve_json,
            injection=injection(key),
        )

    rows: list[TaskRow] = []
    key: Any = None
    for sid, seq, row in run.iter_to_render(statuses):
        k = images.group_key(row)
        if rows and (k != key or len(rows) >= TASK_ROWS):
            yield task(rows)
            rows = []
        key = k
        rows.append(TaskRow(sid, seq, row))
    if rows:
        yield task(rows)


def render(
    run: str | os.PathLike[str],
    options: RenderOptions | Mapping[str, Any] | None = None,
    *,
    images: ImageSource | ImageOptions | Mapping[str, Any] | None = None,
    renderer: Renderer | None = None,
    executor: Executor | str | None = None,
    reporter: Reporter | None = None,
    **fields: Any,
) -> RenderResult:
    """Render every selected (or previously failed) source of a run to PNG.

    Parameters
    ----------
    run : str or path-like
        The run directory (made by `zooprep.select`).
    options : RenderOptions or mapping, optional
        Picture settings, where the images are (``images``) and how the work
        runs (``jobs``, ``executor``, ``scheduler``, ``force``); merged over
        those saved by an earlier render.  The same fields may be given as
        a mapping or as keywords (``render(run, sizes=(32, 64), jobs=1)``).
    images : ImageSource, ImageOptions or mapping, optional
        Where the pixels are: an image source object (see
        `zooprep.images.base.ImageSource`), or its settings: the command
        line's words ``science``, ``template``, ``difference`` (path
        templates) and ``position``, or ``butler``, ``collections`` and
        ``*_type`` dataset names.  Settings are saved in ``zooprep.toml``;
        None reuses the saved ones, or the alert packets' stamps for an
        alert run.
    renderer : Renderer, optional
        A custom renderer; by default plain or annotated from the options.
    executor : Executor or {'local', 'dask'}, optional
        Where the work runs (an object, or the ``executor`` option).
    reporter : Reporter, optional
        Progress callbacks.
    **fields
        The fields of `~zooprep.options.RenderOptions`, when ``options`` is
        not an object.

    Returns
    -------
    RenderResult
        Counts of rendered, failed (with reasons) and padded sources.

    Raises
    ------
    zooprep.errors.InputError
        No images given, or the path templates name columns the sources lack;
        or pictures that would tell injected fakes from the real sources
        (`check_fakes_hidden`: light curves, or an annotation with an RB score
        the fakes lack).
    zooprep.errors.SettingsMismatch
        Picture settings differ from those of already-rendered sources.
    zooprep.errors.StorageError
        The run directory is full, over quota or read-only; what was recorded
        is kept: free space (or make it writable) and call again.
    zooprep.errors.Interrupted
        A stop was asked for (SIGTERM, SIGINT, SIGHUP on the command line, or
        `zooprep.interrupt.request_stop`); finished rows are recorded.
    """
    if isinstance(executor, str):
        fields = {**fields, "executor": executor}
        executor = None
    given = RenderOptions.coerce(options, fields)
    source: ImageSource | None = None
    if isinstance(images, ImageOptions | Mapping):
        given = given.with_images(images)
    else:
        source = images
    with storage_guard(
        run, lambda: f"{saved_count(run, _DONE)} sources rendered and saved"
    ):
        return _render(run, given, source, renderer, executor, reporter)


#: Statuses of rows whose rendering is done.
_DONE = ("rendered", "uploaded", "linked")


def _render(
    run: str | os.PathLike[str],
    given: RenderOptions,
    source: ImageSource | None,
    renderer: Renderer | None,
    executor: Executor | None,
    reporter: Reporter | None,
) -> RenderResult:
    """Body of `render` (inside the storage guard)."""
    reporter = reporter or NullReporter()
    result = RenderResult()
    with Run.open(run) as r:
        # Files a killed or stopped render was writing; the lock says nobody
        # else is writing them now.
        remove_temporary(r.path)
        remove_temporary(r.path / "cutouts", recursive=True)
        select = r.settings.select
        kind = select.kind if select is not None else None
        opts = _resolve_options(r, given, kind)
        check_fakes_hidden(r, opts)
        if source is None:
            source = from_options(opts, kind, select)
        source.check(_columns(r))
        if renderer is None:
            from zooprep.renderers import make_renderer

            renderer = make_renderer(opts)
        if not isinstance(renderer, Renderer):
            raise InputError(
                f"{type(renderer).__name__} is not a renderer: it needs render() "
                "and render_frames() (zooprep.renderers.base.Renderer)"
            )
        r.save(opts)
        statuses = ["selected", "rendered"] if opts.force else ["selected"]
        counts = r.counts()
        failed_here = r.count(["failed"], stage="render")
        total = sum(counts[s] for s in statuses) + failed_here
        result.skipped = counts["rendered"] if not opts.force else 0
        reporter.start("render", total)
        ex = executor or make_executor(opts.executor, opts.jobs, opts.scheduler)
        try:
            for task, outcome in ex.run(
                _render_task, _tasks(r, source, renderer, opts, statuses)
            ):
                if isinstance(outcome, WriteFailed):
                    raise outcome
                if isinstance(outcome, KeyboardInterrupt):
                    continue  # a Ctrl-C reached a worker: not the rows' fault
                if isinstance(outcome, BaseException):
                    why = (
                        str(outcome)
                        if isinstance(outcome, WorkerDied)
                        else f"{type(outcome).__name__}: {outcome}"
                    )
                    outcome = TaskResult(
                        [RowResult.failed(item.id, why) for item in task.rows]
                    )
                rows = list(outcome.rows)
                answered = {o.id for o in rows}
                if outcome.stopped or interrupt.requested():
                    answered.update(item.id for item in task.rows)  # left for later
                rows += [
                    RowResult.failed(item.id, "the image source gave no cutouts for it")
                    for item in task.rows
                    if item.id not in answered
                ]
                failed = _record(r, rows, result)
                reporter.advance(len(rows), failed=failed)
        finally:
            if executor is None:
                ex.close()
            reporter.finish()
            # Workers stopped mid-write (a signal, a full disk) leave these.
            remove_temporary(r.path / "cutouts", recursive=True)
        interrupt.check(result.rendered)
    return result


def _record(r: Run, rows: list[RowResult], result: RenderResult) -> int:
    """Write one task's results to the state in one transaction."""
    failed = 0
    with r.transaction():
        for row in rows:
            for what, n in row.notes.items():
                result.notes[what] = result.notes.get(what, 0) + n
            if row.status == "rendered":
                log.info(
                    "%d rendered: %s%s",
                    row.id,
                    row.files[0],
                    " (padded)" if row.padded else "",
                )
                r.update(
                    row.id, status="rendered", files=list(row.files), padded=row.padded
                )
                result.rendered += 1
                result.padded += int(row.padded)
            else:
                log.info("%d failed: %s", row.id, row.reason)
                r.mark_failed(row.id, "render", row.reason)
                result.failed += 1
                failed += 1
                key = reason_key(row.reason)
                result.reasons[key] = result.reasons.get(key, 0) + 1
    return failed
