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
            max_workers=self.jobs, mp_context=ctx, initializer=interrupt.worker_init
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
                self._terminate()
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
        done: set[cf.Future[R]], pending: dict[cf.Future[R], tuple[T, int]]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Results of the tasks that completed normally (for a stop)."""
        for fut in done:
            task, _ = pending.pop(fut)
            exc = fut.exception()
            if exc is None:
                yield task, fut.result()
            elif not isinstance(exc, BrokenProcessPool):
                yield task, exc

    def _terminate(self) -> None:
        """Stop the workers now, abandoning their tasks (SIGTERM, then SIGKILL)."""
        if self._pool is None:
            return
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            if interrupt.requested():
                self._terminate()
                return
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
                    dashboard_address=None,
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
        while not queue.is_empty():
            if interrupt.requested():
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
            nxt = next(it, None)
            if nxt is not None:
                new = self._client.submit(fn, nxt, pure=False, retries=2)
                futures[new] = nxt
                queue.add(new)

    def close(self) -> None:
        """Disconnect (and stop the LocalCluster we started)."""
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


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
