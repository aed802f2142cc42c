"""RBAC in deploy/ against behaviour: the real code's requests are all allowed, and nothing more is.

The first half checks the checker (tests/rbac.py) on hand-made requests and rules, cases taken
from the API server's RequestInfo and RBAC authorizer. The second half drives the real code paths
against the fake API server — the Kubernetes backend through `portside apply` and `portside diff`,
the controller's Lease election, watches and Events, the speaker's ConfigMap source — against the
fake or the cluster PORTSIDE_TEST_KUBECONFIG names, and holds the request log of the fault proxy in
front of it against the manifests, one ServiceAccount at a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from reconciler.controller.events import kube_event_sink
from reconciler.controller.leader import LEASE_NAME
from reconciler.planning.announcement_table import CONFIGMAP_NAME
from reconciler.speaker.sources import ConfigMapSource
from tests.conftest import run_cli, write_repo
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.fakes.kube_api import LoggedRequest
from tests.kube import Cluster
from tests.rbac import (
    Policy,
    RequestAttributes,
    Rule,
    kustomize_build,
    request_attributes,
    service_account,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAMESPACE = "portside-system"
RECONCILER = service_account(NAMESPACE, "portside-reconciler")
SPEAKER = service_account(NAMESPACE, "portside-speaker")
CI = service_account(NAMESPACE, "portside-ci")


# -- request attributes, as the API server resolves them -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/services", "", RequestAttributes("list", resource="services")),
        ("GET", "/api/v1/services", "watch=true&resourceVersion=5",
         RequestAttributes("watch", resource="services")),
        ("GET", "/api/v1/services", "watch=1", RequestAttributes("watch", resource="services")),
        ("GET", "/api/v1/services", "watch=false", RequestAttributes("list", resource="services")),
        ("GET", "/api/v1/services", "watch=", RequestAttributes("watch", resource="services")),
        ("GET", "/api/v1/watch/namespaces/a/configmaps/x", "",
         RequestAttributes("watch", resource="configmaps", namespace="a", name="x")),
        ("GET", "/api/v1/namespaces/a/services/web", "",
         RequestAttributes("get", resource="services", namespace="a", name="web")),
        ("HEAD", "/api/v1/namespaces/a/services/web", "",
         RequestAttributes("get", resource="services", namespace="a", name="web")),
        ("PATCH", "/api/v1/namespaces/a/services/web/status", "",
         RequestAttributes("patch", resource="services", subresource="status", namespace="a", name="web")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/p/leases/l", "",
         RequestAttributes("update", api_group="coordination.k8s.io", resource="leases", namespace="p",
                           name="l")),
        ("POST", "/api/v1/namespaces/a/events", "", RequestAttributes("create", resource="events", namespace="a")),
        ("DELETE", "/api/v1/namespaces/a/configmaps/x", "",
         RequestAttributes("delete", resource="configmaps", namespace="a", name="x")),
        ("DELETE", "/api/v1/namespaces/a/configmaps", "",
         RequestAttributes("deletecollection", resource="configmaps", namespace="a")),
        ("GET", "/apis/discovery.k8s.io/v1/endpointslices", "limit=500",
         RequestAttributes("list", api_group="discovery.k8s.io", resource="endpointslices")),
        # A list or watch selecting one name by field is about that object.
        ("GET", "/api/v1/namespaces/p/configmaps", "fieldSelector=metadata.name%3Dcm&watch=true",
         RequestAttributes("watch", resource="configmaps", namespace="p", name="cm")),
        ("GET", "/api/v1/namespaces/p/configmaps", "fieldSelector=metadata.name%3D%3Dcm",
         RequestAttributes("list", resource="configmaps", namespace="p", name="cm")),
        ("GET", "/api/v1/namespaces/p/configmaps", "fieldSelector=metadata.name%21%3Dcm",
         RequestAttributes("list", resource="configmaps", namespace="p")),
        ("GET", "/api/v1/namespaces/p/configmaps", "fieldSelector=type%3Dx,metadata.name%3Dcm",
         RequestAttributes("list", resource="configmaps", namespace="p", name="cm")),
        # Namespaces: the namespace is also the name; status and finalize are subresources.
        ("GET", "/api/v1/namespaces", "", RequestAttributes("list", resource="namespaces")),
        ("GET", "/api/v1/namespaces/a", "",
         RequestAttributes("get", resource="namespaces", namespace="a", name="a")),
        ("PUT", "/api/v1/namespaces/a/finalize", "",
         RequestAttributes("update", resource="namespaces", subresource="finalize", namespace="a", name="a")),
        ("GET", "/api/v1/nodes/n1", "", RequestAttributes("get", resource="nodes", name="n1")),
        # Non-resource requests: the verb is the method.
        ("GET", "/version", "", RequestAttributes("get", resource_request=False, path="/version")),
        ("GET", "/api/v1", "", RequestAttributes("get", resource_request=False, path="/api/v1")),
        ("GET", "/apis/discovery.k8s.io/v1", "",
         RequestAttributes("get", resource_request=False, path="/apis/discovery.k8s.io/v1")),
    ],
)
def test_request_attributes(method: str, path: str, query: str, expected: RequestAttributes) -> None:
    assert request_attributes(method, path, query) == expected


def test_request_attributes_take_a_parsed_query() -> None:
    assert request_attributes("GET", "/api/v1/nodes", {"watch": "True"}).verb == "watch"


# -- rules and bindings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "request_", "allowed"),
    [
        (Rule(("get",), ("",), ("services",)), RequestAttributes("get", resource="services", name="a"), True),
        (Rule(("get",), ("",), ("services",)), RequestAttributes("list", resource="services"), False),
        (Rule(("*",), ("",), ("services",)), RequestAttributes("list", resource="services"), True),
        # A subresource needs its own entry (or */status), the parent resource does not cover it.
        (Rule(("patch",), ("",), ("services",)),
         RequestAttributes("patch", resource="services", subresource="status", name="a"), False),
        (Rule(("patch",), ("",), ("services/status",)),
         RequestAttributes("patch", resource="services", subresource="status", name="a"), True),
        (Rule(("patch",), ("",), ("*/status",)),
         RequestAttributes("patch", resource="nodes", subresource="status", name="a"), True),
        (Rule(("list",), ("",), ("services",)),
         RequestAttributes("list", api_group="apps", resource="services"), False),
        # resourceNames: only requests that name the object; create never does.
        (Rule(("get",), ("",), ("configmaps",), ("cm",)),
         RequestAttributes("get", resource="configmaps", name="cm"), True),
        (Rule(("get",), ("",), ("configmaps",), ("cm",)),
         RequestAttributes("get", resource="configmaps", name="other"), False),
        (Rule(("list",), ("",), ("configmaps",), ("cm",)), RequestAttributes("list", resource="configmaps"), False),
        (Rule(("create",), ("",), ("configmaps",), ("cm",)),
         RequestAttributes("create", resource="configmaps"), False),
        (Rule(("get",), non_resource_urls=("/apis/*",)),
         RequestAttributes("get", resource_request=False, path="/apis/x/v1"), True),
        (Rule(("get",), non_resource_urls=("/version",)),
         RequestAttributes("get", resource_request=False, path="/version/x"), False),
    ],
)
def test_rule_allows(rule: Rule, request_: RequestAttributes, allowed: bool) -> None:
    assert rule.allows(request_) is allowed


def binding(kind: str, name: str, role_kind: str, subjects: list[dict[str, str]],
            namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
            "subjects": subjects}


def role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


SA = service_account("ns", "app")
SA_SUBJECT = [{"kind": "ServiceAccount", "name": "app", "namespace": "ns"}]


class Logged:
    def __init__(self, method: str, path: str, query: dict[str, str] | None = None) -> None:
        self.method, self.path, self.query = method, path, query or {}


def test_a_role_binding_grants_in_its_namespace_only() -> None:
    policy = Policy([
        role("Role", "r", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}], "ns"),
        binding("RoleBinding", "r", "Role", SA_SUBJECT, "ns"),
    ])
    assert policy.authorize(SA, request_attributes("GET", "/api/v1/namespaces/ns/configmaps/a"))
    assert not policy.authorize(SA, request_attributes("GET", "/api/v1/namespaces/other/configmaps/a"))
    assert not policy.authorize(service_account("ns", "else"),
                                request_attributes("GET", "/api/v1/namespaces/ns/configmaps/a"))


def test_a_cluster_role_through_a_role_binding_is_namespaced() -> None:
    policy = Policy([
        role("ClusterRole", "c", [{"apiGroups": [""], "resources": ["services", "nodes"], "verbs": ["list"]}]),
        binding("RoleBinding", "c", "ClusterRole", SA_SUBJECT, "ns"),
    ])
    assert policy.authorize(SA, request_attributes("GET", "/api/v1/namespaces/ns/services"))
    assert not policy.authorize(SA, request_attributes("GET", "/api/v1/services"))
    assert not policy.authorize(SA, request_attributes("GET", "/api/v1/nodes"))


def test_group_subjects_and_service_accounts_without_namespace() -> None:
    policy = Policy([
        role("ClusterRole", "c", [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
        binding("ClusterRoleBinding", "c", "ClusterRole", [{"kind": "Group", "name": "system:serviceaccounts:ns"}]),
        role("Role", "r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}], "ns"),
        binding("RoleBinding", "r", "Role", [{"kind": "ServiceAccount", "name": "app"}], "ns"),
    ])
    assert policy.authorize(SA, request_attributes("GET", "/api/v1/nodes"))
    assert not policy.authorize(service_account("other", "app"), request_attributes("GET", "/api/v1/nodes"))
    assert policy.authorize(SA, request_attributes("GET", "/api/v1/namespaces/ns/pods/p"))


def test_discovery_is_allowed_to_everyone() -> None:
    policy = Policy([])
    assert policy.authorize(SA, request_attributes("GET", "/version"))
    assert policy.authorize(SA, request_attributes("GET", "/apis/coordination.k8s.io/v1"))
    assert not policy.authorize(SA, request_attributes("GET", "/metrics"))


def test_a_binding_to_a_missing_role_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"roleRef Role/ns/r is not in the manifests"):
        Policy([binding("RoleBinding", "r", "Role", SA_SUBJECT, "ns")])


def test_check_reports_denied_requests_and_unused_permissions() -> None:
    policy = Policy([
        role("Role", "r", [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"], "resourceNames": ["cm"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        ], "ns"),
        binding("RoleBinding", "r", "Role", SA_SUBJECT, "ns"),
    ])
    verdict = policy.check(SA, [
        Logged("GET", "/api/v1/namespaces/ns/configmaps/cm"),
        Logged("POST", "/api/v1/namespaces/ns/configmaps"),
        Logged("DELETE", "/api/v1/namespaces/ns/configmaps/cm"),
        Logged("GET", "/version"),
    ])
    assert not verdict.ok
    assert [str(d) for d in verdict.denied] == [
        "DELETE /api/v1/namespaces/ns/configmaps/cm -> delete configmaps 'cm' in ns"]
    assert [str(p) for p in verdict.unused] == ["Role/ns/r (in ns): update configmaps ['cm']"]
    assert "denied:  DELETE" in verdict.explain()


def test_check_passes_when_requests_and_rules_agree() -> None:
    policy = Policy([
        role("ClusterRole", "c", [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                                   "verbs": ["list", "watch"]}]),
        binding("ClusterRoleBinding", "c", "ClusterRole", SA_SUBJECT),
    ])
    verdict = policy.check(SA, [
        Logged("GET", "/apis/discovery.k8s.io/v1/endpointslices", {"limit": "500"}),
        Logged("GET", "/apis/discovery.k8s.io/v1/endpointslices", {"watch": "True"}),
    ])
    assert verdict.ok, verdict.explain()


# -- the manifests against the real code's requests ------------------------------------------------

POOL = """
    apiVersion: portside.io/v1alpha1
    kind: IPAddressPool
    metadata: {name: lan}
    spec:
      addresses: [%s]
    ---
    apiVersion: portside.io/v1alpha1
    kind: L2Advertisement
    metadata: {name: lan}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(kustomize_build(DEPLOY) + kustomize_build(DEPLOY / "ci-readonly"))


@dataclass
class Deployed:
    """The test's cluster with the namespaces the manifests name mapped onto the test's own:
    portside's namespace is the test namespace, Services live in `<ns>-default` and `<ns>-apps`."""

    cluster: Cluster
    default: str
    apps: str

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """The proxy's request log with the test namespaces renamed as deployed (portside-system,
        default, apps), so that the manifests' Roles and RoleBindings apply to it."""
        renames = {self.default: "default", self.apps: "apps", self.cluster.namespace: NAMESPACE}
        pattern = re.compile(r"/namespaces/([^/]+)")
        renamed = [replace(r, path=pattern.sub(lambda m: f"/namespaces/{renames.get(m[1], m[1])}", r.path))
                   for r in self.cluster.proxy.requests()]
        return [r for r in renamed if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))]


@pytest.fixture
def deployed(cluster: Cluster) -> Deployed:
    for i, name in enumerate(("node-a", "node-b")):
        cluster.add_node(name, f"10.0.0.{i + 1}")
    world = Deployed(cluster, cluster.make_namespace("default"), cluster.make_namespace("apps"))
    cluster.add_service("blog", world.default)
    cluster.add_service("wiki", world.apps)
    cluster.proxy.clear_log()
    return world


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.02)


def _lease_holder(cluster: Cluster) -> str | None:
    lease = cluster.lease(LEASE_NAME)
    return None if lease is None else str(lease["spec"].get("holderIdentity") or "")


ACCOUNT = "0123456789abcdef0123456789abcdef"
TUNNEL = """
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: home}
    spec: {mode: local, tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef}
    ---
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: away}
    spec:
      accountId: 0123456789abcdef0123456789abcdef
      tunnelName: away
      dns: {manage: false}
      connector: {where: cluster, replicas: 2}
    ---
    apiVersion: portside.io/v1alpha1
    kind: TunnelRoute
    metadata: {name: wiki}
    spec: {tunnel: home, hostname: wiki.example.dev, url: "http://10.0.0.5:8080"}
"""


def watches(cluster: Cluster) -> list[str]:
    return [r.path for r in cluster.proxy.requests("GET")
            if r.query.get("watch") not in (None, "0", "false", "False")]


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudflare]:
    with FakeCloudflare(account_id=ACCOUNT) as cf:
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cf.token)
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
        yield cf


@pytest.mark.kube
def test_reconciler_requests_match_its_rbac(deployed: Deployed, cloudflare: FakeCloudflare, tmp_path: Path,
                                            policy: Policy) -> None:
    cluster = deployed.cluster
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", cluster.namespace]
    away = cloudflare.add_tunnel(ACCOUNT, "away")["id"]
    # apply: read everything, allocate (status + annotation patches, Events), publish the table,
    # start tunnel away's connector (Secret, Deployment, budget); then a second apply with a new
    # Service, which updates the table in place, a new tunnel token (the Secret is replaced and the
    # Deployment rolls) and a budget someone edited (replaced).
    repo = write_repo(tmp_path / "repo", {"pool.yaml": POOL % "10.9.0.10-10.9.0.20", "tunnel.yaml": TUNNEL})
    first = run_cli("apply", str(repo), *kube)
    assert first.code == 0, first.err
    connector = "portside-cloudflared-away"
    assert deployed.requests("POST", f"/namespaces/{NAMESPACE}/secrets$")
    cluster.add_service("docs", deployed.apps)
    cloudflare.set_tunnel_secret(away)
    client.PolicyV1Api(cluster.api).patch_namespaced_pod_disruption_budget(
        connector, cluster.namespace, {"spec": {"minAvailable": 2}})
    second = run_cli("apply", str(repo), *kube)
    assert second.code == 0, second.err
    assert deployed.requests("PUT", f"/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP_NAME}$")
    for resource in ("secrets", "deployments", "poddisruptionbudgets"):
        assert deployed.requests("PUT", f"/namespaces/{NAMESPACE}/{resource}/{connector}$"), resource
    # A local tunnel's cloudflared config lives in a ConfigMap; removing the Tunnel deletes it, and
    # removing tunnel away removes its connector.
    (repo / "tunnel.yaml").unlink()
    third = run_cli("apply", str(repo), *kube, "--allow-mass-delete")  # the connector is most of it
    assert third.code == 0, third.err
    assert deployed.requests("DELETE", f"/namespaces/{NAMESPACE}/configmaps/portside-cloudflared-home$")
    assert deployed.requests("DELETE", f"/namespaces/{NAMESPACE}/deployments/{connector}$")

    # `portside run` as the Deployment runs it: Lease election, watches, reconciles, then SIGTERM
    # (which releases the Lease).
    run = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--source", str(repo), *kube,
         "--listen", "127.0.0.1:0", "--identity", "pod-a", "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "CLOUDFLARE_API_TOKEN")})
    try:
        wait_for(lambda: run.poll() is not None or _lease_holder(cluster) == "pod-a", "the Lease")
        wait_for(lambda: run.poll() is not None or len(watches(cluster)) >= 3, "three watches")
    finally:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 0, stderr
    assert _lease_holder(cluster) == "", "the Lease was not released on SIGTERM"
    # The Events the controller records about itself (a rejected revision, a refused plan).
    with cluster.proxied_client() as api:
        kube_event_sink(api, cluster.namespace)("Warning", "RevisionRejected", "the repo does not validate")

    verdict = policy.check(RECONCILER, deployed.requests())
    assert verdict.ok, verdict.explain()


@pytest.mark.kube
def test_speaker_requests_match_its_rbac(deployed: Deployed, policy: Policy) -> None:
    cluster = deployed.cluster
    table = {"generation": 1, "revision": "abc", "heartbeat": {"port": 7947, "interval_ms": 100,
                                                              "dead_after_ms": 400},
             "nodes": {"node-a": {"address": "10.0.0.1"}}, "announcements": []}
    cluster.core.create_namespaced_config_map(cluster.namespace, {
        "metadata": {"name": CONFIGMAP_NAME}, "data": {"announcements.json": json.dumps(table)}})
    delivered = threading.Event()
    stop = threading.Event()
    source = ConfigMapSource(str(cluster.kubeconfig), cluster.namespace)
    thread = threading.Thread(target=source.run, args=(lambda _t: delivered.set(), lambda _m: None, stop),
                              daemon=True)
    thread.start()
    try:
        assert delivered.wait(30), "the speaker never got the table"
        wait_for(lambda: bool(watches(cluster)), "the speaker's watch")
    finally:
        stop.set()
    verdict = policy.check(SPEAKER, deployed.requests())
    assert verdict.ok, verdict.explain()


@pytest.mark.kube
def test_ci_diff_requests_match_the_read_only_rbac(deployed: Deployed, tmp_path: Path, policy: Policy) -> None:
    cluster = deployed.cluster
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", cluster.namespace]
    repo = write_repo(tmp_path / "repo", {"pool.yaml": POOL % "10.9.0.10-10.9.0.20"})
    result = run_cli("diff", str(repo), *kube, "--format", "markdown", "--exit-code")
    assert result.code == 2, result.err  # two Services to allocate: changes
    snapshot = run_cli("snapshot", str(repo), *kube, "--out", str(tmp_path / "s.json"))
    assert snapshot.code == 0, snapshot.err
    assert not cluster.proxy.writes()
    verdict = policy.check(CI, deployed.requests())
    assert verdict.ok, verdict.explain()
