"""PeerLink.take: what a received datagram does to peer liveness (no sockets, no thread)."""

from __future__ import annotations

import time

from reconciler.common.metrics import Registry
from reconciler.planning.announcement_table import DEFAULT_HEARTBEAT, AnnouncementTable, NodeInfo
from reconciler.speaker.heartbeat import Heartbeat, HeartbeatDrop, encode_heartbeat
from reconciler.speaker.peers import PeerCounters, PeerLink

KEY = b"peer-link-test-key-0123456789"
TABLE = AnnouncementTable(1, "r", DEFAULT_HEARTBEAT,
                          {n: NodeInfo(f"10.77.0.{i}") for i, n in enumerate(["a", "b", "c"], 1)})


def link() -> tuple[PeerLink, list[str], Registry]:
    registry = Registry()
    counters = PeerCounters(registry.counter("r", "", ["node"]), registry.counter("d", "", ["reason"]),
                            registry.counter("s", ""), registry.counter("e", "", ["kind"]))
    changes: list[str] = []
    peers = PeerLink("a", KEY, counters, on_change=lambda: changes.append("changed"), loop_alive=lambda: True)
    peers.configure(TABLE)
    return peers, changes, registry


def beat(node: str, seq: int, leaving: bool = False, boot: int = 100) -> bytes:
    return encode_heartbeat(Heartbeat(node, boot, seq, time.time_ns() // 1_000_000, 1, leaving), KEY)


def test_unbound_link_counts_every_peer_alive_until_it_can_listen() -> None:
    peers, _, _ = link()
    assert peers.alive(time.monotonic() + 3600) == {"b", "c"}


def test_heartbeats_keep_peers_alive_and_leaving_kills_at_once() -> None:
    peers, changes, _registry = link()
    # As if bound at t=10: the startup grace ends at 10.2.
    peers._liveness.started_at = 10.0
    wall = time.time_ns() // 1_000_000
    assert peers.take(beat("b", 1), 10.1, wall) is None
    assert changes == []  # heard within the grace: b never was dead to us
    assert peers.alive(10.25) == {"b"}
    assert peers.next_expiry(10.25) == 10.1 + DEFAULT_HEARTBEAT.dead_after_ms / 1000
    assert peers.take(beat("c", 1), 10.5, wall) is None
    assert changes == ["changed"] and peers.take_revived() == {"c"} and peers.take_revived() == set()
    assert peers.take(beat("c", 2, leaving=True), 10.51, wall) is None
    assert peers.alive(10.52) == set()
    assert len(changes) == 2


def test_drops_are_counted_by_reason() -> None:
    peers, _changes, registry = link()
    wall = time.time_ns() // 1_000_000
    cases = [
        (beat("b", 5), None),
        (beat("b", 5), HeartbeatDrop.REPLAYED),
        (beat("b", 4), HeartbeatDrop.REPLAYED),
        (beat("b", 9, boot=99), HeartbeatDrop.REPLAYED),  # an earlier run of b
        (beat("a", 1), HeartbeatDrop.SELF),
        (beat("mallory", 1), HeartbeatDrop.UNKNOWN_NODE),
        (beat("b", 6)[:-32], HeartbeatDrop.UNSIGNED),
        (beat("b", 6)[:-1] + b"\x00", HeartbeatDrop.BAD_SIGNATURE),
        (b"garbage", HeartbeatDrop.MALFORMED),
    ]
    for data, expected in cases:
        assert peers.take(data, 1.0, wall) is expected
    assert peers.counters.dropped.value(reason="replayed") == 3
    assert peers.counters.received.value(node="b") == 1
    assert 'd_total{reason="replayed"} 3.0' in registry.render()
