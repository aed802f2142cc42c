"""The desired-state document kinds: the single source of truth for their shape.

Field names follow the YAML (camelCase, as Kubernetes and MetalLB write them), so the JSON Schema
generated from these models is what an editor validates against. Every model forbids unknown
fields: a typo must be an error, never silently ignored. Semantic checks that need more than one
field or document (overlapping pools, references) live in :mod:`reconciler.desired.validate`.
"""

# No `from __future__ import annotations` here: pydantic would have to evaluate every field's
# annotation from its string when the class is created, about 10 ms of every start.

import functools
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from reconciler.desired.durations import (
    MAX_NANOSECONDS,
    MAX_SECONDS,
    DurationError,
    duration_nanoseconds,
    nanoseconds_to_seconds,
)

PORTSIDE_API = "portside.io/v1alpha1"
METALLB_API = "metallb.io/v1beta1"

# RFC 1123 label/subdomain, as Kubernetes validates object names and label values.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
Namespace = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
# cloudflared accepts Go durations ("30s", "1m30s") in YAML and integer seconds in the API. The
# pattern is Go's grammar (for editors); the validator then parses the value as Go does and
# refuses what cloudflared would refuse or misread: negative, zero (Go reads 0 as "no timeout"
# or "the default", never as zero) and longer than time.Duration holds (about 292 years).
GO_DURATION_PATTERN = r"^[-+]?(0|((\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$"


def _positive_duration(value: str | int) -> str | int:
    problem = _duration_problem(value)
    if problem is not None:
        raise PydanticCustomError("duration", problem)
    return value


@functools.lru_cache(maxsize=512)  # a repo repeats a few durations ("10s", "30s") thousands of times
def _duration_problem(value: str | int) -> str | None:
    try:
        nanoseconds = duration_nanoseconds(value)
    except DurationError as exc:
        return str(exc)
    shown = f'"{value}"' if isinstance(value, str) else f"{value} seconds"
    if nanoseconds < 0:
        return f"{shown} is negative: a duration must be positive"
    if nanoseconds == 0:
        return (f"{shown} is zero, which cloudflared reads as no timeout or its default, not as zero: "
                "give a positive duration, or leave the field out for cloudflared's default")
    if nanoseconds > MAX_NANOSECONDS:
        return (f"{shown} is longer than the longest duration cloudflared can hold "
                f"({MAX_SECONDS} seconds, about 292 years)")
    return None


Duration = Annotated[
    Annotated[str, StringConstraints(pattern=GO_DURATION_PATTERN)] | int, AfterValidator(_positive_duration)
]


def duration_seconds(value: str | int) -> int | float:
    """A Go duration string or integer seconds, as seconds (an int when whole)."""
    return nanoseconds_to_seconds(duration_nanoseconds(value))


class Strict(BaseModel):
    """Base of every document model: unknown fields are errors, values are immutable.

    Validators are built on first use, not at import: building every one at import was a sixth of
    a small `portside validate`, and a repo without tunnels never needs the tunnel kinds'.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class Metadata(Strict):
    name: Name
    namespace: Namespace | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class LabelSelectorRequirement(Strict):
    key: NonEmpty
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_match_operator(self) -> Self:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(Strict):
    """A Kubernetes label selector; an empty selector matches everything."""

    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.matchLabels.items()):
            return False
        for req in self.matchExpressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


# --- IPAddressPool -------------------------------------------------------------------------


class ServiceAllocation(Strict):
    """Which Services a pool serves first (MetalLB's serviceAllocation)."""

    priority: int | None = None
    namespaces: list[Namespace] = Field(default_factory=list)
    namespaceSelectors: list[LabelSelector] = Field(default_factory=list)
    serviceSelectors: list[LabelSelector] = Field(default_factory=list)


class IPAddressPoolSpec(Strict):
    addresses: list[NonEmpty] = Field(min_length=1)
    autoAssign: bool = True
    avoidBuggyIPs: bool = False
    serviceAllocation: ServiceAllocation | None = None


class IPAddressPool(Strict):
    apiVersion: Literal["portside.io/v1alpha1", "metallb.io/v1beta1"]
    kind: Literal["IPAddressPool"]
    metadata: Metadata
    spec: IPAddressPoolSpec


# --- L2Advertisement -----------------------------------------------------------------------


class L2AdvertisementSpec(Strict):
    ipAddressPools: list[Name] = Field(default_factory=list)
    ipAddressPoolSelectors: list[LabelSelector] = Field(default_factory=list)
    interfaces: list[NonEmpty] = Field(default_factory=list)
    nodeSelectors: list[LabelSelector] = Field(default_factory=list)


class L2Advertisement(Strict):
    apiVersion: Literal["portside.io/v1alpha1", "metallb.io/v1beta1"]
    kind: Literal["L2Advertisement"]
    metadata: Metadata
    spec: L2AdvertisementSpec = Field(default_factory=L2AdvertisementSpec)


# --- ServiceExposure -----------------------------------------------------------------------


class ServiceRef(Strict):
    namespace: Namespace = "default"
    name: Name

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class ExposedPort(Strict):
    """A port of the stand-in Service (local mode, where no real Service exists)."""

    name: str | None = None
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class ServiceExposureSpec(Strict):
    service: ServiceRef
    # The schema says "a name" only: a written null is refused below (absent means any pool).
    pool: Annotated[Name | None, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 253,
                                                 "pattern": DNS_SUBDOMAIN})] = None
    addresses: list[NonEmpty] = Field(default_factory=list, max_length=2)
    sharingKey: NonEmpty | None = None
    # Used only where no live Service exists (the local state directory): the stand-in's shape.
    ports: list[ExposedPort] = Field(default_factory=list)
    externalTrafficPolicy: Literal["Cluster", "Local"] = "Cluster"
    ipFamilyPolicy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] = "SingleStack"

    @field_validator("pool", mode="before")
    @classmethod
    def _pool_named_when_written(cls, value: object) -> object:
        # "pool:" with nothing after it (or a template that rendered empty) must not quietly mean
        # "any pool": leaving the field out says that.
        if value is None:
            raise PydanticCustomError("null_pool", "pool is empty (null): name an IPAddressPool, or leave "
                                      "the field out to take an address from any pool with autoAssign")
        return value


class ServiceExposure(Strict):
    apiVersion: Literal["portside.io/v1alpha1"]
    kind: Literal["ServiceExposure"]
    metadata: Metadata
    spec: ServiceExposureSpec


# --- Tunnel and TunnelRoute ----------------------------------------------------------------


class OriginRequest(Strict):
    """cloudflared's originRequest settings (the subset that means something per origin)."""

    connectTimeout: Duration | None = None
    tlsTimeout: Duration | None = None
    tcpKeepAlive: Duration | None = None
    keepAliveTimeout: Duration | None = None
    keepAliveConnections: int | None = Field(default=None, ge=0)
    noHappyEyeballs: bool | None = None
    httpHostHeader: NonEmpty | None = None
    originServerName: NonEmpty | None = None
    matchSNItoHost: bool | None = None
    caPool: NonEmpty | None = None
    noTLSVerify: bool | None = None
    disableChunkedEncoding: bool | None = None
    http2Origin: bool | None = None
    proxyType: Literal["", "socks"] | None = None
    bastionMode: bool | None = None


class TunnelDNS(Strict):
    manage: bool = True
    zones: list[NonEmpty] = Field(default_factory=list)


# The cloudflared image an in-cluster connector runs unless the Tunnel names another: pinned, so
# a connector changes only when portside (or the user) says so, never on a registry push.
CLOUDFLARED_IMAGE = "cloudflare/cloudflared:2025.11.1"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY)]


class ResourceQuantities(Strict):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class ConnectorResources(Strict):
    """The container's requests and limits, as a Pod spells them."""

    requests: ResourceQuantities | None = None
    limits: ResourceQuantities | None = None


class Toleration(Strict):
    key: NonEmpty | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.operator == "Equal" and self.key is None:
            raise ValueError("a toleration with operator Equal needs a key")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies to effect NoExecute only")
        return self


class TunnelConnector(Strict):
    """Where the tunnel's connector (cloudflared) runs, kept by portside.

    ``cluster``: a Deployment in portside's namespace, the tunnel token in a Secret;
    ``host``: (local state directory) a systemd unit file written beside the config.
    """

    where: Literal["cluster", "host"] = Field(description="cluster: a Deployment in portside's namespace; "
                                              "host: a systemd unit written beside the config (local mode)")
    replicas: int = Field(default=2, ge=1, le=16, description="cluster only; more than 1 adds a "
                          "PodDisruptionBudget")
    image: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\s]+$")] = Field(
        default=CLOUDFLARED_IMAGE, description="cluster only: the cloudflared image")
    resources: ConnectorResources | None = None
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    metricsPort: int = Field(default=2000, ge=1, le=65535,
                             description="cloudflared --metrics port (readiness on /ready in the cluster)")
    # host only: the cloudflared binary the unit runs, and (remote tunnels) the file holding the
    # tunnel token (`cloudflared tunnel run --token-file`); default /etc/cloudflared/<tunnel>.token.
    cloudflaredPath: Annotated[str, StringConstraints(pattern=r"^/[^\s]*$")] = Field(
        default="/usr/bin/cloudflared", description="host only: the cloudflared binary the unit runs")
    tokenFile: Annotated[str, StringConstraints(pattern=r"^/[^\s]*$")] | None = Field(
        default=None, description="host only: a file holding the tunnel token (remote tunnels default to "
        "/etc/cloudflared/<tunnel>.token)")

    @model_validator(mode="after")
    def _fits_where(self) -> Self:
        cluster_only = ("replicas", "image", "resources", "nodeSelector", "tolerations")
        host_only = ("cloudflaredPath", "tokenFile")
        wrong = [f for f in (cluster_only if self.where == "host" else host_only) if f in self.model_fields_set]
        if wrong:
            other = "cluster" if self.where == "host" else "host"
            raise ValueError(f"{', '.join(wrong)}: only for where: {other} (this connector runs on the "
                             f"{self.where})")
        return self


class TunnelSpec(Strict):
    mode: Literal["remote", "local"] = "remote"
    accountId: NonEmpty | None = None
    tunnelId: NonEmpty | None = None
    tunnelName: NonEmpty | None = None
    create: bool = False
    credentialsFile: NonEmpty | None = None
    catchAll: NonEmpty = "http_status:404"
    originRequest: OriginRequest | None = None
    dns: TunnelDNS = Field(default_factory=TunnelDNS)
    connector: TunnelConnector | None = None

    @model_validator(mode="after")
    def _identity(self) -> Self:
        if self.mode == "remote" and not self.accountId:
            raise ValueError("a remote tunnel needs accountId (the Cloudflare account that owns it)")
        if self.create and not self.tunnelName:
            raise ValueError("create: true needs tunnelName (the name of the tunnel to create)")
        return self


class Tunnel(Strict):
    apiVersion: Literal["portside.io/v1alpha1"]
    kind: Literal["Tunnel"]
    metadata: Metadata
    spec: TunnelSpec


class RouteService(Strict):
    """An in-cluster Service, resolved to ``scheme://<LoadBalancer IP>:<port>``."""

    namespace: Namespace = "default"
    name: Name
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https", "ws", "wss", "tcp", "ssh", "rdp", "smb"] = "http"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class TunnelRouteSpec(Strict):
    tunnel: Name
    hostname: NonEmpty
    path: NonEmpty | None = None
    service: RouteService | None = None
    url: NonEmpty | None = None
    originRequest: OriginRequest | None = None
    adopt: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.service is None) == (self.url is None):
            raise ValueError("give exactly one of service (an in-cluster Service) or url")
        return self


class TunnelRoute(Strict):
    apiVersion: Literal["portside.io/v1alpha1"]
    kind: Literal["TunnelRoute"]
    metadata: Metadata
    spec: TunnelRouteSpec


# --- DynamicDNS ----------------------------------------------------------------------------


class AddressSource(Strict):
    """Where the network's public address is learnt: an HTTP endpoint or a local interface."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] | None = None
    # text: the body is the address; json: an object with the address under `field` (default
    # "ip"); trace: Cloudflare's /cdn-cgi/trace (`ip=` line); auto: whichever of these fits.
    format: Literal["auto", "text", "json", "trace"] = "auto"
    field: NonEmpty | None = None
    interface: NonEmpty | None = None
    timeout: Duration = "5s"

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.url is None) == (self.interface is None):
            raise ValueError("give exactly one of url (an endpoint that answers with your address) or "
                             "interface (a local interface whose address to use)")
        if self.interface is not None and (self.format != "auto" or self.field is not None):
            raise ValueError("format and field apply to url sources only")
        if self.field is not None and self.format not in ("auto", "json"):
            raise ValueError("field applies to json answers only")
        seconds = duration_seconds(self.timeout)
        if not 0 < seconds <= 60:
            raise ValueError("timeout must be more than 0s and at most 60s")
        return self


class AddressFamily(Strict):
    """How one family's address (IPv4 or IPv6) is found, and when sources count as agreeing."""

    sources: list[AddressSource] = Field(min_length=1, max_length=8)
    # first: the first source (in order) with a usable answer; majority: more than half of the
    # sources that answered agree; all: every source answers, all the same.
    agreement: Literal["first", "majority", "all"] = "first"


class DynamicDNSSpec(Strict):
    hostnames: list[NonEmpty] = Field(min_length=1)
    zone: NonEmpty | None = None  # default: the longest Cloudflare zone that holds each hostname
    proxied: bool = False
    ttl: int = Field(default=300, description="seconds (60-86400), or 1 for Cloudflare's automatic")
    ipv4: AddressFamily | None = None
    ipv6: AddressFamily | None = None
    interval: Duration = "5m"  # how often `portside run` looks the address up again

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.ipv4 is None and self.ipv6 is None:
            raise ValueError("declare ipv4, ipv6 or both: which addresses the records follow")
        if self.ttl != 1 and not 60 <= self.ttl <= 86400:
            raise ValueError("ttl must be 1 (automatic) or 60 to 86400 seconds")
        if self.proxied and self.ttl != 1:
            raise ValueError("a proxied record's TTL is Cloudflare's (automatic): set ttl: 1 or leave proxied off")
        if not 30 <= duration_seconds(self.interval) <= 86400:
            raise ValueError("interval must be between 30s and 24h")
        return self


class DynamicDNS(Strict):
    apiVersion: Literal["portside.io/v1alpha1"]
    kind: Literal["DynamicDNS"]
    metadata: Metadata
    spec: DynamicDNSSpec


Document = IPAddressPool | L2Advertisement | ServiceExposure | Tunnel | TunnelRoute | DynamicDNS

# (apiVersion, kind) -> model; the loader dispatches on this table and nothing else.
KINDS: dict[tuple[str, str], type[Document]] = {
    (PORTSIDE_API, "IPAddressPool"): IPAddressPool,
    (METALLB_API, "IPAddressPool"): IPAddressPool,
    (PORTSIDE_API, "L2Advertisement"): L2Advertisement,
    (METALLB_API, "L2Advertisement"): L2Advertisement,
    (PORTSIDE_API, "ServiceExposure"): ServiceExposure,
    (PORTSIDE_API, "Tunnel"): Tunnel,
    (PORTSIDE_API, "TunnelRoute"): TunnelRoute,
    (PORTSIDE_API, "DynamicDNS"): DynamicDNS,
}

KIND_MODELS: dict[str, type[Document]] = {kind: model for (_, kind), model in KINDS.items()}


def build_all() -> None:
    """Build every model's validator and serializer now instead of on first use.

    For long-running programs, before they start threads: a first use builds by changing the
    class, which pydantic makes safe against concurrent first uses only in recent versions.
    Classes are built in the order they were defined, parts before the kinds holding them, so
    each kind reuses its parts' schemas.
    """
    for model in Strict.__subclasses__():
        model.model_rebuild()
