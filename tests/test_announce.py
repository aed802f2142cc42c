"""build_announcements / build_table: which nodes may answer for each assigned IP, in which order."""

from __future__ import annotations

import hashlib
from typing import Any

from reconciler.allocator import Allocation
from reconciler.desired.models import IPAddressPool, L2Advertisement
from reconciler.planning.announce import build_announcements, build_table
from reconciler.planning.announcement_table import (
    DEFAULT_HEARTBEAT,
    Announcement,
    HeartbeatSettings,
    NodeInfo,
    decode_table,
    encode_table,
)
from reconciler.planning.live import EXCLUDE_FROM_LB_LABEL, LiveNode, LiveService


def pool(name: str, *addresses: str, labels: dict[str, str] | None = None) -> IPAddressPool:
    return IPAddressPool.model_validate({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "labels": labels or {}}, "spec": {"addresses": list(addresses)},
    })


def advert(name: str, **spec: Any) -> L2Advertisement:
    return L2Advertisement.model_validate({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": name}, "spec": spec,
    })


def node(name: str, address: str | None, **labels: str) -> LiveNode:
    return LiveNode(name=name, labels=dict(labels), address=address)


def hash_order(nodes: set[str], ip: str) -> tuple[str, ...]:
    """The documented order, computed here independently: ascending hex sha256 of node#ip."""
    return tuple(sorted(nodes, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).hexdigest()))


NODES = [
    node("n1", "192.168.1.11", zone="a"),
    node("n2", "192.168.1.12", zone="a"),
    node("n3", "192.168.1.13", zone="b"),
    node("n4", "192.168.1.14", zone="b", **{EXCLUDE_FROM_LB_LABEL: ""}),
    node("n5", None, zone="a"),  # no InternalIP: its speaker cannot be heard
]
POOLS = [
    pool("home", "10.0.0.0/24", "fd00::/120", labels={"tier": "home"}),
    pool("lab", "10.0.1.0/24", labels={"tier": "lab"}),
    pool("dark", "10.0.2.0/24"),
]
ALL = {"n1", "n2", "n3"}


def test_pool_selection_interfaces_and_node_selectors() -> None:
    advertisements = [
        advert("home-a", ipAddressPools=["home"], interfaces=["eth0"],
               nodeSelectors=[{"matchLabels": {"zone": "a"}}]),
        advert("home-b", ipAddressPools=["home"], interfaces=["eth1", "eth0"],
               nodeSelectors=[{"matchLabels": {"zone": "b"}}]),
        advert("lab", ipAddressPoolSelectors=[{"matchLabels": {"tier": "lab"}}]),
    ]
    allocations = [
        Allocation("web/blog", ("10.0.0.10", "fd00::a"), "home"),
        Allocation("web/shop", ("10.0.0.9",), "home"),
        Allocation("lab/test", ("10.0.1.1",), "lab"),
        Allocation("x/dark", ("10.0.2.1",), "dark"),  # no advertisement selects pool dark
        Allocation("x/pending", (), None, "pool exhausted"),
    ]
    got = build_announcements(advertisements, POOLS, allocations, [], NODES, {})
    assert got == (
        Announcement("10.0.0.9", "web/shop", ("eth0", "eth1"), hash_order(ALL, "10.0.0.9")),
        Announcement("10.0.0.10", "web/blog", ("eth0", "eth1"), hash_order(ALL, "10.0.0.10")),
        Announcement("10.0.1.1", "lab/test", (), hash_order(ALL, "10.0.1.1")),
        Announcement("fd00::a", "web/blog", ("eth0", "eth1"), hash_order(ALL, "fd00::a")),
    )


def test_an_advertisement_naming_no_pool_selects_all_and_no_interfaces_means_all() -> None:
    advertisements = [advert("everything"), advert("zone-b", ipAddressPools=["dark"], interfaces=["eth9"],
                                                   nodeSelectors=[{"matchLabels": {"zone": "b"}}])]
    got = build_announcements(advertisements, POOLS, [Allocation("x/dark", ("10.0.2.1",), "dark")], [], NODES, {})
    assert got == (Announcement("10.0.2.1", "x/dark", (), hash_order(ALL, "10.0.2.1")),)


def test_node_selectors_narrow_the_candidates() -> None:
    advertisements = [advert("b-only", nodeSelectors=[
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}])]
    got = build_announcements(advertisements, POOLS, [Allocation("x/a", ("10.0.0.1",), "home")], [], NODES, {})
    assert got[0].candidates == ("n3",)  # n4 is in zone b but excluded by its label


def test_external_traffic_policy_local_needs_a_ready_endpoint() -> None:
    services = [
        LiveService("web", "local", external_traffic_policy="Local"),
        LiveService("web", "cluster", external_traffic_policy="Cluster"),
        LiveService("web", "nowhere", external_traffic_policy="Local"),
    ]
    ready = {"web/local": frozenset({"n2", "n3", "n4"}), "web/cluster": frozenset({"n1"})}
    allocations = [Allocation("web/local", ("10.0.0.1",), "home"), Allocation("web/cluster", ("10.0.0.2",), "home"),
                   Allocation("web/nowhere", ("10.0.0.3",), "home")]
    got = {a.ip: a.candidates for a in build_announcements([advert("all")], POOLS, allocations, services, NODES,
                                                            ready)}
    assert got == {
        "10.0.0.1": hash_order({"n2", "n3"}, "10.0.0.1"),  # n4 has a pod but is excluded
        "10.0.0.2": hash_order(ALL, "10.0.0.2"),  # Cluster: endpoints do not matter
        "10.0.0.3": (),  # no ready pod anywhere: nobody answers, so traffic is not blackholed
    }


def test_a_shared_ip_is_announced_once_for_all_its_services() -> None:
    services = [LiveService("web", "http", external_traffic_policy="Local"),
                LiveService("web", "https", external_traffic_policy="Local")]
    ready = {"web/http": frozenset({"n1", "n2"}), "web/https": frozenset({"n2", "n3"})}
    allocations = [Allocation("web/https", ("10.0.0.5",), "home"), Allocation("web/http", ("10.0.0.5",), "home")]
    got = build_announcements([advert("all")], POOLS, allocations, services, NODES, ready)
    assert got == (Announcement("10.0.0.5", "web/http,web/https", (), ("n2",)),)


def test_no_advertisement_no_announcement() -> None:
    assert build_announcements([], POOLS, [Allocation("x/a", ("10.0.0.1",), "home")], [], NODES, {}) == ()


def test_table_lists_the_candidate_nodes_and_round_trips() -> None:
    allocations = [Allocation("x/a", ("10.0.0.1",), "home"), Allocation("x/b", ("10.0.1.1",), "lab")]
    advertisements = [advert("home", ipAddressPools=["home"], nodeSelectors=[{"matchLabels": {"zone": "b"}}]),
                      advert("lab", ipAddressPools=["lab"], nodeSelectors=[{"matchLabels": {"zone": "a"}}])]
    heartbeat = HeartbeatSettings(port=7000, interval_ms=20, dead_after_ms=100)
    table = build_table(advertisements, POOLS, allocations, [], NODES, {}, generation=3, revision=None,
                        heartbeat=heartbeat)
    assert table.generation == 3 and table.revision == "" and table.heartbeat == heartbeat
    assert dict(table.nodes) == {"n1": NodeInfo("192.168.1.11"), "n2": NodeInfo("192.168.1.12"),
                                 "n3": NodeInfo("192.168.1.13")}
    assert decode_table(encode_table(table)) == table
    empty = build_table([], POOLS, allocations, [], NODES, {}, generation=0, revision="abc")
    assert (empty.nodes, empty.announcements, empty.revision, empty.heartbeat) == ({}, (), "abc", DEFAULT_HEARTBEAT)


def test_candidate_order_spreads_ips_over_nodes() -> None:
    nodes = [node(f"node-{i}", f"192.168.1.{i}") for i in range(1, 5)]
    allocations = [Allocation(f"x/s{i}", (f"10.0.0.{i}",), "home") for i in range(1, 101)]
    table = build_table([advert("all")], POOLS, allocations, [], nodes, {}, generation=1, revision="r")
    leaders = [a.candidates[0] for a in table.announcements]
    assert all(leaders.count(n.name) >= 10 for n in nodes)  # sha256 order, not name order
