"""Cross-document rules: the repo as a whole must make sense before anything is planned.

Each rule is a small function over the loaded documents that returns diagnostics pinned to the
field at fault. All rules run, so one ``portside validate`` shows every problem at once. Only a
repo with no diagnostics becomes a :class:`DesiredState`.

Decisions worth knowing:
- names are unique per kind, whatever the namespace (they key the plan and the state files);
- a ``remote`` tunnel that manages DNS must declare ``dns.zones``: the zones say which Cloudflare
  zones portside may write records in, and a route outside them would be a record it must not
  create; a ``local`` tunnel's zones are optional, but when given they are enforced too;
- a hostname may be served by one tunnel only (its DNS record can point to one tunnel).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from reconciler.common.errors import ConfigError, Diagnostic
from reconciler.common.gcpause import gc_paused
from reconciler.desired.hostnames import hostname_problem, in_zone, path_problem, zone_problem
from reconciler.desired.ipranges import IPAddress, IPRange, RangeSyntaxError, is_buggy, parse_ip, parse_range
from reconciler.desired.loader import ANY_KIND, SERVICE_KEYS, LoadedDocument, LoadResult, load_documents
from reconciler.desired.models import (
    DNS_SUBDOMAIN,
    DynamicDNS,
    IPAddressPool,
    L2Advertisement,
    ServiceExposure,
    Tunnel,
    TunnelRoute,
)
from reconciler.desired.origins import origin_problem
from reconciler.desired.state import DesiredState, Origin

M = TypeVar("M", IPAddressPool, L2Advertisement, ServiceExposure, Tunnel, TunnelRoute, DynamicDNS)


def load_desired_state(root: Path, revision: str | None = None) -> DesiredState:
    """Load and validate the repo at ``root``; raise ConfigError with every problem found."""
    with gc_paused():
        result = load_documents(root)
        diagnostics = list(result.diagnostics)
        diagnostics += validate_documents(result.documents, result.invalid_names)
        if diagnostics:
            raise ConfigError(diagnostics)
        return build_desired_state(result.documents, revision, result)


def repo_warnings(result: LoadResult) -> list[Diagnostic]:
    """What the user should hear about a repo that is still valid: unsupported MetalLB kinds that
    were skipped, routes to Services nothing in the repo exposes."""
    return [*result.warnings, *_unexposed_routes(result.documents, result.invalid_names)]


def build_desired_state(documents: Sequence[LoadedDocument], revision: str | None = None,
                        loaded: LoadResult | None = None) -> DesiredState:
    """The DesiredState of documents that passed :func:`validate_documents`; ``loaded`` (the
    load that found them) adds its warnings and what it skipped."""

    by_model: dict[type, list[Any]] = {}  # one pass, whatever the number of kinds
    origins: dict[tuple[str, str], Origin] = {}
    for doc in documents:
        model = doc.model
        by_model.setdefault(type(model), []).append(model)
        origins[model.kind, model.metadata.name] = doc.origin

    def sorted_models(model: type[M]) -> tuple[M, ...]:
        return tuple(sorted(by_model.get(model, ()), key=_name))
    return DesiredState(
        pools=sorted_models(IPAddressPool),
        advertisements=sorted_models(L2Advertisement),
        exposures=sorted_models(ServiceExposure),
        tunnels=sorted_models(Tunnel),
        routes=sorted_models(TunnelRoute),
        dynamic_dns=sorted_models(DynamicDNS),
        origins=origins,
        revision=revision,
        # Routes to unexposed Services are left to the plan, which knows whether they exist live.
        warnings=tuple(sorted(loaded.warnings)) if loaded is not None else (),
        skipped=loaded.skipped_summary() if loaded is not None else None,
    )


def _name(model: IPAddressPool | L2Advertisement | ServiceExposure | Tunnel | TunnelRoute | DynamicDNS) -> str:
    return model.metadata.name


def validate_documents(documents: Sequence[LoadedDocument],
                       invalid_names: Mapping[str, set[str]] | None = None) -> list[Diagnostic]:
    """Every cross-document problem of a set of individually valid documents.

    ``invalid_names`` (kind -> names) are documents that failed on their own: a reference to one
    is not reported again as unknown.
    """
    by_kind: dict[str, list[LoadedDocument]] = {}
    for doc in documents:
        by_kind.setdefault(doc.kind, []).append(doc)
    invalid = invalid_names or {}
    unknown_kind = invalid.get(ANY_KIND, set())
    pools = _Known(_first_by_name(by_kind.get("IPAddressPool", [])), invalid.get("IPAddressPool", set()) | unknown_kind)
    tunnels = _Known(_first_by_name(by_kind.get("Tunnel", [])), invalid.get("Tunnel", set()) | unknown_kind)
    diagnostics = _duplicate_names(documents)
    pool_ranges, range_problems = _pool_ranges(by_kind.get("IPAddressPool", []))
    diagnostics += range_problems
    diagnostics += _overlapping_pools(pool_ranges)
    diagnostics += _advertisements(by_kind.get("L2Advertisement", []), pools)
    diagnostics += _exposures(by_kind.get("ServiceExposure", []), pools, pool_ranges)
    diagnostics += _tunnels(by_kind.get("Tunnel", []))
    diagnostics += _routes(by_kind.get("TunnelRoute", []), tunnels)
    diagnostics += _dynamic_dns(by_kind.get("DynamicDNS", []), by_kind.get("TunnelRoute", []))
    return diagnostics


class _Known(dict[str, LoadedDocument]):
    """Valid documents by name; ``in`` is also true for names whose document failed on its own,
    while ``get`` and ``[]`` give only valid ones."""

    def __init__(self, valid: dict[str, LoadedDocument], failed: set[str]) -> None:
        super().__init__(valid)
        self.failed = failed

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or name in self.failed


def _first_by_name(documents: Iterable[LoadedDocument]) -> dict[str, LoadedDocument]:
    found: dict[str, LoadedDocument] = {}
    for doc in documents:
        found.setdefault(doc.name, doc)
    return found


def _duplicate_names(documents: Iterable[LoadedDocument]) -> list[Diagnostic]:
    first: dict[tuple[str, str], LoadedDocument] = {}
    out = []
    for doc in documents:
        earlier = first.setdefault((doc.kind, doc.name), doc)
        if earlier is not doc:
            where = earlier.origin_of("metadata.name")
            out.append(doc.diagnostic("metadata.name", f'duplicate {doc.kind} "{doc.name}" (first declared '
                                      f"at {where}); names must be unique per kind", related=(where,)))
    return out


# --- pools and advertisements ----------------------------------------------------------------

PoolRange = tuple[IPRange, LoadedDocument, int]  # the range, its pool, its index in spec.addresses


def _pool_ranges(pools: Iterable[LoadedDocument]) -> tuple[list[PoolRange], list[Diagnostic]]:
    ranges: list[PoolRange] = []
    out = []
    for doc in pools:
        assert isinstance(doc.model, IPAddressPool)
        for index, text in enumerate(doc.model.spec.addresses):
            try:
                ranges.append((parse_range(text), doc, index))
            except RangeSyntaxError as exc:
                out.append(doc.diagnostic(f"spec.addresses[{index}]", str(exc)))
    return ranges, out


def _overlapping_pools(ranges: list[PoolRange]) -> list[Diagnostic]:
    """MetalLB refuses a configuration where two address ranges overlap, even in one pool."""
    out = []
    widest: PoolRange | None = None  # the range reaching furthest so far, in sorted order
    for entry in sorted(ranges, key=lambda r: (r[0].version, r[0].start, r[0].end)):
        rng, doc, index = entry
        if widest is not None and widest[0].overlaps(rng):
            _, other_doc, other_index = widest
            assert isinstance(doc.model, IPAddressPool) and isinstance(other_doc.model, IPAddressPool)
            where = other_doc.origin_of(f"spec.addresses[{other_index}]")
            out.append(doc.diagnostic(
                f"spec.addresses[{index}]",
                f"{doc.model.spec.addresses[index]} overlaps {other_doc.model.spec.addresses[other_index]} "
                f'of pool "{other_doc.name}" ({where}); MetalLB refuses overlapping pools: '
                "make them disjoint", related=(where,)))
        if widest is None or widest[0].version != rng.version or rng.end > widest[0].end:
            widest = entry
    return out


def _advertisements(ads: Iterable[LoadedDocument], pools: dict[str, LoadedDocument]) -> list[Diagnostic]:
    out = []
    for doc in ads:
        assert isinstance(doc.model, L2Advertisement)
        for index, name in enumerate(doc.model.spec.ipAddressPools):
            if name not in pools:
                message = _unknown("IPAddressPool", name, pools)
                out.append(doc.diagnostic(f"spec.ipAddressPools[{index}]", message))
    return out


def _unknown(kind: str, name: str, known: dict[str, LoadedDocument]) -> str:
    names = ", ".join(sorted(known)) or "none declared"
    return f'unknown {kind} "{name}" (declared: {names})'


# --- exposures -------------------------------------------------------------------------------


def _exposures(exposures: Iterable[LoadedDocument], pools: _Known,
               ranges: list[PoolRange]) -> list[Diagnostic]:
    out = []
    services: dict[str, LoadedDocument] = {}
    claimed: dict[IPAddress, tuple[LoadedDocument, int]] = {}
    for doc in exposures:
        exposure = doc.model
        assert isinstance(exposure, ServiceExposure)
        spec = exposure.spec
        earlier = services.setdefault(spec.service.key, doc)
        if earlier is not doc:
            out.append(doc.diagnostic("spec.service", f'Service {spec.service.key} is already exposed by '
                                      f'ServiceExposure "{earlier.name}" ({earlier.origin}); expose it once',
                                      related=(earlier.origin,)))
        if spec.pool is not None and spec.pool not in pools:
            out.append(doc.diagnostic("spec.pool", _unknown("IPAddressPool", spec.pool, pools)))
            continue
        if spec.pool is not None and pools.get(spec.pool) is None:
            continue  # its pool failed on its own: its addresses cannot be checked against it
        if len(spec.addresses) == 2 and spec.ipFamilyPolicy == "SingleStack":
            out.append(doc.diagnostic("spec.ipFamilyPolicy", "two addresses need ipFamilyPolicy "
                                      "PreferDualStack or RequireDualStack"))
        families: set[int] = set()
        for index, text in enumerate(spec.addresses):
            path = f"spec.addresses[{index}]"
            try:
                ip = parse_ip(text)
            except RangeSyntaxError as exc:
                out.append(doc.diagnostic(path, str(exc)))
                continue
            if ip.version in families:
                out.append(doc.diagnostic(path, "two addresses of the same family; a dual-stack Service "
                                          "takes one IPv4 and one IPv6 address"))
            families.add(ip.version)
            # With no pool named, any pool may hold the address, including one that failed on its own.
            problem = _address_problem(ip, spec.pool, ranges) if spec.pool or not pools.failed else None
            if problem is not None:
                out.append(doc.diagnostic(path, problem))
            earlier_claim = claimed.setdefault(ip, (doc, index))
            if earlier_claim[0] is not doc:
                other = earlier_claim[0].model
                assert isinstance(other, ServiceExposure)
                if spec.sharingKey is None or spec.sharingKey != other.spec.sharingKey:
                    where = earlier_claim[0].origin_of(f"spec.addresses[{earlier_claim[1]}]")
                    out.append(doc.diagnostic(path, f'{ip} is already requested by ServiceExposure '
                                              f'"{earlier_claim[0].name}" ({where}); give both the same '
                                              "sharingKey to share it, or pick another address",
                                              related=(where,)))
    return out


def _address_problem(ip: IPAddress, pool_name: str | None, ranges: list[PoolRange]) -> str | None:
    candidates = [(rng, doc) for rng, doc, _ in ranges if pool_name is None or doc.name == pool_name]
    holder = next((doc for rng, doc in candidates if rng.contains(ip)), None)
    if holder is None:
        if pool_name is not None:
            shown = ", ".join(str(rng) for rng, _ in candidates)
            return f'{ip} is outside pool "{pool_name}" ({shown})'
        return f"{ip} is inside no declared pool; add it to a pool or pick an address from one"
    pool = holder.model
    assert isinstance(pool, IPAddressPool)
    if pool.spec.avoidBuggyIPs and is_buggy(ip):
        return f'{ip} ends in .0 or .255, which pool "{holder.name}" avoids (avoidBuggyIPs: true)'
    return None


# --- tunnels and routes ----------------------------------------------------------------------


def _tunnels(tunnels: Iterable[LoadedDocument]) -> list[Diagnostic]:
    out = []
    host_ports: dict[int, LoadedDocument] = {}  # metrics port -> first host connector on it
    for doc in tunnels:
        assert isinstance(doc.model, Tunnel)
        spec = doc.model.spec
        if spec.connector is not None and spec.connector.where == "host":
            first = host_ports.setdefault(spec.connector.metricsPort, doc)
            if first is not doc:
                out.append(doc.diagnostic("spec.connector.metricsPort", f"port {spec.connector.metricsPort} is "
                                          f'already the metrics port of tunnel "{first.name}"\'s connector on the '
                                          "host; cloudflared would not start: give each its own",
                                          related=(first.origin,)))
        if not spec.tunnelId and not spec.tunnelName:
            out.append(doc.diagnostic("spec", "a tunnel needs tunnelId (the tunnel's UUID) or tunnelName"))
        if spec.tunnelId:
            try:
                uuid.UUID(spec.tunnelId)
            except ValueError:
                out.append(doc.diagnostic("spec.tunnelId", f'"{spec.tunnelId}" is not a tunnel id: '
                                          "write the tunnel's UUID (cloudflared tunnel list shows it)"))
        problem = origin_problem(spec.catchAll)
        if problem is not None:
            out.append(doc.diagnostic("spec.catchAll", problem))
        if spec.mode == "remote" and spec.dns.manage and not spec.dns.zones:
            out.append(doc.diagnostic("spec.dns", "a remote tunnel that manages DNS must list dns.zones "
                                      "(the Cloudflare zones its routes may create records in)"))
        for index, zone in enumerate(spec.dns.zones):
            problem = zone_problem(zone)
            if problem is not None:
                out.append(doc.diagnostic(f"spec.dns.zones[{index}]", problem))
        out += _connector(doc)
    return out


# A label value (the tunnel's name labels its connector objects): Kubernetes' limit and syntax.
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_LABEL_KEY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if len(name) > 63 or not _LABEL_KEY_NAME.match(name):
        return f'"{key}" is not a label key (a name of at most 63 alphanumerics, "-", "_" or ".")'
    if prefix and (len(prefix) > 253 or not re.match(DNS_SUBDOMAIN, prefix)):
        return f'"{key}" is not a label key: its prefix must be a DNS subdomain'
    return None


def _connector(doc: LoadedDocument) -> list[Diagnostic]:
    """What a connector needs beyond its own fields: a name Kubernetes can label with, the tunnel's
    token for an in-cluster one, credentials for one on the host."""
    assert isinstance(doc.model, Tunnel)
    spec, name = doc.model.spec, doc.model.metadata.name
    connector = spec.connector
    if connector is None:
        return []
    out = []
    if connector.where == "cluster":
        if len(name) > 63 or not _LABEL_VALUE.match(name):
            out.append(doc.diagnostic("metadata.name", f'"{name}" is too long for an in-cluster connector: its '
                                      "objects carry the name as a label value (at most 63 characters)"))
        if spec.mode == "local" and not (spec.tunnelId and spec.accountId):
            out.append(doc.diagnostic("spec.connector", "an in-cluster connector of a local tunnel runs with the "
                                      "tunnel's token, which portside fetches from the Cloudflare API: set "
                                      "tunnelId and accountId"))
        for key, value in connector.nodeSelector.items():
            problem = _label_key_problem(key)
            if problem is None and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                problem = f'"{value}" is not a label value (at most 63 alphanumerics, "-", "_" or ".")'
            if problem is not None:
                out.append(doc.diagnostic(f"spec.connector.nodeSelector.{key}", problem))
    elif spec.mode == "local" and not (spec.credentialsFile or connector.tokenFile):
        out.append(doc.diagnostic("spec.connector", "cloudflared on the host needs the tunnel's credentials: set "
                                  "spec.credentialsFile (the tunnel's JSON credentials) or connector.tokenFile "
                                  "(a file holding its token)"))
    return out


def _routes(routes: Iterable[LoadedDocument], tunnels: dict[str, LoadedDocument]) -> list[Diagnostic]:
    out = []
    seen: dict[tuple[str, str], LoadedDocument] = {}  # (hostname, path) -> first route
    host_tunnel: dict[str, LoadedDocument] = {}  # hostname -> first route, to spot a second tunnel
    for doc in routes:
        route = doc.model
        assert isinstance(route, TunnelRoute)
        spec = route.spec
        checks: list[tuple[str, Callable[[str], str | None], str | None]] = [
            ("spec.hostname", hostname_problem, spec.hostname),
            ("spec.path", path_problem, spec.path),
            ("spec.url", origin_problem, spec.url),
        ]
        bad_hostname = False
        for path, check, value in checks:
            problem = check(value) if value is not None else None
            if problem is not None:
                out.append(doc.diagnostic(path, problem))
                bad_hostname = bad_hostname or path == "spec.hostname"
        tunnel = tunnels.get(spec.tunnel)
        if tunnel is None and spec.tunnel not in tunnels:
            out.append(doc.diagnostic("spec.tunnel", _unknown("Tunnel", spec.tunnel, tunnels)))
        elif tunnel is not None and not bad_hostname:
            out += _zone_check(doc, spec.hostname, tunnel)
        if bad_hostname:
            continue
        host = spec.hostname.lower()
        key = (host, spec.path or "")
        earlier = seen.setdefault(key, doc)
        if earlier is not doc:
            shown = f"{spec.hostname} path {spec.path}" if spec.path else spec.hostname
            where = earlier.origin_of("spec.hostname")
            out.append(doc.diagnostic("spec.hostname", f'{shown} is already routed by TunnelRoute '
                                      f'"{earlier.name}" ({where}); each hostname and path may be routed once',
                                      related=(where,)))
            continue
        first = host_tunnel.setdefault(host, doc)
        assert isinstance(first.model, TunnelRoute)
        other_tunnel = first.model.spec.tunnel
        if other_tunnel != spec.tunnel:
            out.append(doc.diagnostic("spec.tunnel", f'{spec.hostname} is already routed through tunnel '
                                      f'"{other_tunnel}" by TunnelRoute "{first.name}" ({first.origin}); '
                                      "a hostname's DNS record can point to one tunnel only",
                                      related=(first.origin,)))
    return out


def _zone_check(doc: LoadedDocument, hostname: str, tunnel: LoadedDocument) -> list[Diagnostic]:
    model = tunnel.model
    assert isinstance(model, Tunnel)
    zones = model.spec.dns.zones
    if not zones or any(in_zone(hostname, zone) for zone in zones):
        return []
    return [doc.diagnostic("spec.hostname", f'{hostname} is outside the zones of tunnel "{tunnel.name}" '
                           f"({', '.join(zones)}); add its zone to the tunnel's dns.zones "
                           "or fix the hostname")]


# --- dynamic DNS ------------------------------------------------------------------------------


def _dynamic_dns(documents: Iterable[LoadedDocument], routes: Iterable[LoadedDocument]) -> list[Diagnostic]:
    """Hostnames valid and in their zone; each kept by one DynamicDNS, none also routed."""
    out = []
    routed: dict[str, LoadedDocument] = {}
    for route in routes:
        assert isinstance(route.model, TunnelRoute)
        routed.setdefault(route.model.spec.hostname.lower(), route)
    seen: dict[str, LoadedDocument] = {}
    for doc in documents:
        assert isinstance(doc.model, DynamicDNS)
        spec = doc.model.spec
        if spec.zone is not None and (problem := zone_problem(spec.zone)) is not None:
            out.append(doc.diagnostic("spec.zone", problem))
        for index, hostname in enumerate(spec.hostnames):
            where = f"spec.hostnames[{index}]"
            problem = hostname_problem(hostname)
            if problem is None and spec.zone is not None and not in_zone(hostname, spec.zone):
                problem = f"{hostname} is outside zone {spec.zone}"
            if problem is not None:
                out.append(doc.diagnostic(where, problem))
                continue
            host = hostname.lower()
            if host in routed:
                route = routed[host]
                out.append(doc.diagnostic(where, f'{hostname} is routed through a tunnel by TunnelRoute '
                                          f'"{route.name}" ({route.origin_of("spec.hostname")}); a hostname '
                                          "either follows the public address or points to a tunnel"))
                continue
            earlier = seen.setdefault(host, doc)
            if earlier is not doc:
                out.append(doc.diagnostic(where, f'{hostname} is already kept by DynamicDNS "{earlier.name}" '
                                          f"({earlier.origin}); each hostname may be kept once"))
    return out


def _unexposed_routes(documents: Sequence[LoadedDocument],
                      invalid_names: Mapping[str, set[str]]) -> list[Diagnostic]:
    """Routes to a Service that no ServiceExposure of the repo exposes: a warning, not an error,
    since a LoadBalancer Service in the cluster gets an IP without one (or has one already)."""
    exposed = {d.model.spec.service.key for d in documents if isinstance(d.model, ServiceExposure)}
    exposed |= invalid_names.get(SERVICE_KEYS, set())  # its exposure failed: already reported
    out = []
    for doc in documents:
        route = doc.model
        if not isinstance(route, TunnelRoute) or route.spec.service is None:
            continue
        key = route.spec.service.key
        if key not in exposed:
            out.append(doc.diagnostic(
                "spec.service", f"Service {key} is not exposed by any ServiceExposure in the repo: the "
                f"route waits (and is left out of tunnel {route.spec.tunnel}'s config) until the Service "
                "has a LoadBalancer IP in the cluster; add a ServiceExposure if portside should give it one"))
    return out
