"""Where render work runs: in this process, in a local process pool, or on Dask.

Every executor has one method, `Executor.run`, that applies a picklable
function to a stream of tasks and yields ``(task, result)`` pairs as they
finish.  Only a bounded number of tasks is in flight at once, so memory stays
flat however long the stream is (backpressure).  Workers never touch the run
state: they return small results and the driver records them.

A worker that dies (killed, out of memory) loses only its in-flight tasks:
the local pool is restarted and those tasks are tried again, up to
``retries`` times; Dask reschedules them by itself.

When a stop is asked for (`zooprep.interrupt`: SIGTERM, SIGINT, SIGHUP),
``run`` hands out no more tasks, yields what has already finished, abandons
the tasks still in flight (their rows are simply not recorded, so the next run
does them) and returns; ``close`` then stops the workers within seconds.
Worker processes die with the driver even when it is killed outright.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

from zooprep import interrupt
from zooprep.errors import InputError

__all__ = [
    "DaskExecutor",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "WorkerDied",
    "make_executor",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(Exception):
    """A task's worker process died every time the task was tried."""


class Executor(Protocol):
    """Runs ``fn(task)`` for each task and yields ``(task, result)`` as they complete.

    ``result`` is the function's return value, or the exception it raised
    (a `WorkerDied` when the worker process itself died).
    """

    def run(
        self, fn: Callable[[T], R], tasks: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to every task."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...


class InlineExecutor:
    """Runs tasks one by one in this process (``--jobs 1``; easiest to debug)."""

    def run(
        self, fn: Callable[[T], R], tasks: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to every task, in order."""
        for task in tasks:
            if interrupt.requested():
                return
            try:
                yield task, fn(task)
            except Exception as exc:  # reported per task by the caller
                yield task, exc

    def close(self) -> None:
        """Nothing to release."""


class LocalExecutor:
    """A pool of worker processes on this machine.

    Parameters
    ----------
    jobs : int or None
        Number of worker processes; None uses every core available to us.
    retries : int
        How many times a task is resubmitted after its worker died.
    """

    #: Modules imported once by the fork server that starts the workers.
    preload = (
        "zooprep.stages.render",
        "zooprep.renderers",
        "zooprep.images.fits",
        "zooprep.images.stamps",
    )

    #: Seconds the workers get to finish their current row after a stop.
    DRAIN_SECONDS = 5.0

    def __init__(self, jobs: int | None = None, retries: int = 2) -> None:
        self.jobs = jobs or len(os.sched_getaffinity(0))
        self.retries = retries
        self._pool: cf.ProcessPoolExecutor | None = None

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        # forkserver: workers start clean, without the driver's threads or open
        # database connections.
        ctx = multiprocessing.get_context("forkserver")
        # Import the heavy modules (numpy, astropy, the renderers) once in the
        # fork server, so each worker starts in milliseconds, not seconds.
        ctx.set_forkserver_preload(list(self.preload))
        return cf.ProcessPoolExecutor(
            max_workers=self.jobs,
            mp_context=ctx,
            initializer=interrupt.worker_init,
            initargs=(os.getpid(),),
        )

    def run(
        self, fn: Callable[[T], R], tasks: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to every task, at most ``2 * jobs`` in flight."""
        if self._pool is None:
            self._pool = self._new_pool()
        it = iter(tasks)
        limit = 2 * self.jobs
        pending: dict[cf.Future[R], tuple[T, int]] = {}
        retry: list[tuple[T, int]] = []
        exhausted = False
        while True:
            while len(pending) < limit and (retry or not exhausted):
                if retry:
                    task, tries = retry.pop()
                else:
                    try:
                        task, tries = next(it), 0
                    except StopIteration:
                        exhausted = True
                        break
                pending[self._pool.submit(fn, task)] = (task, tries)
            if not pending:
                return
            # Wake up now and then to notice a stop request.
            done, _ = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            if interrupt.requested():
                yield from self._finished(done, pending)
                yield from self._drain(pending)
                return
            broken = False
            for fut in done:
                task, tries = pending.pop(fut)
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken = True
                    if tries < self.retries:
                        retry.append((task, tries + 1))
                    else:
                        yield task, WorkerDied(f"worker process died {tries + 1} times")
                elif exc is not None:
                    yield task, exc
                else:
                    yield task, fut.result()
            if broken:
                # The pool is unusable: every other in-flight task is lost too.
                log.warning(
                    "a worker process died; restarting the pool and retrying "
                    "%d task(s)",
                    len(pending) + len(retry),
                )
                for fut, (task, tries) in pending.items():
                    retry.append((task, tries))
                    fut.cancel()
                pending.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()

    @staticmethod
    def _finished(
        done: Iterable[cf.Future[R]], pending: dict[cf.Future[R], tuple[T, int]]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Results of the completed tasks among ``done`` (for a stop)."""
        for fut in done:
            task, _ = pending.pop(fut)
            if fut.cancelled():
                continue
            exc = fut.exception()
            if exc is None:
                yield task, fut.result()
            elif not isinstance(exc, BrokenProcessPool):
                yield task, exc

    def _workers(self) -> list[Any]:
        """The pool's live worker processes."""
        procs = (getattr(self._pool, "_processes", None) or {}).values()
        return [p for p in procs if p.is_alive()]

    def _drain(
        self, pending: dict[cf.Future[R], tuple[T, int]]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """After a stop: let each worker finish its current row, then stop them.

        SIGTERM makes a worker (see `interrupt.worker_init`) finish the row it
        is drawing and return the rows it has done; tasks not started are
        dropped.  Workers still busy after `DRAIN_SECONDS` are killed and
        their rows left for the next run.
        """
        for proc in self._workers():
            proc.terminate()
        for fut in list(pending):
            fut.cancel()
        deadline = time.monotonic() + self.DRAIN_SECONDS
        while pending and time.monotonic() < deadline:
            done, _ = cf.wait(
                pending,
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=cf.FIRST_COMPLETED,
            )
            yield from self._finished(done, pending)
        if pending:
            log.warning("%d task(s) did not stop in time; abandoned", len(pending))
            for proc in self._workers():
                proc.kill()

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


#: Dask settings for the LocalCluster that `DaskExecutor` starts itself.
#: Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns
#: off glibc's adaptive mmap threshold: every canvas and PNG buffer over
#: 128 KiB is then mmapped, page-faulted and unmapped again (measured: twice
#: the system time of a pool worker).  The statistical profiler samples every
#: worker thread 100 times a second for a dashboard that we do not start, and
#: the event-loop tick (20 ms) and system monitor (0.5 s) wake every server's
#: loop thread, which then competes for the GIL with the rendering thread.
#: With Dask's defaults a render took 56-86% longer than with the process
#: pool on 2 cores; without them, 8% (benchmarks/README.md).
_LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


class DaskExecutor:
    """Tasks on a Dask distributed cluster (optional extra ``zooprep[dask]``).

    Parameters
    ----------
    scheduler : str or None
        Address of a running scheduler (``tcp://host:8786``); None starts a
        `~distributed.LocalCluster` with ``jobs`` single-threaded workers.
    jobs : int or None
        Workers of the LocalCluster (ignored with a scheduler address).
    in_flight : int or None
        Tasks submitted at once; defaults to twice the cluster's threads.
    """

    #: Seconds the tasks in flight get to finish after a stop.
    DRAIN_SECONDS = 5.0

    def __init__(
        self,
        scheduler: str | None = None,
        jobs: int | None = None,
        in_flight: int | None = None,
    ) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError(
                "--executor dask needs Dask distributed: pip install 'zooprep[dask]'"
            ) from None
        self._cluster = None
        if scheduler:
            try:
                self._client = Client(scheduler, timeout=30)
            except OSError as exc:
                raise InputError(
                    f"cannot reach Dask scheduler {scheduler}: {exc}"
                ) from None
        else:
            import dask

            with dask.config.set(_LOCAL_CLUSTER_CONFIG):
                self._cluster = LocalCluster(
                    n_workers=jobs or len(os.sched_getaffinity(0)),
                    threads_per_worker=1,
                    processes=True,
                    # The scheduler serves HTTP (health, metrics) even with no
                    # dashboard; on any free loopback port, not Dask's 8787,
                    # which another cluster on the machine may hold.
                    dashboard_address="127.0.0.1:0",
                    scheduler_kwargs={"dashboard": False},
                )
            self._client = Client(self._cluster)
        threads = sum(self._client.nthreads().values()) or 1
        self.in_flight = in_flight or 2 * threads

    def run(
        self, fn: Callable[[T], R], tasks: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Apply ``fn`` to every task, at most ``in_flight`` submitted at once."""
        from distributed import as_completed

        it = iter(tasks)
        futures: dict[Any, T] = {}
        for task in it:
            futures[self._client.submit(fn, task, pure=False, retries=2)] = task
            if len(futures) >= self.in_flight:
                break
        queue = as_completed(list(futures))
        deadline: float | None = None
        while not queue.is_empty():
            if interrupt.requested():
                # Let the tasks in flight finish for a few seconds, then drop them.
                deadline = deadline or time.monotonic() + self.DRAIN_SECONDS
                if time.monotonic() > deadline:
                    for left in futures:
                        left.cancel()
                    return
            if not queue.has_ready():
                time.sleep(0.05)  # wake up now and then to notice a stop request
                continue
            fut = next(queue)
            task = futures.pop(fut)
            try:
                yield task, fut.result()
            except Exception as exc:  # a task's own error, reported by the caller
                yield task, exc
            fut.release()
            nxt = None if interrupt.requested() else next(it, None)
            if nxt is not None:
                new = self._client.submit(fn, nxt, pure=False, retries=2)
                futures[new] = nxt
                queue.add(new)

    def close(self) -> None:
        """Disconnect (and stop the LocalCluster we started).

        The LocalCluster's workers and scheduler log every connection that
        their shutdown breaks, with tracebacks; that noise is silenced first.
        """
        if self._cluster is not None:
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            try:
                self._client.run(_quiet_dask_logs)
            except Exception as exc:  # a dead worker must not stop the shutdown
                log.debug("could not quiet the Dask workers' logs: %s", exc)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _quiet_dask_logs() -> None:
    """In a Dask worker: no more log lines from distributed (we are closing)."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def make_executor(
    kind: str = "local", jobs: int | None = None, scheduler: str | None = None
) -> Executor:
    """Pick an executor from the CLI's words: ``local`` (``--jobs``) or ``dask``."""
    if kind == "dask":
        return DaskExecutor(scheduler=scheduler, jobs=jobs)
    if kind != "local":
        raise InputError(f"unknown executor {kind!r}; use local or dask")
    if jobs == 1:
        return InlineExecutor()
    return LocalExecutor(jobs)
