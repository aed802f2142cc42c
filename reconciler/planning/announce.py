"""The announcement table (pure): for every assigned IP, which nodes may answer ARP for it, best first.

MetalLB's L2 rules: an IP is announced only if its pool is selected by an L2Advertisement; the
candidates are the nodes one of those advertisements selects, minus nodes labelled
``node.kubernetes.io/exclude-from-external-load-balancers``, and, for
``externalTrafficPolicy: Local``, minus nodes without a ready endpoint (traffic arriving there
would be dropped). The order is MetalLB's per-IP hash order, so IPs spread over the nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from reconciler.allocator import Allocation
from reconciler.allocator.addresses import address_order
from reconciler.desired.models import IPAddressPool, L2Advertisement
from reconciler.planning.announcement_table import (
    DEFAULT_HEARTBEAT,
    Announcement,
    AnnouncementTable,
    CandidateRanking,
    HeartbeatSettings,
    NodeInfo,
)
from reconciler.planning.live import EXCLUDE_FROM_LB_LABEL, LiveNode, LiveService


def selects_pool(advertisement: L2Advertisement, pool: IPAddressPool) -> bool:
    """Whether the advertisement announces the pool's IPs; naming no pool at all means every pool."""
    spec = advertisement.spec
    if not spec.ipAddressPools and not spec.ipAddressPoolSelectors:
        return True
    return (pool.metadata.name in spec.ipAddressPools
            or any(s.matches(pool.metadata.labels) for s in spec.ipAddressPoolSelectors))


def selects_node(advertisement: L2Advertisement, node: LiveNode) -> bool:
    """Whether the advertisement lets the node announce; no nodeSelectors means every node."""
    selectors = advertisement.spec.nodeSelectors
    return not selectors or any(s.matches(node.labels) for s in selectors)


def _interfaces(advertisements: Sequence[L2Advertisement]) -> tuple[str, ...]:
    # One advertisement without interfaces allows them all, so the union is "all" (empty).
    if any(not a.spec.interfaces for a in advertisements):
        return ()
    return tuple(sorted({i for a in advertisements for i in a.spec.interfaces}))


def build_announcements(advertisements: Sequence[L2Advertisement], pools: Sequence[IPAddressPool],
                        allocations: Sequence[Allocation], services: Sequence[LiveService],
                        nodes: Sequence[LiveNode],
                        ready_endpoint_nodes: Mapping[str, frozenset[str]]) -> tuple[Announcement, ...]:
    """One Announcement per assigned IP whose pool some L2Advertisement selects, sorted by IP.

    An IP shared by several Services is announced once, for all of them (``service`` lists
    their keys, comma-separated); where some use ``externalTrafficPolicy: Local``, only nodes
    with a ready endpoint for each of those are candidates. Nodes without an address are left
    out: speakers could not hear their heartbeats. An IP whose Services have no eligible node
    keeps its entry with no candidates, so nobody answers for it.
    """
    pool_by_name = {p.metadata.name: p for p in pools}
    local_policy = {s.key for s in services if s.external_traffic_policy == "Local"}
    eligible = [n for n in nodes if n.address is not None and EXCLUDE_FROM_LB_LABEL not in n.labels]
    by_pool: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {}
    for name, pool in pool_by_name.items():
        matching = [a for a in advertisements if selects_pool(a, pool)]
        if matching:
            allowed = frozenset(n.name for n in eligible if any(selects_node(a, n) for a in matching))
            by_pool[name] = (_interfaces(matching), allowed)

    holders: dict[str, list[str]] = {}
    pool_of: dict[str, str] = {}
    for allocation in allocations:
        if allocation.pool is None or allocation.pool not in by_pool:
            continue
        for ip in allocation.ips:
            keys = holders.get(ip)
            if keys is None:
                holders[ip] = [allocation.key]
            else:  # a shared IP
                keys.append(allocation.key)
            pool_of[ip] = allocation.pool

    ranking = CandidateRanking()
    announcements = []
    for ip in sorted(holders, key=address_order):
        interfaces, candidates = by_pool[pool_of[ip]]
        keys = holders[ip]
        if len(keys) > 1:
            keys.sort()
        if local_policy:
            for key in keys:
                if key in local_policy:
                    candidates = candidates & ready_endpoint_nodes.get(key, frozenset())
        announcements.append(Announcement(ip, ",".join(keys), interfaces, ranking.rank(candidates, ip)))
    return tuple(announcements)


def _node_infos(nodes: Iterable[LiveNode], names: set[str]) -> dict[str, NodeInfo]:
    return {n.name: NodeInfo(n.address) for n in sorted(nodes, key=lambda n: n.name)
            if n.name in names and n.address is not None}


def build_table(advertisements: Sequence[L2Advertisement], pools: Sequence[IPAddressPool],
                allocations: Sequence[Allocation], services: Sequence[LiveService],
                nodes: Sequence[LiveNode], ready_endpoint_nodes: Mapping[str, frozenset[str]], *,
                generation: int, revision: str | None,
                heartbeat: HeartbeatSettings = DEFAULT_HEARTBEAT) -> AnnouncementTable:
    """The whole table the speakers read: announcements plus the address of every candidate node."""
    announcements = build_announcements(advertisements, pools, allocations, services, nodes,
                                        ready_endpoint_nodes)
    names = {c for a in announcements for c in a.candidates}
    return AnnouncementTable(generation=generation, revision=revision or "", heartbeat=heartbeat,
                             nodes=_node_infos(nodes, names), announcements=announcements)
