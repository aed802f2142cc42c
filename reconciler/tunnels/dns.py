"""DNS records for tunnel hostnames (pure): which CNAMEs to create, update, delete, or leave alone.

Every routed hostname wants a proxied CNAME to ``<tunnel-id>.cfargotunnel.com`` in the zone that
holds it (the longest matching zone name). A record is portside's only when its comment carries
the ownership marker with this instance's owner id. The case matrix, per hostname:

    live records of that name     | adopt | result
    ------------------------------+-------+------------------------------------------------
    none                          |   -   | create
    only ours, one, equal         |   -   | no-op
    only ours, one, different     |   -   | update
    only ours, several            |   -   | update (or keep) the first, delete the others
    any foreign                   |  no   | conflict: foreign record left alone
    exactly one, foreign          |  yes  | update: take it over (the comment makes it ours)
    several, any foreign          |  yes  | conflict: adopt needs a single record

Our records whose hostname no route wants any more are deleted, except hostnames that are
*protected*: routes still declared but not plannable this run (a waiting Service, an unread
tunnel, a tunnel with DNS management off), whose records are kept exactly as they are; so are
records pointing at a tunnel whose DNS management is off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.planning.live import DNSRecord, LiveZone
from reconciler.planning.plan import JSON, Change, Target

OWNER_MARKER = "managed by portside, owner={owner}"
TUNNEL_DOMAIN = "cfargotunnel.com"
# Shown in the plan for a CNAME whose tunnel is created by the same apply.
PENDING_TUNNEL_ID = "(tunnel id known after create)"

_OWNER = re.compile(r"managed by portside, owner=([^\s,;]+)")


def owner_of(comment: str | None) -> str | None:
    """The portside owner id a record's comment names, or None when it carries no marker."""
    found = _OWNER.search(comment or "")
    return found.group(1) if found else None


def tunnel_target(tunnel_id: str | None) -> str:
    return f"{tunnel_id if tunnel_id else PENDING_TUNNEL_ID}.{TUNNEL_DOMAIN}"


@dataclass(frozen=True)
class WantedRecord:
    """A hostname one route of one tunnel needs in DNS."""

    hostname: str
    tunnel: str  # the Tunnel document's name
    tunnel_id: str | None  # None: created by this same apply
    route: str
    adopt: bool = False
    zones: tuple[str, ...] = ()  # the tunnel's dns.zones restriction (empty: any zone)


def zone_for(hostname: str, zones: Iterable[str], allowed: tuple[str, ...] = ()) -> str | None:
    """The longest zone name that holds ``hostname`` (a wildcard's ``*.`` is a label like any)."""
    fits = [z for z in zones
            if (hostname == z or hostname.endswith("." + z)) and (not allowed or z in allowed)]
    return max(fits, key=len) if fits else None


def _view(record: DNSRecord) -> dict[str, JSON]:
    return {"type": record.type, "content": record.content, "proxied": record.proxied,
            "comment": record.comment}


def _wanted_view(want: WantedRecord, comment: str) -> dict[str, JSON]:
    return {"type": "CNAME", "content": tunnel_target(want.tunnel_id), "proxied": True, "comment": comment}


def _detail(zone: LiveZone, want: WantedRecord | None, record: DNSRecord | None) -> dict[str, JSON]:
    detail: dict[str, JSON] = {"zone": zone.name, "zone_id": zone.zone_id,
                               "record_id": record.record_id if record else None}
    if want is not None:
        detail["tunnel"] = want.tunnel
        detail["tunnel_id"] = want.tunnel_id
    return detail


def plan_dns(
    wanted: list[WantedRecord],
    zones: Mapping[str, LiveZone],
    protected: set[str],
    owner_id: str,
    protected_targets: frozenset[str] = frozenset(),
) -> tuple[list[Change], list[str]]:
    """DNS changes for the wanted records against the live zones, and warnings."""
    marker = OWNER_MARKER.format(owner=owner_id)
    readable = {name: z for name, z in zones.items() if z.error is None and z.zone_id is not None}
    changes: list[Change] = []
    warnings: list[str] = [f"zone {name} skipped: {z.error}" for name, z in sorted(zones.items())
                           if z.error is not None]
    by_zone: dict[str, dict[str, WantedRecord]] = {}
    homeless: dict[str, list[str]] = {}
    for want in wanted:
        zone_name = zone_for(want.hostname, zones, want.zones)
        if zone_name is None:
            homeless.setdefault(want.tunnel, []).append(want.hostname)
            continue
        if zone_name not in readable:
            continue  # already warned: the zone could not be read
        taken = by_zone.setdefault(zone_name, {})
        if want.hostname in taken:
            warnings.append(f"DNS {want.hostname}: routed by tunnels {taken[want.hostname].tunnel} and "
                            f"{want.tunnel}; the record points to {taken[want.hostname].tunnel}")
            continue
        taken[want.hostname] = want
    for tunnel, names in sorted(homeless.items()):
        shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.append(f"tunnel {tunnel}: no Cloudflare zone the token can see holds {shown}; "
                        "no DNS record planned")

    for zone_name in sorted(readable):
        zone = readable[zone_name]
        live: dict[str, list[DNSRecord]] = {}
        for record in zone.records:
            live.setdefault(record.name.lower(), []).append(record)
        want_here = by_zone.get(zone_name, {})
        for hostname in sorted(want_here):
            changes.extend(_plan_name(want_here[hostname], live.get(hostname, []), zone, marker, owner_id))
        for hostname in sorted(set(live) - set(want_here) - protected):
            for record in live[hostname]:
                if owner_of(record.comment) == owner_id and record.content not in protected_targets:
                    changes.append(Change(Target("DNSRecord", hostname), "delete", before=_view(record),
                                          reason="no route wants this hostname any more",
                                          detail=_detail(zone, None, record)))
    return changes, warnings


def _plan_name(
    want: WantedRecord, records: list[DNSRecord], zone: LiveZone, marker: str, owner_id: str
) -> list[Change]:
    target = Target("DNSRecord", want.hostname)
    ours = [r for r in records if owner_of(r.comment) == owner_id]
    foreign = [r for r in records if owner_of(r.comment) != owner_id]
    if not records:
        return [Change(target, "create", after=_wanted_view(want, marker),
                       reason=f"route {want.route} of tunnel {want.tunnel}",
                       detail=_detail(zone, want, None))]
    if foreign and not (want.adopt and len(records) == 1):
        other = foreign[0]
        owner = owner_of(other.comment)
        whose = f"owned by portside owner {owner}" if owner else "not managed by portside"
        hint = ("adopt needs exactly one record of that name" if want.adopt
                else f"set adopt: true on route {want.route} to take it over")
        return [Change(target, "conflict", before=_view(other), after=_wanted_view(want, marker),
                       reason=f"a {other.type} record {whose} exists: left alone ({hint})",
                       detail=_detail(zone, want, other))]
    if foreign:  # adopt, exactly one record
        return [Change(target, "update", before=_view(foreign[0]), after=_wanted_view(want, marker),
                       reason=f"adopted by route {want.route}: the record becomes portside's",
                       detail=_detail(zone, want, foreign[0]))]
    keep, *duplicates = ours
    after = _wanted_view(want, keep.comment or marker)
    changes: list[Change] = []
    before = _view(keep)
    if before == after:
        changes.append(Change(target, "no-op", before=before, after=after, reason="up to date",
                              detail=_detail(zone, want, keep)))
    else:
        changes.append(Change(target, "update", before=before, after=after,
                              reason=_update_reason(keep, want), detail=_detail(zone, want, keep)))
    changes.extend(
        Change(target, "delete", before=_view(dup), reason="duplicate record of a portside hostname",
               detail=_detail(zone, None, dup))
        for dup in duplicates
    )
    return changes


def _update_reason(record: DNSRecord, want: WantedRecord) -> str:
    parts = []
    if record.type != "CNAME":
        parts.append(f"type {record.type} -> CNAME")
    if record.content != tunnel_target(want.tunnel_id):
        parts.append(f"now points to tunnel {want.tunnel}")
    if not record.proxied:
        parts.append("proxied through Cloudflare")
    return ", ".join(parts) or "record differs"
