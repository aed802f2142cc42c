"""`portside import` against a cluster that runs MetalLB (its CRDs served, objects read through the
official client's custom objects API) and a hand-configured remote tunnel at Cloudflare: the repo
it writes plans no Service change and no DNS change but adoptions; a second import is identical."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.kube import Cluster

pytestmark = pytest.mark.kube
ACCOUNT = "0123456789abcdef0123456789abcdef"
GROUP, VERSION = "metallb.io", "v1beta1"


def metallb(cluster: Cluster, plural: str, name: str, spec: dict[str, Any],
            labels: dict[str, str] | None = None) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": {"ipaddresspools": "IPAddressPool",
                                                         "l2advertisements": "L2Advertisement"}[plural],
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.namespace, plural, body)


def service(cluster: Cluster, name: str, ips: list[str], pool: str, *, port: int = 80,
            **annotations: str) -> None:
    """A LoadBalancer Service as MetalLB leaves it: its IPs in status, its pool annotated."""
    cluster.add_service(name, port=port, annotations={"metallb.io/ip-allocated-from-pool": pool, **annotations})
    cluster.core.patch_namespaced_service_status(name, cluster.namespace, {
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}})


@pytest.fixture
def metallb_cluster(cluster: Cluster) -> Cluster:
    cluster.require_metallb()
    for name in ("node-a", "node-b"):
        cluster.add_node(name, f"192.168.77.{10 + len(name)}")
    metallb(cluster, "ipaddresspools", "home", {"addresses": ["192.168.77.100-192.168.77.110"]}, {"zone": "lan"})
    metallb(cluster, "ipaddresspools", "static", {"addresses": ["192.168.77.200/30"], "autoAssign": False})
    # Advertised only by BGP in the MetalLB install: a pool no L2Advertisement names.
    metallb(cluster, "ipaddresspools", "bgp-only", {"addresses": ["10.77.0.0/24"],
                                                    "serviceAllocation": {"namespaces": ["bgp-team"]}})
    metallb(cluster, "l2advertisements", "lan", {"ipAddressPoolSelectors": [{"matchLabels": {"zone": "lan"}}],
                                                 "ipAddressPools": ["static"]})
    service(cluster, "web", ["192.168.77.100"], "home")
    service(cluster, "api", ["192.168.77.105"], "home")  # not the lowest free IP
    service(cluster, "audio", ["192.168.77.101"], "home", port=5000, **{"metallb.io/allow-shared-ip": "media"})
    service(cluster, "video", ["192.168.77.101"], "home", port=5001, **{"metallb.io/allow-shared-ip": "media"})
    service(cluster, "asked", ["192.168.77.107"], "home", **{"metallb.io/loadBalancerIPs": "192.168.77.107"})
    service(cluster, "db", ["192.168.77.201"], "static")
    return cluster


def import_to(cluster: Cluster, out: Path, *extra: str) -> tuple[int, str, str]:
    result = run_cli("import", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig),
                     "--namespace", cluster.namespace, *extra)
    return result.code, result.out, result.err


def ours(cluster: Cluster, text: str) -> bool:
    return f"{cluster.namespace}/" in text


def test_import_writes_metallb_and_pins_then_the_plan_moves_nothing(metallb_cluster: Cluster,
                                                                    tmp_path: Path) -> None:
    cluster = metallb_cluster
    out = tmp_path / "repo"
    code, _, err = import_to(cluster, out)
    assert code == 0, err
    pools = (out / "metallb" / "ipaddresspools.yaml").read_text()
    assert f"# from metallb.io/v1beta1 IPAddressPool {cluster.namespace}/home" in pools
    assert "resourceVersion" not in pools and "uid:" not in pools and "managedFields" not in pools
    assert "autoAssign: false" in pools and "autoAssign: true" not in pools  # the CRD's default dropped
    exposures = (out / "services" / "exposures.yaml").read_text()
    assert f"{cluster.namespace}/api holds 192.168.77.105" in exposures
    assert f"{cluster.namespace}/db holds 192.168.77.201" in exposures
    assert "name: asked" not in exposures and "name: web" not in exposures
    assert "0 Service change(s)" in err and "no IP moves" in err

    diff = run_cli("diff", str(out), "--kubeconfig", str(cluster.kubeconfig), "--namespace", cluster.namespace,
                   "--format", "json")
    assert diff.code == 0, diff.err
    moved = [c for c in json.loads(diff.out)["changes"]
             if c["target"]["kind"] == "Service" and ours(cluster, c["target"]["id"])]
    assert moved == []

    again = tmp_path / "again"
    assert import_to(cluster, again)[0] == 0
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()} == \
        {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_dry_run_prints_and_a_non_empty_directory_is_refused(metallb_cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    code, printed, err = import_to(metallb_cluster, out, "--dry-run")
    assert code == 0, err
    assert "# ===== metallb/ipaddresspools.yaml" in printed and not out.exists()
    assert "0 Service change(s)" in err
    out.mkdir()
    (out / "README.md").write_text("mine\n")
    code, _, err = import_to(metallb_cluster, out)
    assert code == 1 and "not an empty directory" in err and "--force" in err
    assert import_to(metallb_cluster, out, "--force")[0] == 0
    assert (out / "README.md").read_text() == "mine\n"


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as cf:
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cf.token)
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
        yield cf


def test_a_remote_tunnel_becomes_routes_to_services_and_its_records_are_adopted(
        metallb_cluster: Cluster, cloudflare: FakeCloudflare, tmp_path: Path) -> None:
    cluster = metallb_cluster
    zone = cloudflare.add_zone("example.dev", ACCOUNT)
    tunnel = cloudflare.add_tunnel(ACCOUNT, "home lab", config={"ingress": [
        {"hostname": "blog.example.dev", "service": "http://192.168.77.100:80"},
        {"hostname": "api.example.dev", "service": "http://192.168.77.105:80",
         "originRequest": {"httpHostHeader": "api.internal"}},
        {"hostname": "nas.example.dev", "service": "https://192.168.1.5:5001", "originRequest": {"noTLSVerify": True}},
        {"service": "http_status:404"}]})["id"]
    for host in ("blog", "api", "nas"):
        cloudflare.add_record(zone, f"{host}.example.dev", "CNAME", f"{tunnel}.cfargotunnel.com", proxied=True)
    out = tmp_path / "repo"
    code, _, err = import_to(cluster, out, "--account", ACCOUNT)
    assert code == 0, err
    text = (out / "tunnels" / "home-lab.yaml").read_text()
    assert f"tunnelId: {tunnel}" in text and "tunnelName: home lab" in text
    assert f"namespace: {cluster.namespace}" in text and "name: web" in text  # a Service reference
    assert "url: https://192.168.1.5:5001" in text and "adopt: true" in text
    assert "0 Service change(s)" in err and "3 DNSRecord change(s)" in err and "TunnelConfiguration" not in err

    cloudflare.clear_log()
    applied = run_cli("apply", str(out), "--kubeconfig", str(cluster.kubeconfig), "--namespace", cluster.namespace)
    assert applied.code == 0, applied.err
    # The adoption writes the ownership comments and nothing else; the tunnel's rules stay.
    assert len(cloudflare.writes()) == len(cloudflare.calls("POST", r"/dns_records/batch$")) == 1
    records = {r["name"]: r for r in cloudflare.records(zone)}
    assert all(r["comment"].startswith("managed by portside") for r in records.values())
    assert {r["content"] for r in records.values()} == {f"{tunnel}.cfargotunnel.com"}
