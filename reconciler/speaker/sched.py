"""Ask the kernel to run the calling thread soon after it wakes, even on a busy machine.

The speaker sleeps almost all the time and works for microseconds per frame or heartbeat. On a
node whose cores are busy, how soon a woken thread runs decides the ARP reply latency and how
punctual heartbeats are. Measured on 2 cores with another process keeping one busy (bench
``--only arp-latency``), the tail of the reply latency was the answering thread waiting to be
scheduled or preempted half-way (wall time 5-10x its CPU time), not the GIL or the collector.

Two ways, best first:

- Real-time priority (``SCHED_FIFO`` at the lowest levels), when the process may
  (``CAP_SYS_NICE`` or ``RLIMIT_RTPRIO``): the thread preempts every ordinary task the moment a
  request arrives. Only short, bounded work runs at it: answering frames and heartbeats (floods
  are read on a budget). Long steps (a new table, an election over thousands of IPs, bursts of
  gratuitous ARP) run ``ordinary()``: at real-time priority they would keep every ordinary task
  off a core for their whole length, and two such steps on a 2-core node (two speakers, in a
  test) would keep even the heartbeat threads from running until peers declare each other dead.
  The kernel's real-time throttling keeps a share of each core for ordinary tasks even so.
  keepalived runs its VRRP process at real-time priority for the same reason.
- Otherwise a short slice: Linux 6.12+ (EEVDF) takes a per-thread slice length as a latency hint
  (``sched_attr.sched_runtime``, clamped to 0.1-100 ms); a short slice gives an early virtual
  deadline, so the thread preempts a long-running one on wakeup while still getting only its
  fair share of CPU. It needs no privilege (the nice value is kept as it is). Older kernels
  ignore the field; anywhere the call is refused, nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import logging
import math
import os
import platform
import struct
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

SLICE_NS = 100_000  # the shortest slice the kernel accepts
ANSWERING_PRIORITY = 1  # the lowest: above every ordinary task, below any real-time one the admin set up
HEARTBEAT_PRIORITY = 2  # heartbeats preempt the answering thread: a late one is a false failover
# Over BUDGET_WINDOW_S, more than this share of a core and the thread turns ordinary. Answering a
# 20,000/s who-has flood for 1,000 IPs takes about half a core: that stays real-time, so the
# thread does not switch back and forth (each switch its own small stall) under a flood it can
# keep up with; only a flood beyond what it can answer trips it.
MAX_REALTIME_SHARE = 0.8
BUDGET_WINDOW_S = 0.25
NOTICE_EVERY_S = 60.0  # the switches are logged at most this often
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_OTHER = 0
_SCHED_FLAG_RESET_ON_FORK = 1
# struct sched_attr (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice, priority, runtime,
# deadline, period.
_ATTR = struct.Struct("=IIQiIQQQ")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # loaded once: long steps switch policy twice each


class Scheduling(enum.Enum):
    """What the kernel granted the calling thread."""

    REALTIME = "real-time priority (SCHED_FIFO)"
    SHORT_SLICES = "short slices (no CAP_SYS_NICE for real-time priority)"
    ORDINARY = "ordinary (the kernel refused both real-time priority and a short slice)"


class ThreadScheduling:
    """The scheduling of the one thread that calls :meth:`start` (Linux sets it per thread).

    Real-time priority has a budget: a thread that used more than ``max_share`` of a core over
    the last ``window_s`` (a flood of requests it cannot keep up with, say) runs as an ordinary
    task until it uses less again, so a stranger's flood can never take a core from the node.
    """

    def __init__(self, priority: int, max_share: float = MAX_REALTIME_SHARE, window_s: float = BUDGET_WINDOW_S) -> None:
        self.priority = priority
        self.max_share = max_share
        self.window_s = window_s
        self.granted = Scheduling.ORDINARY
        self.over_budget = False
        self._window_start = 0.0
        self._cpu_at = 0.0
        self._noticed = -math.inf

    def start(self) -> Scheduling:
        """Real-time priority for the calling thread if allowed, else short slices; what it got.

        Threads it starts later do not inherit the priority (``SCHED_RESET_ON_FORK``): only the
        threads that ask for it run at it.
        """
        if _realtime(self.priority):
            self.granted = Scheduling.REALTIME
        else:
            self.granted = Scheduling.SHORT_SLICES if prefer_short_slices() else Scheduling.ORDINARY
        self._window_start, self._cpu_at = time.monotonic(), time.thread_time()
        return self.granted

    @property
    def realtime(self) -> bool:
        """Whether the thread runs at real-time priority now."""
        return self.granted is Scheduling.REALTIME and not self.over_budget

    @contextlib.contextmanager
    def ordinary(self) -> Iterator[None]:
        """Run a long step as an ordinary task (with short slices), then go back to real time."""
        if not self.realtime:
            yield
            return
        _ordinary()
        try:
            yield
        finally:
            self._back_to_realtime()

    def account(self, now: float) -> None:
        """Called every loop turn: at the end of each window, check the thread's CPU share."""
        if self.granted is not Scheduling.REALTIME or now - self._window_start < self.window_s:
            return
        cpu = time.thread_time()
        share = (cpu - self._cpu_at) / (now - self._window_start)
        self._window_start, self._cpu_at = now, cpu
        over = share > self.max_share
        if over == self.over_budget:
            return
        self.over_budget = over
        if over:
            _ordinary()
        else:
            self._back_to_realtime()
        if now - self._noticed >= NOTICE_EVERY_S:
            self._noticed = now
            if over:
                log.warning("a thread of the speaker used %.0f %% of a core over %.0f ms: it runs as an ordinary "
                            "task until the load drops", share * 100, self.window_s * 1000)
            else:
                log.info("load dropped: the thread runs at %s again", self.granted.value)

    def _back_to_realtime(self) -> None:
        if not _realtime(self.priority):  # the capability is gone: stay ordinary
            self.granted = Scheduling.SHORT_SLICES


def _realtime(priority: int) -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:  # EPERM without the capability; EINVAL/EPERM in an RT-less cgroup
        log.debug("SCHED_FIFO: %s", exc.strerror)
        return False
    return True


def _ordinary() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
    except OSError as exc:  # cannot happen (giving up priority needs no privilege): log, go on
        log.warning("cannot leave real-time priority: %s", exc.strerror)
    prefer_short_slices()


def prefer_short_slices(slice_ns: int = SLICE_NS) -> bool:
    """Give the calling thread a short slice; whether the kernel took the request."""
    number = _SCHED_SETATTR.get(platform.machine())
    policy = os.sched_getscheduler(0)
    if number is None or policy & ~os.SCHED_RESET_ON_FORK != _SCHED_OTHER:
        return False
    flags = _SCHED_FLAG_RESET_ON_FORK if policy & os.SCHED_RESET_ON_FORK else 0
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # the calling thread's, on Linux
        attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, _SCHED_OTHER, flags, nice, 0, slice_ns, 0, 0))
        if _libc().syscall(number, 0, attr, 0) != 0:
            log.debug("sched_setattr: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.debug("sched_setattr: %s", exc)
        return False
    return True
