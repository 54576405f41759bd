"""Kill (or signal) a command at random moments, scaled to how long the work takes here.

Fixed delays make these tests depend on the machine: on a fast one the command
finishes before the first kill and nothing is tested. So each test first times
an uninterrupted run of the same command, then kills at random fractions of that
time.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


def timed_run(
    cmd: Sequence[str],
    ok: tuple[int, ...] = (0,),
    env: Mapping[str, str] | None = None,
) -> float:
    """Run ``cmd`` (in ``env``, if given) to the end; return its wall time in s."""
    start = time.perf_counter()
    done = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    assert done.returncode in ok, done.stderr
    return elapsed


def kill_at_random(
    cmd: Sequence[str],
    seed: int,
    rounds: int,
    duration: float,
    lo: float = 0.15,
    hi: float = 0.85,
    check: Callable[[], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``cmd`` ``rounds`` times and SIGKILL it after a random delay.

    The delays are uniform in ``[lo, hi] * duration``, where ``duration`` is
    what an uninterrupted run took (see `timed_run`). ``check`` runs after each
    round; ``env`` is the command's environment. Returns how many rounds were
    killed (rather than finishing first).
    """
    rng = random.Random(seed)
    kills = 0
    for _ in range(rounds):
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        time.sleep(rng.uniform(lo, hi) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if check is not None:
            check()
    return kills


@dataclass
class Stopped:
    """What became of a command sent a signal by `signal_at_random`."""

    returncode: int
    landed: bool  # the command was still running when the signal was sent
    stderr: str
    survivors: list[str]  # descendants still alive a few seconds after it ended


def signal_at_random(
    cmd: Sequence[str],
    signum: int,
    seed: int,
    duration: float,
    lo: float = 0.3,
    hi: float = 0.8,
    env: Mapping[str, str] | None = None,
    grace: float = 5.0,
) -> Stopped:
    """Start ``cmd``, send it ``signum`` after a random delay, and watch it end.

    The delay is uniform in ``[lo, hi] * duration`` (see `timed_run`).  Every
    descendant process seen while the command ran (pool workers, the fork
    server, Dask workers) is remembered: those still alive ``grace`` seconds
    after the command ended are reported (and then killed, so that a failing
    test leaves nothing behind).
    """
    import psutil

    rng = random.Random(seed)
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watched = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + rng.uniform(lo, hi) * duration
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            for child in watched.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    landed = proc.poll() is None
    if landed:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    _, alive = psutil.wait_procs(list(seen.values()), timeout=grace)
    survivors = []
    for p in alive:
        try:
            survivors.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.NoSuchProcess:
            continue
    return Stopped(proc.returncode, landed, stderr, survivors)
