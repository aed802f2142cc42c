"""The Kubernetes backend: Services, Nodes, EndpointSlices in; Service status, Events and the
announcement ConfigMap out — through the official client, over the narrowest slice of the API.

Reads use raw JSON (``_preload_content=False``): 10,000 Services decode in a fraction of the time
the generated models take, and the planner wants plain values anyway. Every write carries the
resourceVersion the plan was made against, so a concurrent change is a 409 -> ConflictError ->
re-read and re-plan, never a blind overwrite.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from reconciler.backends.base import ApplyReport
from reconciler.backends.kubeconnectors import KubeConnectors
from reconciler.backends.kubeerrors import api_error
from reconciler.backends.tunnels import TunnelSide
from reconciler.common.errors import ConflictError, ProviderError, StateError
from reconciler.desired.state import DesiredState
from reconciler.importing import LiveMetalLB
from reconciler.importing.documents import UNSUPPORTED_METALLB_KINDS
from reconciler.planning.announcement_table import (
    CONFIGMAP_NAME,
    decode_table,
    encode_table,
    table_from_configmap,
    table_to_configmap_data,
)
from reconciler.planning.live import (
    ANNOTATION_POOL,
    LiveNode,
    LiveService,
    LiveState,
    ServicePort,
)
from reconciler.planning.plan import Change, Plan
from reconciler.planning.planner import ANNOUNCEMENTS_ARTIFACT
from reconciler.tunnels.local import DirectoryStore

if TYPE_CHECKING:  # the SDK takes 0.35 s to import; only a token needs it
    from reconciler.providers.cloudflare import CloudflareProvider

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
PAGE = 500
COMPONENT = "portside"
METALLB_GROUP = "metallb.io"
# MetalLB's kinds -> (version, plural). BGPPeer moved to v1beta2; the others are v1beta1.
METALLB_KINDS = {
    "IPAddressPool": ("v1beta1", "ipaddresspools"),
    "L2Advertisement": ("v1beta1", "l2advertisements"),
    "BGPPeer": ("v1beta2", "bgppeers"),
    "BGPAdvertisement": ("v1beta1", "bgpadvertisements"),
    "Community": ("v1beta1", "communities"),
    "BFDProfile": ("v1beta1", "bfdprofiles"),
}


def _ready_nodes(slices: list[dict[str, Any]]) -> dict[str, frozenset[str]]:
    """service key -> nodes with at least one ready endpoint (for externalTrafficPolicy: Local)."""
    nodes: dict[str, set[str]] = {}
    for s in slices:
        meta = s.get("metadata", {})
        service = meta.get("labels", {}).get("kubernetes.io/service-name")
        if not service:
            continue
        key = f"{meta.get('namespace')}/{service}"
        for endpoint in s.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready")
            if ready is not False and endpoint.get("nodeName"):  # unset "ready" means ready
                nodes.setdefault(key, set()).add(endpoint["nodeName"])
    return {key: frozenset(v) for key, v in nodes.items()}


def _service(raw: dict[str, Any]) -> LiveService:
    meta, spec = raw.get("metadata", {}), raw.get("spec", {})
    ingress = (raw.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    return LiveService(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        ports=tuple(ServicePort(int(p["port"]), p.get("protocol", "TCP"), p.get("name"))
                    for p in spec.get("ports") or []),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        selector=dict(spec.get("selector") or {}),
        load_balancer_class=spec.get("loadBalancerClass"),
        load_balancer_ip=spec.get("loadBalancerIP") or None,
        external_traffic_policy=spec.get("externalTrafficPolicy", "Cluster"),
        ip_family_policy=spec.get("ipFamilyPolicy", "SingleStack"),
        ip_families=tuple(spec.get("ipFamilies") or ("IPv4",)),
        ingress=tuple(i["ip"] for i in ingress if i.get("ip")),
    )


def _node(raw: dict[str, Any]) -> LiveNode:
    meta, status = raw.get("metadata", {}), raw.get("status", {})
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return LiveNode(name=meta["name"], labels=dict(meta.get("labels") or {}),
                    address=addresses.get("InternalIP") or addresses.get("ExternalIP"), ready=ready)


CLOUDFLARED_PREFIX = "portside-cloudflared-"
CLOUDFLARED_KEY = "config.yml"
TUNNEL_LABEL = "portside.io/cloudflared-tunnel"


class ConfigMapStore:
    """``local`` tunnels in a cluster: ConfigMap ``portside-cloudflared-<tunnel>`` (key
    ``config.yml``) in portside's namespace, for a cloudflared Deployment to mount."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core = core
        self.namespace = namespace

    def where(self, name: str) -> str:
        return f"ConfigMap {self.namespace}/{CLOUDFLARED_PREFIX}{name}"

    def read(self, name: str) -> str | None:
        try:
            response = self.core.read_namespaced_config_map(CLOUDFLARED_PREFIX + name, self.namespace,
                                                            _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise OSError(str(api_error(exc, f"reading {self.where(name)}"))) from exc
        data = json.loads(response.data).get("data") or {}
        text = data.get(CLOUDFLARED_KEY)
        return str(text) if text is not None else ""

    def names(self) -> list[str]:
        try:
            response = self.core.list_namespaced_config_map(self.namespace, label_selector=TUNNEL_LABEL,
                                                            _preload_content=False)
        except ApiException as exc:
            raise OSError(str(api_error(exc, "listing cloudflared ConfigMaps"))) from exc
        items = json.loads(response.data).get("items") or []
        return sorted(str(i["metadata"]["labels"][TUNNEL_LABEL]) for i in items)

    def write(self, name: str, text: str) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": CLOUDFLARED_PREFIX + name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": COMPONENT, TUNNEL_LABEL: name}},
                "data": {CLOUDFLARED_KEY: text}}
        try:
            try:  # the whole file is ours: an unconditional replace, or a create the first time
                self.core.replace_namespaced_config_map(CLOUDFLARED_PREFIX + name, self.namespace, body,
                                                        _preload_content=False)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.core.create_namespaced_config_map(self.namespace, body, _preload_content=False)
        except ApiException as exc:
            raise api_error(exc, f"writing {self.where(name)}") from exc

    def delete(self, name: str) -> None:
        try:
            self.core.delete_namespaced_config_map(CLOUDFLARED_PREFIX + name, self.namespace,
                                                   _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"deleting {self.where(name)}") from exc


class KubeBackend:
    read_only = False

    def __init__(self, api: client.ApiClient, namespace: str, cloudflare: CloudflareProvider | None,
                 local_tunnels_dir: Path | None = None) -> None:
        self.api = api
        self.namespace = namespace
        # Typed as Any: the generated client wants its models, we send and read raw JSON.
        self.core: Any = client.CoreV1Api(api)
        self.discovery: Any = client.DiscoveryV1Api(api)
        store = DirectoryStore(local_tunnels_dir) if local_tunnels_dir else ConfigMapStore(self.core, namespace)
        self.tunnels = TunnelSide(store, cloudflare)
        self.connectors = KubeConnectors(api, namespace)
        self._configmap_store = isinstance(store, ConfigMapStore)
        host = api.configuration.host
        self.description = f"Kubernetes cluster at {host}"
        # What the last read saw, so writes can be conditional on it.
        self._service_versions: dict[str, str] = {}
        self._configmap_version: str | None = None

    @classmethod
    def connect(cls, *, kubeconfig: Path | None, namespace: str, cloudflare: CloudflareProvider | None,
                local_tunnels_dir: Path | None) -> KubeBackend:
        configuration = client.Configuration()
        try:
            if kubeconfig is None:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig), client_configuration=configuration)
        except (config.ConfigException, OSError, ValueError) as exc:
            where = kubeconfig or "the in-cluster service account"
            raise StateError(f"cannot load Kubernetes credentials from {where}: {exc}") from exc
        return cls(client.ApiClient(configuration), namespace, cloudflare, local_tunnels_dir)

    # --- reading ---------------------------------------------------------------------------

    def _list(self, call: Callable[..., Any], doing: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            try:
                response = call(limit=PAGE, _continue=token, _preload_content=False, **kwargs)
            except ApiException as exc:
                raise api_error(exc, doing) from exc
            body = json.loads(response.data)
            yield from body.get("items") or []
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return

    def read(self, desired: DesiredState) -> LiveState:
        with self._reachable():
            return self._read(desired)

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """A dead or unreachable API server is one line that names it, not a urllib3 traceback."""
        try:
            yield
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ProviderError(f"cannot reach the Kubernetes API at {self.api.configuration.host}: {reason}",
                                temporary=True) from exc

    def _read(self, desired: DesiredState) -> LiveState:
        raw_services = [s for s in self._list(self.core.list_service_for_all_namespaces, "listing Services")
                        if (s.get("spec") or {}).get("type") == "LoadBalancer"]
        self._service_versions = {
            f"{s['metadata'].get('namespace')}/{s['metadata']['name']}": s["metadata"].get("resourceVersion", "")
            for s in raw_services
        }
        nodes = tuple(_node(n) for n in self._list(self.core.list_node, "listing Nodes"))
        namespaces = {n["metadata"]["name"]: dict(n["metadata"].get("labels") or {})
                      for n in self._list(self.core.list_namespace, "listing Namespaces")}
        slices = list(self._list(self.discovery.list_endpoint_slice_for_all_namespaces, "listing EndpointSlices"))
        tunnels, zones = self.tunnels.read(desired)
        tokens, problems = self.tunnels.connector_tokens(desired, tunnels)
        return LiveState(
            services=tuple(_service(s) for s in raw_services),
            nodes=nodes,
            namespace_labels=namespaces,
            ready_endpoint_nodes=_ready_nodes(slices),
            announcements=self._read_announcements(),
            tunnels=tunnels,
            zones=zones,
            public_addresses=self.tunnels.addresses(desired),
            connectors=self.connectors.read(tokens, problems, configmaps=self._configmap_store),
        )

    def read_metallb(self) -> LiveMetalLB:
        """MetalLB's live objects (all namespaces); a kind whose CRD is not installed is none."""
        with self._reachable():
            custom: Any = client.CustomObjectsApi(self.api)
            found: dict[str, list[dict[str, Any]]] = {}
            for kind, (version, plural) in METALLB_KINDS.items():
                try:
                    found[kind] = list(self._list(custom.list_cluster_custom_object, f"listing MetalLB {kind}s",
                                                  group=METALLB_GROUP, version=version, plural=plural))
                except ProviderError as exc:
                    if exc.status != 404:  # 404: MetalLB (or that CRD) is not installed
                        raise
                    found[kind] = []
        unsupported = tuple(
            f"{kind} {meta.get('namespace')}/{meta.get('name')}"
            for kind in UNSUPPORTED_METALLB_KINDS for meta in (o.get("metadata") or {} for o in found[kind]))
        return LiveMetalLB(pools=tuple(found["IPAddressPool"]), advertisements=tuple(found["L2Advertisement"]),
                           unsupported=unsupported)

    def _read_announcements(self) -> str | None:
        try:
            response = self.core.read_namespaced_config_map(CONFIGMAP_NAME, self.namespace,
                                                            _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                self._configmap_version = None
                return None
            raise api_error(exc, f"reading ConfigMap {self.namespace}/{CONFIGMAP_NAME}") from exc
        raw = json.loads(response.data)
        self._configmap_version = raw["metadata"].get("resourceVersion")
        try:
            return encode_table(table_from_configmap(raw.get("data"), raw.get("binaryData")))
        except StateError as exc:
            log.warning("the published announcement table is unreadable and will be rewritten: %s", exc)
            return None

    # --- writing ---------------------------------------------------------------------------

    def apply(self, plan: Plan) -> ApplyReport:
        with self._reachable():
            return self._apply(plan)

    def _apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        changes = plan.actionable
        services = [c for c in changes if c.target.kind == "Service"]
        for change in services:
            self._write_service(change)
            report.applied += 1
        for change in plan.changes:
            if change.target.kind == "Service" and change.action == "conflict":
                self._event(change.target.id, "Warning", "AllocationFailed", change.reason)
        if ANNOUNCEMENTS_ARTIFACT in plan.artifacts:
            self._write_announcements(str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT]))
            report.applied += sum(1 for c in changes if c.target.kind == "Announcement")
        report.merge(self.tunnels.apply(plan))
        report.merge(self.connectors.apply(changes))
        return report

    def _write_service(self, change: Change) -> None:
        namespace, _, name = change.target.id.partition("/")
        after = change.after or {"ingress": [], "pool": None}
        version = self._service_versions.get(change.target.id)
        status_patch: dict[str, Any] = {
            "metadata": {"resourceVersion": version},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in after["ingress"]]}},
        }
        doing = f"updating the status of Service {change.target.id}"
        try:
            response = self.core.patch_namespaced_service_status(
                name, namespace, status_patch, _content_type=MERGE_PATCH, _preload_content=False)
            version = json.loads(response.data)["metadata"]["resourceVersion"]
            doing = f"annotating Service {change.target.id}"
            annotation_patch = {"metadata": {"resourceVersion": version,
                                             "annotations": {ANNOTATION_POOL: after["pool"]}}}
            self.core.patch_namespaced_service(name, namespace, annotation_patch, _content_type=MERGE_PATCH,
                                               _preload_content=False)
        except ApiException as exc:
            raise api_error(exc, doing) from exc
        if change.after is None:
            self._event(change.target.id, "Normal", "IPRevoked", change.reason)
        else:
            self._event(change.target.id, "Normal", "IPAllocated", change.reason)

    def _event(self, service: str, kind: str, reason: str, message: str) -> None:
        """An Event on the Service, for `kubectl describe`; failing to record one is not fatal."""
        namespace, _, name = service.partition("/")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": name, "namespace": namespace},
            "type": kind, "reason": reason, "message": message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.core.create_namespaced_event(namespace, body, _preload_content=False)
        except ApiException as exc:
            log.warning("could not record event %s on %s: %s", reason, service, api_error(exc, "recording"))

    def _write_announcements(self, text: str) -> None:
        table = decode_table(text, "the planned announcement table")  # never publish what speakers reject
        data, binary = table_to_configmap_data(table)
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP_NAME, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": COMPONENT}},
            "data": data, "binaryData": binary,
        }
        try:
            if self._configmap_version is None:
                response = self.core.create_namespaced_config_map(self.namespace, body, _preload_content=False)
            else:
                body["metadata"]["resourceVersion"] = self._configmap_version
                response = self.core.replace_namespaced_config_map(CONFIGMAP_NAME, self.namespace, body,
                                                                   _preload_content=False)
        except ApiException as exc:
            if exc.status == 404 and self._configmap_version is not None:
                raise ConflictError(f"ConfigMap {self.namespace}/{CONFIGMAP_NAME} was deleted meanwhile") from exc
            raise api_error(exc, f"writing ConfigMap {self.namespace}/{CONFIGMAP_NAME}") from exc
        self._configmap_version = json.loads(response.data)["metadata"]["resourceVersion"]
