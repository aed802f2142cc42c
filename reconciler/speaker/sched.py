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
import os
import platform
import struct
from collections.abc import Iterator

log = logging.getLogger(__name__)

SLICE_NS = 100_000  # the shortest slice the kernel accepts
ANSWERING_PRIORITY = 1  # the lowest: above every ordinary task, below any real-time one the admin set up
HEARTBEAT_PRIORITY = 2  # heartbeats preempt the answering thread: a late one is a false failover
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_OTHER = 0
# struct sched_attr (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice, priority, runtime,
# deadline, period.
_ATTR = struct.Struct("=IIQiIQQQ")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # loaded once: long steps switch policy twice each


class Scheduling(enum.Enum):
    """What the kernel granted the calling thread."""

    REALTIME = "real-time priority 1 (SCHED_FIFO)"
    SHORT_SLICES = "short slices (no CAP_SYS_NICE for real-time priority)"
    ORDINARY = "ordinary (the kernel refused both real-time priority and a short slice)"


class ThreadScheduling:
    """The scheduling of the one thread that calls :meth:`start` (Linux sets it per thread)."""

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.granted = Scheduling.ORDINARY

    def start(self) -> Scheduling:
        """Real-time priority for the calling thread if allowed, else short slices; what it got.

        Threads it starts later do not inherit the priority (``SCHED_RESET_ON_FORK``): only the
        threads that ask for it run at it.
        """
        if _realtime(self.priority):
            self.granted = Scheduling.REALTIME
        else:
            self.granted = Scheduling.SHORT_SLICES if prefer_short_slices() else Scheduling.ORDINARY
        return self.granted

    @contextlib.contextmanager
    def ordinary(self) -> Iterator[None]:
        """Run a long step as an ordinary task (with short slices), then go back to real time."""
        if self.granted is not Scheduling.REALTIME:
            yield
            return
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
        except OSError as exc:  # cannot happen (giving up priority needs no privilege): log, go on
            log.warning("cannot leave real-time priority for a long step: %s", exc.strerror)
        prefer_short_slices()
        try:
            yield
        finally:
            if not _realtime(self.priority):  # the capability is gone: stay ordinary
                self.granted = Scheduling.SHORT_SLICES


def _realtime(priority: int) -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:  # EPERM without the capability; EINVAL/EPERM in an RT-less cgroup
        log.debug("SCHED_FIFO: %s", exc.strerror)
        return False
    return True


def prefer_short_slices(slice_ns: int = SLICE_NS) -> bool:
    """Give the calling thread a short slice; whether the kernel took the request."""
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None or os.sched_getscheduler(0) != _SCHED_OTHER:
        return False
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # the calling thread's, on Linux
        attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, _SCHED_OTHER, 0, nice, 0, slice_ns, 0, 0))
        if _libc().syscall(number, 0, attr, 0) != 0:
            log.debug("sched_setattr: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.debug("sched_setattr: %s", exc)
        return False
    return True
