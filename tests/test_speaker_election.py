"""The election: who announces each IP, given who is alive; and the liveness clock."""

from __future__ import annotations

import itertools

import pytest

from reconciler.planning.announcement_table import Announcement, AnnouncementTable, NodeInfo
from reconciler.speaker.election import Change, Liveness, compare, elect

NODES = {n: NodeInfo(f"10.77.0.{i + 1}") for i, n in enumerate(["a", "b", "c"])}
TABLE = AnnouncementTable(
    generation=1, revision="r", nodes=NODES,
    announcements=(
        Announcement("10.77.0.100", "ns/one", (), ("a", "b", "c")),
        Announcement("10.77.0.101", "ns/two", ("eth1",), ("c", "a", "b")),
        Announcement("10.77.0.102", "ns/three", (), ("b", "c")),
        Announcement("10.77.0.103", "ns/none", (), ()),
    ),
)


@pytest.mark.parametrize(("node", "alive", "expected"), [
    # Everyone up: each IP has its first candidate.
    ("a", {"a", "b", "c"}, {"10.77.0.100"}),
    ("b", {"a", "b", "c"}, {"10.77.0.102"}),
    ("c", {"a", "b", "c"}, {"10.77.0.101"}),
    # a dead: b takes .100; c still first for .101.
    ("b", {"b", "c"}, {"10.77.0.100", "10.77.0.102"}),
    ("c", {"b", "c"}, {"10.77.0.101"}),
    # c dead: a takes .101 (second), b keeps .102, .102's next is c (dead, irrelevant).
    ("a", {"a", "b"}, {"10.77.0.100", "10.77.0.101"}),
    ("b", {"a", "b"}, {"10.77.0.102"}),
    # b dead: c takes .102.
    ("c", {"a", "c"}, {"10.77.0.101", "10.77.0.102"}),
    # alone: all IPs it is a candidate for.
    ("b", {"b"}, {"10.77.0.100", "10.77.0.101", "10.77.0.102"}),
    ("a", {"a"}, {"10.77.0.100", "10.77.0.101"}),
    # a node that is no candidate announces nothing.
    ("z", {"z"}, set()),
])
def test_elect(node: str, alive: set[str], expected: set[str]) -> None:
    assert set(elect(TABLE, node, lambda peer: peer in alive)) == expected


def test_everyone_agreeing_means_exactly_one_answerer_per_ip() -> None:
    for size in range(1, 4):
        for alive in itertools.combinations("abc", size):
            owners: dict[str, list[str]] = {}
            for node in alive:
                for ip in elect(TABLE, node, lambda peer, alive=alive: peer in alive):
                    owners.setdefault(ip, []).append(node)
            expected_ips = {a.ip for a in TABLE.announcements if set(a.candidates) & set(alive)}
            assert set(owners) == expected_ips
            assert all(len(v) == 1 for v in owners.values()), (alive, owners)


def test_compare() -> None:
    one = Announcement("10.0.0.1", "s", (), ("a",))
    two = Announcement("10.0.0.2", "s", (), ("a",))
    two_moved = Announcement("10.0.0.2", "s", ("eth1",), ("a",))
    assert compare({}, {"10.0.0.1": one}) == Change(frozenset({"10.0.0.1"}), frozenset())
    assert compare({"10.0.0.1": one, "10.0.0.2": two}, {"10.0.0.2": two}) == \
        Change(frozenset(), frozenset({"10.0.0.1"}))
    assert compare({"10.0.0.2": two}, {"10.0.0.2": two_moved}) == Change(frozenset({"10.0.0.2"}), frozenset())
    assert compare({"10.0.0.2": two}, {"10.0.0.2": two}) == Change(frozenset(), frozenset())


def test_liveness_walk() -> None:
    live = Liveness(dead_after_s=0.2, started_at=100.0)
    # Startup grace: peers not heard yet are presumed alive, then dead.
    assert live.is_alive("b", 100.1)
    assert live.next_expiry(["b"], 100.1) == pytest.approx(100.2)
    assert not live.is_alive("b", 100.2)
    assert live.next_expiry(["b"], 100.2) is None
    # Heard again after being dead: reported as a revival.
    assert live.heard("b", 100.3) is True
    assert live.heard("b", 100.35) is False
    assert live.is_alive("b", 100.549)
    assert not live.is_alive("b", 100.55)
    assert live.next_expiry(["b", "c"], 100.4) == pytest.approx(100.55)
    # Leaving: dead at once, and not a revival.
    assert live.heard("b", 100.6) is True
    assert live.heard("b", 100.61, leaving=True) is False
    assert not live.is_alive("b", 100.62)
    assert live.heard("b", 100.7) is True
    live.forget(["c"])
    assert not live.is_alive("b", 100.71)  # forgotten, past the startup grace: dead


def test_a_heartbeat_proving_an_earlier_moment_never_moves_liveness_back() -> None:
    liveness = Liveness(0.2, started_at=0.0)
    assert not liveness.heard("b", 1.0, proof_at=0.7)  # proves b alive only until 0.9: still dead
    assert not liveness.is_alive("b", 1.0)
    assert liveness.heard("b", 1.0, proof_at=0.95)  # alive until 1.15: back
    assert not liveness.heard("b", 1.01, proof_at=0.8)  # an older proof keeps the newer one
    assert liveness.next_expiry(["b"], 1.01) == pytest.approx(1.15)
