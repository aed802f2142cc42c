"""allocate(): which Service gets which IP. Pure and deterministic.

One run, in four passes over the requests sorted by key:

1. holders: every Service keeps the IPs it holds live now while they are still valid (in a
   pool that serves it, the family it wants, not pinned or requested elsewhere, shareable);
   every IP it loses is recorded with the reason, for the plan;
2. requested: Services asking for specific IPs get them, or stay pending with the reason;
   they go before automatic picks so that a lower key cannot take an IP someone asked for;
3. completion: dual-stack holders missing a family get it from the pool they already use;
4. automatic: everyone else gets the lowest usable IP of the first fitting pool, pools ordered
   by serviceAllocation priority, then name (MetalLB leaves that order to chance).

Pool order for automatic allocation follows MetalLB: first the autoAssign pools whose
serviceAllocation matches the Service (priority ascending, unset last, then name), then the
autoAssign pools without serviceAllocation (by name). A pinned pool is the only one tried, and
autoAssign does not matter for it (nor for requested IPs). Where MetalLB differs or is silent:
a serviceAllocation with only a priority matches every Service (MetalLB would never use such a
pool automatically); "lowest usable" is over the pool's ranges sorted by address, not in the
order written; and conflicts between two holders of one IP go to the lower key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter

from reconciler.allocator.addresses import Address, canonical_text, format_address, parse_address
from reconciler.allocator.ledger import Claimant, Ledger
from reconciler.allocator.pools import FAMILY_NAMES, FreeCursor, Pool, PoolIndex, is_buggy_int
from reconciler.allocator.values import Allocation, ServiceRequest
from reconciler.desired.models import IPAddressPool

_FAMILIES = {"IPv4": 4, "IPv6": 6}
_OTHER = {4: 6, 6: 4}
_request_key = attrgetter("key")


def allocate(pools: Sequence[IPAddressPool], requests: Sequence[ServiceRequest],
             namespace_labels: Mapping[str, Mapping[str, str]]) -> list[Allocation]:
    """Allocate IPs to every request; one Allocation per request, sorted by key.

    Deterministic: the same pools, requests and labels always give the same result, whatever
    the input order, and a run over its own output changes nothing (existing IPs are sticky).
    """
    return _Run(PoolIndex(pools), namespace_labels).run(requests)


@dataclass(slots=True)
class _Work:
    """One request's progress through the passes."""

    request: ServiceRequest
    claimant: Claimant
    wanted: tuple[int, ...] = ()  # families, preferred first
    need_all: bool = False  # RequireDualStack: every wanted family or nothing
    requested: tuple[Address, ...] = ()
    current: tuple[tuple[str, Address | None], ...] = ()  # (live text, parsed)
    held: dict[int, int] = field(default_factory=dict)  # family -> address claimed in the ledger
    pool: Pool | None = None
    lost: dict[Address, str] | None = None  # current address -> why it goes (rarely any)
    pending: str | None = None

    def lose(self, address: Address, reason: str) -> None:
        if self.lost is None:
            self.lost = {}
        self.lost[address] = reason

    @property
    def describe_families(self) -> str:
        if len(self.wanted) == 1:
            return f"{FAMILY_NAMES[self.wanted[0]]} single-stack"
        return self.request.ip_family_policy


@lru_cache(maxsize=64)  # a handful of distinct (policy, families) pairs per cluster
def _wanted_families(policy: str, names: tuple[str, ...]) -> tuple[tuple[int, ...], bool, str | None]:
    """(the families a Service wants, preferred first; whether it needs all of them; or, when
    the policy or a family is unknown, no families and why)."""
    families: list[int] = []
    for name in names:
        if name not in _FAMILIES:
            return (), False, f"unknown IP family {name!r} (expected IPv4 or IPv6)"
        if _FAMILIES[name] not in families:
            families.append(_FAMILIES[name])
    primary = families[0] if families else 4
    if policy == "RequireDualStack":
        return (primary, _OTHER[primary]), True, None
    if policy == "PreferDualStack":
        # Both only where the cluster gave the Service both families (MetalLB follows the
        # ClusterIPs); a single-stack cluster's PreferDualStack Service is single-stack.
        return tuple(families[:2]) or (4,), False, None
    if policy == "SingleStack":
        return (primary,), False, None
    return (), False, f"unknown ipFamilyPolicy {policy!r}"


class _Run:
    def __init__(self, index: PoolIndex, namespace_labels: Mapping[str, Mapping[str, str]]) -> None:
        self.index = index
        self.namespace_labels = namespace_labels
        self.ledger = Ledger()
        self.cursors: dict[tuple[str, int], FreeCursor] = {}
        self.scoped = [p for p in index.pools if p.service_allocation is not None and p.auto_assign]
        self.scoped.sort(key=lambda p: (p.priority is None, p.priority or 0, p.name))
        self.general = [p for p in index.pools if p.service_allocation is None and p.auto_assign]
        # Pools known to have no free address of a family, and how many leading general pools
        # are such: with 10,000 Services over 64 pools, trying every full pool again for every
        # Service would dominate the run. Only a release makes a pool less full.
        self.full: set[tuple[str, int]] = set()
        self.general_index = {p.name: i for i, p in enumerate(self.general)}
        self.general_full_prefix = {4: 0, 6: 0}

    def run(self, requests: Sequence[ServiceRequest]) -> list[Allocation]:
        works = [self._prepare(r) for r in sorted(requests, key=_request_key)]
        for w in works:
            if w.current and w.pending is None:
                self._keep_current(w)
        for w in works:
            if w.requested and not w.held and w.pending is None and w.request.invalid is None:
                self._assign_requested(w)
        for w in works:
            if w.held and not w.requested and w.request.invalid is None:
                self._complete_families(w)
        for w in works:
            if not w.held and w.pending is None and w.request.invalid is None:
                self._assign_automatically(w)
        return [self._result(w) for w in works]

    # --- preparation ----------------------------------------------------------------------

    def _prepare(self, r: ServiceRequest) -> _Work:
        w = _Work(r, Claimant.of(r))
        if len(r.current) == 1:  # the usual case, without deduplicating
            w.current = ((r.current[0], parse_address(r.current[0])),)
        elif r.current:
            w.current = tuple((text, parse_address(text)) for text in dict.fromkeys(r.current))
        w.wanted, w.need_all, unknown = _wanted_families(r.ip_family_policy, r.ip_families)
        if unknown is not None:
            w.pending = unknown
            return w
        if r.invalid is not None:
            if not r.current:
                w.pending = r.invalid
            return w
        if r.requested:
            w.pending = self._parse_requested(w)
        return w

    def _parse_requested(self, w: _Work) -> str | None:
        r = w.request
        parsed: list[Address] = []
        for text in r.requested:
            address = parse_address(text)
            if address is None:
                return f"requested address {text!r} is not an IP address"
            parsed.append(address)
        if len(parsed) > 2:
            return f"{len(parsed)} addresses requested; a Service takes at most one IPv4 and one IPv6"
        families = [v for v, _ in parsed]
        if len(set(families)) < len(families):
            return f"two {FAMILY_NAMES[families[0]]} addresses requested; a Service takes one per family"
        for address in parsed:
            if address[0] not in w.wanted:
                return (f"requested {format_address(address)} is {FAMILY_NAMES[address[0]]}, "
                        f"but {r.key} is {w.describe_families}")
        if parsed and w.need_all and len(parsed) < 2:
            return (f"RequireDualStack needs one IPv4 and one IPv6 address, but only "
                    f"{format_address(parsed[0])} is requested")
        w.requested = tuple(sorted(parsed, key=lambda a: w.wanted.index(a[0])))
        return None

    # --- pass 1: holders keep what they hold -------------------------------------------------

    def _keep_current(self, w: _Work) -> None:
        r = w.request
        if len(w.current) == 1 and not w.requested and r.invalid is None and self._keep_single(w):
            return
        valid = [a for _, a in w.current if a is not None]
        keep: list[Address] = []
        for address in valid:
            if w.requested and set(valid) != set(w.requested):
                w.lose(address, f"{r.key} requests {', '.join(format_address(a) for a in w.requested)}")
            elif address[0] not in w.wanted:
                w.lose(address, f"{r.key} is {w.describe_families}")
            elif any(k[0] == address[0] for k in keep):
                w.lose(address, f"{r.key} holds two {FAMILY_NAMES[address[0]]} addresses; one is enough")
            else:
                keep.append(address)
        home: Pool | None = None
        for address in list(keep):
            owner = self.index.owner(*address)
            reason = None
            if owner is None:
                reason = self._gone_reason(r, address)
            elif owner.avoid_buggy and is_buggy_int(*address):
                reason = f"pool {owner.name} avoids buggy IPs (.0 and .255)"
            elif home is not None and owner is not home:
                reason = (f"{format_address(address)} is in pool {owner.name}, apart from the other "
                          f"address in pool {home.name}")
            elif r.invalid is None and r.pool is not None and owner.name != r.pool:
                reason = (f"{r.key} is pinned to pool {r.pool}, and {format_address(address)} "
                          f"is from pool {owner.name}")
            elif not owner.serves(r.namespace, r.labels, self.namespace_labels):
                reason = f"pool {owner.name} serves only {owner.describe_scope()}"
            else:
                reason = self.ledger.conflict(w.claimant, address)
            if reason is not None:
                w.lose(address, reason)
                keep.remove(address)
            elif owner is not None:
                home = owner
        if home is not None:
            for address in keep:
                self._claim(w, home, *address)
        if not w.held and r.invalid is not None:
            w.pending = r.invalid

    def _keep_single(self, w: _Work) -> bool:
        """The common case, one address that is still fine, without building any reason."""
        [(_, address)] = w.current
        if address is None or address[0] not in w.wanted or address[1] in self.ledger.uses[address[0]]:
            return False
        owner = self.index.owner(*address)
        if (owner is None or (owner.avoid_buggy and is_buggy_int(*address))
                or (w.request.pool is not None and owner.name != w.request.pool)
                or (owner.service_allocation is not None
                    and not owner.serves(w.request.namespace, w.request.labels, self.namespace_labels))):
            return False
        self._claim(w, owner, *address)
        return True

    def _gone_reason(self, r: ServiceRequest, address: Address) -> str:
        if r.current_pool is not None and r.current_pool not in self.index.by_name:
            return f"pool {r.current_pool} was removed"
        if r.current_pool is not None:
            return f"pool {r.current_pool} no longer contains {format_address(address)}"
        return f"no pool contains {format_address(address)}"

    # --- pass 2: requested addresses -------------------------------------------------------

    def _assign_requested(self, w: _Work) -> None:
        r = w.request
        home: Pool | None = None
        for address in w.requested:
            label = format_address(address)
            owner = self.index.owner(*address)
            if owner is None:
                w.pending = f"requested {label} is in no pool"
            elif owner.avoid_buggy and is_buggy_int(*address):
                w.pending = f"requested {label} is a .0/.255 address and pool {owner.name} avoids buggy IPs"
            elif home is not None and owner is not home:
                w.pending = (f"requested addresses are in pools {home.name} and {owner.name}; "
                             f"a Service's addresses come from one pool")
            elif r.pool is not None and owner.name != r.pool:
                w.pending = (f"requested {label} is in pool {owner.name}, but {r.key} is pinned "
                             f"to pool {r.pool}")
            elif not owner.serves(r.namespace, r.labels, self.namespace_labels):
                w.pending = (f"requested {label} is in pool {owner.name}, which serves only "
                             f"{owner.describe_scope()}")
            else:
                w.pending = self.ledger.conflict(w.claimant, address, requested=True)
            if w.pending is not None:
                return
            home = owner
        assert home is not None
        for address in w.requested:
            self._claim(w, home, *address)

    # --- pass 3: the missing family of a dual-stack holder -------------------------------------

    def _complete_families(self, w: _Work) -> None:
        pool = w.pool
        assert pool is not None
        for family in w.wanted:
            if family in w.held:
                continue
            value = self._lowest(pool, family, w.claimant)
            if value is not None:
                self._claim(w, pool, family, value)
            elif w.need_all:
                # Without a pair from the same pool the Service starts over in another pool.
                for held_family, held_value in list(w.held.items()):
                    w.lose((held_family, held_value), (
                        f"RequireDualStack: pool {pool.name} has no free {FAMILY_NAMES[family]} address "
                        f"to pair with {format_address((held_family, held_value))}"))
                    self._release(w, held_family)
                w.pool = None
                return

    # --- pass 4: automatic allocation ------------------------------------------------------

    def _assign_automatically(self, w: _Work) -> None:
        r = w.request
        if r.pool is not None:
            pinned = self.index.by_name.get(r.pool)
            if pinned is None:
                w.pending = f"pool {r.pool} does not exist"
                return
            if not pinned.serves(r.namespace, r.labels, self.namespace_labels):
                w.pending = f"pool {r.pool} serves only {pinned.describe_scope()}"
                return
            tiers = [[pinned]]
        else:
            scoped = [p for p in self.scoped if p.serves(r.namespace, r.labels, self.namespace_labels)]
            tiers = [scoped, self.general[self._general_start(w):]]
        for pools in tiers:
            choice = self._choose(pools, w)
            if choice is not None:
                pool, picks = choice
                for family, value in picks.items():
                    self._claim(w, pool, family, value)
                return
        w.pending = self._exhausted_reason(w, [*tiers[0], *self.general] if r.pool is None else tiers[0])

    def _general_start(self, w: _Work) -> int:
        """How many leading general pools cannot give ``w`` anything (none of its families free)."""
        general = self.general
        for family in w.wanted:
            skip = self.general_full_prefix[family]
            while skip < len(general) and (
                    (general[skip].name, family) in self.full or not general[skip].ranges.get(family)):
                skip += 1
            self.general_full_prefix[family] = skip
        start = min(self.general_full_prefix[f] for f in w.wanted)
        # A full pool may still have an address this Service can share.
        for family in w.wanted:
            for name in self.ledger.pools_sharing(w.claimant, family):
                start = min(start, self.general_index.get(name, start))
        return start

    def _choose(self, pools: Sequence[Pool], w: _Work) -> tuple[Pool, dict[int, int]] | None:
        """MetalLB's findBestPoolForService: the first pool with every wanted family; for
        PreferDualStack, failing that, the first with the preferred family, then the other."""
        fallback: dict[int, tuple[Pool, dict[int, int]]] = {}
        for pool in pools:
            picks = {}
            for family in w.wanted:
                value = self._lowest(pool, family, w.claimant)
                if value is not None:
                    picks[family] = value
            if len(picks) == len(w.wanted):
                return pool, picks
            if not w.need_all:
                for family, value in picks.items():
                    fallback.setdefault(family, (pool, {family: value}))
        return next((fallback[f] for f in w.wanted if f in fallback), None)

    def _exhausted_reason(self, w: _Work, tried: list[Pool]) -> str:
        families = " and ".join(FAMILY_NAMES[f] for f in w.wanted)
        if not tried:
            return (f"no pool assigns addresses automatically to {w.request.key} "
                    f"(pools with autoAssign: false serve only Services that name them)")
        having = [p for p in tried if any(p.ranges.get(f) for f in w.wanted)]
        if not having:
            return f"no pool available to {w.request.key} has {families} addresses"
        if w.need_all and not any(all(p.ranges.get(f) for f in w.wanted) for p in having):
            return (f"RequireDualStack, but no pool available to {w.request.key} has both IPv4 "
                    f"and IPv6 addresses")
        names = ", ".join(p.name for p in having)
        both = " pair" if len(w.wanted) > 1 and w.need_all else ""
        return f"pool exhausted: no free {families} address{both} in {names}"

    # --- helpers --------------------------------------------------------------------------

    def _cursor(self, pool: Pool, family: int) -> FreeCursor:
        cursor = self.cursors.get((pool.name, family))
        if cursor is None:
            cursor = self.cursors[(pool.name, family)] = FreeCursor(pool, family)
        return cursor

    def _lowest(self, pool: Pool, family: int, r: Claimant) -> int | None:
        """The lowest address of the pool the request may take: free, or shareable with it."""
        if not pool.ranges.get(family):
            return None
        free = self._cursor(pool, family).peek(self.ledger.uses[family])
        if free is None:
            self.full.add((pool.name, family))
        if r.sharing_key is None:
            return free
        shared = self.ledger.shareable(r, family, pool.name, free)
        return shared if shared is not None else free

    def _claim(self, w: _Work, pool: Pool, family: int, value: int) -> None:
        self.ledger.claim(w.claimant, family, value, pool.name)
        w.held[family] = value
        w.pool = pool

    def _release(self, w: _Work, family: int) -> None:
        value = w.held.pop(family)
        if self.ledger.release(w.claimant, family, value) and w.pool is not None:
            self._cursor(w.pool, family).release(value)
            self.full.discard((w.pool.name, family))
            self.general_full_prefix[family] = 0

    def _result(self, w: _Work) -> Allocation:
        r = w.request
        if (w.pool is not None and w.lost is None and len(w.current) == 1 and len(w.held) == 1
                and w.current[0][1] == next(iter(w.held.items()))):
            # The steady state: a Service keeps its one address, whose live text is canonical
            # already when IPv4 (formatting 10,000 of them again cost a tenth of a plan).
            text, address = w.current[0]
            assert address is not None
            return Allocation(r.key, (canonical_text(text, address),), w.pool.name, None, (), None,
                              warning=r.invalid)
        if not w.current and w.held and w.pool is not None:  # a first assignment: nothing revoked
            return Allocation(r.key, tuple([format_address((f, w.held[f])) for f in w.wanted if f in w.held]),
                              w.pool.name, None, (), None, warning=r.invalid)
        final = {(f, v) for f, v in w.held.items()}
        gone = [(text, a) for text, a in w.current if a not in final] if w.current else []
        revoked = tuple(text for text, _ in gone)
        reasons: list[str] = []
        for text, address in gone:
            if address is None:
                reason = f"{text!r} is not an IP address"
            else:
                reason = (w.lost or {}).get(address) or w.pending or "reassigned"
            if reason not in reasons:
                reasons.append(reason)
        revoke_reason = "; ".join(reasons) if reasons else None
        if not w.held or w.pool is None:
            return Allocation(r.key, (), None, w.pending or "no address could be chosen", revoked,
                              revoke_reason)
        ips = tuple(format_address((f, w.held[f])) for f in w.wanted if f in w.held)
        return Allocation(r.key, ips, w.pool.name, None, revoked, revoke_reason, warning=r.invalid)


