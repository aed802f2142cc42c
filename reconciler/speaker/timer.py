"""A one-shot timer on the monotonic clock that a selector waits on, precise to the microsecond.

epoll takes its timeout in whole milliseconds (Python rounds up), so a loop that sleeps until a
peer's ``dead_after`` ends notices it up to a millisecond late, and the failover time after a
crash is ``dead_after`` plus that. A timerfd armed at the absolute deadline wakes the loop on
the deadline itself. Python exposes ``timerfd`` only from 3.13, hence ctypes; where it is
missing, :func:`deadline_timer` returns None and the loop sleeps with the epoll timeout.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os

log = logging.getLogger(__name__)

CLOCK_MONOTONIC = 1  # the clock of time.monotonic() on Linux
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


class DeadlineTimer:
    """Readable once the monotonic clock reaches the deadline it was armed at."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._settime = libc.timerfd_settime
        fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self._fd: int = fd
        self.armed: float | None = None

    def fileno(self) -> int:
        return self._fd

    def arm(self, deadline: float | None) -> None:
        """Fire at ``deadline`` (``time.monotonic()`` seconds) instead; None (or infinity) disarms."""
        if deadline is not None and not math.isfinite(deadline):
            deadline = None  # e.g. a peer's expiry before we could listen for it: never
        if deadline == self.armed:
            return  # one system call per new deadline, not per loop turn
        spec = _Itimerspec()
        if deadline is not None:
            fraction, whole = math.modf(max(deadline, 0.0))
            # An all-zero value would disarm: a deadline of exactly 0 s is 1 ns then.
            spec.value.sec, spec.value.nsec = int(whole), max(int(fraction * 1e9), 0 if whole else 1)
        if self._settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self.armed = deadline

    def fired(self) -> None:
        """Acknowledge the expiry (the fd is readable until then); the timer is disarmed after it."""
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed for later meanwhile: nothing to read
            return
        self.armed = None

    def close(self) -> None:
        os.close(self._fd)


def deadline_timer() -> DeadlineTimer | None:
    """A new timer, or None where the C library or the kernel offers no timerfd."""
    try:
        return DeadlineTimer(ctypes.CDLL(None, use_errno=True))
    except (OSError, AttributeError) as exc:
        log.info("no timerfd (%s): deadlines are kept to the millisecond", exc)
        return None
