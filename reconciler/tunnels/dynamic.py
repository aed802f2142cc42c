"""Dynamic DNS records (pure): each DynamicDNS hostname wants an A and/or AAAA record holding the
network's public address, as its sources gave it this run.

An address that is not known this run (every source failed, the sources disagree, or nothing was
looked up, as with a snapshot) changes nothing: that family's records are kept exactly as they
are, and the plan says which source failed and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.desired.state import DesiredState
from reconciler.planning.live import PublicAddress
from reconciler.tunnels.dns import WantedRecord

FAMILIES = (("ipv4", "A", "IPv4"), ("ipv6", "AAAA", "IPv6"))


@dataclass
class DynamicRecords:
    wanted: list[WantedRecord] = field(default_factory=list)
    protected_hosts: set[str] = field(default_factory=set)  # no family known: keep every record
    protected_types: set[tuple[str, str]] = field(default_factory=set)  # (hostname, type) to keep
    warnings: list[str] = field(default_factory=list)


def dynamic_records(desired: DesiredState, addresses: Mapping[str, PublicAddress]) -> DynamicRecords:
    out = DynamicRecords()
    for doc in desired.dynamic_dns:
        name, spec = doc.metadata.name, doc.spec
        hostnames = list(dict.fromkeys(h.lower() for h in spec.hostnames))
        zones = (spec.zone.lower(),) if spec.zone else ()
        known = False
        for family, record_type, shown in FAMILIES:
            if getattr(spec, family) is None:
                continue
            found = addresses.get(f"{name}/{family}")
            if found is None or found.ip is None:
                why = "; ".join(found.problems) if found is not None else "the address was not looked up"
                out.warnings.append(f"DynamicDNS {name}: no {shown} address ({why}); "
                                    f"its {record_type} records are left as they are")
                out.protected_types.update((h, record_type) for h in hostnames)
                continue
            known = True
            out.warnings.extend(f"DynamicDNS {name}: {problem} (not needed: {found.ip} was agreed)"
                                for problem in found.problems)
            out.wanted.extend(
                WantedRecord(hostname, "", None, name, zones=zones, type=record_type, content=found.ip,
                             proxied=spec.proxied, ttl=spec.ttl)
                for hostname in hostnames)
        if not known:
            out.protected_hosts.update(hostnames)
    return out
