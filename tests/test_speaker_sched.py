"""Scheduling of the speaker's answering and heartbeat threads: real-time when allowed, else short slices."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from reconciler.speaker.sched import Scheduling, ThreadScheduling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534


def _in_thread(work: Callable[[dict[str, object]], None]) -> dict[str, object]:
    """Run ``work(result)`` in a thread of its own, so this test's thread keeps its policy."""
    result: dict[str, object] = {}
    thread = threading.Thread(target=work, args=(result,))
    thread.start()
    thread.join(timeout=10)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SYS_NICE) for real-time priority")
def test_the_calling_thread_alone_runs_at_realtime_priority() -> None:
    def work(result: dict[str, object]) -> None:
        scheduling = ThreadScheduling(1)
        result["got"] = scheduling.start()
        result["policy"] = os.sched_getscheduler(0)
        result["priority"] = os.sched_getparam(0).sched_priority

        def child() -> None:
            result["child_policy"] = os.sched_getscheduler(0)

        started = threading.Thread(target=child)
        started.start()
        started.join(timeout=10)
        with scheduling.ordinary():  # a long step
            result["long_step_policy"] = os.sched_getscheduler(0)
        result["after_long_step"] = os.sched_getscheduler(0)

    result = _in_thread(work)
    assert result["got"] is Scheduling.REALTIME
    assert result["policy"] == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert result["priority"] == 1
    # A thread it starts (an HTTP worker, say) is an ordinary one again.
    assert result["child_policy"] == os.SCHED_OTHER
    assert result["long_step_policy"] & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER
    assert result["after_long_step"] == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # and the test's own thread was never touched


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_without_the_capability_it_falls_back_to_an_ordinary_policy() -> None:
    code = ("import os; from reconciler.speaker.sched import ThreadScheduling; s = ThreadScheduling(1); "
            "print(s.start().name, os.sched_getscheduler(0)); s.ordinary().__enter__()")
    out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          "--inh-caps=-all", "prlimit", "--rtprio=0", sys.executable, "-c", code],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": REPO}).stdout.split()
    assert out[0] in (Scheduling.SHORT_SLICES.name, Scheduling.ORDINARY.name)
    assert int(out[1]) == os.SCHED_OTHER


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SYS_NICE) for real-time priority")
def test_a_thread_over_its_budget_turns_ordinary_until_it_is_idle_again() -> None:
    def work(result: dict[str, object]) -> None:
        scheduling = ThreadScheduling(1, max_share=0.5, window_s=0.02)
        scheduling.start()
        spin_until = time.monotonic() + 0.05
        while time.monotonic() < spin_until:  # a flood: busy the whole window
            scheduling.account(time.monotonic())
        result["busy"] = (scheduling.realtime, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)
        with scheduling.ordinary():  # a long step while over budget stays ordinary after it
            pass
        result["after_step"] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        idle = threading.Event()
        for _ in range(3):  # idle windows: the flood is over
            idle.wait(0.03)
            scheduling.account(time.monotonic())
        result["idle"] = (scheduling.realtime, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)

    result = _in_thread(work)
    assert result["busy"] == (False, os.SCHED_OTHER)
    assert result["after_step"] == os.SCHED_OTHER
    assert result["idle"] == (True, os.SCHED_FIFO)
