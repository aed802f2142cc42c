"""The speaker's kernel filters on real kernels: what reaches Python, and that nothing is lost.

Each speaker counts in /metrics every frame that reaches Python (``requests_received_total`` by
IP, ``frames_ignored_total`` by reason). Frames its kernel filter drops are never counted, so a
count that stays absent shows the frame never reached the speaker.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Member, Topology, needs_root, status, wait_for, who_has
from test_speaker_netns import (
    start,
    wait_announcing,
    wait_heard,
    wait_neighbour_moves,
    wait_resolved,
    workdir,  # noqa: F401  (the fixture)
    write_table,
)

from reconciler.planning.announcement_table import Announcement
from reconciler.speaker.packets import (
    ARP_OP_REPLY,
    BROADCAST_MAC,
    ETH_P_ARP,
    ETH_P_IPV4,
    ArpPacket,
    decode_arp,
    encode_arp,
    encode_neighbor_solicitation,
    ethernet,
    gratuitous_arp,
    mac_to_bytes,
    unsolicited_neighbor_advertisement,
)

pytestmark = [pytest.mark.netns, needs_root, pytest.mark.timeout(90)]

VIP_A, VIP_B, VIP6_A = "10.77.0.100", "10.77.0.101", "fd77::100"
NODES = ("a", "b")


@pytest.fixture
def two_nodes() -> Iterator[Topology]:
    with Topology(["a", "b", "client"]) as topology:
        yield topology


def counted(member: Member) -> list[str]:
    """The metric lines that count frames which reached the speaker."""
    return [line for line in member.http_get("/metrics", 7473).splitlines()
            if line.startswith(("portside_speaker_requests_received_total{",
                                "portside_speaker_frames_ignored_total{"))]


def send_frames(client: Member, frames: list[bytes]) -> None:
    with client.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("eth0", 0))
        for frame in frames:
            sock.send(frame)


def noise(client: Member) -> list[bytes]:
    """Frames no speaker must ever see: requests for other IPs, replies, announcements, other types."""
    mac = mac_to_bytes(client.mac)
    reply = ArpPacket(ARP_OP_REPLY, mac, ipaddress.IPv4Address(VIP_A), mac, ipaddress.IPv4Address(client.ip))
    return [who_has(client, client.ip, "10.77.0.150"), who_has(client, client.ip, "10.77.0.99"),
            ethernet(BROADCAST_MAC, mac, ETH_P_ARP, encode_arp(reply)), *gratuitous_arp(mac, VIP_A),
            ethernet(BROADCAST_MAC, mac, ETH_P_IPV4, bytes(46)),
            encode_neighbor_solicitation(mac, client.ip6, "fd77::150"),
            unsolicited_neighbor_advertisement(mac, VIP6_A)] * 5


@needs_root
def test_only_requests_for_the_ips_a_node_answers_reach_it(two_nodes: Topology, workdir: Path) -> None:  # noqa: F811
    t = two_nodes
    client = t["client"]
    write_table(workdir, t, [Announcement(VIP_A, "default/a", (), ("a", "b")),
                             Announcement(VIP6_A, "default/a", (), ("a", "b")),
                             Announcement(VIP_B, "default/b", (), ("b", "a"))], nodes=NODES)
    for node in NODES:
        start(t, node, workdir)
    wait_announcing(t["a"], [VIP_A, VIP6_A])
    wait_announcing(t["b"], [VIP_B])
    wait_heard(t["a"], ["b"])
    wait_heard(t["b"], ["a"])

    send_frames(client, noise(client))
    assert set(client.arping(VIP_A)) == {t["a"].mac}
    assert set(client.arping(VIP_B)) == {t["b"].mac}
    wait_resolved(client, VIP6_A, t["a"].mac)
    send_frames(client, noise(client))
    assert client.arping("10.77.0.150") == []

    def requests_only_for_own_ips() -> bool:
        a, b = counted(t["a"]), counted(t["b"])
        return (any(f'ip="{VIP_A}"' in line for line in a) and any(f'ip="{VIP6_A}"' in line for line in a)
                and any(f'ip="{VIP_B}"' in line for line in b))

    wait_for(requests_only_for_own_ips, 5, "the requests to be counted")
    a_lines, b_lines = counted(t["a"]), counted(t["b"])
    assert all(line.startswith("portside_speaker_requests_received_total{") for line in a_lines + b_lines), \
        f"frames reached a speaker only to be dropped: {a_lines + b_lines}"
    assert not any(VIP_B in line for line in a_lines) and not any(VIP_A in line or VIP6_A in line
                                                                  for line in b_lines)


class WhoHasLoad:
    """who-has for one IP at a steady rate from the client, each from its own sender IP: which were answered."""

    def __init__(self, client: Member, target: str, rate: float) -> None:
        self.client, self.target, self.rate = client, target, rate
        self.sent: list[str] = []
        self.answered: set[str] = set()
        self.stop = threading.Event()
        self.sock = client.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind(("eth0", ETH_P_ARP))
        self.sock.settimeout(0.1)
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]

    def __enter__(self) -> WhoHasLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.threads[0].join()
        # Replies to the last requests are microseconds away; wait for them, with a deadline.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(self.answered) < len(self.sent):
            time.sleep(0.01)
        self.threads[1].join(timeout=1)
        self.sock.close()

    def _send(self) -> None:
        slot = 0
        while not self.stop.is_set():
            sender = f"10.79.{(slot >> 8) & 0xFF}.{slot & 0xFF}"
            self.sent.append(sender)
            self.sock.send(who_has(self.client, sender, self.target))
            slot += 1
            self.stop.wait(1 / self.rate)

    def _receive(self) -> None:
        while not (self.stop.is_set() and len(self.answered) >= len(self.sent)):
            try:
                data = self.sock.recv(256)
            except TimeoutError:
                if self.stop.is_set():
                    return
                continue
            packet = decode_arp(data)
            if (isinstance(packet, ArpPacket) and packet.op == ARP_OP_REPLY and str(packet.sender_ip) == self.target
                    and packet.target_mac == mac_to_bytes(self.client.mac)):  # not a gratuitous one
                self.answered.add(str(packet.target_ip))


@needs_root
def test_table_changes_swap_the_filter_without_losing_a_request(two_nodes: Topology,
                                                                 workdir: Path) -> None:  # noqa: F811
    t = two_nodes
    client = t["client"]
    write_table(workdir, t, [Announcement(VIP_A, "default/a", (), ("a", "b")),
                             Announcement(VIP_B, "default/b", (), ("a", "b"))], nodes=NODES)
    speakers = {node: start(t, node, workdir) for node in NODES}
    wait_announcing(t["a"], [VIP_A, VIP_B])
    wait_heard(t["b"], ["a"])

    # Every table adds and removes IPs of a (its filter is rebuilt each time) while VIP_A, which
    # a keeps answering, is asked for all along: not one request may go unanswered.
    with WhoHasLoad(client, VIP_A, rate=300) as load:
        for generation in range(2, 7):
            extra = [Announcement(f"10.77.1.{generation * 10 + i}", "default/x", (), ("a", "b"))
                     for i in range(generation * 3)]
            write_table(workdir, t, [Announcement(VIP_A, "default/a", (), ("a", "b")), *extra],
                        generation=generation, nodes=NODES)
            wait_for(lambda g=generation: (status(t["a"]) or {}).get("generation") == g, 10,
                     f"a to apply generation {generation}")
            # Requests keep coming between two swaps, not only during them.
            sent = len(load.sent)
            wait_for(lambda n=sent: len(load.sent) >= n + 30, 5, "more requests to be sent")
    assert len(load.sent) > 100
    assert set(load.sent) == load.answered, f"{len(set(load.sent) - load.answered)} requests unanswered"

    # VIP_B left the table and comes back on b alone: a's filter lets it through no more, b's does.
    write_table(workdir, t, [Announcement(VIP_A, "default/a", (), ("a", "b")),
                             Announcement(VIP_B, "default/b", (), ("b", "a"))], generation=7, nodes=NODES)
    wait_announcing(t["b"], [VIP_B])
    wait_announcing(t["a"], [VIP_A])
    assert set(client.arping(VIP_B)) == {t["b"].mac}
    assert set(client.arping(VIP_A)) == {t["a"].mac}
    assert not any(VIP_B in line for line in counted(t["a"]))

    # A takeover swaps b's filter before its gratuitous ARP: the client moves and b answers.
    wait_resolved(client, VIP_A, t["a"].mac)
    speakers["a"].send_signal(signal.SIGKILL)
    wait_neighbour_moves(client, VIP_A, t["b"].mac)
    assert set(client.arping(VIP_A)) == {t["b"].mac}
    assert not [line for line in counted(t["b"]) if "frames_ignored" in line]


@needs_root
def test_applying_a_big_table_does_not_make_a_peer_look_dead(two_nodes: Topology,
                                                             workdir: Path) -> None:  # noqa: F811
    """Heartbeats have their own thread, so the event loop's table work (a 10,000-IP table: parse,
    elect, gauges, filters) never holds them up: no peer looks dead and no IP moves back and forth.
    (On a fast machine the work may stay under ``dead_after``; the bench's flood runs add load.)"""
    t = two_nodes
    write_table(workdir, t, [Announcement(VIP_A, "default/a", (), ("a", "b"))], nodes=NODES)
    for node in NODES:
        start(t, node, workdir)
    wait_announcing(t["a"], [VIP_A])
    wait_heard(t["a"], ["b"])
    wait_heard(t["b"], ["a"])

    # 10,000 IPs, half ranked a first and half b first, as the planner spreads them.
    big = [Announcement(VIP_A, "default/a", (), ("a", "b"))]
    big += [Announcement(f"10.78.{i // 250}.{i % 250 + 1}", f"default/s{i}", (), ("a", "b") if i % 2 else ("b", "a"))
            for i in range(9_999)]
    write_table(workdir, t, big, generation=2, nodes=NODES)
    samples, seen_dead = 0, []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {n: status(t[n]) for n in NODES}
        if all(s is not None for s in states.values()):
            samples += 1
            seen_dead += [n for n, s in states.items() if s is not None and not all(s["peers"].values())]
            if all(s is not None and s["generation"] == 2 for s in states.values()):
                break
        # Sampling at 20 Hz while the tables are applied is the observation itself.
        time.sleep(0.05)
    else:
        raise AssertionError("the 10,000-IP table was not applied within 30 s")
    assert samples > 0 and not seen_dead, f"peers looked dead to {seen_dead} while the table was applied"
    a, b = status(t["a"]), status(t["b"])
    assert a is not None and b is not None
    assert len(a["announcing"]) == 5_000 and len(b["announcing"]) == 5_000
    assert VIP_A in a["announcing"] and not set(a["announcing"]) & set(b["announcing"])
    flaps = [line for n in NODES for line in (workdir / f"speaker-{n}.log").read_text().splitlines()
             if "stopped announcing" in line]
    assert not flaps, flaps
