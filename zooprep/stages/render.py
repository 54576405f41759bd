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
import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zooprep import interrupt
from zooprep.errors import InputError, SettingsMismatch
from zooprep.executors import Executor, WorkerDied, make_executor
from zooprep.images import absolute, from_settings
from zooprep.images.base import Cutouts, Failed, ImageSource
from zooprep.images.injected import load_injection, load_plans, plan_key
from zooprep.options import MAX_FILE_BYTES, PICTURE_OPTIONS, RenderOptions
from zooprep.progress import NullReporter, Reporter
from zooprep.renderers.base import Renderer
from zooprep.run import (
    Run,
    atomic_write,
    cutout_relpath,
    decode_row,
    remove_temporary,
    saved_count,
    storage_guard,
)
from zooprep.vocabulary import reason_key

__all__ = ["RenderResult", "render"]

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


@dataclass(frozen=True)
class _Task:
    """One unit of work for a worker: rows sharing images."""

    run_path: str
    images: ImageSource
    renderer: Renderer
    rows: list[tuple[int, int, dict[str, Any]]]  # (id, seq, row)
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
#: the triplet, the frames (``_<n>_<panel>``, n the size's 1-based position),
#: the light curve and its viewer JSON.
FRAME_PANELS = ("template", "science", "difference")


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
        frames = task.renderer.render_frames(cutouts, row)  # type: ignore[attr-defined]
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
        title = f"object {curve.object_id}" if curve.object_id is not None else ""
        out.append(("_lightcurve.png", task.lightcurve.render(curve, title)))
        if task.lightcurve_json:
            out.append(("_lightcurve.json", curve.viewer_json(task.lightcurve.mode)))
    return out, notes


class WriteFailed(OSError):
    """A worker could not write a cutout file (disk full, read-only, quota).

    Not a failure of the row: the driver stops the stage and reports it.
    """


def _write(path: Path, data: bytes) -> None:
    """`atomic_write`, with write errors marked as `WriteFailed`."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise WriteFailed(exc.errno, exc.strerror, str(path)) from None


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


#: Id of the marker a worker adds to a task's results when it stopped early.
_STOPPED = -1


def _render_task(task: _Task) -> list[tuple[Any, ...]]:
    """Worker: cut, draw and write every row of a task.

    Returns ``(id, status, files or reason, padded)`` per row.  When the image
    source itself raises, the rows not yet done are retried one by one, so an
    error caused by one source fails that source only.
    """
    out: list[tuple[Any, ...]] = []
    try:
        _draw_rows(task, task.rows, out)
    except WriteFailed:
        raise  # the disk, not the row: the driver stops the stage
    except Exception:
        log.debug("task failed; retrying its rows one by one", exc_info=True)
        done = {o[0] for o in out}
        for item in task.rows:
            if item[0] in done:
                continue
            try:
                _draw_rows(task, [item], out)
            except WriteFailed:
                raise
            except Exception as exc:  # this row's own error, recorded as its failure
                out.append((item[0], "failed", f"{type(exc).__name__}: {exc}", False))
    if interrupt.requested():
        # Told to stop (SIGTERM from the driver): the rows not in ``out`` are
        # left for the next run, not failed.
        out.append((_STOPPED, "stopped", None, False))
    return out


def _draw_rows(
    task: _Task,
    rows: list[tuple[int, int, dict[str, Any]]],
    out: list[tuple[Any, ...]],
) -> None:
    """Cut and draw ``rows``, appending one result per row to ``out``."""
    run = Path(task.run_path)
    by_id = {sid: (seq, row) for sid, seq, row in rows}
    items = [(sid, row) for sid, _, row in rows]
    curves: dict[int, Any] = {}
    if task.lightcurve is not None:
        from zooprep.lightcurves import light_curves_for

        curves = light_curves_for(task.history, items)
    images = task.images
    if task.injection is not None:  # the same source, cutting these images with fakes
        images = copy.copy(images)
        images.injection = task.injection  # type: ignore[attr-defined]
    for item in images.cutouts(items, task.sizes, task.use_footprint):
        if interrupt.requested():
            return  # rendering in this process (--jobs 1): stop between rows
        if isinstance(item, Failed):
            out.append((item.source_id, "failed", item.reason, False))
            continue
        seq, row = by_id[item.source_id]
        try:
            pictures, notes = _pictures(task, item, row, curves.get(item.source_id))
        except _RowFailed as exc:
            out.append((item.source_id, "failed", str(exc), False))
            continue
        except Exception as exc:  # one bad row must not stop the others
            log.debug("render of %s failed", item.source_id, exc_info=True)
            out.append(
                (
                    item.source_id,
                    "failed",
                    f"drawing failed: {type(exc).__name__}: {exc}",
                    False,
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
                (
                    item.source_id,
                    "failed",
                    f"{what} is {n} bytes, over Zooniverse's {MAX_FILE_BYTES}-byte "
                    f"limit; {hint}",
                    False,
                )
            )
            continue
        files = []
        for sfx, data in pictures:
            rel = cutout_relpath(seq, item.source_id, task.chunk_size, sfx)
            _write(run / rel, data)
            files.append(rel)
        if task.numpy:
            suffix, data = _npy_bytes(item)
            rel_np = cutout_relpath(seq, item.source_id, task.chunk_size, suffix)
            _write(run / rel_np, data)
            files.append(rel_np)
        out.append((item.source_id, "rendered", files, item.padded, notes))


def _columns(run: Run) -> list[str]:
    """Column names of the run's sources (from the first few rows)."""
    cols: dict[str, None] = {}
    for n, src in enumerate(run.iter_sources(page=50)):
        cols.update(dict.fromkeys(src.row))
        if n >= 50:
            break
    return list(cols)


def _resolve_options(
    run: Run,
    options: RenderOptions | Mapping[str, Any] | None,
    kind: str | None,
    force: bool,
) -> RenderOptions:
    """Merge new options over the run's saved ones; refuse silent changes."""
    saved = dict(run.settings.get("render", {}).get("options", {}))
    base = (
        RenderOptions.from_dict(saved)
        if saved
        else RenderOptions(sizes=() if kind == "alerts" else (30,))
    )
    if options is None:
        return base
    given = options.to_dict() if isinstance(options, RenderOptions) else dict(options)
    changes: dict[str, Any] = {
        k: (tuple(v) if k == "sizes" else v) for k, v in given.items()
    }
    merged = replace(base, **changes)
    if saved and not force:
        changed = [k for k in PICTURE_OPTIONS if getattr(merged, k) != getattr(base, k)]
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
        from zooprep.lightcurves import LightCurveRenderer, history_source

        history = history_source(run.settings.get("select", {}))
        curve_renderer = LightCurveRenderer(opts.lightcurve)

    plans = load_plans(run.path)
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

    def task(rows: list[tuple[int, int, dict[str, Any]]]) -> _Task:
        return _Task(
            str(run.path),
            images,
            renderer,
            rows,
            opts.sizes,
            opts.use_footprint,
            opts.numpy,
            opts.chunk_size,
            layout=opts.layout,
            history=history,
            lightcurve=curve_renderer,
            lightcurve_json=opts.lightcurve_json,
            injection=injection(key),
        )

    rows: list[tuple[int, int, dict[str, Any]]] = []
    key: Any = None
    for seq, sid, text in run.iter_to_render(statuses):
        row = decode_row(text)
        k = images.group_key(row)
        if rows and (k != key or len(rows) >= TASK_ROWS):
            yield task(rows)
            rows = []
        key = k
        rows.append((sid, seq, row))
    if rows:
        yield task(rows)


def render(
    run: str | os.PathLike[str],
    *,
    images: ImageSource | Mapping[str, Any] | None = None,
    options: RenderOptions | Mapping[str, Any] | None = None,
    jobs: int | None = None,
    executor: str | Executor = "local",
    scheduler: str | None = None,
    force: bool = False,
    renderer: Renderer | None = None,
    reporter: Reporter | None = None,
) -> RenderResult:
    """Render every selected (or previously failed) source of a run to PNG.

    Parameters
    ----------
    run : str or path-like
        The run directory (made by `zooprep.select`).
    images : ImageSource or dict, optional
        Where the pixels are.  A dict holds the CLI's words: ``science``,
        ``template``, ``difference`` (path templates) and ``position``, or
        ``butler``, ``collections`` and ``*_type`` dataset names.  Saved in
        ``zooprep.toml``; None reuses the saved one, or the alert packets'
        stamps for an alert run.
    options : RenderOptions or dict, optional
        Picture settings; merged over those saved by an earlier render.
    jobs : int, optional
        Worker processes (default: all cores).  1 renders in this process.
    executor : {'local', 'dask'} or Executor
        Where the work runs.
    scheduler : str, optional
        Dask scheduler address; a LocalCluster when None.
    force : bool
        Re-render sources already rendered (needed after changing settings).
        Uploaded sources are never re-rendered.
    renderer : Renderer, optional
        A custom renderer; by default plain or annotated from ``options``.
    reporter : Reporter, optional
        Progress callbacks.

    Returns
    -------
    RenderResult
        Counts of rendered, failed (with reasons) and padded sources.

    Raises
    ------
    zooprep.errors.InputError
        No images given, or the path templates name columns the sources lack.
    zooprep.errors.SettingsMismatch
        Picture settings differ from those of already-rendered sources.
    zooprep.errors.StorageError
        The run directory is full, over quota or read-only; what was recorded
        is kept: free space (or make it writable) and call again.
    zooprep.errors.Interrupted
        A stop was asked for (SIGTERM, SIGINT, SIGHUP on the command line, or
        `zooprep.interrupt.request_stop`); finished rows are recorded.
    """
    with storage_guard(
        run, lambda: f"{saved_count(run, _DONE)} sources rendered and saved"
    ):
        return _render(
            run, images, options, jobs, executor, scheduler, force, renderer, reporter
        )


#: Statuses of rows whose rendering is done.
_DONE = ("rendered", "uploaded", "linked")


def _render(
    run: str | os.PathLike[str],
    images: ImageSource | Mapping[str, Any] | None,
    options: RenderOptions | Mapping[str, Any] | None,
    jobs: int | None,
    executor: str | Executor,
    scheduler: str | None,
    force: bool,
    renderer: Renderer | None,
    reporter: Reporter | None,
) -> RenderResult:
    """Body of `render` (inside the storage guard)."""
    reporter = reporter or NullReporter()
    if jobs is not None and jobs < 1:
        raise InputError(f"jobs must be at least 1, not {jobs}")
    result = RenderResult()
    with Run.open(run) as r:
        # Files a killed or stopped render was writing; the lock says nobody
        # else is writing them now.
        remove_temporary(r.path)
        remove_temporary(r.path / "cutouts", recursive=True)
        kind = r.settings.get("select", {}).get("kind")
        saved = r.settings.get("render", {})
        image_settings = dict(saved.get("images", {}))
        if isinstance(images, Mapping):
            image_settings.update(absolute(images))
        opts = _resolve_options(r, options, kind, force)
        source = (
            images
            if images is not None and not isinstance(images, Mapping)
            else from_settings(image_settings, kind)
        )
        source.check(_columns(r))
        if renderer is None:
            from zooprep.renderers import make_renderer

            renderer = make_renderer(opts)
        if opts.layout != "triplet" and not hasattr(renderer, "render_frames"):
            raise InputError(
                f"--layout {opts.layout} needs a renderer with render_frames; "
                f"{type(renderer).__name__} has none"
            )
        r.save_settings(
            "render",
            {
                "chunk_size": opts.chunk_size,
                "images": image_settings,
                "options": opts.to_dict(),
            },
        )
        statuses = ["selected", "rendered"] if force else ["selected"]
        counts = r.counts()
        failed_here = r.count(["failed"], stage="render")
        total = sum(counts[s] for s in statuses) + failed_here
        result.skipped = counts["rendered"] if not force else 0
        reporter.start("render", total)
        ex = (
            executor
            if not isinstance(executor, str)
            else make_executor(executor, jobs, scheduler)
        )
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
                    outcome = [(sid, "failed", why, False) for sid, _, _ in task.rows]
                stopped = any(o[1] == "stopped" for o in outcome)
                outcome = [o for o in outcome if o[1] != "stopped"]
                answered = {o[0] for o in outcome}
                if stopped or interrupt.requested():
                    answered.update(sid for sid, _, _ in task.rows)  # left for later
                outcome += [
                    (sid, "failed", "the image source gave no cutouts for it", False)
                    for sid, _, _ in task.rows
                    if sid not in answered
                ]
                failed = _record(r, outcome, result)
                reporter.advance(len(outcome), failed=failed)
        finally:
            if isinstance(executor, str):
                ex.close()
            reporter.finish()
            # Workers stopped mid-write (a signal, a full disk) leave these.
            remove_temporary(r.path / "cutouts", recursive=True)
        interrupt.check(result.rendered)
    return result


def _record(r: Run, outcome: list[tuple[Any, ...]], result: RenderResult) -> int:
    """Write one task's results to the state in one transaction."""
    failed = 0
    with r.transaction():
        for sid, status, payload, padded, *extra in outcome:
            for what, n in (extra[0] if extra else {}).items():
                result.notes[what] = result.notes.get(what, 0) + n
            if status == "rendered":
                log.info(
                    "%d rendered: %s%s", sid, payload[0], " (padded)" if padded else ""
                )
                r.update(sid, status="rendered", files=payload, padded=padded)
                result.rendered += 1
                result.padded += int(padded)
            else:
                log.info("%d failed: %s", sid, payload)
                r.mark_failed(sid, "render", payload)
                result.failed += 1
                failed += 1
                key = reason_key(payload)
                result.reasons[key] = result.reasons.get(key, 0) + 1
    return failed
