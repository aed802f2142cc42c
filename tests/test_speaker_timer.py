"""The loop's deadline timer (a timerfd): fires on its deadline, never before, and can be moved."""

from __future__ import annotations

import math
import select
import time

import pytest

from reconciler.speaker.timer import DeadlineTimer, deadline_timer


@pytest.fixture
def timer() -> DeadlineTimer:
    made = deadline_timer()
    assert made is not None, "Linux has timerfd"
    return made


def _readable(timer: DeadlineTimer, wait_s: float) -> bool:
    return bool(select.select([timer], [], [], wait_s)[0])


def test_fires_at_its_deadline_and_not_before(timer: DeadlineTimer) -> None:
    deadline = time.monotonic() + 0.02
    timer.arm(deadline)
    assert _readable(timer, 5)
    assert time.monotonic() >= deadline
    timer.fired()
    assert timer.armed is None
    assert not _readable(timer, 0)  # acknowledged, and one-shot
    timer.close()


def test_moving_or_disarming_the_deadline(timer: DeadlineTimer) -> None:
    timer.arm(time.monotonic() + 0.01)
    later = time.monotonic() + 0.05
    timer.arm(later)  # the earlier deadline no longer counts
    assert _readable(timer, 5)
    assert time.monotonic() >= later
    timer.fired()
    timer.arm(time.monotonic() + 0.01)
    timer.arm(None)
    assert not _readable(timer, 0.05)
    timer.arm(time.monotonic() + 0.01)
    timer.arm(math.inf)  # never, as for a peer's expiry before we could listen
    assert timer.armed is None
    assert not _readable(timer, 0.05)
    timer.fired()  # nothing to acknowledge: no error
    timer.close()


def test_a_deadline_already_past_fires_at_once(timer: DeadlineTimer) -> None:
    timer.arm(time.monotonic() - 1)
    assert _readable(timer, 5)
    timer.arm(0.0)  # the clock's origin: still a deadline, not "disarm"
    assert _readable(timer, 5)
    timer.close()
