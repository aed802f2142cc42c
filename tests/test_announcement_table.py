"""The announcement table: ranking, JSON codec, errors, ConfigMap transport."""

from __future__ import annotations

import hashlib
import ipaddress
import json

import pytest

from reconciler.common.errors import StateError
from reconciler.planning.announcement_table import (
    CONFIGMAP_GZIP_KEY,
    CONFIGMAP_KEY,
    DEFAULT_HEARTBEAT,
    Announcement,
    AnnouncementTable,
    HeartbeatSettings,
    NodeInfo,
    decode_table,
    encode_table,
    rank_candidates,
    table_from_configmap,
    table_to_configmap_data,
)

DESIGN_EXAMPLE = """
{"generation": 7, "revision": "0123abc",
 "heartbeat": {"port": 7947, "interval_ms": 100, "dead_after_ms": 400},
 "nodes": {"node-a": {"address": "192.168.1.10"}, "node-b": {"address": "192.168.1.11"}},
 "announcements": [{"ip": "192.168.1.100", "service": "default/blog",
                    "interfaces": ["eth0"], "candidates": ["node-b", "node-a"]}]}
"""


def test_design_example_decodes() -> None:
    table = decode_table(DESIGN_EXAMPLE)
    assert table == AnnouncementTable(
        generation=7,
        revision="0123abc",
        heartbeat=HeartbeatSettings(port=7947, interval_ms=100, dead_after_ms=400),
        nodes={"node-a": NodeInfo("192.168.1.10"), "node-b": NodeInfo("192.168.1.11")},
        announcements=(Announcement("192.168.1.100", "default/blog", ("eth0",), ("node-b", "node-a")),),
    )


def test_encode_is_compact_deterministic_and_round_trips() -> None:
    table = decode_table(DESIGN_EXAMPLE)
    text = encode_table(table)
    assert " " not in text.replace("default/blog", "")
    assert decode_table(text) == table
    reordered = AnnouncementTable(7, "0123abc", table.heartbeat,
                                  {"node-b": NodeInfo("192.168.1.11"), "node-a": NodeInfo("192.168.1.10")},
                                  table.announcements)
    assert encode_table(reordered) == text
    assert json.loads(text) == json.loads(DESIGN_EXAMPLE)


@pytest.mark.parametrize("announcements", [
    (),
    (Announcement("10.0.0.1", "", (), ()),),
    (Announcement("10.0.0.1", 'ns/a,ns/"b"\\ é ☃ 😀 \n\x00', ("eth0", "ö1"), ("node-é", 'n"x')),
     Announcement("fd00::1", "ns/c", (), ("node-a",))),
])
def test_encode_spells_what_json_dumps_would(announcements: tuple[Announcement, ...]) -> None:
    """encode_table spells the announcements out for speed; the bytes must be json.dumps's."""
    from reconciler.planning.announcement_table import table_to_json

    table = AnnouncementTable(3, "rev ☃", DEFAULT_HEARTBEAT, {"node-é": NodeInfo("10.0.0.9"),
                                                           'n"x': NodeInfo("10.0.0.8")}, announcements)
    assert encode_table(table) == json.dumps(table_to_json(table), separators=(",", ":"), sort_keys=True,
                                             ensure_ascii=False)


def test_interfaces_default_to_every_interface_and_ipv6_is_normalised() -> None:
    raw = json.loads(DESIGN_EXAMPLE)
    raw["announcements"] = [{"ip": "2001:DB8:0:0::10", "service": "x/y", "candidates": ["node-a"]}]
    table = decode_table(json.dumps(raw))
    assert table.announcements == (Announcement("2001:db8::10", "x/y", (), ("node-a",)),)


def test_rank_candidates_matches_metallb_order() -> None:
    nodes = ["node-a", "node-b", "node-c", "node-d"]
    for ip in ["192.168.1.100", "192.168.1.101", "2001:db8::1"]:
        expected = sorted(nodes, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).hexdigest())
        assert rank_candidates(nodes, ip) == tuple(expected)
        assert rank_candidates(reversed(nodes), ip) == tuple(expected)
    # Known value, computed independently: the order is part of the contract with MetalLB users.
    assert rank_candidates(["node-a", "node-b"], "192.168.1.100") == tuple(
        sorted(["node-a", "node-b"], key=lambda n: hashlib.sha256(f"{n}#192.168.1.100".encode()).digest()))


def test_rank_candidates_spreads_ips_over_nodes() -> None:
    nodes = ["node-a", "node-b", "node-c"]
    firsts = [rank_candidates(nodes, f"10.0.0.{i}")[0] for i in range(1, 241)]
    for node in nodes:
        assert 50 < firsts.count(node) < 110


def _mutate(path: list[object], value: object) -> str:
    raw = json.loads(DESIGN_EXAMPLE)
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(raw)


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "message"), [
    (["generation"], -1, "generation: must be at least 0, got -1"),
    (["generation"], "7", "generation: expected an integer, got a string"),
    (["generation"], True, "generation: expected an integer, got a boolean"),
    (["revision"], _DELETE, "missing field 'revision'"),
    (["extra"], 1, "unknown field 'extra'"),
    (["heartbeat", "port"], 0, "heartbeat.port: must be between 1 and 65535, got 0"),
    (["heartbeat", "port"], 70000, "heartbeat.port: must be between 1 and 65535"),
    (["heartbeat", "dead_after_ms"], 100, "heartbeat.dead_after_ms: must be longer than interval_ms"),
    (["heartbeat", "interval"], 100, "heartbeat: unknown field 'interval'"),
    (["nodes"], [], "nodes: expected an object, got a list"),
    (["nodes", "node-a", "address"], "192.168.1", "nodes.node-a.address: '192.168.1' is not an IPv4 or IPv6"),
    (["nodes", "node-a"], {}, "nodes.node-a: missing field 'address'"),
    (["announcements"], {}, "announcements: expected a list, got an object"),
    (["announcements", 0, "ip"], "192.168.1.300", "announcements[0].ip: '192.168.1.300' is not an IPv4"),
    (["announcements", 0, "ip"], None, "announcements[0].ip: expected a string, got null"),
    (["announcements", 0, "candidates"], ["node-a", "node-z"],
     "announcements[0].candidates[1]: node 'node-z' is not in nodes"),
    (["announcements", 0, "candidates"], ["node-a", "node-a"],
     "announcements[0].candidates[1]: 'node-a' is listed twice"),
    (["announcements", 0, "interfaces"], "eth0",
     "announcements[0].interfaces: expected a list, got a string"),
    (["announcements", 0, "interfaces"], [""], "announcements[0].interfaces[0]: must not be empty"),
    (["announcements", 0, "weight"], 1, "announcements[0]: unknown field 'weight'"),
])
def test_bad_tables_say_what_and_where(path: list[object], value: object, message: str) -> None:
    with pytest.raises(StateError) as info:
        decode_table(_mutate(path, value), source="/etc/portside/announcements.json")
    assert str(info.value).startswith("/etc/portside/announcements.json: ")
    assert message in str(info.value)


def test_duplicate_ip_names_both_entries() -> None:
    raw = json.loads(DESIGN_EXAMPLE)
    raw["announcements"].append(dict(raw["announcements"][0], service="default/other"))
    with pytest.raises(StateError, match=r"announcements\[1\].ip: 192.168.1.100 is already announced by "
                                         r"announcements\[0\]"):
        decode_table(json.dumps(raw))


@pytest.mark.parametrize("text", ["", "{", "[]", "null", b"\xff\xfe"])
def test_not_json_or_not_an_object(text: str | bytes) -> None:
    with pytest.raises(StateError, match=r"^src: "):
        decode_table(text, source="src")


def test_default_heartbeat_is_fast_enough_for_the_failover_goal() -> None:
    assert DEFAULT_HEARTBEAT.dead_after_ms <= 250
    assert DEFAULT_HEARTBEAT.dead_after_ms >= 3 * DEFAULT_HEARTBEAT.interval_ms


def _big_table(count: int) -> AnnouncementTable:
    nodes = {
        "k8s-worker-rack1-01.home.example.net": NodeInfo("192.168.10.21"),
        "k8s-worker-rack1-02.home.example.net": NodeInfo("192.168.10.22"),
        "k8s-worker-rack2-01.home.example.net": NodeInfo("192.168.10.23"),
    }
    network = ipaddress.ip_network("10.128.0.0/16")
    announcements = []
    for i in range(count):
        ip = str(network[i + 1])
        announcements.append(Announcement(ip, f"namespace-{i % 37}/service-with-a-long-name-{i}", ("eth0",),
                                          rank_candidates(nodes, ip)))
    return AnnouncementTable(123456, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", DEFAULT_HEARTBEAT, nodes,
                             tuple(announcements))


def test_small_table_goes_to_the_plain_key() -> None:
    table = _big_table(50)
    data, binary = table_to_configmap_data(table)
    assert set(data) == {CONFIGMAP_KEY} and binary == {}
    assert data[CONFIGMAP_KEY] == encode_table(table)
    assert table_from_configmap(data, None) == table


def test_ten_thousand_ips_fit_in_a_configmap() -> None:
    table = _big_table(10_000)
    assert len(encode_table(table)) > 1024 * 1024  # would not fit uncompressed
    data, binary = table_to_configmap_data(table)
    assert data == {} and set(binary) == {CONFIGMAP_GZIP_KEY}
    assert len(binary[CONFIGMAP_GZIP_KEY]) < 700 * 1024
    assert table_to_configmap_data(table) == (data, binary)  # deterministic: no needless rewrites
    assert table_from_configmap(None, binary) == table


@pytest.mark.parametrize(("data", "binary", "message"), [
    ({}, {}, "has neither data key 'announcements.json' nor binaryData key 'announcements.json.gz'"),
    ({CONFIGMAP_KEY: "{}"}, {CONFIGMAP_GZIP_KEY: "AAAA"}, "both 'announcements.json' and"),
    (None, {CONFIGMAP_GZIP_KEY: "not base64!"}, "binaryData key announcements.json.gz: not gzip+base64"),
    (None, {CONFIGMAP_GZIP_KEY: "aGVsbG8="}, "binaryData key announcements.json.gz: not gzip+base64"),
    ({CONFIGMAP_KEY: "{"}, None, "key announcements.json: not valid JSON"),
])
def test_bad_configmaps(data: dict[str, str] | None, binary: dict[str, str] | None, message: str) -> None:
    with pytest.raises(StateError, match=r"^ConfigMap portside-announcements") as info:
        table_from_configmap(data, binary)
    assert message in str(info.value)
