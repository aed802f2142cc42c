"""Ask the kernel to run the calling thread soon after it wakes, even on a busy machine.

The speaker sleeps almost all the time and works for microseconds per frame or heartbeat. On a
node whose cores are busy, how soon a woken thread runs decides the ARP reply latency and how
punctual heartbeats are. Linux 6.12+ (EEVDF) takes a per-thread slice length as a latency hint
(``sched_attr.sched_runtime``, clamped to 0.1-100 ms); a short slice gives an early virtual
deadline, so the thread preempts a long-running one on wakeup while still getting only its fair
share of CPU. It needs no privilege (the nice value is kept as it is). Older kernels ignore the
field; anywhere the call is refused, nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct

log = logging.getLogger(__name__)

SLICE_NS = 100_000  # the shortest slice the kernel accepts
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_OTHER = 0
# struct sched_attr (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice, priority, runtime,
# deadline, period.
_ATTR = struct.Struct("=IIQiIQQQ")


def prefer_short_slices(slice_ns: int = SLICE_NS) -> bool:
    """Give the calling thread a short slice; whether the kernel took the request."""
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None or os.sched_getscheduler(0) != _SCHED_OTHER:
        return False
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # the calling thread's, on Linux
        attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, _SCHED_OTHER, 0, nice, 0, slice_ns, 0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, 0, attr, 0) != 0:
            log.debug("sched_setattr: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.debug("sched_setattr: %s", exc)
        return False
    return True
