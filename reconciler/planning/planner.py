"""The planner (pure): DesiredState + LiveState -> Plan.

Three parts, each keyed the same way on both sides and joined:

  Services        allocation (IPs + pool)      vs  status.loadBalancer.ingress + portside.io/pool
  Announcements   the table built from them    vs  the published table, per IP
  Tunnels / DNS   routes resolved to the IPs   vs  Cloudflare (or the cloudflared config files)

Case matrix for a Service (desired = the allocation, live = status):
  no IPs live, IPs allocated      -> create   ("assign")
  IPs live, other IPs allocated   -> update   (revocation or move, with the allocator's reason)
  IPs live, none allocated        -> delete   (revoked: pool gone, exposure removed, ...)
  none either way, pending reason -> conflict (shown, never acted on)
  equal                           -> no-op
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.allocator import Allocation, allocate, service_requests
from reconciler.allocator.addresses import address_order
from reconciler.common.errors import StateError
from reconciler.common.gcpause import gc_paused
from reconciler.desired.ipranges import parse_ip, parse_range
from reconciler.desired.state import DesiredState
from reconciler.planning.announce import build_table
from reconciler.planning.announcement_table import (
    Announcement,
    AnnouncementTable,
    decode_table,
    encode_table,
    table_to_json,
)
from reconciler.planning.live import LiveService, LiveState
from reconciler.planning.plan import JSON, Change, Plan, Target, ordered
from reconciler.tunnels.plan import plan_tunnels

ANNOUNCEMENTS_ARTIFACT = "announcements.json"
NODES_ID = "(nodes)"


@dataclass(frozen=True)
class PlanOptions:
    owner_id: str = "portside"


def make_plan(desired: DesiredState, live: LiveState, options: PlanOptions | None = None) -> Plan:
    """Everything apply would do to make ``live`` match ``desired``, in apply order."""
    with gc_paused():
        return _make_plan(desired, live, options)


def _make_plan(desired: DesiredState, live: LiveState, options: PlanOptions | None) -> Plan:
    options = options or PlanOptions()
    requests, rejected = service_requests(live.services, desired.exposures)
    allocations = [*rejected, *allocate(desired.pools, requests, live.namespace_labels)]
    allocations.sort(key=lambda a: a.key)

    allocations = _keep_when_unmet(allocations, desired, live)
    changes = [_service_change(a, live.service(a.key)) for a in allocations]
    changes.extend(
        Change(Target("Service", s.key), "delete", _service_state(s.ingress, s.recorded_pool),
               None, f"revoke {', '.join(s.ingress)}: the Service is gone")
        for s in live.released if s.ingress
    )

    fresh = build_table(
        desired.advertisements, desired.pools, allocations, live.services, live.nodes,
        live.ready_endpoint_nodes, generation=0, revision=desired.revision or "",
    )
    announcement_changes, table_text = _plan_announcements(live.announcements, fresh)
    changes.extend(announcement_changes)
    artifacts: dict[str, JSON] = {}
    if table_text is not None:
        artifacts[ANNOUNCEMENTS_ARTIFACT] = table_text

    service_ips = {a.key: a.ips for a in allocations if a.ips}
    tunnel_plan = plan_tunnels(desired, live.tunnels, live.zones, service_ips, options.owner_id,
                               live_services={s.key for s in live.services},
                               public_addresses=live.public_addresses, connectors=live.connectors)
    changes.extend(tunnel_plan.changes)
    artifacts.update(tunnel_plan.artifacts)

    warnings = [f"{a.key} stays pending: {a.pending_reason}" for a in allocations
                if not a.ips and a.pending_reason]
    warnings.extend(f"{a.key} {a.warning}" for a in allocations if a.warning)
    announced = {a.ip for a in fresh.announcements}
    warnings.extend(f"{ip} ({a.key}, pool {a.pool}) is not announced: no L2Advertisement selects the pool "
                    "and a node for it" for a in allocations for ip in a.ips if ip not in announced)
    warnings.extend(f"{a.ip} ({a.service}) has no eligible node, so nobody answers ARP for it: check the "
                    "L2Advertisement nodeSelectors, the nodes' addresses and, for externalTrafficPolicy: "
                    "Local, that a pod is ready" for a in fresh.announcements if not a.candidates)
    warnings.extend(_route_port_warnings(desired, live))
    warnings.extend(tunnel_plan.warnings)
    return Plan(ordered(changes), desired.revision, artifacts, tuple(warnings))


def _route_port_warnings(desired: DesiredState, live: LiveState) -> list[str]:
    """A route to a port its Service does not have sends every request to a closed port."""
    out = []
    for route in desired.routes:
        target = route.spec.service
        service = live.service(target.key) if target else None
        if target and service and service.ports and target.port not in {p.port for p in service.ports}:
            ports = ", ".join(str(p.port) for p in service.ports)
            out.append(f"route {route.metadata.name} goes to port {target.port} of {target.key}, "
                       f"which has port(s) {ports}")
    return out


def _service_state(ips: Sequence[str], pool: str | None) -> JSON:
    return {"ingress": list(ips), "pool": pool}


def _keep_when_unmet(allocations: list[Allocation], desired: DesiredState, live: LiveState) -> list[Allocation]:
    """A wish that cannot be met (a requested IP someone else holds) must not take a working
    Service off the network: it keeps IPs that are still inside a pool and held by no one else,
    and the plan shows the conflict to fix (MetalLB would drop them; a typo should not)."""
    if not any(not a.ips and a.pending_reason for a in allocations):
        return allocations  # the usual case: nothing to keep, no need to index every IP held
    held = {ip for a in allocations for ip in a.ips}
    ranges = [parse_range(text) for pool in desired.pools for text in pool.spec.addresses]
    kept = []
    for a in allocations:
        service = live.service(a.key)
        current = service.ingress if service else ()
        if (not a.ips and a.pending_reason and current
                and all(ip not in held and any(r.contains(parse_ip(ip)) for r in ranges) for ip in current)):
            pool = service.recorded_pool if service else None
            a = a._replace(ips=tuple(current), pool=pool, revoked=(), revoke_reason=None, pending_reason=None,
                           warning=f"keeps {', '.join(current)}: {a.pending_reason}")
        kept.append(a)
    return kept


def _service_change(allocation: Allocation, live: LiveService | None) -> Change:
    target = Target("Service", allocation.key)
    ips = allocation.ips
    live_ips = tuple(live.ingress) if live else ()
    if not live_ips:
        if not ips:
            return Change(target, "conflict" if allocation.pending_reason else "no-op", None, None,
                          allocation.pending_reason or "not exposed")
        return Change(target, "create", None, _service_state(ips, allocation.pool),
                      f"assign {', '.join(ips)} from pool {allocation.pool}")
    live_pool = live.recorded_pool if live else None
    before = _service_state(live_ips, live_pool)
    if not ips:
        why = allocation.revoke_reason or allocation.pending_reason or "no longer exposed"
        return Change(target, "delete", before, None, f"revoke {', '.join(live_ips)}: {why}")
    # The steady state shares one dict for both sides: 10,000 Services need no second copy.
    after = before if live_ips == ips and live_pool == allocation.pool else _service_state(ips, allocation.pool)
    same_ips = live_ips == ips or set(live_ips) == set(ips)  # the first test settles the steady state
    if allocation.warning and same_ips:
        return Change(target, "conflict", before, after, allocation.warning)
    if same_ips and live_pool == allocation.pool:
        return Change(target, "no-op", before, after, "up to date")
    if same_ips:
        return Change(target, "update", before, after, f"record pool {allocation.pool}")
    why = allocation.revoke_reason or "allocation changed"
    return Change(target, "update", before, after,
                  f"move {', '.join(live_ips)} -> {', '.join(ips)}: {why}")


def _plan_announcements(published_text: str | None, fresh: AnnouncementTable) -> tuple[list[Change], str | None]:
    """Per-IP changes against the published table, and the new table's text when it must be
    published (with the next generation, so speakers can tell it from the old one)."""
    if published_text is not None and _same_but_header(published_text, fresh):
        return [], None
    published_raw = _json_or_none(published_text)
    if isinstance(published_raw, dict):
        # Fast path for the steady state: the same table but for generation and revision needs no
        # per-IP diff (a plain dict comparison, no validation of 10,000 entries).
        same_header = replace(fresh, generation=published_raw.get("generation", -1),
                              revision=published_raw.get("revision", ""))
        if table_to_json(same_header) == published_raw:
            return [], None
    published: AnnouncementTable | None = None
    if published_text is not None:
        with contextlib.suppress(StateError):  # unreadable: planned as absent, so rewritten whole
            published = decode_table(published_text, "the published announcement table")
    changes = _announcement_changes(published, fresh)
    if published_text is not None and published is None and not changes:
        changes.append(Change(Target("Announcement", NODES_ID), "update", None, _membership_json(fresh),
                              "the published table is unreadable: rewrite it"))
    if not changes:
        return [], None
    generation = (published.generation if published else 0) + 1
    return changes, encode_table(replace(fresh, generation=generation))


def _same_but_header(published_text: str, fresh: AnnouncementTable) -> bool:
    """Whether the published table is ``fresh`` but for generation and revision, decided on the
    bytes portside writes: the fresh table encoded under the published header is the same text.

    The steady state of a large cluster then parses none of its 10,000 entries (nor builds them
    as dicts to compare: two trees of about 10 MiB each). Any other text, say one written by an
    older version, is left to the comparison of values that follows.
    """
    text = published_text.rstrip("\n")
    # The header's keys sort after "announcements"; no JSON string can hold an unescaped quote,
    # so this is where the list ends, whatever the entries say.
    at = text.rfind('],"generation":')
    if at < 0:
        return False
    try:
        header = json.loads("{" + text[at + 2:])
    except ValueError:
        return False
    generation, revision = header.get("generation"), header.get("revision")
    if type(generation) is not int or type(revision) is not str:
        return False
    return encode_table(replace(fresh, generation=generation, revision=revision)) == text


def _json_or_none(text: str | None) -> object:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


# One JSON list per distinct tuple of names within a plan: the 10,000 announcements of a large
# first plan mostly share a handful of candidate sets (plan values are never changed in place).
_Lists = dict[tuple[str, ...], list[str]]


def _announcement_json(a: Announcement, lists: _Lists) -> JSON:
    interfaces = lists.get(a.interfaces)
    if interfaces is None:
        interfaces = lists[a.interfaces] = list(a.interfaces)
    candidates = lists.get(a.candidates)
    if candidates is None:
        candidates = lists[a.candidates] = list(a.candidates)
    return {"service": a.service, "interfaces": interfaces, "candidates": candidates}


def _announcement_changes(published: AnnouncementTable | None, fresh: AnnouncementTable) -> list[Change]:
    lists: _Lists = {}
    if published is None:  # nothing published yet (a first plan): every announcement is new
        changes = [_announcement_created(a, lists) for a in fresh.announcements]
        if fresh.announcements:
            changes.append(_membership_change(None, fresh))
        return changes
    old: Mapping[str, Announcement] = {a.ip: a for a in published.announcements}
    new: Mapping[str, Announcement] = {a.ip: a for a in fresh.announcements}
    changes = []
    # The fresh table is in address order already; only a published one can add other IPs.
    ips = sorted(old.keys() | new.keys(), key=address_order) if old.keys() - new.keys() else list(new)
    for ip in ips:
        was, now = old.get(ip), new.get(ip)
        if was is None and now is not None:
            changes.append(_announcement_created(now, lists))
        elif now is None and was is not None:
            changes.append(Change(Target("Announcement", ip), "delete", _announcement_json(was, lists), None,
                                  "no longer assigned or advertised"))
        elif was != now and was is not None and now is not None:
            changes.append(Change(Target("Announcement", ip), "update", _announcement_json(was, lists),
                                  _announcement_json(now, lists), "candidates or interfaces changed"))
        # Unchanged announcements are left out: they are derived from the Services, which carry
        # the no-ops (and the ownership counts), and 10,000 of them would cost a tenth of the plan.
    if dict(published.nodes) != dict(fresh.nodes) or published.heartbeat != fresh.heartbeat:
        changes.append(_membership_change(published, fresh))
    return changes


def _announcement_created(a: Announcement, lists: _Lists) -> Change:
    return Change(Target("Announcement", a.ip), "create", None, _announcement_json(a, lists),
                  f"announce for {a.service}")


def _membership_change(published: AnnouncementTable | None, fresh: AnnouncementTable) -> Change:
    return Change(Target("Announcement", NODES_ID), "create" if published is None else "update",
                  _membership_json(published) if published else None, _membership_json(fresh),
                  "speaker membership or heartbeat settings")


def _membership_json(table: AnnouncementTable) -> JSON:
    as_json = table_to_json(replace(table, announcements=()))
    return {"nodes": as_json["nodes"], "heartbeat": as_json["heartbeat"]}
