"""Per-request deadlines: learned from what a run observed, bounded by --timeout."""

from __future__ import annotations

import pytest

from zooprep.deadlines import Deadline
from zooprep.panoptes import RequestDeadlines


def test_a_request_is_given_a_multiple_of_the_recent_slow_answers():
    deadline = Deadline(ceiling=60.0, floor=0.5, factor=10.0)
    for _ in range(99):
        deadline.observe(0.05)
    deadline.observe(0.3)  # one slow answer among 100: the 99th percentile ignores it
    assert deadline.timeout() == pytest.approx(0.5)
    for _ in range(5):
        deadline.observe(0.2)  # a slower server is followed
    assert deadline.timeout() == pytest.approx(2.0)


def test_the_deadline_never_exceeds_the_timeout_nor_falls_below_the_floor():
    deadline = Deadline(ceiling=3.0, floor=1.0)
    assert deadline.timeout() == 3.0  # nothing seen yet: the initial 10 s, bounded
    deadline.observe(0.001)
    assert deadline.timeout() == 1.0
    deadline.observe(100.0)  # an answer slower than the timeout itself
    assert deadline.timeout() == 3.0
    assert deadline.timeout(size=10**9, attempt=10) == 3.0
    assert Deadline(ceiling=0.5).timeout() == 0.5  # the floor is bounded too
    with pytest.raises(ValueError, match="positive"):
        Deadline(ceiling=0)


def test_a_retry_after_a_timeout_is_given_twice_the_time():
    deadline = Deadline(ceiling=60.0, floor=2.0)
    deadline.observe(0.05)
    assert [deadline.timeout(attempt=n) for n in (1, 2, 3, 4, 5, 6)] == [
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
    ]


def test_a_larger_upload_is_given_more_time():
    deadline = Deadline(ceiling=60.0, floor=2.0, factor=10.0, size_unit=100_000)
    for _ in range(30):
        deadline.observe(0.5, size=100_000)  # 0.25 s per unit of payload
    assert deadline.timeout(size=0) == pytest.approx(2.5)
    assert deadline.timeout(size=900_000) == pytest.approx(25.0)
    # and at least the floor plus the file at 100 kB/s, however fast it was
    fast = Deadline(ceiling=60.0, floor=2.0)
    fast.observe(0.001, size=1_000_000)
    assert fast.timeout(size=1_000_000) == pytest.approx(12.0)


def test_timed_observes_answers_but_not_failures():
    deadline = Deadline(ceiling=5.0)
    with deadline.timed():
        pass
    with pytest.raises(TimeoutError), deadline.timed():
        raise TimeoutError
    assert deadline.observed == 1


def test_every_upload_deadline_is_bounded_by_the_timeout():
    deadlines = RequestDeadlines(timeout=4.0)
    for d in (deadlines.api, deadlines.upload, deadlines.readback):
        d.observe(30.0)
        assert d.timeout() == 4.0
        assert d.timeout(size=1 << 20, attempt=3) == 4.0
