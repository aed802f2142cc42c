"""Who uses which address, and whether another Service may share it (MetalLB's sharing rules)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from reconciler.allocator.addresses import Address, format_address
from reconciler.allocator.values import ServiceRequest

PortKey = tuple[int, str]


class Claimant(NamedTuple):
    """What the sharing rules look at in a request, computed once per run (one per Service:
    a named tuple, built in C, like the request it comes from)."""

    key: str
    sharing_key: str | None
    backend: str
    ports: tuple[PortKey, ...]

    @classmethod
    def of(cls, request: ServiceRequest) -> Claimant:
        if request.sharing_key is None:
            # Nobody shares an address with a Service without a sharing key, so its backend and
            # ports are never compared: most Services skip computing them.
            return cls(request.key, None, "", ())
        return cls(request.key, request.sharing_key, request.backend_key,
                   tuple([(p.port, p.protocol) for p in request.ports]))


@dataclass(slots=True)
class AddressUse:
    """The Services on one address; they all carry the same sharing key and backend."""

    pool: str
    sharing_key: str | None
    backend: str
    ports: dict[PortKey, str] = field(default_factory=dict)  # (port, protocol) -> service key
    holders: set[str] = field(default_factory=set)


class Ledger:
    """Address usage of one allocation run, by family and integer value."""

    def __init__(self) -> None:
        self.uses: dict[int, dict[int, AddressUse]] = {4: {}, 6: {}}
        # (family, pool, sharing key, backend) -> sorted addresses carrying that key: where a
        # sharing Service may go besides a free address; and which pools have any, per key.
        self._shared: dict[tuple[int, str, str, str], list[int]] = {}
        self._sharing_pools: dict[tuple[int, str, str], set[str]] = {}

    def conflict(self, request: Claimant, address: Address, requested: bool = False) -> str | None:
        """Why ``request`` may not use the address, or None if it is free or shareable."""
        use = self.uses[address[0]].get(address[1])
        if use is None:
            return None
        others = sorted(use.holders - {request.key})
        if not others:
            return None
        label = f"requested {format_address(address)}" if requested else format_address(address)
        who = ", ".join(others)
        if request.sharing_key is None:
            return f"{label} is held by {who}, and {request.key} has no sharing key"
        if use.sharing_key is None:
            return f"{label} is held by {who}, which does not share it (no sharing key)"
        if use.sharing_key != request.sharing_key:
            return (f"{label} is held by {who} with sharing key {use.sharing_key!r}, "
                    f"not {request.sharing_key!r}")
        if use.backend != request.backend:
            return (f"{label} is held by {who} with externalTrafficPolicy Local and other pods "
                    f"(selector {use.backend or 'none'}); Services sharing an IP that way need the same pods")
        for port in request.ports:
            owner = use.ports.get(port)
            if owner is not None and owner != request.key:
                return f"port {port[1]}/{port[0]} on {label} is already used by {owner}"
        return None

    def shareable(self, request: Claimant, version: int, pool: str, below: int | None) -> int | None:
        """The lowest address of ``pool`` that ``request`` may share, if lower than ``below``."""
        if request.sharing_key is None:
            return None
        candidates = self._shared.get((version, pool, request.sharing_key, request.backend), ())
        uses = self.uses[version]
        for value in candidates:
            if below is not None and value >= below:
                return None
            ports = uses[value].ports
            if not any(ports.get(p, request.key) != request.key for p in request.ports):
                return value
        return None

    def pools_sharing(self, request: Claimant, version: int) -> set[str]:
        """The pools holding addresses ``request`` might share (same key and backend)."""
        if request.sharing_key is None:
            return set()
        return self._sharing_pools.get((version, request.sharing_key, request.backend), set())

    def claim(self, request: Claimant, version: int, value: int, pool: str) -> None:
        uses = self.uses[version]
        use = uses.get(value)
        if use is None:
            use = uses[value] = AddressUse(pool, request.sharing_key, request.backend, {}, set())
            if request.sharing_key is not None:
                bisect.insort(self._shared.setdefault(
                    (version, pool, request.sharing_key, request.backend), []), value)
                self._sharing_pools.setdefault((version, request.sharing_key, request.backend), set()).add(pool)
        use.holders.add(request.key)
        for port in request.ports:
            use.ports[port] = request.key

    def release(self, request: Claimant, version: int, value: int) -> bool:
        """Drop ``request`` from the address; True when nobody is left on it."""
        uses = self.uses[version]
        use = uses[value]
        use.holders.discard(request.key)
        for port in [p for p, owner in use.ports.items() if owner == request.key]:
            del use.ports[port]
        if use.holders:
            return False
        del uses[value]
        if use.sharing_key is not None:
            shared = self._shared[(version, use.pool, use.sharing_key, use.backend)]
            shared.pop(bisect.bisect_left(shared, value))
            if not shared:
                self._sharing_pools[(version, use.sharing_key, use.backend)].discard(use.pool)
        return True
