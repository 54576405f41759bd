"""Stopping cleanly on SIGTERM, SIGINT and SIGHUP.

``kill PID`` (what ``timeout``, systemd, SLURM preemption and Kubernetes
send), Ctrl-C and a closed terminal all ask a stage to stop.  The command
line installs `handle_signals` around each command; the handler only sets a
flag.  Stages look at the flag at safe points (between rows, between tasks,
between the steps of one upload), stop handing out work, record what is
finished, shut their workers down and raise `~zooprep.errors.Interrupted`,
which the command line turns into one line and exit status ``128 + signal``.

A second signal ends the process at once (``os._exit``); worker processes
started by zooprep ask the kernel to kill them when their parent dies
(`die_with_parent`), so none is left behind even then.

The Python API does not install handlers: in a notebook, Ctrl-C raises
`KeyboardInterrupt` as usual.  Call `request_stop` (e.g. from your own
handler) to stop a running stage the same way the command line does.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from zooprep.errors import Interrupted

__all__ = [
    "SIGNALS",
    "check",
    "die_with_parent",
    "handle_signals",
    "request_stop",
    "requested",
    "reset",
    "signal_received",
    "worker_init",
]

#: The signals that ask zooprep to stop cleanly.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_stop = threading.Event()
_signum: int | None = None
_PR_SET_PDEATHSIG = 1


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Ask the running stage to stop at its next safe point."""
    global _signum
    if _signum is None:
        _signum = int(signum)
    _stop.set()


def requested() -> bool:
    """Whether a stop was asked for."""
    return _stop.is_set()


def signal_received() -> int | None:
    """The signal that asked for the stop, or None."""
    return _signum if _stop.is_set() else None


def reset() -> None:
    """Forget an earlier stop request (for a new command in the same process)."""
    global _signum
    _signum = None
    _stop.clear()


def check(done: int | Callable[[], int], what: str = "") -> None:
    """Raise `Interrupted` if a stop was asked for.

    Parameters
    ----------
    done : int or callable
        Rows finished so far (a callable is only called when stopping).
    what : str
        A note for the message, e.g. ``(manifest not written)``.
    """
    if _stop.is_set():
        count = done() if callable(done) else done
        raise Interrupted(_signum or signal.SIGTERM, count, what)


def _handler(signum: int, frame: FrameType | None) -> None:
    """First signal: set the flag.  Second one: end now."""
    if _stop.is_set():
        os.write(2, b"zooprep: second signal; stopping now\n")
        os._exit(128 + signum)
    if os.isatty(2):  # someone is watching: say why it does not stop at once
        os.write(
            2,
            f"zooprep: {signal.Signals(signum).name} received; finishing the "
            "rows in progress (send it again to stop at once)\n".encode(),
        )
    request_stop(signum)


@contextlib.contextmanager
def handle_signals(*, restore: bool = True) -> Iterator[None]:
    """Turn SIGTERM, SIGINT and SIGHUP into a stop request while inside.

    Only the main thread can install handlers; elsewhere this does nothing.
    The previous handlers are put back on exit unless ``restore`` is False
    (the command line keeps them while the process exits, so that a second
    signal still ends it at once).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        if restore:
            for s, old in previous.items():
                signal.signal(s, old)


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux only).

    Used as the initializer of worker processes, so that a driver that is
    killed outright (``kill -9``, a second Ctrl-C) leaves no worker behind.
    Elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def worker_init(driver: int | None = None) -> None:
    """Initializer of zooprep's worker processes.

    Workers end when the ``driver`` process (the one that started the pool)
    ends, however it ends: a fork-server worker's parent is the fork server,
    which itself lives as long as any worker holds its "alive" pipe, so
    without this a killed driver leaves both running for ever.  Workers also
    die with their parent (`die_with_parent`) and ignore SIGINT and SIGHUP:
    a Ctrl-C or a closed terminal reaches the whole process group, and it is
    the driver that decides what to stop.  SIGTERM (sent by the driver when it
    stops) makes a worker finish the row it is drawing and return the rows it
    has done.
    """
    die_with_parent()
    if driver is not None:
        threading.Thread(
            target=_exit_with, args=(driver,), name="zooprep-watch", daemon=True
        ).start()
    reset()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_term)


def _worker_term(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a worker: stop after the current row (a second one: exit)."""
    if _stop.is_set():
        os._exit(128 + signum)
    request_stop(signum)


def _exit_with(pid: int) -> None:
    """Block until process ``pid`` ends, then end this process at once."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # old kernel or not Linux: poll instead
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                continue
    else:
        select.select([fd], [], [])  # readable once the process has ended
    os._exit(1)
