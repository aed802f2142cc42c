"""The Kubernetes backend end to end: `portside diff/apply --kubeconfig` against the fake API server.

Everything goes through the CLI and the official client over HTTP; assertions read the fake's
stored objects and its request log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.planning.announcement_table import table_from_configmap
from tests.conftest import run_cli, write_repo
from tests.fakes.kube_api import FakeKube

POOL = """
    apiVersion: metallb.io/v1beta1
    kind: IPAddressPool
    metadata: {name: lan, namespace: metallb-system}
    spec:
      addresses: [%s]
    ---
    apiVersion: metallb.io/v1beta1
    kind: L2Advertisement
    metadata: {name: lan, namespace: metallb-system}
"""


def lb_service(name: str, namespace: str = "default", port: int = 80, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": spec.pop("annotations", {})},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"port": port, "protocol": "TCP"}], **spec},
    }


def node(name: str, address: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
        "status": {"addresses": [{"type": "InternalIP", "address": address}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def ingress_ips(kube: FakeKube, name: str, namespace: str = "default") -> list[str]:
    svc = kube.get_object("Service", name, namespace)
    assert svc is not None
    return [i["ip"] for i in (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []]


@pytest.fixture
def cluster(fake_kube: FakeKube) -> FakeKube:
    fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "portside-system"}})
    for i, name in enumerate(("node-a", "node-b", "node-c")):
        fake_kube.put_object(node(name, f"10.0.0.{i + 1}"))
    fake_kube.put_object(lb_service("blog"))
    fake_kube.put_object(lb_service("wiki"))
    fake_kube.put_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "internal"},
                          "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}})
    return fake_kube


def repo(tmp_path: Path, addresses: str = "10.9.0.10-10.9.0.20", extra: dict[str, str] | None = None) -> Path:
    return write_repo(tmp_path / "repo", {"pool.yaml": POOL % addresses, **(extra or {})})


def plan_json(*args: str) -> dict[str, Any]:
    result = run_cli("diff", *args, "--format", "json")
    assert result.code == 0, result.err
    return dict(json.loads(result.out))


def test_load_balancer_services_get_ips_in_status(cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    result = run_cli("apply", path, "--kubeconfig", str(kubeconfig))
    assert result.code == 0, result.err
    assert ingress_ips(cluster, "blog") == ["10.9.0.10"]
    assert ingress_ips(cluster, "wiki") == ["10.9.0.11"]
    blog = cluster.get_object("Service", "blog")
    assert blog is not None and blog["metadata"]["annotations"]["portside.io/pool"] == "lan"
    internal = cluster.get_object("Service", "internal")
    assert internal is not None and not internal.get("status", {}).get("loadBalancer")
    reasons = sorted(e["reason"] for e in cluster.list_objects("Event", "default"))
    assert reasons == ["IPAllocated", "IPAllocated"]

    configmap = cluster.get_object("ConfigMap", "portside-announcements", "portside-system")
    assert configmap is not None
    table = table_from_configmap(configmap.get("data"), configmap.get("binaryData"))
    assert [a.ip for a in table.announcements] == ["10.9.0.10", "10.9.0.11"]
    assert set(table.nodes) == {"node-a", "node-b", "node-c"}
    assert table.nodes["node-b"].address == "10.0.0.2"


def test_a_converged_cluster_makes_zero_writes(cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    assert run_cli("apply", path, "--kubeconfig", str(kubeconfig)).code == 0
    cluster.clear_log()
    again = run_cli("apply", path, "--kubeconfig", str(kubeconfig))
    assert again.code == 0, again.err
    assert "No changes" in again.out
    assert cluster.writes() == []
    assert run_cli("diff", path, "--kubeconfig", str(kubeconfig), "--exit-code").code == 0
    assert cluster.writes() == []


def test_assignments_are_sticky_across_restarts_and_new_services(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    assert run_cli("apply", path, "--kubeconfig", str(kubeconfig)).code == 0
    # A Service that sorts first arrives later: it must not take the IPs of the others.
    cluster.put_object(lb_service("aaa"))
    assert run_cli("apply", path, "--kubeconfig", str(kubeconfig)).code == 0
    assert ingress_ips(cluster, "blog") == ["10.9.0.10"]
    assert ingress_ips(cluster, "wiki") == ["10.9.0.11"]
    assert ingress_ips(cluster, "aaa") == ["10.9.0.12"]


def test_an_exposure_asking_for_a_taken_ip_is_a_conflict(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = repo(tmp_path)
    assert run_cli("apply", str(path), "--kubeconfig", str(kubeconfig)).code == 0
    write_repo(path, {"wiki.yaml": """
        apiVersion: portside.io/v1alpha1
        kind: ServiceExposure
        metadata: {name: wiki}
        spec:
          service: {namespace: default, name: wiki}
          addresses: [10.9.0.10]
    """})
    plan = plan_json(str(path), "--kubeconfig", str(kubeconfig))
    conflicts = [c for c in plan["changes"] if c["action"] == "conflict"]
    assert [c["target"] for c in conflicts] == [{"kind": "Service", "id": "default/wiki"}]
    assert "10.9.0.10" in conflicts[0]["reason"]
    # The conflict is shown, never acted on: blog keeps its IP.
    assert run_cli("apply", str(path), "--kubeconfig", str(kubeconfig)).code == 0
    assert ingress_ips(cluster, "blog") == ["10.9.0.10"]


def test_shrinking_a_pool_shows_the_revocations_in_the_plan(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = repo(tmp_path)
    assert run_cli("apply", str(path), "--kubeconfig", str(kubeconfig)).code == 0
    repo(tmp_path, addresses="10.9.0.11-10.9.0.20")  # 10.9.0.10 (blog's) leaves the pool
    plan = plan_json(str(path), "--kubeconfig", str(kubeconfig))
    by_target = {(c["target"]["kind"], c["target"]["id"]): c for c in plan["changes"]}
    blog = by_target[("Service", "default/blog")]
    assert blog["action"] == "update"
    assert blog["before"]["ingress"] == ["10.9.0.10"] and blog["after"]["ingress"] == ["10.9.0.12"]
    assert "10.9.0.10" in blog["reason"]
    assert by_target[("Announcement", "10.9.0.10")]["action"] == "delete"
    assert ("Service", "default/wiki") not in by_target  # untouched: no-op changes are left out
    assert run_cli("apply", str(path), "--kubeconfig", str(kubeconfig)).code == 0
    assert ingress_ips(cluster, "blog") == ["10.9.0.12"]
    reasons = {e["reason"] for e in cluster.list_objects("Event", "default")}
    assert "IPAllocated" in reasons


def test_a_stale_resource_version_re_reads_and_re_plans(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    cluster.fail_next("PATCH", r"/services/blog/status$", 409)
    result = run_cli("apply", path, "--kubeconfig", str(kubeconfig))
    assert result.code == 0, result.err
    assert "planning again" in result.err
    assert ingress_ips(cluster, "blog") == ["10.9.0.10"]
    patches = cluster.requests("PATCH", r"/services/blog/status$")
    assert [r.status for r in patches] == [409, 200]


def test_other_load_balancer_classes_are_left_alone(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    cluster.put_object(lb_service("cloud", loadBalancerClass="example.com/other"))
    cluster.put_object(lb_service("ours", loadBalancerClass="portside.io/loadbalancer"))
    assert run_cli("apply", str(repo(tmp_path)), "--kubeconfig", str(kubeconfig)).code == 0
    assert ingress_ips(cluster, "cloud") == []
    assert ingress_ips(cluster, "ours") != []


def test_external_traffic_policy_local_announces_only_from_nodes_with_ready_endpoints(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    cluster.put_object(lb_service("local", externalTrafficPolicy="Local"))
    cluster.put_object({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "local-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "local"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "node-b", "conditions": {"ready": True}},
                      {"addresses": ["10.244.2.5"], "nodeName": "node-c", "conditions": {"ready": False}}],
    })
    assert run_cli("apply", str(repo(tmp_path)), "--kubeconfig", str(kubeconfig)).code == 0
    configmap = cluster.get_object("ConfigMap", "portside-announcements", "portside-system")
    assert configmap is not None
    table = table_from_configmap(configmap.get("data"), configmap.get("binaryData"))
    local_ip = ingress_ips(cluster, "local")[0]
    entry = next(a for a in table.announcements if a.ip == local_ip)
    assert entry.candidates == ("node-b",)


def test_snapshot_then_offline_diff_matches_the_live_diff(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    snapshot = tmp_path / "live.json"
    assert run_cli("snapshot", path, "--kubeconfig", str(kubeconfig), "--out", str(snapshot)).code == 0
    offline = plan_json(path, "--snapshot", str(snapshot))
    online = plan_json(path, "--kubeconfig", str(kubeconfig))
    assert offline["changes"] == online["changes"] and offline["summary"]["create"] > 0
    refused = run_cli("apply", path, "--snapshot", str(snapshot))
    assert refused.code != 0


def test_mass_deletion_is_refused_unless_allowed(cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = repo(tmp_path)
    assert run_cli("apply", str(path), "--kubeconfig", str(kubeconfig)).code == 0
    # A wrong path or an emptied repo would revoke every IP: refused, nothing written.
    (path / "pool.yaml").write_text("# nothing declared\n")
    cluster.clear_log()
    refused = run_cli("apply", str(path), "--kubeconfig", str(kubeconfig))
    assert refused.code == 1 and "--allow-mass-delete" in refused.err
    assert cluster.writes() == []
    assert ingress_ips(cluster, "blog") == ["10.9.0.10"]
    allowed = run_cli("apply", str(path), "--kubeconfig", str(kubeconfig), "--allow-mass-delete")
    assert allowed.code == 0, allowed.err
    assert ingress_ips(cluster, "blog") == [] and ingress_ips(cluster, "wiki") == []
    reasons = [e["reason"] for e in cluster.list_objects("Event", "default")]
    assert reasons.count("IPRevoked") == 2


LOCAL_TUNNEL = """
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: home}
    spec:
      mode: local
      tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef
      credentialsFile: /etc/cloudflared/creds/credentials.json
    ---
    apiVersion: portside.io/v1alpha1
    kind: TunnelRoute
    metadata: {name: blog}
    spec:
      tunnel: home
      hostname: blog.example.dev
      service: {namespace: default, name: blog, port: 80}
"""


def test_local_tunnels_go_to_a_configmap_for_an_in_cluster_cloudflared(
        cluster: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    path = repo(tmp_path, extra={"tunnel.yaml": LOCAL_TUNNEL})
    result = run_cli("apply", str(path), "--kubeconfig", str(kubeconfig))
    assert result.code == 0, result.err
    configmap = cluster.get_object("ConfigMap", "portside-cloudflared-home", "portside-system")
    assert configmap is not None
    config = configmap["data"]["config.yml"]
    assert "tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef" in config
    assert "service: http://10.9.0.10:80" in config and config.rstrip().endswith("service: http_status:404")

    cluster.clear_log()
    assert "No changes" in run_cli("apply", str(path), "--kubeconfig", str(kubeconfig)).out
    assert cluster.writes() == []

    (path / "tunnel.yaml").unlink()
    removed = run_cli("apply", str(path), "--kubeconfig", str(kubeconfig))
    assert removed.code == 0 and "- TunnelConfiguration home" in removed.out
    assert cluster.get_object("ConfigMap", "portside-cloudflared-home", "portside-system") is None


def test_an_unreachable_api_server_is_one_clear_line(tmp_path: Path) -> None:
    with FakeKube() as stopped:
        kubeconfig = stopped.write_kubeconfig(tmp_path / "kubeconfig")
    # The server is gone now: its port refuses connections.
    result = run_cli("diff", str(repo(tmp_path)), "--kubeconfig", str(kubeconfig))
    assert result.code == 1
    assert "cannot reach the Kubernetes API at http://127.0.0.1:" in result.err
    assert "Traceback" not in result.err and result.out == ""
