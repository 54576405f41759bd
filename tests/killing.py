"""kill -9 a command at random moments, scaled to how long the same work takes here.

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
