"""The import core: a live MetalLB world becomes documents whose first plan moves nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.validate import load_desired_state
from reconciler.importing import LiveMetalLB, LiveRemoteTunnel, import_world
from reconciler.planning.live import (
    DNSRecord,
    IngressRule,
    LiveNode,
    LiveService,
    LiveState,
    LiveTunnel,
    LiveZone,
    ServicePort,
)
from reconciler.planning.planner import make_plan
from reconciler.tunnels.dns import OWNER_MARKER

TUNNEL_ID = "c1744f8b-faa1-48a4-9e5c-02ac921467fa"
ACCOUNT = "0123456789abcdef0123456789abcdef"


def server_object(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A MetalLB object as the API server returns it: server fields, CRD defaults filled in."""
    metadata: dict[str, Any] = {
        "name": name, "namespace": "metallb-system", "uid": f"uid-{name}", "resourceVersion": "4711",
        "generation": 1, "creationTimestamp": "2026-11-01T10:00:00Z",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    }
    if labels:
        metadata["labels"] = labels
    if kind == "IPAddressPool":
        spec = {"autoAssign": True, "avoidBuggyIPs": False, **spec}
    return {"apiVersion": "metallb.io/v1beta1", "kind": kind, "metadata": metadata, "spec": spec}


def svc(key: str, *ips: str, ports: tuple[int, ...] = (80,), pool: str = "home", **annotations: str) -> LiveService:
    namespace, name = key.split("/")
    if ips:  # MetalLB's controller records the pool on every Service it gave an IP
        annotations["metallb.io/ip-allocated-from-pool"] = pool
    return LiveService(namespace=namespace, name=name, ports=tuple(ServicePort(p) for p in ports),
                       annotations=dict(annotations), ingress=ips)


METALLB = LiveMetalLB(
    pools=(
        server_object("IPAddressPool", "home", {"addresses": ["192.168.1.100-192.168.1.110"]}, {"zone": "lan"}),
        server_object("IPAddressPool", "reserved", {"addresses": ["192.168.1.200/30"], "autoAssign": False}),
        server_object("IPAddressPool", "bgp-only", {"addresses": ["10.50.0.0/24"],
                                                    "serviceAllocation": {"namespaces": ["bgp"]}}),
    ),
    advertisements=(server_object("L2Advertisement", "lan", {"ipAddressPoolSelectors": [
        {"matchLabels": {"zone": "lan"}}], "ipAddressPools": ["reserved"]}),),
    unsupported=("BGPAdvertisement metallb-system/bgp", "BGPPeer metallb-system/router"),
)

SERVICES = (
    svc("apps/web", "192.168.1.100"),                      # the lowest: automatic gives it this anyway
    svc("apps/api", "192.168.1.105"),                      # not the lowest: must be pinned
    svc("media/audio", "192.168.1.101", ports=(5000,), **{"metallb.io/allow-shared-ip": "media"}),
    svc("media/video", "192.168.1.101", ports=(5001,), **{"metallb.io/allow-shared-ip": "media"}),
    svc("apps/req", "192.168.1.107", **{"metallb.io/loadBalancerIPs": "192.168.1.107"}),  # asked: kept
    svc("apps/db", "192.168.1.201", pool="reserved"),                       # from the autoAssign: false pool: pinned
    svc("bgp/router", "10.50.0.7", pool="bgp-only"),                       # serviceAllocation pool, not its lowest IP
    svc("apps/waiting"),                                   # pending: nothing to write
    LiveService(namespace="other", name="lb", load_balancer_class="example.com/other", ingress=("192.168.1.102",)),
)
NODES = (LiveNode("node-a", address="192.168.1.10"), LiveNode("node-b", address="192.168.1.11"))


def live_world(**extra: Any) -> LiveState:
    return LiveState(services=SERVICES, nodes=NODES, **extra)


def write(files: dict[str, str], root: Path) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_metallb_objects_are_written_clean_and_unsupported_kinds_listed() -> None:
    world = import_world(METALLB, live_world(), [], source="a test cluster")
    pools = world.files["metallb/ipaddresspools.yaml"]
    for server_field in ("uid", "resourceVersion", "managedFields", "creationTimestamp", "last-applied",
                         "autoAssign: true", "avoidBuggyIPs"):
        assert server_field not in pools
    assert "autoAssign: false" in pools  # a value that is not the CRD's default stays
    assert "# from metallb.io/v1beta1 IPAddressPool metallb-system/home" in pools
    assert "zone: lan" in pools  # labels stay: advertisements select pools by them
    assert "ipAddressPoolSelectors" in world.files["metallb/l2advertisements.yaml"]
    assert any("BGPPeer metallb-system/router: not imported" in n for n in world.notes)
    assert any("BGPAdvertisement metallb-system/bgp: not imported" in n for n in world.notes)


def test_only_services_automatic_allocation_would_move_are_pinned(tmp_path: Path) -> None:
    world = import_world(METALLB, live_world(), [], source="a test cluster")
    exposures = world.files["services/exposures.yaml"]
    assert "apps/api holds 192.168.1.105; automatic allocation would give it 192.168.1.100" in exposures
    assert "apps/db" in world.pinned  # from an autoAssign: false pool: never given automatically
    # Asked for by annotation, or held by another controller's Service: nothing to write.
    assert "apps/req" not in world.pinned and "other/lb" not in exposures
    # The pins make allocation on an empty cluster reproduce every IP held now (a Service
    # recreated from Git gets its IP back), and nothing is pinned that did not need it.
    desired = load_desired_state(write(world.files, tmp_path))
    fresh = LiveState(services=tuple(replace(s, ingress=()) for s in SERVICES), nodes=NODES)
    got = {c.target.id: set((c.after or {}).get("ingress", [])) for c in make_plan(desired, fresh).changes
           if c.target.kind == "Service"}
    for s in SERVICES:
        if s.ingress and s.load_balancer_class is None:
            assert got[s.key] == set(s.ingress), s.key
    for key in world.pinned:
        unpinned = [e for e in desired.exposures if e.spec.service.key != key]
        without = make_plan(replace(desired, exposures=tuple(unpinned)), fresh)
        moved = next(c for c in without.changes if c.target.id == key)
        assert set((moved.after or {}).get("ingress", [])) != set(next(s for s in SERVICES if s.key == key).ingress)


def test_the_first_plan_after_an_import_moves_no_service(tmp_path: Path) -> None:
    live = live_world()
    world = import_world(METALLB, live, [], source="a test cluster")
    desired = load_desired_state(write(world.files, tmp_path))
    plan = make_plan(desired, live)
    services = {c.target.id: c for c in plan.changes if c.target.kind == "Service"}
    held = [s.key for s in SERVICES if s.ingress and s.load_balancer_class is None]
    # Every Service that holds an IP keeps it, untouched (not even an annotation written).
    assert {k: services[k].action for k in held} == dict.fromkeys(held, "no-op")
    assert services["apps/waiting"].action == "create"  # pending under MetalLB: gets an IP now


def test_a_second_import_is_byte_identical_whatever_the_read_order() -> None:
    first = import_world(METALLB, live_world(), [], source="a test cluster")
    shuffled = LiveMetalLB(pools=tuple(reversed(METALLB.pools)), advertisements=METALLB.advertisements,
                           unsupported=tuple(reversed(METALLB.unsupported)))
    again = import_world(shuffled, LiveState(services=tuple(reversed(SERVICES)), nodes=NODES), [],
                         source="a test cluster")
    assert again.files == first.files
    assert again.notes == first.notes


def test_a_pool_portside_cannot_take_is_skipped_with_the_reason() -> None:
    broken = server_object("IPAddressPool", "odd", {"addresses": ["192.168.9.0/24"], "futureField": 1})
    world = import_world(LiveMetalLB(pools=(broken,)), LiveState(), [], source="a test cluster")
    assert "metallb/ipaddresspools.yaml" not in world.files
    assert any(n.startswith("IPAddressPool metallb-system/odd: not imported") and "futureField" in n
               for n in world.notes)


def remote_tunnel(records: tuple[DNSRecord, ...]) -> LiveRemoteTunnel:
    return LiveRemoteTunnel(
        account_id=ACCOUNT, tunnel_id=TUNNEL_ID, name="Home Tunnel",
        ingress=(
            IngressRule(service="http://192.168.1.100:80", hostname="blog.example.dev",
                        origin_request={"connectTimeout": 10, "httpHostHeader": "blog.example.dev"}),
            IngressRule(service="https://192.168.1.105:80", hostname="api.example.dev", path="^/v1/",
                        origin_request={"connectTimeout": 10}),
            IngressRule(service="http://192.168.1.50:3000", hostname="grafana.example.dev",
                        origin_request={"connectTimeout": 10}),
            IngressRule(service="http_status:404", origin_request={"connectTimeout": 10}),
        ),
        origin_request={"connectTimeout": 10},
        zones=("example.dev",),
        records=records,
    )


def test_a_remote_tunnel_becomes_documents_whose_plan_only_adopts_dns(tmp_path: Path) -> None:
    target = f"{TUNNEL_ID}.cfargotunnel.com"
    records = (
        DNSRecord("example.dev", "blog.example.dev", "CNAME", target, True, "", "r1"),
        DNSRecord("example.dev", "api.example.dev", "CNAME", target, True,
                  OWNER_MARKER.format(owner="portside"), "r2"),
        DNSRecord("example.dev", "grafana.example.dev", "A", "203.0.113.7", True, "", "r3"),
    )
    tunnel = remote_tunnel(records)
    live = live_world(
        tunnels={"home-tunnel": LiveTunnel(name="home-tunnel", tunnel_id=TUNNEL_ID, ingress=tunnel.ingress,
                                           origin_request=dict(tunnel.origin_request))},
        zones={"example.dev": LiveZone("example.dev", "z1", records)},
    )
    world = import_world(METALLB, live, [tunnel], source="a test cluster")
    text = world.files["tunnels/home-tunnel.yaml"]
    assert "tunnelName: Home Tunnel" in text and f"tunnelId: {TUNNEL_ID}" in text
    # The blog's origin is the LoadBalancer IP of apps/web: it becomes a Service reference.
    assert "name: web" in text and "url: http://192.168.1.50:3000" in text
    assert "scheme: https" in text  # apps/api, reached over https
    assert any("grafana.example.dev: a A record" in n for n in world.notes)
    desired = load_desired_state(write(world.files, tmp_path))
    plan = make_plan(desired, live)
    moved = [(str(c.target), c.action) for c in plan.changes if c.action != "no-op"]
    assert ("DNSRecord blog.example.dev", "update") in moved  # adopted: gains portside's marker
    assert ("DNSRecord grafana.example.dev", "conflict") in moved  # not the tunnel's: left alone
    assert not [m for m in moved if m[0].startswith(("Service", "TunnelConfiguration"))
                and m != ("Service apps/waiting", "create")], moved
    adopted = next(c for c in plan.changes if c.target.id == "blog.example.dev")
    assert adopted.before["content"] == adopted.after["content"] == target


@pytest.mark.parametrize("url", ["http://192.168.1.100", "http://192.168.1.100:81", "http://192.168.1.100:80/x",
                                 "unix:/run/app.sock", "http_status:404"])
def test_urls_that_are_not_exactly_a_service_port_stay_urls(url: str) -> None:
    tunnel = LiveRemoteTunnel(account_id=ACCOUNT, tunnel_id=TUNNEL_ID, name="t",
                              ingress=(IngressRule(service=url, hostname="x.example.dev"),
                                       IngressRule(service="http_status:404")))
    world = import_world(LiveMetalLB(), live_world(), [tunnel], source="a test cluster")
    assert f"url: {url}" in world.files["tunnels/t.yaml"]
