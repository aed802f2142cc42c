"""A Kubernetes cluster for tests: the fake API server, or the real cluster PORTSIDE_TEST_KUBECONFIG names.

Tests marked `kube` take the `cluster` fixture (tests/conftest.py) and drive the cluster only through
the official client, exactly as they would a real one: Nodes are created and then get their
addresses and conditions through the status subresource, Services' statuses are patched, and
EndpointSlices are created, never seeded through the fake's own methods. Each test works in a
namespace of its own (`cluster.namespace`, plus `cluster.make_namespace()` for more) and names its
Nodes with a per-test prefix (`cluster.add_node()` returns the name); all of it is deleted afterwards.

The code under test reaches the cluster through a `FaultProxy` (`cluster.kubeconfig`), which logs
its requests and injects faults in front of either server. Tests that need the fake itself
(compaction, its internals) are marked `fake` and skipped, with that reason, against a real cluster.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.fakes.fault_proxy import FaultProxy
from tests.fakes.kube_api import FakeKube, LoggedRequest
from tests.fakes.kubeapi.crds import load_crds

REAL_CLUSTER = os.environ.get("PORTSIDE_TEST_KUBECONFIG") or None
# MetalLB's CRDs: shared/ beside the repository (as in CI), served by the fake when present.
METALLB_CRDS = Path(__file__).resolve().parent.parent.parent / "shared" / "metallb-crds"
FAKE_ONLY = ("needs the fake API server's own surface (its request log, fault switches, history compaction "
             "or internals), not a real cluster")

# Every request the kube tests made in this session, theirs and the code's: tests/conftest.py holds
# them against the test runner's RBAC (tests/kube-test-runner-rbac.yaml) at the end.
SESSION_REQUESTS: list[LoggedRequest] = []
RUNNER_RBAC = Path(__file__).resolve().parent / "kube-test-runner-rbac.yaml"

new_client_from_config: Any = config.new_client_from_config
load_kube_config: Any = config.load_kube_config


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.02)


def _raw(response: Any) -> Any:
    return json.loads(response.data)


@dataclass
class Cluster:
    """One test's view of the cluster; see the module docstring."""

    api: client.ApiClient  # the test's own client (through a proxy of its own: no faults, not in `proxy`'s log)
    upstream: Any  # kubernetes.client.Configuration of the server
    proxy: FaultProxy
    kubeconfig: Path  # for the code under test: through the proxy, default namespace `namespace`
    namespace: str
    fake: FakeKube | None
    prefix: str
    _nodes: list[str] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    @property
    def leases(self) -> Any:
        return client.CoordinationV1Api(self.api)

    @property
    def discovery(self) -> Any:
        return client.DiscoveryV1Api(self.api)

    @property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    @property
    def is_fake(self) -> bool:
        return self.fake is not None

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send exact JSON bytes (through the proxy, which adds the credentials): for what the
        official client would rewrite before sending, such as a MicroTime string. (status, body)"""
        url = urlsplit(self.proxy.url)
        conn = http.client.HTTPConnection(url.netloc, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def proxied_client(self) -> client.ApiClient:
        """An ApiClient through the fault proxy (logged, faults applied); close it when done."""
        return client.ApiClient(self.proxy.client_configuration())

    def require_metallb(self) -> None:
        """Skip, saying why, unless the cluster serves MetalLB's metallb.io/v1beta1 kinds."""
        if self.is_fake and not METALLB_CRDS.is_dir():
            pytest.skip(f"MetalLB's CRDs are not at {METALLB_CRDS} (shared/metallb-crds beside the repo)")
        status, _ = self.raw("GET", "/apis/metallb.io/v1beta1")
        if status != 200:
            pytest.skip("the cluster does not serve metallb.io/v1beta1 (install MetalLB's CRDs to run this)")

    # -- setup through the official client --------------------------------------------------------

    def make_namespace(self, suffix: str) -> str:
        """Create another namespace for this test (`<namespace>-<suffix>`), deleted afterwards."""
        name = f"{self.namespace}-{suffix}"
        self.core.create_namespace({"metadata": {"name": name}})
        self._namespaces.append(name)
        return name

    def node_name(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def add_node(self, name: str, address: str, labels: dict[str, str] | None = None, *,
                 ready: bool = True) -> str:
        """Create a Node (`<prefix>-<name>`), then write its addresses and Ready condition through
        the status subresource as a kubelet does; returns the Node's name."""
        full = self.node_name(name)
        self.core.create_node({"metadata": {"name": full, "labels": labels or {}}})
        self._nodes.append(full)
        self.set_node_status(full, address, ready=ready)
        return full

    def set_node_status(self, name: str, address: str, *, ready: bool = True,
                        heartbeat: datetime | None = None) -> None:
        now = (heartbeat or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {"addresses": [{"type": "InternalIP", "address": address}],
                  "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                  "reason": "KubeletReady" if ready else "KubeletNotReady",
                                  "message": "set by a portside test", "lastHeartbeatTime": now,
                                  "lastTransitionTime": now}]}
        self.core.patch_node_status(name, {"status": status})

    def add_service(self, name: str, namespace: str | None = None, *, port: int = 80,
                    annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        body = {"metadata": {"name": name, "annotations": annotations or {}},
                "spec": {"type": "LoadBalancer", "selector": {"app": name},
                         "ports": [{"port": port, "protocol": "TCP"}], **spec}}
        if body["spec"]["type"] == "ClusterIP":
            body["spec"].pop("selector")
        return dict(_raw(self.core.create_namespaced_service(namespace or self.namespace, body,
                                                              _preload_content=False)))

    def add_endpoint_slice(self, service: str, endpoints: list[dict[str, Any]],
                           namespace: str | None = None) -> None:
        self.discovery.create_namespaced_endpoint_slice(namespace or self.namespace, {
            "metadata": {"generateName": f"{service}-", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})

    # -- reading --------------------------------------------------------------------------------------

    def service(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(_raw(self.core.read_namespaced_service(name, namespace or self.namespace,
                                                           _preload_content=False)))

    def ingress_ips(self, name: str, namespace: str | None = None) -> list[str]:
        status = self.service(name, namespace).get("status") or {}
        return [i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or []]

    def config_map(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return dict(_raw(self.core.read_namespaced_config_map(name, namespace or self.namespace,
                                                                  _preload_content=False)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def lease(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return dict(_raw(self.leases.read_namespaced_lease(name, namespace or self.namespace,
                                                               _preload_content=False)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def events(self, namespace: str | None = None) -> list[dict[str, Any]]:
        listed = _raw(self.core.list_namespaced_event(namespace or self.namespace, _preload_content=False))
        return list(listed["items"])

    # -- teardown -----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete what this test created: its Nodes and namespaces (a real cluster then removes the
        namespaces' contents in the background)."""
        for name in self._nodes:
            try:
                self.core.delete_node(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        for name in reversed(self._namespaces):
            try:
                self.core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


class Objects:
    """`put_object`/`get_object`/`list_objects`/`delete_object` as the fake's test helpers have them,
    done through the official client (Services' status through /status), with the namespaces a test
    names mapped onto the test's own (`renames`): for tests written against those helpers."""

    _API = {"Service": ("core", "service", True), "ConfigMap": ("core", "config_map", False),
            "Event": ("core", "event", False), "Lease": ("leases", "lease", False)}

    def __init__(self, cluster: Cluster, renames: dict[str, str]) -> None:
        self.cluster, self.renames = cluster, renames

    def namespace(self, name: str | None) -> str:
        return self.renames.get(name or "default", name or "default")

    def _call(self, kind: str, verb: str, *args: Any, _status: bool = False, **kwargs: Any) -> Any:
        api, noun, _ = self._API[kind]
        method = f"{verb}_{noun}_status" if _status else f"{verb}_{noun}"
        return getattr(getattr(self.cluster, api), method)(*args, **kwargs)

    def get_object(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            response = self._call(kind, "read_namespaced", name, self.namespace(namespace), _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {"kind": kind, **_raw(response)}

    def list_objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        listed = _raw(self._call(kind, "list_namespaced", self.namespace(namespace), _preload_content=False))
        return [{"kind": kind, **item} for item in listed["items"]]

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or replace what exists; a Service's status then goes through /status."""
        kind, meta = obj["kind"], obj["metadata"]
        namespace, body = self.namespace(meta.get("namespace")), {k: v for k, v in obj.items() if k != "status"}
        body["metadata"] = {k: v for k, v in meta.items() if k != "namespace"}
        old = self.get_object(kind, meta["name"], meta.get("namespace"))
        if old is None:
            body["metadata"].pop("resourceVersion", None)
            self._call(kind, "create_namespaced", namespace, body)
        else:
            body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            self._call(kind, "replace_namespaced", meta["name"], namespace, body)
        if self._API[kind][2] and "status" in obj:
            current = self.get_object(kind, meta["name"], meta.get("namespace"))
            assert current is not None
            current["status"] = obj["status"]
            self._call(kind, "replace_namespaced", meta["name"], namespace, current, _status=True)
        found = self.get_object(kind, meta["name"], meta.get("namespace"))
        assert found is not None
        return found

    def delete_object(self, kind: str, name: str, namespace: str | None = None) -> bool:
        try:
            self._call(kind, "delete_namespaced", name, self.namespace(namespace))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


@contextmanager
def open_cluster(tmp_path: Path, *, bookmark_interval: float = 60.0) -> Iterator[Cluster]:
    """The fake (started here) or the real cluster, a proxy in front, and a fresh namespace."""
    fake: FakeKube | None = None
    if REAL_CLUSTER:
        upstream = client.Configuration()
        load_kube_config(config_file=REAL_CLUSTER, client_configuration=upstream)
    else:
        crds = load_crds(METALLB_CRDS) if METALLB_CRDS.is_dir() else []
        fake = FakeKube(bookmark_interval=bookmark_interval, crds=crds).start()
        upstream = fake.client_configuration()
    prefix = f"pt-{uuid.uuid4().hex[:8]}"
    # The test's own requests pass a proxy of their own: no faults, but logged for the RBAC check.
    setup = FaultProxy(upstream).start()
    api = client.ApiClient(setup.client_configuration())
    proxy = FaultProxy(upstream).start()
    try:
        cluster = Cluster(api, upstream, proxy, Path(), prefix, fake, prefix)
        cluster.core.create_namespace({"metadata": {"name": prefix}})
        cluster._namespaces.append(prefix)
        cluster.kubeconfig = proxy.write_kubeconfig(tmp_path / "kubeconfig", prefix)
        try:
            yield cluster
        finally:
            cluster.cleanup()
    finally:
        SESSION_REQUESTS.extend(setup.requests() + proxy.requests())
        proxy.stop()
        api.close()
        setup.stop()
        if fake is not None:
            fake.stop()
