"""The responder's kernel filters, run by this machine's kernel (no namespaces needed).

A filter attached to one end of an AF_UNIX datagram pair sees each datagram from offset 0, just
as a packet socket's filter sees a frame from its Ethernet header: so a frame "passes" exactly
when it can be read from that end.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from reconciler.speaker import bpf
from reconciler.speaker.packets import (
    ARP_OP_REPLY,
    ARP_OP_REQUEST,
    BROADCAST_MAC,
    ETH_P_ARP,
    ETH_P_IPV4,
    ArpPacket,
    encode_arp,
    encode_neighbor_solicitation,
    ethernet,
    gratuitous_arp,
    unsolicited_neighbor_advertisement,
)

CLIENT_MAC = bytes.fromhex("020000000001")
CLIENT_IP = "10.77.0.9"


def who_has(target: str, sender: str = CLIENT_IP, op: int = ARP_OP_REQUEST) -> bytes:
    packet = ArpPacket(op, CLIENT_MAC, ipaddress.IPv4Address(sender), bytes(6), ipaddress.IPv4Address(target))
    return ethernet(BROADCAST_MAC, CLIENT_MAC, ETH_P_ARP, encode_arp(packet))


def solicitation(target: str) -> bytes:
    return encode_neighbor_solicitation(CLIENT_MAC, "fd77::9", target)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    with a, b:
        yield a, b


def passes(pair: tuple[socket.socket, socket.socket], program: list[bpf.Instruction] | None,
           frames: list[bytes]) -> list[bool]:
    sender, receiver = pair
    assert program is not None
    bpf.attach(receiver, bpf.SO_ATTACH_FILTER, program)
    result = []
    for frame in frames:
        sender.send(frame)
        try:
            result.append(receiver.recv(4096) == frame)
        except BlockingIOError:
            result.append(False)
    return result


def test_arp_filter_keeps_requests_for_our_ips_only(pair: tuple[socket.socket, socket.socket]) -> None:
    ours = ["10.77.0.100", "10.77.0.101"]
    frames = [who_has("10.77.0.100"), who_has("10.77.0.101"), who_has("10.77.0.102"),
              who_has("10.77.0.100", op=ARP_OP_REPLY), *gratuitous_arp(CLIENT_MAC, "10.77.0.100"),
              ethernet(BROADCAST_MAC, CLIENT_MAC, ETH_P_IPV4, bytes(46)), solicitation("fd77::100"),
              who_has("10.77.0.100")[:30]]
    assert passes(pair, bpf.arp_request_filter(ours), frames) == [True, True] + [False] * 7


def test_without_targets_the_arp_filter_keeps_every_request_and_with_none_it_drops_all(
        pair: tuple[socket.socket, socket.socket]) -> None:
    frames = [who_has("10.77.0.100"), who_has("192.0.2.1"), *gratuitous_arp(CLIENT_MAC, "10.77.0.100")]
    assert passes(pair, bpf.arp_request_filter(None), frames) == [True, True, False, False]
    assert passes(pair, bpf.arp_request_filter([]), frames) == [False] * 4


@pytest.mark.parametrize("count", [1, 32, 33, 100, 1000, 3500])
def test_the_binary_search_finds_every_ip_and_nothing_else(pair: tuple[socket.socket, socket.socket],
                                                             count: int) -> None:
    # Every other address of a range: the neighbours of each of ours are not ours.
    ours = [str(ipaddress.IPv4Address(0x0A4D0000 + 2 * i)) for i in range(count)]
    others = [str(ipaddress.IPv4Address(0x0A4D0000 + 2 * i + 1)) for i in range(count)]
    others += ["0.0.0.0", "255.255.255.255", "10.76.255.255"]
    program = bpf.arp_request_filter(reversed(ours))
    assert program is not None and len(program) <= bpf.MAX_INSTRUCTIONS
    result = passes(pair, program, [who_has(ip) for ip in ours + others])
    assert result == [True] * len(ours) + [False] * len(others)


def test_too_many_ips_for_one_program_is_said() -> None:
    many = [str(ipaddress.IPv4Address(0x0A000000 + i)) for i in range(4000)]
    assert bpf.arp_request_filter(many) is None
    assert bpf.neighbor_solicitation_filter([f"fd77::{i:x}" for i in range(4000)]) is None


def test_solicitation_filter_keeps_solicitations_for_our_ips_only(pair: tuple[socket.socket, socket.socket]) -> None:
    ours = ["fd77::100", "fd77::1:0:101"]
    frames = [solicitation("fd77::100"), solicitation("fd77::1:0:101"), solicitation("fd77::102"),
              unsolicited_neighbor_advertisement(CLIENT_MAC, "fd77::100"), who_has("10.77.0.100"),
              solicitation("fd77::100")[:60]]
    assert passes(pair, bpf.neighbor_solicitation_filter(ours), frames) == [True, True] + [False] * 4
    assert passes(pair, bpf.neighbor_solicitation_filter(None), frames) == [True, True, True] + [False] * 3
