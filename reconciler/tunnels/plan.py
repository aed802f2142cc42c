"""The tunnel planner (pure): Tunnel and TunnelRoute documents + live tunnels and zones -> changes.

For every Tunnel document it plans the tunnel itself (create when absent and ``create: true``),
its whole ingress list (``TunnelConfiguration``: the API replaces the list as a whole, so the
list is one change, and rules found live but not in Git show in it as removed), and the DNS
records of its hostnames (:mod:`reconciler.tunnels.dns`). Nothing here does I/O: the Cloudflare
provider and the local state backend read and write; this module only compares values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from reconciler.desired.models import Tunnel, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.planning.live import IngressRule, LiveConnectors, LiveTunnel, LiveZone, PublicAddress
from reconciler.planning.plan import JSON, Change, Target
from reconciler.tunnels.connector import plan_connectors
from reconciler.tunnels.dns import OWNER_MARKER, WantedRecord, plan_dns, tunnel_target
from reconciler.tunnels.dynamic import dynamic_records
from reconciler.tunnels.hostunit import plan_units
from reconciler.tunnels.rules import (
    Waiting,
    fold_defaults,
    origin_request_api,
    origin_request_yaml,
    same_routing,
    tunnel_rules,
)

__all__ = ["OWNER_MARKER", "TunnelPlan", "local_config", "local_config_path", "plan_tunnels"]


@dataclass(frozen=True)
class TunnelPlan:
    changes: list[Change] = field(default_factory=list)
    artifacts: dict[str, JSON] = field(default_factory=dict)  # "cloudflared/<tunnel>.yml" -> config
    warnings: list[str] = field(default_factory=list)


def local_config_path(name: str) -> str:
    """Where a local tunnel's config lives, relative to the state directory."""
    return f"cloudflared/{name}.yml"


def plan_tunnels(
    desired: DesiredState,
    tunnels: Mapping[str, LiveTunnel],
    zones: Mapping[str, LiveZone],
    service_ips: Mapping[str, tuple[str, ...]],
    owner_id: str,
    live_services: Collection[str] = (),
    public_addresses: Mapping[str, PublicAddress] | None = None,
    connectors: LiveConnectors | None = None,
) -> TunnelPlan:
    """Every tunnel, configuration and DNS change the desired state asks for.

    ``tunnels`` holds what was read: remote tunnels from the API, local ones from their files.
    An empty ``zones`` means Cloudflare DNS was not read (no credentials): DNS for local tunnels
    is then skipped with a warning. ``service_ips`` maps ``namespace/name`` to the Service's
    LoadBalancer IPs in this same plan, so a route follows its Service's IP in one plan;
    ``live_services`` the keys of the Services found live (to say why a route waits).
    A route whose Service has no IP is left out of its tunnel's rules and shown as a conflict
    on the route, so it never disappears from the config without a word. ``connectors`` is what
    the backend found of the tunnels' connectors (None: it keeps none).
    """
    plan = TunnelPlan()
    routes: dict[str, list[TunnelRoute]] = {}
    for route in desired.routes:
        routes.setdefault(route.spec.tunnel, []).append(route)
    for name in sorted(set(routes) - {t.metadata.name for t in desired.tunnels}):
        plan.warnings.append(f"routes {', '.join(r.metadata.name for r in routes[name])} name tunnel "
                             f"{name}, which no Tunnel document declares")

    wanted: list[WantedRecord] = []
    protected: set[str] = set()
    unmanaged_targets: set[str] = set()
    for tunnel in desired.tunnels:
        name = tunnel.metadata.name
        mine = routes.get(name, [])
        rules, waiting, warns = tunnel_rules(tunnel, mine, service_ips)
        plan.warnings.extend(warns)
        plan.changes.extend(_waiting_change(w, name, desired, live_services) for w in waiting)
        protected.update(w.hostname for w in waiting)
        live = tunnels.get(name)
        if tunnel.spec.mode == "local":
            tunnel_id, dns_ok = _plan_local(tunnel, rules, live, plan), True
            if not zones:
                dns_ok = False
                if tunnel.spec.dns.manage and mine:
                    plan.warnings.append(f"DNS for local tunnel {name} skipped: Cloudflare DNS was not read "
                                         "(set CLOUDFLARE_API_TOKEN to manage its records)")
            elif not tunnel.spec.tunnelId:
                dns_ok = False
                if tunnel.spec.dns.manage and mine:
                    plan.warnings.append(f"DNS for local tunnel {name} skipped: its CNAMEs need the "
                                         "tunnel's UUID; set tunnelId")
        else:
            tunnel_id, dns_ok = _plan_remote(tunnel, rules, live, plan)
        hostnames = [r.hostname for r in rules if r.hostname is not None]
        if not (tunnel.spec.dns.manage and dns_ok):
            protected.update(hostnames)
            if not tunnel.spec.dns.manage:
                known = tunnel.spec.tunnelId or (live.tunnel_id if live else None)
                if known:
                    unmanaged_targets.add(tunnel_target(known))
            continue
        adopt: dict[str, bool] = {}
        for r in mine:
            adopt[r.spec.hostname.lower()] = adopt.get(r.spec.hostname.lower(), False) or r.spec.adopt
        # The first route by name speaks for a hostname that several routes (paths) share.
        by_host = {r.spec.hostname.lower(): r.metadata.name
                   for r in sorted(mine, key=lambda r: r.metadata.name, reverse=True)}
        for hostname in dict.fromkeys(hostnames):
            wanted.append(WantedRecord(hostname, name, tunnel_id, by_host[hostname], adopt[hostname],
                                       tuple(z.lower() for z in tunnel.spec.dns.zones)))
    declared = {t.metadata.name for t in desired.tunnels}
    for name in sorted(set(tunnels) - declared):  # only local files are read for undeclared names
        path = local_config_path(name)
        before = None if tunnels[name].ingress is None else [r.as_dict() for r in tunnels[name].ingress or ()]
        plan.changes.append(Change(Target("TunnelConfiguration", name), "delete", before=before,
                                   reason=f"remove {path}: the Tunnel is no longer declared",
                                   detail={"mode": "local", "path": path}))
    protected_types: frozenset[tuple[str, str]] = frozenset()
    if desired.dynamic_dns and not zones:
        plan.warnings.append(f"DynamicDNS {', '.join(d.metadata.name for d in desired.dynamic_dns)} skipped: "
                             "Cloudflare DNS was not read (set CLOUDFLARE_API_TOKEN to manage its records)")
    elif desired.dynamic_dns:
        dynamic = dynamic_records(desired, public_addresses or {})
        wanted.extend(dynamic.wanted)
        protected.update(dynamic.protected_hosts)
        protected_types = frozenset(dynamic.protected_types)
        plan.warnings.extend(dynamic.warnings)
    dns_changes, dns_warnings = plan_dns(wanted, zones, protected, owner_id, frozenset(unmanaged_targets),
                                         protected_types)
    plan.changes.extend(dns_changes)
    plan.warnings.extend(dns_warnings)
    configs = {t.metadata.name: plan.artifacts.get(local_config_path(t.metadata.name)) for t in desired.tunnels}
    in_cluster = plan_connectors(desired.tunnels, connectors, configs)
    plan.changes.extend(in_cluster.changes)
    plan.warnings.extend(in_cluster.warnings)
    unit_changes, unit_warnings = plan_units(desired.tunnels, connectors)
    plan.changes.extend(unit_changes)
    plan.warnings.extend(unit_warnings)
    return plan


def _waiting_change(waiting: Waiting, tunnel: str, desired: DesiredState, live_services: Collection[str]) -> Change:
    """The visible trace of a route left out of its tunnel's rules: a conflict on the route."""
    service = waiting.service
    if service in live_services:
        why = "it has no LoadBalancer IP yet"
    elif any(e.spec.service.key == service for e in desired.exposures):
        why = "its ServiceExposure gets no IP in this plan"
    else:
        why = "no ServiceExposure in the repo exposes it and it was not found live"
    return Change(Target("TunnelRoute", waiting.route), "conflict", before=None,
                  after={"hostname": waiting.hostname, "service": service, "tunnel": tunnel},
                  reason=f"route {waiting.route} ({waiting.hostname}) waits for Service {service} to get an IP: "
                         f"{why}; it is left out of tunnel {tunnel}'s ingress rules until then")


def _plan_remote(
    tunnel: Tunnel, rules: tuple[IngressRule, ...], live: LiveTunnel | None, plan: TunnelPlan
) -> tuple[str | None, bool]:
    """Tunnel + configuration changes of a remote tunnel; returns (tunnel id, DNS plannable)."""
    name, spec = tunnel.metadata.name, tunnel.spec
    ref = spec.tunnelId or spec.tunnelName or name
    if live is None:
        plan.warnings.append(f"remote tunnel {name} not planned: Cloudflare was not read "
                             "(set CLOUDFLARE_API_TOKEN)")
        return None, False
    if live.error is not None:
        plan.warnings.append(f"tunnel {name} skipped: {live.error}")
        return None, False
    detail: dict[str, JSON] = {"mode": "remote", "account_id": spec.accountId, "tunnel_id": live.tunnel_id,
                               "tunnel_name": spec.tunnelName}
    after = [r.as_dict() for r in rules]
    target = Target("TunnelConfiguration", name)
    if live.tunnel_id is None:
        if not spec.create:
            plan.changes.append(Change(Target("Tunnel", name), "conflict", after={"name": ref},
                                       reason=f"tunnel {ref} not found in account {spec.accountId}; "
                                              "set create: true (with tunnelName) to create it",
                                       detail=detail))
            return None, False
        plan.changes.append(Change(Target("Tunnel", name), "create",
                                   after={"name": spec.tunnelName, "accountId": spec.accountId},
                                   reason="create: true and no tunnel of that name exists", detail=detail))
        plan.changes.append(Change(target, "create", after=after,
                                   reason=f"{len(after)} rules on the new tunnel", detail=detail))
        return None, True
    if live.ingress is None:
        plan.changes.append(Change(target, "create", after=after,
                                   reason=f"the tunnel has no configuration yet; {len(after)} rules",
                                   detail=detail))
        return live.tunnel_id, True
    current = fold_defaults(live.ingress, live.origin_request)
    before = [r.as_dict() for r in current]
    if same_routing(current, rules):
        plan.changes.append(Change(target, "no-op", before=before, after=before, reason="up to date",
                                   detail=detail))
    else:
        plan.changes.append(Change(target, "update", before=before, after=after,
                                   reason=describe_rule_changes(current, rules), detail=detail))
    return live.tunnel_id, True


def _plan_local(
    tunnel: Tunnel, rules: tuple[IngressRule, ...], live: LiveTunnel | None, plan: TunnelPlan
) -> str | None:
    """The config file of a local tunnel: an artifact, and a change when the file differs."""
    name = tunnel.metadata.name
    path = local_config_path(name)
    config = local_config(tunnel, rules)
    plan.artifacts[path] = config
    ref = str(config["tunnel"])
    after = [r.as_dict() for r in rules]
    target = Target("TunnelConfiguration", name)
    detail: dict[str, JSON] = {"mode": "local", "path": path}
    if live is None or (live.ingress is None and live.error is None):
        plan.changes.append(Change(target, "create", after=after, reason=f"write {path}", detail=detail))
    elif live.error is not None or live.ingress is None:
        plan.changes.append(Change(target, "update", after=after,
                                   reason=f"rewrite {path}: {live.error}", detail=detail))
    else:
        current = fold_defaults(live.ingress, live.origin_request)
        before = [r.as_dict() for r in current]
        if current == rules and live.tunnel_id == ref:
            plan.changes.append(Change(target, "no-op", before=before, after=after, reason="up to date",
                                       detail=detail))
        else:
            reason = describe_rule_changes(current, rules) if current != rules else "rules unchanged"
            if live.tunnel_id != ref:
                reason += f"; tunnel {live.tunnel_id} -> {ref}"
            plan.changes.append(Change(target, "update", before=before, after=after, reason=reason,
                                       detail=detail))
    return tunnel.spec.tunnelId


def local_config(tunnel: Tunnel, rules: tuple[IngressRule, ...]) -> dict[str, JSON]:
    """The complete cloudflared config file of a local tunnel, as plain data (Go durations).

    The tunnel's originRequest goes at the top (cloudflared's defaults for every rule); each rule
    carries only what differs from them, so the file reads as the user wrote the documents.
    ``tunnel`` is the UUID when given, else the tunnel's name (cloudflared accepts either).
    """
    spec = tunnel.spec
    defaults = origin_request_api(spec.originRequest)
    config: dict[str, JSON] = {"tunnel": spec.tunnelId or spec.tunnelName or tunnel.metadata.name}
    if spec.credentialsFile:
        config["credentials-file"] = spec.credentialsFile
    if defaults:
        config["originRequest"] = origin_request_yaml(defaults)
    ingress: list[JSON] = []
    for rule in rules:
        entry = rule.as_dict()
        own = {k: v for k, v in rule.origin_request.items() if defaults.get(k) != v or k not in defaults}
        entry.pop("originRequest", None)
        if own:
            entry["originRequest"] = origin_request_yaml(own)
        ingress.append(entry)
    config["ingress"] = ingress
    return config


def describe_rule_changes(before: tuple[IngressRule, ...], after: tuple[IngressRule, ...]) -> str:
    """One line naming what changes in an ingress list (rules keyed by hostname and path)."""

    def keyed(rules: tuple[IngressRule, ...]) -> dict[str, IngressRule]:
        return {f"{r.hostname or '*'}{r.path or ''}": r for r in rules}

    old, new = keyed(before), keyed(after)
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    parts = []
    for label, keys in (("add", added), ("remove (live, not in Git)", removed), ("change", changed)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            parts.append(f"{label} {shown}")
    return "; ".join(parts) or "reorder rules for first-match order"
