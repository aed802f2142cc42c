"""The network as the last reconcile left it (pure): DesiredState + LiveState + Plan -> NetworkView.

The view is what the page shows, reduced to plain values: pools with their usage, which Service
holds which IP, which node answers for it (the announcement table), which hostname reaches it
through which tunnel, and the DNS records. The plan is the source of truth for "after": the
controller keeps the result of a reconcile it applied, so each Service shows the IPs the plan
gave it (or kept, for a conflict) and the announcement table is the one the plan published (or
the one already in force when it published none).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.common.errors import StateError
from reconciler.desired.ipranges import IPRange, RangeSyntaxError, parse_range
from reconciler.desired.models import L2Advertisement, LabelSelector, TunnelConnector, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.planning.announce import selects_node, selects_pool
from reconciler.planning.announcement_table import decode_table
from reconciler.planning.live import LiveState, LiveTunnel
from reconciler.planning.plan import JSON, Change, Plan
from reconciler.planning.planner import ANNOUNCEMENTS_ARTIFACT

State = str  # "ok", "pending" or "conflict"


@dataclass(frozen=True)
class FamilyUsage:
    family: str  # IPv4 or IPv6
    used: int
    size: int  # usable addresses (without .0/.255 when the pool avoids buggy IPs)


@dataclass(frozen=True)
class PoolView:
    name: str
    addresses: tuple[str, ...]
    families: tuple[FamilyUsage, ...]
    auto_assign: bool
    advertised_by: tuple[str, ...]  # L2Advertisement names; empty: nobody answers ARP for it


@dataclass(frozen=True)
class AdvertisementView:
    name: str
    pools: tuple[str, ...]
    interfaces: tuple[str, ...]  # empty: every usable interface
    node_selectors: tuple[str, ...]  # empty: every node
    nodes: tuple[str, ...]  # the nodes it selects now


@dataclass(frozen=True)
class ServiceView:
    key: str  # namespace/name
    ips: tuple[str, ...]
    pool: str | None
    state: State
    reason: str  # why pending or in conflict (empty when fine)
    candidates: Mapping[str, tuple[str, ...]]  # ip -> nodes, best first (the first one answers)
    traffic_policy: str
    hostnames: tuple[str, ...]  # hostname[/path] of the routes that reach it


@dataclass(frozen=True)
class RuleView:
    hostname: str | None  # None: the catch-all
    path: str | None
    target: str  # the origin URL or http_status:NNN
    service: str | None  # namespace/name when the route names a Service


@dataclass(frozen=True)
class TunnelView:
    name: str
    mode: str
    ident: str  # the tunnel id, or its name when the id is not known
    status: str  # what portside knows of it (found, not read, the read error)
    connector: str  # the connector's health where known
    rules: tuple[RuleView, ...]  # in rule order, the catch-all last
    state: State
    reason: str


@dataclass(frozen=True)
class RecordView:
    hostname: str
    zone: str
    content: str
    state: State
    reason: str


@dataclass(frozen=True)
class NodeView:
    name: str
    address: str | None
    ready: bool
    first_for: int  # IPs it answers for while it is alive


@dataclass(frozen=True)
class NetworkView:
    revision: str | None
    pools: tuple[PoolView, ...]
    advertisements: tuple[AdvertisementView, ...]
    services: tuple[ServiceView, ...]
    tunnels: tuple[TunnelView, ...]
    records: tuple[RecordView, ...]
    nodes: tuple[NodeView, ...]
    warnings: tuple[str, ...]

    @property
    def pending(self) -> int:
        return sum(1 for s in self.services if s.state != "ok")


def network_view(desired: DesiredState, live: LiveState, plan: Plan) -> NetworkView:
    """What the network looks like once ``plan`` is applied to ``live``."""
    by_kind: dict[str, list[Change]] = defaultdict(list)
    for change in plan.changes:
        by_kind[change.target.kind].append(change)
    candidates, table_warning = _candidates(plan, live)
    hostnames = _hostnames(desired.routes)
    released = {s.key for s in live.released}
    services = tuple(sorted(
        (view for change in by_kind["Service"] if change.target.id not in released
         if (view := _service(change, live, candidates, hostnames)) is not None),
        key=lambda s: s.key))
    first_for: dict[str, int] = defaultdict(int)
    for service in services:
        for ip in service.ips:
            ranked = candidates.get(ip, ())
            if ranked:
                first_for[ranked[0]] += 1
    nodes = tuple(NodeView(n.name, n.address, n.ready, first_for.get(n.name, 0))
                  for n in sorted(live.nodes, key=lambda n: n.name))
    warnings = (*plan.warnings, table_warning) if table_warning else plan.warnings
    return NetworkView(
        revision=plan.revision or desired.revision,
        pools=_pools(desired, services),
        advertisements=tuple(_advertisement(a, desired, live) for a in desired.advertisements),
        services=services,
        tunnels=_tunnels(desired, live, by_kind),
        records=tuple(r for c in by_kind["DNSRecord"] if (r := _record(c)) is not None),
        nodes=nodes,
        warnings=tuple(warnings),
    )


# --- Services and the announcement table --------------------------------------------------------


def _candidates(plan: Plan, live: LiveState) -> tuple[dict[str, tuple[str, ...]], str | None]:
    text = plan.artifacts.get(ANNOUNCEMENTS_ARTIFACT, live.announcements)
    if not isinstance(text, str):
        return {}, None
    try:
        table = decode_table(text, "the announcement table")
    except StateError as exc:
        return {}, f"announcing nodes not shown: {exc}"
    return {a.ip: a.candidates for a in table.announcements}, None


def _route_label(route: TunnelRoute) -> str:
    return route.spec.hostname + (route.spec.path or "")


def _hostnames(routes: Sequence[TunnelRoute]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = defaultdict(list)
    for route in routes:
        if route.spec.service is not None:
            out[route.spec.service.key].append(_route_label(route))
    return {key: tuple(sorted(set(labels))) for key, labels in out.items()}


def _state_of(value: JSON) -> tuple[tuple[str, ...], str | None]:
    if not isinstance(value, dict):
        return (), None
    pool = value.get("pool")
    return tuple(str(ip) for ip in value.get("ingress") or ()), str(pool) if pool is not None else None


def _service(change: Change, live: LiveState, candidates: Mapping[str, tuple[str, ...]],
             hostnames: Mapping[str, tuple[str, ...]]) -> ServiceView | None:
    key = change.target.id
    if change.action == "no-op" and change.before is None and change.after is None:
        return None  # a LoadBalancer Service nobody exposes: not portside's
    if change.action == "conflict":
        # Nothing happens to a conflict: what was live stays (a kept IP), else it stays pending.
        ips, pool = _state_of(change.before)
        state = "conflict" if ips else "pending"
    elif change.action == "delete":
        ips, pool, state = (), None, "pending"  # revoked: the Service is left without an IP
    else:
        ips, pool = _state_of(change.after)
        state = "ok"
    service = live.service(key)
    return ServiceView(
        key=key, ips=ips, pool=pool, state=state, reason="" if state == "ok" else change.reason,
        candidates={ip: candidates.get(ip, ()) for ip in ips},
        traffic_policy=service.external_traffic_policy if service else "Cluster",
        hostnames=hostnames.get(key, ()),
    )


# --- pools and advertisements -------------------------------------------------------------------


def _usable(r: IPRange, avoid_buggy: bool) -> int:
    if not avoid_buggy or r.version != 4:
        return r.size

    def buggy_upto(n: int) -> int:  # addresses in [0, n] ending in .0 or .255
        return 0 if n < 0 else n // 256 + 1 + (n + 1) // 256

    return r.size - (buggy_upto(r.end) - buggy_upto(r.start - 1))


def _pools(desired: DesiredState, services: Sequence[ServiceView]) -> tuple[PoolView, ...]:
    used: dict[tuple[str, str], int] = defaultdict(int)
    for service in services:
        for ip in service.ips:
            used[(service.pool or "", "IPv6" if ":" in ip else "IPv4")] += 1
    out = []
    for pool in desired.pools:
        name = pool.metadata.name
        sizes: dict[str, int] = {}
        for text in pool.spec.addresses:
            try:
                r = parse_range(text)
            except RangeSyntaxError:  # validation refuses these; show the pool regardless
                continue
            family = "IPv4" if r.version == 4 else "IPv6"
            sizes[family] = sizes.get(family, 0) + _usable(r, pool.spec.avoidBuggyIPs)
        families = tuple(FamilyUsage(f, used.get((name, f), 0), sizes[f]) for f in ("IPv4", "IPv6") if f in sizes)
        advertised = tuple(a.metadata.name for a in desired.advertisements if selects_pool(a, pool))
        out.append(PoolView(name, tuple(pool.spec.addresses), families, pool.spec.autoAssign, advertised))
    return tuple(out)


def _selector_text(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in sorted(selector.matchLabels.items())]
    for req in selector.matchExpressions:
        values = f" ({', '.join(req.values)})" if req.values else ""
        parts.append(f"{req.key} {req.operator}{values}")
    return ", ".join(parts) or "(everything)"


def _advertisement(ad: L2Advertisement, desired: DesiredState, live: LiveState) -> AdvertisementView:
    return AdvertisementView(
        name=ad.metadata.name,
        pools=tuple(p.metadata.name for p in desired.pools if selects_pool(ad, p)),
        interfaces=tuple(ad.spec.interfaces),
        node_selectors=tuple(_selector_text(s) for s in ad.spec.nodeSelectors),
        nodes=tuple(sorted(n.name for n in live.nodes if selects_node(ad, n))),
    )


# --- tunnels and DNS ----------------------------------------------------------------------------


def _tunnel_status(mode: str, live: LiveTunnel | None) -> str:
    if live is not None and live.error:
        return f"not read: {live.error}"
    if mode == "local":
        return "config file written by portside; run by your cloudflared"
    if live is None:
        return "not read (no Cloudflare API token)"
    return "found at Cloudflare" if live.tunnel_id else "not found at Cloudflare"


def _rules(value: JSON, route_services: Mapping[tuple[str, str | None], str]) -> tuple[RuleView, ...]:
    if not isinstance(value, list):
        return ()
    rules = []
    for rule in value:
        if not isinstance(rule, dict):
            continue
        hostname = rule.get("hostname")
        path = rule.get("path")
        host = str(hostname) if hostname is not None else None
        rules.append(RuleView(host, str(path) if path is not None else None, str(rule.get("service", "")),
                              route_services.get((host.lower(), path)) if host else None))
    return tuple(rules)


def _tunnels(desired: DesiredState, live: LiveState, by_kind: Mapping[str, list[Change]]) -> tuple[TunnelView, ...]:
    configs = {c.target.id: c for c in by_kind.get("TunnelConfiguration", ())}
    creates = {c.target.id: c for c in by_kind.get("Tunnel", ())}
    out = []
    for tunnel in desired.tunnels:
        name, spec = tunnel.metadata.name, tunnel.spec
        mine = [r for r in desired.routes if r.spec.tunnel == name]
        route_services = {(r.spec.hostname.lower(), r.spec.path): r.spec.service.key
                          for r in mine if r.spec.service is not None}
        config = configs.get(name)
        created = creates.get(name)
        found = live.tunnels.get(name)
        if config is not None and config.action != "delete":
            rules = _rules(config.after if config.after is not None else config.before, route_services)
        else:  # not planned (Cloudflare not read): the routes as declared, targets unresolved
            rules = tuple(RuleView(r.spec.hostname, r.spec.path,
                                   r.spec.url or f"Service {r.spec.service.key}:{r.spec.service.port}"
                                   if r.spec.service else (r.spec.url or ""),
                                   r.spec.service.key if r.spec.service else None)
                          for r in sorted(mine, key=lambda r: r.metadata.name))
        conflict = created if created is not None and created.action == "conflict" else None
        ident = spec.tunnelId or (found.tunnel_id if found and found.tunnel_id else None) or spec.tunnelName or name
        out.append(TunnelView(
            name=name, mode=spec.mode, ident=ident, status=_tunnel_status(spec.mode, found),
            connector=_connector(tunnel.spec.connector, name, live), rules=rules,
            state="conflict" if conflict else "ok", reason=conflict.reason if conflict else "",
        ))
    return tuple(out)


def _connector(connector: TunnelConnector | None, name: str, live: LiveState) -> str:
    """What portside knows of the tunnel's connector from the last read (no extra API call)."""
    if connector is None:
        return "run by you (not kept by portside)"
    found = live.connectors
    if connector.where == "host":
        written = found is not None and name in found.units
        return "systemd unit on the host" + ("" if written else " (written by the next apply)")
    deployment = found.deployments.get(name) if found is not None else None
    if deployment is None:
        return "Deployment in the cluster, not created yet"
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    ready = (deployment.get("status") or {}).get("readyReplicas", 0)
    return f"Deployment in the cluster, {ready}/{wanted} replicas ready"


def _record(change: Change) -> RecordView | None:
    if change.action == "delete":
        return None  # gone once applied
    shown = change.after if change.action != "conflict" else (change.before or change.after)
    content = str(shown.get("content", "")) if isinstance(shown, dict) else ""
    zone = str(change.detail.get("zone") or "")
    state = "conflict" if change.action == "conflict" else "ok"
    return RecordView(change.target.id, zone, content, state, change.reason if state != "ok" else "")
