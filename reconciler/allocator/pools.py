"""Pools as the allocator sees them: sorted integer ranges, who they serve, and free-address cursors.

Addresses are ``(version, int)`` pairs here; strings are parsed once on the way in and
formatted once on the way out.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

from reconciler.common.errors import PortsideError
from reconciler.desired.ipranges import IPRange, RangeSyntaxError, parse_range
from reconciler.desired.models import IPAddressPool, ServiceAllocation

FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}


def is_buggy_int(version: int, value: int) -> bool:
    """avoidBuggyIPs: IPv4 addresses ending in .0 or .255 confuse some consumer routers."""
    return version == 4 and value & 0xFF in (0, 255)


@dataclass(frozen=True)
class Pool:
    """One IPAddressPool, parsed: ranges per family, sorted by first address."""

    name: str
    ranges: Mapping[int, tuple[IPRange, ...]]
    auto_assign: bool
    avoid_buggy: bool
    service_allocation: ServiceAllocation | None

    @classmethod
    def parse(cls, document: IPAddressPool) -> Pool:
        by_family: dict[int, list[IPRange]] = {4: [], 6: []}
        for i, text in enumerate(document.spec.addresses):
            try:
                parsed = parse_range(text)
            except RangeSyntaxError as exc:
                # Validation rejects this first; reaching here means it was skipped.
                raise PortsideError(
                    f"IPAddressPool {document.metadata.name}: spec.addresses[{i}]: {exc}") from None
            by_family[parsed.version].append(parsed)
        return cls(
            name=document.metadata.name,
            ranges={v: tuple(sorted(r)) for v, r in by_family.items()},
            auto_assign=document.spec.autoAssign,
            avoid_buggy=document.spec.avoidBuggyIPs,
            service_allocation=document.spec.serviceAllocation,
        )

    @property
    def priority(self) -> int | None:
        """serviceAllocation priority: lower is preferred; 0 or unset means none (MetalLB)."""
        sa = self.service_allocation
        return sa.priority if sa is not None and sa.priority else None

    def in_ranges(self, version: int, value: int) -> bool:
        ranges = self.ranges.get(version, ())
        return any(r.start <= value <= r.end for r in ranges)

    def serves(self, namespace: str, labels: Mapping[str, str],
               namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
        """Whether serviceAllocation lets this Service have addresses from the pool at all.

        Namespaces (listed or selected) and Service selectors must both match when given;
        a pool without serviceAllocation serves everyone.
        """
        sa = self.service_allocation
        if sa is None:
            return True
        if sa.namespaces or sa.namespaceSelectors:
            ns_labels = dict(namespace_labels.get(namespace, {}))
            selected = any(s.matches(ns_labels) for s in sa.namespaceSelectors)
            if namespace not in sa.namespaces and not selected:
                return False
        return not sa.serviceSelectors or any(s.matches(dict(labels)) for s in sa.serviceSelectors)

    def describe_scope(self) -> str:
        """Who the pool serves, for a pending reason."""
        sa = self.service_allocation
        parts = []
        if sa is not None and sa.namespaces:
            parts.append(f"namespaces {', '.join(sa.namespaces)}")
        if sa is not None and sa.namespaceSelectors:
            parts.append("namespaces matching its namespaceSelectors")
        if sa is not None and sa.serviceSelectors:
            parts.append("Services matching its serviceSelectors")
        return " and ".join(parts) or "every Service"


class PoolIndex:
    """All pools: by name, and which pool owns an address (O(log n) per lookup)."""

    def __init__(self, documents: Sequence[IPAddressPool]) -> None:
        self.pools = sorted((Pool.parse(d) for d in documents), key=lambda p: p.name)
        self.by_name = {p.name: p for p in self.pools}
        self._starts: dict[int, list[int]] = {}
        self._spans: dict[int, list[tuple[int, int, Pool]]] = {}
        self._overlap = False
        for version in (4, 6):
            spans = sorted(((r.start, r.end, p) for p in self.pools for r in p.ranges.get(version, ())),
                           key=lambda s: (s[0], s[1], s[2].name))
            self._spans[version] = spans
            self._starts[version] = [s[0] for s in spans]
            self._overlap |= any(a[1] >= b[0] for a, b in itertools.pairwise(spans))

    def owner(self, version: int, value: int) -> Pool | None:
        """The pool whose ranges hold the address (ignoring avoidBuggyIPs), first by name on overlap."""
        if self._overlap:
            # Validation forbids overlapping pools; stay correct (if slower) without it.
            return next((p for p in self.pools if p.in_ranges(version, value)), None)
        i = bisect.bisect_right(self._starts[version], value) - 1
        if i >= 0:
            start, end, pool = self._spans[version][i]
            if start <= value <= end:
                return pool
        return None


class FreeCursor:
    """The lowest free address of one family in one pool, in amortised O(1).

    The cursor only moves forward past used (or buggy) addresses; an address freed behind it
    goes on a min-heap, so freeing and allocating in any order still gives the lowest free one.
    """

    __slots__ = ("_avoid_buggy", "_freed", "_index", "_ranges", "_value", "_version")

    def __init__(self, pool: Pool, version: int) -> None:
        self._version = version
        self._ranges = pool.ranges.get(version, ())
        self._avoid_buggy = pool.avoid_buggy
        self._index = 0
        self._value = self._ranges[0].start if self._ranges else 0
        self._freed: list[int] = []

    def peek(self, used: Container[int]) -> int | None:
        """The lowest address not in ``used``; it stays free until the caller claims it."""
        while self._freed and self._freed[0] in used:
            heapq.heappop(self._freed)
        ranges, version, avoid = self._ranges, self._version, self._avoid_buggy
        while self._index < len(ranges):
            value = self._value
            if value > ranges[self._index].end:
                self._index += 1
                if self._index < len(ranges):
                    self._value = max(ranges[self._index].start, value)
                continue
            if value in used or (avoid and is_buggy_int(version, value)):
                self._value = value + 1
                continue
            break
        ahead = self._value if self._index < len(ranges) else None
        if self._freed and (ahead is None or self._freed[0] < ahead):
            return self._freed[0]
        return ahead

    def release(self, value: int) -> None:
        heapq.heappush(self._freed, value)
