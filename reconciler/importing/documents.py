"""The live world as documents: MetalLB's objects cleaned, Services pinned where needed, tunnels.

Zero churn is the rule. Every document is checked against portside's own models before it is
written, so the repo an import produces always validates, and every choice below is made so
that the first plan against the same world moves nothing:

- pools and advertisements are MetalLB's own objects with the server's fields removed (and the
  values the CRD defaults filled in dropped again, so they read as a person writes them);
- a Service that holds an IP gets a ServiceExposure only when automatic allocation, run on an
  empty cluster in portside's deterministic order, would not give it that IP anyway; the
  exposure then pins the addresses it holds. Pinning one Service can change what the others
  would get, so this runs to a fixed point;
- a remote tunnel's ingress rules become a Tunnel and TunnelRoutes; an origin URL that is a
  LoadBalancer IP and port of a Service becomes a reference to that Service, so the route
  follows the Service from now on; a DNS record that is the tunnel's CNAME but not portside's
  is adopted (the plan shows the adoption and nothing else changes).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from ruamel.yaml import YAML

from reconciler.allocator import Allocation, allocate, service_requests
from reconciler.allocator.requests import metallb_annotation
from reconciler.desired.ipranges import RangeSyntaxError, canonical_ip
from reconciler.desired.models import (
    METALLB_API,
    PORTSIDE_API,
    IPAddressPool,
    L2Advertisement,
    ServiceExposure,
    Tunnel,
    TunnelRoute,
)
from reconciler.planning.live import (
    LOADBALANCER_CLASS,
    METALLB_ALLOW_SHARED_IP,
    DNSRecord,
    IngressRule,
    LiveService,
    LiveState,
)
from reconciler.tunnels.dns import owner_of, tunnel_target, zone_for
from reconciler.tunnels.rules import origin_url

# MetalLB kinds portside does not implement (BGP mode): listed by an import, never written.
UNSUPPORTED_METALLB_KINDS = ("BGPPeer", "BGPAdvertisement", "Community", "BFDProfile")

# Values MetalLB's CRDs default; an object read back from the server carries them even when its
# author never wrote them. Dropped again so the imported file reads like the original.
_POOL_DEFAULTS = {"autoAssign": True, "avoidBuggyIPs": False}
_NAME_UNSAFE = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True)
class LiveMetalLB:
    """MetalLB's objects as the API server returns them (plain JSON)."""

    pools: tuple[Mapping[str, Any], ...] = ()
    advertisements: tuple[Mapping[str, Any], ...] = ()
    unsupported: tuple[str, ...] = ()  # "BGPPeer metallb-system/peer-1": found, not imported


@dataclass(frozen=True)
class LiveRemoteTunnel:
    """A remote tunnel as Cloudflare holds it, with the DNS records of the zones it could use."""

    account_id: str
    tunnel_id: str
    name: str
    ingress: tuple[IngressRule, ...]
    origin_request: Mapping[str, object] = field(default_factory=dict)
    zones: tuple[str, ...] = ()
    records: tuple[DNSRecord, ...] = ()


@dataclass
class ImportedWorld:
    """What an import writes: files (path relative to the repo -> text) and what it says."""

    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # skipped objects and why; things to review
    pinned: list[str] = field(default_factory=list)  # Services that got a ServiceExposure
    kinds: Counter[str] = field(default_factory=Counter)  # documents written, by kind

    def add(self, path: str, header: str, docs: Sequence[Commented]) -> None:
        self.files[path] = header + _documents(docs)
        self.kinds.update(doc["kind"] for _, doc in docs)


def import_world(metallb: LiveMetalLB, live: LiveState, tunnels: Sequence[LiveRemoteTunnel], *,
                 source: str, owner_id: str = "portside") -> ImportedWorld:
    """The documents that reproduce ``live``; deterministic, whatever order things were read in."""
    world = ImportedWorld()
    world.notes.extend(f"{what}: not imported (portside has no BGP mode)" for what in sorted(metallb.unsupported))
    header = f"# Imported by `portside import` from {source}.\n# Review, then commit.\n"
    pools = _clean_all(metallb.pools, IPAddressPool, _clean_pool, world)
    advertisements = _clean_all(metallb.advertisements, L2Advertisement, _clean_advertisement, world)
    if pools:
        world.add("metallb/ipaddresspools.yaml", header, pools)
    if advertisements:
        world.add("metallb/l2advertisements.yaml", header, advertisements)
    pool_models = [IPAddressPool.model_validate(doc) for _, doc in pools]
    exposures = _exposures(pool_models, live, world)
    if exposures:
        world.add("services/exposures.yaml", header, exposures)
    for tunnel in sorted(tunnels, key=lambda t: (t.name, t.tunnel_id)):
        docs = _tunnel_documents(tunnel, live, owner_id, world)
        world.add(f"tunnels/{docs[0][1]['metadata']['name']}.yaml", header, docs)
    return world


# --- MetalLB's objects ----------------------------------------------------------------------

Commented = tuple[str, dict[str, Any]]  # (comment lines, document)


def _where(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def _clean_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    meta = raw.get("metadata") or {}
    out: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    if meta.get("labels"):  # ipAddressPoolSelectors select on them
        out["labels"] = dict(sorted(meta["labels"].items()))
    return out


def _clean_pool(raw: Mapping[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in (raw.get("spec") or {}).items() if _POOL_DEFAULTS.get(k, object()) != v}
    return {"apiVersion": METALLB_API, "kind": "IPAddressPool", "metadata": _clean_metadata(raw), "spec": spec}


def _clean_advertisement(raw: Mapping[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in (raw.get("spec") or {}).items() if v not in (None, [], {})}
    doc: dict[str, Any] = {"apiVersion": METALLB_API, "kind": "L2Advertisement", "metadata": _clean_metadata(raw)}
    if spec:
        doc["spec"] = spec
    return doc


def _clean_all(raws: Iterable[Mapping[str, Any]], model: type[IPAddressPool] | type[L2Advertisement],
               clean: Callable[[Mapping[str, Any]], dict[str, Any]], world: ImportedWorld) -> list[Commented]:
    out: list[Commented] = []
    kind = model.__name__
    for raw in sorted(raws, key=_where):
        doc = clean(raw)
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            world.notes.append(f"{kind} {_where(raw)}: not imported, portside cannot take it as it is ({problem})")
            continue
        out.append((f"from {METALLB_API} {kind} {_where(raw)}", doc))
    return out


# --- Services -------------------------------------------------------------------------------


def _exposures(pools: Sequence[IPAddressPool], live: LiveState, world: ImportedWorld) -> list[Commented]:
    """ServiceExposures for the Services automatic allocation would not give their IPs to."""
    ours = [s for s in (*live.services, *live.released)
            if s.load_balancer_class in (None, LOADBALANCER_CLASS)]  # others belong to another controller
    holders = {s.key: s for s in ours if s.ingress}
    fresh = [replace(s, ingress=()) for s in ours]
    pinned: dict[str, ServiceExposure] = {}
    would_get: dict[str, tuple[str, ...]] = {}
    # Automatic allocation goes in key order and pinned Services claim their IPs before it, so
    # pinning the first Service that would move leaves everyone before it as it was: one pin per
    # round, in key order, pins no more than needed (a pin can make a later Service fit again).
    while True:
        requests, _ = service_requests(fresh, list(pinned.values()))
        allocations = {a.key: a for a in allocate(pools, requests, live.namespace_labels)}
        first = next((key for key, svc in sorted(holders.items())
                      if key not in pinned and set(_got(allocations, key)) != _ips(svc)), None)
        if first is None:
            break
        would_get[first] = _got(allocations, first)
        pinned[first] = _pin(holders[first])
    for key in pinned:
        got = allocations.get(key)
        if got is None or set(got.ips) != _ips(holders[key]):
            reason = got.pending_reason if got is not None and got.pending_reason else "no pool serves it"
            world.notes.append(f"Service {key} holds {', '.join(holders[key].ingress)}, which portside would "
                               f"not keep: {reason}; review its ServiceExposure")
    world.pinned = sorted(pinned)
    out: list[Commented] = []
    for key in sorted(pinned):
        held = ", ".join(holders[key].ingress)
        instead = ", ".join(would_get.get(key, ())) or "nothing"
        comment = f"{key} holds {held}; automatic allocation would give it {instead}, so it is pinned"
        service = pinned[key].spec.service
        out.append((comment, {
            "apiVersion": PORTSIDE_API, "kind": "ServiceExposure", "metadata": {"name": pinned[key].metadata.name},
            "spec": {"service": {"namespace": service.namespace, "name": service.name},
                     "addresses": list(pinned[key].spec.addresses),
                     **({"sharingKey": pinned[key].spec.sharingKey} if pinned[key].spec.sharingKey else {})},
        }))
    _unique_names(out, world)
    return out


def _got(allocations: Mapping[str, Allocation], key: str) -> tuple[str, ...]:
    return allocations[key].ips if key in allocations else ()


def _ips(svc: LiveService) -> set[str]:
    return {canonical_ip(ip) for ip in svc.ingress}


def _pin(svc: LiveService) -> ServiceExposure:
    """An exposure that asks for exactly the addresses the Service holds; a Service that shares
    its IP says so with the same sharing key its annotation has (the two must agree)."""
    spec: dict[str, Any] = {"service": {"namespace": svc.namespace, "name": svc.name},
                            "addresses": sorted(svc.ingress, key=lambda ip: (":" in ip, ip))}
    sharing = metallb_annotation(svc, METALLB_ALLOW_SHARED_IP)
    if sharing is not None:
        spec["sharingKey"] = sharing
    return ServiceExposure.model_validate({
        "apiVersion": PORTSIDE_API,
        "kind": "ServiceExposure",
        "metadata": {"name": _name(f"{svc.namespace}-{svc.name}")},
        "spec": spec,
    })


def _unique_names(docs: list[Commented], world: ImportedWorld) -> None:
    """`a-b/c` and `a/b-c` make the same name: the second one gets a short hash of its key."""
    seen: set[str] = set()
    for comment, doc in docs:
        name = doc["metadata"]["name"]
        if name in seen:
            service = doc["spec"]["service"]
            digest = hashlib.sha256(f"{service['namespace']}/{service['name']}".encode()).hexdigest()[:6]
            doc["metadata"]["name"] = _name(f"{name[:240]}-{digest}")
            world.notes.append(f"{comment.split(' ')[0]}: exposure renamed {doc['metadata']['name']} (name clash)")
        seen.add(doc["metadata"]["name"])


def _name(text: str) -> str:
    """A valid Kubernetes object name made from any text (lowercase, [a-z0-9.-], ≤ 253)."""
    name = _NAME_UNSAFE.sub("-", text.lower()).strip("-.")[:253].strip("-.")
    return name or "imported"


# --- tunnels --------------------------------------------------------------------------------


def _tunnel_documents(tunnel: LiveRemoteTunnel, live: LiveState, owner_id: str,
                      world: ImportedWorld) -> list[Commented]:
    name = _name(tunnel.name)
    rules = [r for r in tunnel.ingress if r.hostname is not None]
    catch_all = next((r.service for r in tunnel.ingress if r.hostname is None and r.path is None), None)
    hostnames = sorted({r.hostname for r in rules if r.hostname})
    zones = sorted({z for h in hostnames if (z := zone_for(h, tunnel.zones)) is not None})
    spec: dict[str, Any] = {"mode": "remote", "accountId": tunnel.account_id, "tunnelId": tunnel.tunnel_id,
                            "tunnelName": tunnel.name}
    if catch_all is not None and catch_all != "http_status:404":
        spec["catchAll"] = catch_all
    if tunnel.origin_request:
        spec["originRequest"] = dict(sorted(tunnel.origin_request.items()))
    if zones:
        spec["dns"] = {"zones": zones}
    docs: list[Commented] = [(f"from Cloudflare tunnel {tunnel.name} ({tunnel.tunnel_id})",
                              {"apiVersion": PORTSIDE_API, "kind": "Tunnel", "metadata": {"name": name},
                               "spec": spec})]
    by_ip = _services_by_ip(live)
    records: dict[str, list[DNSRecord]] = {}
    for record in tunnel.records:
        records.setdefault(record.name.lower(), []).append(record)
    used: set[str] = set()
    for rule in rules:
        assert rule.hostname is not None
        route = _route(rule, name, tunnel, by_ip, records.get(rule.hostname, []), owner_id, world)
        route_name = _name(rule.hostname.replace("*", "wildcard"))
        if rule.path is not None or route_name in used:
            digest = hashlib.sha256(f"{rule.hostname}{rule.path or ''}".encode()).hexdigest()[:6]
            route_name = _name(f"{route_name[:240]}-{digest}")
        used.add(route_name)
        doc = {"apiVersion": PORTSIDE_API, "kind": "TunnelRoute", "metadata": {"name": route_name}, "spec": route}
        docs.append((f"rule {rule.hostname}{rule.path or ''} -> {rule.service}", doc))
    for comment, doc in docs:
        model = Tunnel if doc["kind"] == "Tunnel" else TunnelRoute
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            raise ValueError(f"tunnel {tunnel.name}: {comment}: cannot be written as a document: {exc}") from exc
    return docs


def _services_by_ip(live: LiveState) -> dict[str, list[LiveService]]:
    out: dict[str, list[LiveService]] = {}
    for svc in live.services:
        for ip in svc.ingress:
            out.setdefault(canonical_ip(ip), []).append(svc)
    return out


def _route(rule: IngressRule, tunnel: str, live_tunnel: LiveRemoteTunnel, by_ip: Mapping[str, list[LiveService]],
           records: list[DNSRecord], owner_id: str, world: ImportedWorld) -> dict[str, Any]:
    assert rule.hostname is not None
    spec: dict[str, Any] = {"tunnel": tunnel, "hostname": rule.hostname}
    if rule.path is not None:
        spec["path"] = rule.path
    service = _service_reference(rule.service, by_ip)
    if service is None:
        spec["url"] = rule.service
    else:
        spec["service"] = service
    own = {k: v for k, v in rule.origin_request.items() if live_tunnel.origin_request.get(k) != v}
    if own:
        spec["originRequest"] = dict(sorted(own.items()))
    foreign = [r for r in records if owner_of(r.comment) != owner_id]
    if len(records) == 1 and foreign:
        record = foreign[0]
        if record.type == "CNAME" and record.content == tunnel_target(live_tunnel.tunnel_id) and record.proxied:
            spec["adopt"] = True
        else:
            world.notes.append(f"DNS {rule.hostname}: a {record.type} record to {record.content} is not this "
                               f"tunnel's CNAME; left alone (the plan shows it as a conflict)")
    return spec


def _service_reference(url: str, by_ip: Mapping[str, list[LiveService]]) -> dict[str, Any] | None:
    """``scheme://<LB IP>:<port>`` of exactly one Service port -> a reference to that Service."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        return None
    if port is None or host is None or parts.path not in ("", "/") or parts.query:
        return None
    try:
        ip = canonical_ip(host)
    except RangeSyntaxError:
        return None
    matches = [s for s in by_ip.get(ip, []) if any(p.port == port for p in s.ports)]
    if len(matches) != 1 or origin_url(parts.scheme, ip, port) != url.rstrip("/"):
        return None
    svc = matches[0]
    ref: dict[str, Any] = {"namespace": svc.namespace, "name": svc.name, "port": port}
    if parts.scheme != "http":
        ref["scheme"] = parts.scheme
    return ref


# --- YAML -------------------------------------------------------------------------------------


def _documents(docs: Sequence[Commented]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep apiVersion, kind first
    yaml.width = 4096
    out = []
    for comment, doc in docs:
        buffer = io.StringIO()
        yaml.dump(doc, buffer)
        out.append(f"# {comment}\n{buffer.getvalue()}")
    return "---\n".join(out)
