"""The Kubernetes backend end to end: `portside diff/apply --kubeconfig` against a cluster.

The cluster is the fake API server, or the real one PORTSIDE_TEST_KUBECONFIG names (tests/kube.py):
the tests set it up and read it back through the official client only, and see portside's requests
through the fault proxy in front of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.planning.announcement_table import table_from_configmap
from tests.conftest import run_cli, write_repo
from tests.fakes.kube_api import FakeKube
from tests.kube import Cluster

pytestmark = pytest.mark.kube

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


@pytest.fixture
def seeded(cluster: Cluster) -> Cluster:
    """Three ready Nodes, two LoadBalancer Services and a ClusterIP one, in the test's namespace."""
    for i, name in enumerate(("node-a", "node-b", "node-c")):
        cluster.add_node(name, f"10.0.0.{i + 1}")
    cluster.add_service("blog")
    cluster.add_service("wiki")
    cluster.add_service("internal", type="ClusterIP")
    return cluster


def kube(cluster: Cluster) -> list[str]:
    """The CLI flags that aim portside at the test's cluster, with its own objects in the test's namespace."""
    return ["--kubeconfig", str(cluster.kubeconfig), "--namespace", cluster.namespace]


def repo(tmp_path: Path, addresses: str = "10.9.0.10-10.9.0.20", extra: dict[str, str] | None = None) -> Path:
    return write_repo(tmp_path / "repo", {"pool.yaml": POOL % addresses, **(extra or {})})


def plan_json(*args: str) -> dict[str, Any]:
    result = run_cli("diff", *args, "--format", "json")
    assert result.code == 0, result.err
    return dict(json.loads(result.out))


def test_load_balancer_services_get_ips_in_status(seeded: Cluster, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    result = run_cli("apply", path, *kube(seeded))
    assert result.code == 0, result.err
    assert seeded.ingress_ips("blog") == ["10.9.0.10"]
    assert seeded.ingress_ips("wiki") == ["10.9.0.11"]
    blog = seeded.service("blog")
    assert blog is not None and blog["metadata"]["annotations"]["portside.io/pool"] == "lan"
    internal = seeded.service("internal")
    assert internal is not None and not internal.get("status", {}).get("loadBalancer")
    reasons = sorted(e["reason"] for e in seeded.events())
    assert reasons == ["IPAllocated", "IPAllocated"]

    configmap = seeded.config_map("portside-announcements")
    assert configmap is not None
    table = table_from_configmap(configmap.get("data"), configmap.get("binaryData"))
    assert [a.ip for a in table.announcements] == ["10.9.0.10", "10.9.0.11"]
    ours = {seeded.node_name(n) for n in ("node-a", "node-b", "node-c")}
    assert {n for n in table.nodes if n.startswith(seeded.prefix)} == ours  # a real cluster has more
    assert table.nodes[seeded.node_name("node-b")].address == "10.0.0.2"


def test_a_converged_cluster_makes_zero_writes(seeded: Cluster, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    assert run_cli("apply", path, *kube(seeded)).code == 0
    seeded.proxy.clear_log()
    again = run_cli("apply", path, *kube(seeded))
    assert again.code == 0, again.err
    assert "No changes" in again.out
    assert seeded.proxy.writes() == []
    assert run_cli("diff", path, *kube(seeded), "--exit-code").code == 0
    assert seeded.proxy.writes() == []


def test_assignments_are_sticky_across_restarts_and_new_services(
        seeded: Cluster, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    assert run_cli("apply", path, *kube(seeded)).code == 0
    # A Service that sorts first arrives later: it must not take the IPs of the others.
    seeded.add_service("aaa")
    assert run_cli("apply", path, *kube(seeded)).code == 0
    assert seeded.ingress_ips("blog") == ["10.9.0.10"]
    assert seeded.ingress_ips("wiki") == ["10.9.0.11"]
    assert seeded.ingress_ips("aaa") == ["10.9.0.12"]


def test_an_exposure_asking_for_a_taken_ip_is_a_conflict(
        seeded: Cluster, tmp_path: Path) -> None:
    path = repo(tmp_path)
    assert run_cli("apply", str(path), *kube(seeded)).code == 0
    write_repo(path, {"wiki.yaml": f"""
        apiVersion: portside.io/v1alpha1
        kind: ServiceExposure
        metadata: {{name: wiki}}
        spec:
          service: {{namespace: {seeded.namespace}, name: wiki}}
          addresses: [10.9.0.10]
    """})
    plan = plan_json(str(path), *kube(seeded))
    conflicts = [c for c in plan["changes"] if c["action"] == "conflict"]
    assert [c["target"] for c in conflicts] == [{"kind": "Service", "id": f"{seeded.namespace}/wiki"}]
    assert "10.9.0.10" in conflicts[0]["reason"]
    # The conflict is shown, never acted on: blog keeps its IP.
    assert run_cli("apply", str(path), *kube(seeded)).code == 0
    assert seeded.ingress_ips("blog") == ["10.9.0.10"]


def test_shrinking_a_pool_shows_the_revocations_in_the_plan(
        seeded: Cluster, tmp_path: Path) -> None:
    path = repo(tmp_path)
    assert run_cli("apply", str(path), *kube(seeded)).code == 0
    repo(tmp_path, addresses="10.9.0.11-10.9.0.20")  # 10.9.0.10 (blog's) leaves the pool
    plan = plan_json(str(path), *kube(seeded))
    by_target = {(c["target"]["kind"], c["target"]["id"]): c for c in plan["changes"]}
    blog = by_target[("Service", f"{seeded.namespace}/blog")]
    assert blog["action"] == "update"
    assert blog["before"]["ingress"] == ["10.9.0.10"] and blog["after"]["ingress"] == ["10.9.0.12"]
    assert "10.9.0.10" in blog["reason"]
    assert by_target[("Announcement", "10.9.0.10")]["action"] == "delete"
    assert ("Service", f"{seeded.namespace}/wiki") not in by_target  # untouched: no-op changes are left out
    assert run_cli("apply", str(path), *kube(seeded)).code == 0
    assert seeded.ingress_ips("blog") == ["10.9.0.12"]
    reasons = {e["reason"] for e in seeded.events()}
    assert "IPAllocated" in reasons


def test_a_stale_resource_version_re_reads_and_re_plans(
        seeded: Cluster, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    seeded.proxy.fail_next("PATCH", r"/services/blog/status$", 409)
    result = run_cli("apply", path, *kube(seeded))
    assert result.code == 0, result.err
    assert "planning again" in result.err
    assert seeded.ingress_ips("blog") == ["10.9.0.10"]
    patches = seeded.proxy.requests("PATCH", r"/services/blog/status$")
    assert [r.status for r in patches] == [409, 200]


def test_other_load_balancer_classes_are_left_alone(
        seeded: Cluster, tmp_path: Path) -> None:
    seeded.add_service("cloud", loadBalancerClass="example.com/other")
    seeded.add_service("ours", loadBalancerClass="portside.io/loadbalancer")
    assert run_cli("apply", str(repo(tmp_path)), *kube(seeded)).code == 0
    assert seeded.ingress_ips("cloud") == []
    assert seeded.ingress_ips("ours") != []


def test_external_traffic_policy_local_announces_only_from_nodes_with_ready_endpoints(
        seeded: Cluster, tmp_path: Path) -> None:
    seeded.add_service("local", externalTrafficPolicy="Local")
    node_b, node_c = seeded.node_name("node-b"), seeded.node_name("node-c")
    seeded.add_endpoint_slice("local", [
        {"addresses": ["10.244.1.5"], "nodeName": node_b, "conditions": {"ready": True}},
        {"addresses": ["10.244.2.5"], "nodeName": node_c, "conditions": {"ready": False}}])
    assert run_cli("apply", str(repo(tmp_path)), *kube(seeded)).code == 0
    configmap = seeded.config_map("portside-announcements")
    assert configmap is not None
    table = table_from_configmap(configmap.get("data"), configmap.get("binaryData"))
    local_ip = seeded.ingress_ips("local")[0]
    entry = next(a for a in table.announcements if a.ip == local_ip)
    assert entry.candidates == (node_b,)


def test_snapshot_then_offline_diff_matches_the_live_diff(
        seeded: Cluster, tmp_path: Path) -> None:
    path = str(repo(tmp_path))
    snapshot = tmp_path / "live.json"
    assert run_cli("snapshot", path, *kube(seeded), "--out", str(snapshot)).code == 0
    offline = plan_json(path, "--snapshot", str(snapshot))
    online = plan_json(path, *kube(seeded))
    assert offline["changes"] == online["changes"] and offline["summary"]["create"] > 0
    refused = run_cli("apply", path, "--snapshot", str(snapshot))
    assert refused.code != 0


def test_mass_deletion_is_refused_unless_allowed(seeded: Cluster, tmp_path: Path) -> None:
    path = repo(tmp_path)
    assert run_cli("apply", str(path), *kube(seeded)).code == 0
    # A wrong path or an emptied repo would revoke every IP: refused, nothing written.
    (path / "pool.yaml").write_text("# nothing declared\n")
    seeded.proxy.clear_log()
    refused = run_cli("apply", str(path), *kube(seeded))
    assert refused.code == 1 and "--allow-mass-delete" in refused.err
    assert seeded.proxy.writes() == []
    assert seeded.ingress_ips("blog") == ["10.9.0.10"]
    allowed = run_cli("apply", str(path), *kube(seeded), "--allow-mass-delete")
    assert allowed.code == 0, allowed.err
    assert seeded.ingress_ips("blog") == [] and seeded.ingress_ips("wiki") == []
    reasons = [e["reason"] for e in seeded.events()]
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
      service: {namespace: %s, name: blog, port: 80}
"""


def test_local_tunnels_go_to_a_configmap_for_an_in_cluster_cloudflared(
        seeded: Cluster, tmp_path: Path) -> None:
    path = repo(tmp_path, extra={"tunnel.yaml": LOCAL_TUNNEL % seeded.namespace})
    result = run_cli("apply", str(path), *kube(seeded))
    assert result.code == 0, result.err
    configmap = seeded.config_map("portside-cloudflared-home")
    assert configmap is not None
    config = configmap["data"]["config.yml"]
    assert "tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef" in config
    assert "service: http://10.9.0.10:80" in config and config.rstrip().endswith("service: http_status:404")

    seeded.proxy.clear_log()
    assert "No changes" in run_cli("apply", str(path), *kube(seeded)).out
    assert seeded.proxy.writes() == []

    (path / "tunnel.yaml").unlink()
    removed = run_cli("apply", str(path), *kube(seeded))
    assert removed.code == 0 and "- TunnelConfiguration home" in removed.out
    assert seeded.config_map("portside-cloudflared-home") is None


def test_an_unreachable_api_server_is_one_clear_line(tmp_path: Path) -> None:
    with FakeKube() as stopped:
        kubeconfig = stopped.write_kubeconfig(tmp_path / "kubeconfig")
    # The server is gone now: its port refuses connections.
    result = run_cli("diff", str(repo(tmp_path)), "--kubeconfig", str(kubeconfig))
    assert result.code == 1
    assert "cannot reach the Kubernetes API at http://127.0.0.1:" in result.err
    assert "Traceback" not in result.err and result.out == ""
