"""The allocator (pure IPAM): which LoadBalancer Service gets which IP, MetalLB's rules made deterministic.

``service_requests`` turns live Services and ServiceExposures into requests; ``allocate``
turns pools and requests into Allocations. No I/O and no memory between runs: existing
assignments are read back from the live Services each time, so a restart changes nothing.
"""

from reconciler.allocator.assign import allocate
from reconciler.allocator.requests import service_requests
from reconciler.allocator.values import Allocation, ServiceRequest

__all__ = ["Allocation", "ServiceRequest", "allocate", "service_requests"]
