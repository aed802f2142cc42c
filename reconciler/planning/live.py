"""LiveState: the world as the providers read it, reduced to the essence the planner needs.

No resourceVersions, uids or managedFields leak into the comparison: providers keep those to
themselves (for optimistic concurrency) and hand the planner plain values, so a plan shows only
real changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

# Annotations portside reads (MetalLB's, so existing Services keep working) and writes.
ANNOTATION_POOL = "portside.io/pool"  # written: the pool the IPs came from
METALLB_ADDRESS_POOL = "metallb.io/address-pool"
METALLB_LOADBALANCER_IPS = "metallb.io/loadBalancerIPs"
METALLB_ALLOW_SHARED_IP = "metallb.io/allow-shared-ip"
METALLB_ALLOCATED_FROM_POOL = "metallb.io/ip-allocated-from-pool"  # written by MetalLB's controller
LOADBALANCER_CLASS = "portside.io/loadbalancer"
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

Protocol = Literal["TCP", "UDP", "SCTP"]


@dataclass(frozen=True, order=True)
class ServicePort:
    port: int
    protocol: Protocol = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class LiveService:
    """A Service of type LoadBalancer (or, in local mode, a ServiceExposure's stand-in).

    Slots: a large cluster reads 10,000 of them per plan, and an instance dict per Service was
    about 6 MiB of a 10,000-Service diff's peak memory.
    """

    namespace: str
    name: str
    ports: tuple[ServicePort, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    selector: dict[str, str] = field(default_factory=dict)
    load_balancer_class: str | None = None
    load_balancer_ip: str | None = None  # spec.loadBalancerIP (deprecated upstream, still honoured)
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] = "SingleStack"
    ip_families: tuple[str, ...] = ("IPv4",)
    ingress: tuple[str, ...] = ()  # status.loadBalancer.ingress[*].ip, as live now
    # namespace/name, worked out once: asked for ~10 times per Service per plan.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    @property
    def recorded_pool(self) -> str | None:
        """The pool the Service's IPs came from, as recorded on it: portside's annotation, else
        MetalLB's (so a Service MetalLB allocated needs no write to be portside's)."""
        return self.annotations.get(ANNOTATION_POOL) or self.annotations.get(METALLB_ALLOCATED_FROM_POOL)


@dataclass(frozen=True)
class LiveNode:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    address: str | None = None  # InternalIP: where the speaker's heartbeats go
    ready: bool = True


@dataclass(frozen=True)
class IngressRule:
    """One cloudflared ingress rule, as the API or a config file holds it."""

    service: str
    hostname: str | None = None
    path: str | None = None
    origin_request: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.hostname is not None:
            out["hostname"] = self.hostname
        if self.path is not None:
            out["path"] = self.path
        out["service"] = self.service
        if self.origin_request:
            out["originRequest"] = dict(self.origin_request)
        return out


@dataclass(frozen=True)
class LiveTunnel:
    """A tunnel found at Cloudflare (remote) or its config file (local)."""

    name: str  # the Tunnel document's name
    tunnel_id: str | None  # None: not found (yet)
    ingress: tuple[IngressRule, ...] | None  # None: no configuration read
    origin_request: dict[str, object] = field(default_factory=dict)
    error: str | None = None  # why it could not be read; the planner skips it and says so


@dataclass(frozen=True)
class DNSRecord:
    zone: str
    name: str
    type: str
    content: str
    proxied: bool
    comment: str = ""
    record_id: str | None = None
    ttl: int = 1  # seconds; 1 is Cloudflare's "automatic"


@dataclass(frozen=True)
class LiveZone:
    name: str
    zone_id: str | None
    records: tuple[DNSRecord, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class PublicAddress:
    """The network's public address of one family, as its sources gave it: ``ip`` is None when
    they failed or disagreed, and ``problems`` says which source and why (shown in the plan)."""

    ip: str | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveConnectors:
    """The tunnels' connectors as found: portside's objects in the cluster (by label, as read,
    keyed by tunnel) or its unit files on the host, and the token digests the API gives.

    No token is ever held here: ``token_digests`` are one-way digests, compared with the digest
    recorded on each connector's pod template (portside never reads Secrets back).
    """

    cluster: bool = False  # read from a cluster (in-cluster connectors can be kept)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # plain JSON, as read
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_digests: dict[str, str] = field(default_factory=dict)  # tunnel -> digest of its token now
    token_problems: dict[str, str] = field(default_factory=dict)  # tunnel -> why it has no token
    # Where host units live (the absolute directory of the cloudflared configs), None in a cluster.
    host_dir: str | None = None
    units: dict[str, str] = field(default_factory=dict)  # tunnel -> text of its unit file
    configmaps: bool = True  # local tunnels' configs are ConfigMaps a Deployment can mount


@dataclass(frozen=True)
class LiveState:
    services: tuple[LiveService, ...] = ()
    # Stand-ins that still hold IPs but whose Service is gone (local mode: exposure removed);
    # a real cluster has none, since a deleted Service takes its status with it.
    released: tuple[LiveService, ...] = ()
    nodes: tuple[LiveNode, ...] = ()
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # service key -> nodes with a ready endpoint (for externalTrafficPolicy: Local)
    ready_endpoint_nodes: dict[str, frozenset[str]] = field(default_factory=dict)
    announcements: str | None = None  # the published announcement table (encoded), if any
    tunnels: dict[str, LiveTunnel] = field(default_factory=dict)
    zones: dict[str, LiveZone] = field(default_factory=dict)
    # "<DynamicDNS name>/ipv4" (or ipv6) -> what its sources say; absent: not looked up
    public_addresses: dict[str, PublicAddress] = field(default_factory=dict)
    # None: the backend does not keep connectors (a snapshot), so none are planned.
    connectors: LiveConnectors | None = None

    @cached_property
    def _services_by_key(self) -> dict[str, LiveService]:
        return {s.key: s for s in self.services}

    def service(self, key: str) -> LiveService | None:
        return self._services_by_key.get(key)
