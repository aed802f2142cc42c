"""PeerLink.take: what a received datagram does to peer liveness (no sockets, no thread)."""

from __future__ import annotations

from reconciler.common.metrics import Registry
from reconciler.planning.announcement_table import DEFAULT_HEARTBEAT, AnnouncementTable, NodeInfo
from reconciler.speaker.heartbeat import NO_TICKET, Heartbeat, HeartbeatDrop, encode_heartbeat, ticket_for
from reconciler.speaker.peers import PeerCounters, PeerLink

KEY = b"peer-link-test-key-0123456789"
TABLE = AnnouncementTable(1, "r", DEFAULT_HEARTBEAT,
                          {n: NodeInfo(f"10.77.0.{i}") for i, n in enumerate(["a", "b", "c"], 1)})
DEAD_AFTER = DEFAULT_HEARTBEAT.dead_after_ms / 1000
WALL = 1_800_000_000_000


def link() -> tuple[PeerLink, list[str], Registry]:
    registry = Registry()
    counters = PeerCounters(registry.counter("r", "", ["node"]), registry.counter("d", "", ["reason"]),
                            registry.counter("s", ""), registry.counter("e", "", ["kind"]),
                            registry.gauge("o", "", ["node"]))
    changes: list[str] = []
    peers = PeerLink("a", KEY, counters, on_change=lambda: changes.append("changed"), loop_alive=lambda: True)
    peers.configure(TABLE)
    # As if bound at t=10 and our send rounds 1..100 went out every 10 ms from then.
    peers._liveness.started_at = 10.0
    for counter in range(1, 101):
        peers._guard.sent.record(counter, 10.0 + (counter - 1) * 0.01)
    return peers, changes, registry


def beat(peers: PeerLink, node: str, counter: int, echo: int = 1, leaving: bool = False, boot: bytes = b"B" * 8,
         clock_ms: int = WALL) -> bytes:
    ticket = ticket_for(KEY, peers.boot) if echo else NO_TICKET
    return encode_heartbeat(Heartbeat(node, boot, counter, ticket, echo, 1, clock_ms, leaving), KEY)


def test_unbound_link_counts_every_peer_alive_until_it_can_listen() -> None:
    registry = Registry()
    counters = PeerCounters(registry.counter("r", "", ["node"]), registry.counter("d", "", ["reason"]),
                            registry.counter("s", ""), registry.counter("e", "", ["kind"]))
    peers = PeerLink("a", KEY, counters, on_change=lambda: None, loop_alive=lambda: True)
    peers.configure(TABLE)
    assert peers.alive(3600.0) == {"b", "c"}


def test_heartbeats_keep_peers_alive_and_leaving_kills_at_once() -> None:
    peers, changes, _registry = link()
    assert peers.take(beat(peers, "b", 1), 10.1, WALL) is None
    assert changes == []  # heard within the grace: b never was dead to us
    assert peers.alive(10.25) == {"b"}
    assert peers.next_expiry(10.25) == 10.1 + DEAD_AFTER
    assert peers.take(beat(peers, "c", 1, echo=50), 10.5, WALL) is None
    assert changes == ["changed"] and peers.take_revived() == {"c"} and peers.take_revived() == set()
    assert peers.take(beat(peers, "c", 2, echo=50, leaving=True), 10.51, WALL) is None
    assert peers.alive(10.52) == set()
    assert len(changes) == 2


def test_a_heartbeat_that_does_not_answer_a_recent_round_is_no_proof_of_life() -> None:
    peers, _changes, _registry = link()
    assert peers.take(beat(peers, "b", 1, echo=0), 10.1, WALL) is HeartbeatDrop.OTHER_BOOT
    assert peers.take(beat(peers, "b", 2, echo=1), 10.5, WALL) is HeartbeatDrop.STALE  # round 1: 0.5 s ago
    assert peers.alive(10.5) == set()
    # What we learnt goes into our next heartbeat to b, so b can answer with a fresh one.
    assert peers._guard.replies_for("b") == [(ticket_for(KEY, b"B" * 8), 2)]
    assert peers._reply_soon


def test_drops_are_counted_by_reason() -> None:
    peers, _changes, registry = link()
    cases = [
        (beat(peers, "b", 5), None),
        (beat(peers, "b", 5), HeartbeatDrop.REPLAYED),
        (beat(peers, "b", 4), HeartbeatDrop.REPLAYED),
        (beat(peers, "b", 9, boot=b"C" * 8), None),  # b restarted
        (beat(peers, "b", 10), HeartbeatDrop.REPLAYED),  # its previous run
        (beat(peers, "a", 1), HeartbeatDrop.SELF),
        (beat(peers, "mallory", 1), HeartbeatDrop.UNKNOWN_NODE),
        (beat(peers, "b", 11, boot=b"C" * 8)[:-32], HeartbeatDrop.UNSIGNED),
        (beat(peers, "b", 11, boot=b"C" * 8)[:-1] + b"\x00", HeartbeatDrop.BAD_SIGNATURE),
        (b"garbage", HeartbeatDrop.MALFORMED),
    ]
    for data, expected in cases:
        assert peers.take(data, 10.01, WALL) is expected
    assert peers.counters.dropped.value(reason="replayed") == 3
    assert peers.counters.received.value(node="b") == 2
    assert 'd_total{reason="replayed"} 3.0' in registry.render()


def test_status_details_show_boot_and_clock_offset_by_node() -> None:
    peers, _changes, registry = link()
    assert peers.take(beat(peers, "b", 1, clock_ms=WALL + 45_000), 10.05, WALL) is None
    details = peers.details(10.1)
    assert details["b"] == {"alive": True, "boot": (b"B" * 8).hex(), "lastHeardMsAgo": 50, "clockOffsetMs": 45_000}
    assert details["c"]["boot"] is None and details["c"]["clockOffsetMs"] is None
    assert 'o{node="b"} 45' in registry.render()
