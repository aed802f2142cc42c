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
    """A record a hostname needs: a route's CNAME to its tunnel, or a DynamicDNS's A/AAAA record."""

    hostname: str
    tunnel: str  # the Tunnel document's name ("" for a dynamic record)
    tunnel_id: str | None  # None: created by this same apply
    route: str  # the TunnelRoute's name, or the DynamicDNS's
    adopt: bool = False
    zones: tuple[str, ...] = ()  # the tunnel's dns.zones restriction (empty: any zone)
    type: str = "CNAME"
    content: str | None = None  # A/AAAA: the address (a CNAME's target is its tunnel's)
    proxied: bool = True
    ttl: int = 1

    @property
    def dynamic(self) -> bool:
        return self.type != "CNAME"

    @property
    def wanted_by(self) -> str:
        return f"DynamicDNS {self.route}" if self.dynamic else f"route {self.route} of tunnel {self.tunnel}"

    @property
    def target(self) -> Target:
        """A hostname has one CNAME, but may have both an A and an AAAA record."""
        return Target("DNSRecord", f"{self.hostname} {self.type}" if self.dynamic else self.hostname)


def zone_for(hostname: str, zones: Iterable[str], allowed: tuple[str, ...] = ()) -> str | None:
    """The longest zone name that holds ``hostname`` (a wildcard's ``*.`` is a label like any)."""
    fits = [z for z in zones
            if (hostname == z or hostname.endswith("." + z)) and (not allowed or z in allowed)]
    return max(fits, key=len) if fits else None


ADDRESS_TYPES = ("A", "AAAA")


def _view(record: DNSRecord, ttl: bool = False) -> dict[str, JSON]:
    view: dict[str, JSON] = {"type": record.type, "content": record.content, "proxied": record.proxied,
                             "comment": record.comment}
    if ttl:  # compared for dynamic records only: a tunnel's CNAME keeps whatever TTL it has
        view["ttl"] = record.ttl
    return view


def _wanted_view(want: WantedRecord, comment: str) -> dict[str, JSON]:
    if want.dynamic:
        return {"type": want.type, "content": want.content, "proxied": want.proxied, "comment": comment,
                "ttl": want.ttl}
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
    protected_types: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[list[Change], list[str]]:
    """DNS changes for the wanted records against the live zones, and warnings.

    ``protected_types`` holds (hostname, type) pairs of dynamic records whose address is not
    known this run: kept exactly as they are.
    """
    marker = OWNER_MARKER.format(owner=owner_id)
    readable = {name: z for name, z in zones.items() if z.error is None and z.zone_id is not None}
    changes: list[Change] = []
    warnings: list[str] = [f"zone {name} skipped: {z.error}" for name, z in sorted(zones.items())
                           if z.error is not None]
    by_zone: dict[str, dict[str, list[WantedRecord]]] = {}
    homeless: dict[str, list[str]] = {}
    for want in wanted:
        zone_name = zone_for(want.hostname, zones, want.zones)
        if zone_name is None:
            homeless.setdefault(want.wanted_by if want.dynamic else f"tunnel {want.tunnel}", []).append(want.hostname)
            continue
        if zone_name not in readable:
            continue  # already warned: the zone could not be read
        taken = by_zone.setdefault(zone_name, {})
        if want.hostname in taken and not (want.dynamic and taken[want.hostname][0].dynamic):
            first = taken[want.hostname][0]
            warnings.append(f"DNS {want.hostname}: routed by tunnels {first.tunnel} and "
                            f"{want.tunnel}; the record points to {first.tunnel}")
            continue
        taken.setdefault(want.hostname, []).append(want)
    for who, names in sorted(homeless.items()):
        shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.append(f"{who}: no Cloudflare zone the token can see holds {shown}; "
                        "no DNS record planned")

    for zone_name in sorted(readable):
        zone = readable[zone_name]
        live: dict[str, list[DNSRecord]] = {}
        for record in zone.records:
            live.setdefault(record.name.lower(), []).append(record)
        want_here = by_zone.get(zone_name, {})
        for hostname in sorted(want_here):
            changes.extend(_plan_hostname(want_here[hostname], live.get(hostname, []), zone, marker, owner_id,
                                          protected_types))
        for hostname in sorted(set(live) - set(want_here) - protected):
            for record in live[hostname]:
                if owner_of(record.comment) == owner_id and record.content not in protected_targets:
                    changes.append(Change(_record_target(record), "delete", before=_view(record),
                                          reason="no route wants this hostname any more",
                                          detail=_detail(zone, None, record)))
    return changes, warnings


def record_name(target: Target) -> str:
    """The DNS name a DNSRecord change is about (its id may carry the record type after it)."""
    return target.id.partition(" ")[0]


def _record_target(record: DNSRecord) -> Target:
    name = record.name.lower()
    return Target("DNSRecord", f"{name} {record.type}" if record.type in ADDRESS_TYPES else name)


def _plan_hostname(wants: list[WantedRecord], records: list[DNSRecord], zone: LiveZone, marker: str,
                   owner_id: str, protected_types: frozenset[tuple[str, str]]) -> list[Change]:
    """One hostname: its CNAME against every record of the name (a CNAME stands alone), or its
    address records each against the records of its type (and a CNAME in the way)."""
    if not wants[0].dynamic:
        return _plan_name(wants[0], records, zone, marker, owner_id)
    changes: list[Change] = []
    claimed: set[str | None] = set()
    for want in sorted(wants, key=lambda w: w.type):
        relevant = [r for r in records if (r.type == want.type or r.type == "CNAME") and r.record_id not in claimed]
        claimed.update(r.record_id for r in relevant if owner_of(r.comment) == owner_id)
        changes.extend(_plan_name(want, relevant, zone, marker, owner_id))
    wanted_types = {w.type for w in wants}
    for record in records:  # e.g. the AAAA record of a family no longer followed
        if (record.type in ADDRESS_TYPES and record.type not in wanted_types and owner_of(record.comment) == owner_id
                and (record.name.lower(), record.type) not in protected_types):
            changes.append(Change(_record_target(record), "delete", before=_view(record),
                                  reason=f"DynamicDNS {wants[0].route} no longer keeps an {record.type} record",
                                  detail=_detail(zone, None, record)))
    return changes


def _plan_name(
    want: WantedRecord, records: list[DNSRecord], zone: LiveZone, marker: str, owner_id: str
) -> list[Change]:
    target = want.target
    ours = [r for r in records if owner_of(r.comment) == owner_id]
    foreign = [r for r in records if owner_of(r.comment) != owner_id]
    if not records:
        return [Change(target, "create", after=_wanted_view(want, marker),
                       reason=want.wanted_by,
                       detail=_detail(zone, want, None))]
    if foreign and not (want.adopt and len(records) == 1):
        other = foreign[0]
        owner = owner_of(other.comment)
        whose = f"owned by portside owner {owner}" if owner else "not managed by portside"
        if want.dynamic:
            hint = "remove it or keep another hostname"
        elif want.adopt:
            hint = "adopt needs exactly one record of that name"
        else:
            hint = f"set adopt: true on route {want.route} to take it over"
        return [Change(target, "conflict", before=_view(other, want.dynamic), after=_wanted_view(want, marker),
                       reason=f"a {other.type} record {whose} exists: left alone ({hint})",
                       detail=_detail(zone, want, other))]
    if foreign:  # adopt, exactly one record
        return [Change(target, "update", before=_view(foreign[0], want.dynamic), after=_wanted_view(want, marker),
                       reason=f"adopted by route {want.route}: the record becomes portside's",
                       detail=_detail(zone, want, foreign[0]))]
    keep, *duplicates = ours
    after = _wanted_view(want, keep.comment or marker)
    changes: list[Change] = []
    before = _view(keep, want.dynamic)
    if before == after:
        changes.append(Change(target, "no-op", before=before, after=after, reason="up to date",
                              detail=_detail(zone, want, keep)))
    else:
        changes.append(Change(target, "update", before=before, after=after,
                              reason=_update_reason(keep, want), detail=_detail(zone, want, keep)))
    changes.extend(
        Change(_record_target(dup), "delete", before=_view(dup), reason="duplicate record of a portside hostname",
               detail=_detail(zone, None, dup))
        for dup in duplicates
    )
    return changes


def _update_reason(record: DNSRecord, want: WantedRecord) -> str:
    parts = []
    if record.type != want.type:
        parts.append(f"type {record.type} -> {want.type}")
    if want.dynamic:
        if record.content != want.content:
            parts.append(f"the address is now {want.content}")
        if record.proxied != want.proxied:
            parts.append("proxied" if want.proxied else "not proxied")
        if record.ttl != want.ttl:
            parts.append(f"TTL {record.ttl} -> {want.ttl}")
        return ", ".join(parts) or "record differs"
    if record.content != tunnel_target(want.tunnel_id):
        parts.append(f"now points to tunnel {want.tunnel}")
    if not record.proxied:
        parts.append("proxied through Cloudflare")
    return ", ".join(parts) or "record differs"
