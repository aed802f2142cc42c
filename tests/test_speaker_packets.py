"""ARP and NDP frames: decode, answer or drop with a reason, encode. Pure, table-driven."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from reconciler.speaker.packets import (
    ARP_OP_REPLY,
    ARP_OP_REQUEST,
    BROADCAST_MAC,
    ArpPacket,
    DropReason,
    answer_arp,
    answer_ndp,
    decode_arp,
    decode_neighbor_solicitation,
    encode_neighbor_solicitation,
    gratuitous_arp,
    icmpv6_checksum,
    mac_to_bytes,
    mac_to_str,
    solicited_node_ip,
    solicited_node_mac,
    unsolicited_neighbor_advertisement,
)

OUR_MAC = bytes.fromhex("02aa00000001")
CLIENT_MAC = bytes.fromhex("02cc00000009")
VIP = "10.77.0.100"

# A who-has 10.77.0.100 tell 10.77.0.9 as the Linux kernel sends it (42 bytes, unpadded).
WHO_HAS = bytes.fromhex(
    "ffffffffffff" "02cc00000009" "0806"
    "0001" "0800" "06" "04" "0001"
    "02cc00000009" "0a4d0009"
    "000000000000" "0a4d0064"
)


def announces_vip(ip: str) -> bool:
    return ip == VIP


def test_who_has_for_an_announced_ip_gets_a_unicast_reply_from_our_mac() -> None:
    answer = answer_arp(WHO_HAS, OUR_MAC, announces_vip)
    assert answer.reason is DropReason.ANSWERED and answer.ip == VIP
    assert answer.reply == bytes.fromhex(
        "02cc00000009" "02aa00000001" "0806"
        "0001" "0800" "06" "04" "0002"
        "02aa00000001" "0a4d0064"
        "02cc00000009" "0a4d0009"
    ) + bytes(18)  # padded to the 60-byte Ethernet minimum


def _with(offset: int, data: bytes, frame: bytes = WHO_HAS) -> bytes:
    return frame[:offset] + data + frame[offset + len(data):]


@pytest.mark.parametrize(("frame", "reason"), [
    (b"", DropReason.TRUNCATED),
    (WHO_HAS[:13], DropReason.TRUNCATED),
    (WHO_HAS[:20], DropReason.TRUNCATED),
    (WHO_HAS[:41], DropReason.TRUNCATED),
    (_with(12, b"\x08\x00"), DropReason.WRONG_ETHERTYPE),
    (_with(14, b"\x00\x06"), DropReason.NOT_ETHERNET_IPV4),  # token ring
    (_with(16, b"\x86\xdd"), DropReason.NOT_ETHERNET_IPV4),
    (_with(18, b"\x10"), DropReason.NOT_ETHERNET_IPV4),
    (_with(19, b"\x10"), DropReason.NOT_ETHERNET_IPV4),
    (_with(20, b"\x00\x02"), DropReason.NOT_REQUEST),  # a reply
    (_with(20, b"\x00\x03"), DropReason.NOT_REQUEST),  # RARP
    (_with(6, OUR_MAC), DropReason.OWN_FRAME),
    (_with(0, bytes.fromhex("02bb00000002")), DropReason.NOT_FOR_US),  # unicast to another host
    (_with(22, BROADCAST_MAC), DropReason.BAD_SENDER),
    (_with(22, bytes(6)), DropReason.BAD_SENDER),
    (_with(28, bytes.fromhex("0a4d0064")), DropReason.GRATUITOUS),
    (_with(38, bytes.fromhex("0a4d0065")), DropReason.NOT_ANNOUNCED),  # who-has another IP
])
def test_frames_we_do_not_answer(frame: bytes, reason: DropReason) -> None:
    answer = answer_arp(frame, OUR_MAC, announces_vip)
    assert answer.reason is reason
    assert answer.reply is None


def test_unicast_request_to_our_mac_is_answered() -> None:
    # A client revalidating its neighbour entry asks our MAC directly.
    assert answer_arp(_with(0, OUR_MAC), OUR_MAC, announces_vip).reason is DropReason.ANSWERED


def test_arp_probe_from_an_unconfigured_host_is_answered() -> None:
    # RFC 5227 probe: sender IP 0.0.0.0; the reply tells the prober the address is taken.
    probe = _with(28, bytes(4))
    answer = answer_arp(probe, OUR_MAC, announces_vip)
    assert answer.reason is DropReason.ANSWERED
    assert answer.reply is not None
    reply = decode_arp(answer.reply)
    assert reply == ArpPacket(ARP_OP_REPLY, OUR_MAC, ipaddress.IPv4Address(VIP), CLIENT_MAC,
                              ipaddress.IPv4Address("0.0.0.0"))


def test_padded_frames_decode() -> None:
    padded = WHO_HAS + bytes(18)
    assert answer_arp(padded, OUR_MAC, announces_vip).reason is DropReason.ANSWERED


def test_predicate_sees_the_target_ip() -> None:
    asked: list[str] = []
    answer_arp(WHO_HAS, OUR_MAC, lambda ip: asked.append(ip) or False)
    assert asked == [VIP]


def test_gratuitous_arp_request_and_reply() -> None:
    request, reply = gratuitous_arp(OUR_MAC, VIP)
    assert len(request) == len(reply) == 60
    assert request[:12] == BROADCAST_MAC + OUR_MAC and reply[:12] == BROADCAST_MAC + OUR_MAC
    vip = ipaddress.IPv4Address(VIP)
    assert decode_arp(request) == ArpPacket(ARP_OP_REQUEST, OUR_MAC, vip, bytes(6), vip)
    # Linux counts a reply as gratuitous only when target MAC == sender MAC.
    assert decode_arp(reply) == ArpPacket(ARP_OP_REPLY, OUR_MAC, vip, OUR_MAC, vip)
    # Our own gratuitous frames, seen again on the socket, are never answered.
    assert answer_arp(request, OUR_MAC, announces_vip).reason is DropReason.OWN_FRAME
    assert answer_arp(request, bytes.fromhex("02aa00000002"), announces_vip).reason is DropReason.GRATUITOUS


def test_mac_text() -> None:
    assert mac_to_bytes("02:AA:00:00:00:01") == OUR_MAC
    assert mac_to_str(OUR_MAC) == "02:aa:00:00:00:01"
    for bad in ["", "02:aa:00:00:00", "02:aa:00:00:00:0g", "2:aa:00:00:00:01:"]:
        with pytest.raises(ValueError):
            mac_to_bytes(bad)


# --- NDP ----------------------------------------------------------------------------------------

VIP6 = "fd77::100"
CLIENT6 = "fd77::9"


def test_solicited_node_addresses() -> None:
    assert str(solicited_node_ip("fd77::12:3456")) == "ff02::1:ff12:3456"
    assert solicited_node_mac("fd77::12:3456") == bytes.fromhex("3333ff123456")


def test_icmpv6_checksum_of_a_known_packet() -> None:
    # An echo request from RFC-style worked example: ::1 -> ::1, id 0, seq 0, no data.
    # Sum by hand: 2x ::1 (2) + length 8 + next header 58 + type/code 0x8000 = 0x8044 -> ~ = 0x7fbb.
    loopback = ipaddress.IPv6Address("::1")
    assert icmpv6_checksum(loopback, loopback, bytes.fromhex("8000000000000000")) == 0x7FBB


def test_solicitation_for_an_announced_ip_gets_a_solicited_override_advertisement() -> None:
    frame = encode_neighbor_solicitation(CLIENT_MAC, CLIENT6, VIP6)
    assert frame[:6] == solicited_node_mac(VIP6)
    answer = answer_ndp(frame, OUR_MAC, lambda ip: ip == VIP6)
    assert answer.reason is DropReason.ANSWERED and answer.ip == VIP6
    reply = answer.reply
    assert reply is not None
    assert reply[:12] == CLIENT_MAC + OUR_MAC and reply[12:14] == b"\x86\xdd"
    ip6 = reply[14:54]
    assert ip6[7] == 255 and ip6[6] == 58
    assert ipaddress.IPv6Address(ip6[8:24]) == ipaddress.IPv6Address(VIP6)
    assert ipaddress.IPv6Address(ip6[24:40]) == ipaddress.IPv6Address(CLIENT6)
    icmp = reply[54:54 + struct.unpack("!H", ip6[4:6])[0]]
    assert icmp[0] == 136 and icmp[1] == 0
    assert struct.unpack("!I", icmp[4:8])[0] == 0x60000000  # Solicited + Override, not Router
    assert ipaddress.IPv6Address(icmp[8:24]) == ipaddress.IPv6Address(VIP6)
    assert icmp[24:32] == b"\x02\x01" + OUR_MAC
    zeroed = icmp[:2] + b"\x00\x00" + icmp[4:]
    assert icmpv6_checksum(ipaddress.IPv6Address(VIP6), ipaddress.IPv6Address(CLIENT6), zeroed) == \
        struct.unpack("!H", icmp[2:4])[0]


def _ns(**changes: int) -> bytes:
    frame = bytearray(encode_neighbor_solicitation(CLIENT_MAC, CLIENT6, VIP6))
    for offset, value in changes.items():
        frame[int(offset[1:])] = value
    return bytes(frame)


@pytest.mark.parametrize(("frame", "reason"), [
    (b"\x00" * 10, DropReason.TRUNCATED),
    (_ns(o12=0x08, o13=0x00), DropReason.WRONG_ETHERTYPE),
    (encode_neighbor_solicitation(CLIENT_MAC, CLIENT6, VIP6)[:50], DropReason.TRUNCATED),
    (_ns(o20=17), DropReason.NOT_ICMPV6),  # UDP
    (_ns(o20=0), DropReason.NOT_ICMPV6),  # hop-by-hop options header first
    (_ns(o54=136), DropReason.NOT_SOLICITATION),
    (_ns(o54=128), DropReason.NOT_SOLICITATION),  # echo request
    (_ns(o21=64), DropReason.BAD_HOP_LIMIT),
    (_ns(o60=0xFF), DropReason.BAD_CHECKSUM),  # corrupted reserved field
    (_ns(o56=0x12), DropReason.BAD_CHECKSUM),
    (_ns(o6=OUR_MAC[0], o7=OUR_MAC[1], o8=OUR_MAC[2], o9=OUR_MAC[3], o10=OUR_MAC[4], o11=OUR_MAC[5]),
     DropReason.OWN_FRAME),
    (_ns(o0=0x02, o1=0xbb), DropReason.NOT_FOR_US),
])
def test_ndp_frames_we_do_not_answer(frame: bytes, reason: DropReason) -> None:
    answer = answer_ndp(frame, OUR_MAC, lambda ip: True)
    assert answer.reason is reason
    assert answer.reply is None


def test_solicitation_for_another_ip_is_not_answered() -> None:
    frame = encode_neighbor_solicitation(CLIENT_MAC, CLIENT6, "fd77::101")
    assert answer_ndp(frame, OUR_MAC, lambda ip: ip == VIP6).reason is DropReason.NOT_ANNOUNCED


def test_zero_length_option_is_rejected() -> None:
    frame = encode_neighbor_solicitation(CLIENT_MAC, CLIENT6, VIP6)
    ip6 = frame[14:54]
    icmp = bytearray(frame[54:86])
    icmp[25] = 0  # option length 0 would loop forever
    icmp[2:4] = b"\x00\x00"
    src, dst = ipaddress.IPv6Address(ip6[8:24]), ipaddress.IPv6Address(ip6[24:40])
    icmp[2:4] = struct.pack("!H", icmpv6_checksum(src, dst, bytes(icmp)))
    assert decode_neighbor_solicitation(frame[:54] + bytes(icmp)) is DropReason.BAD_OPTION


def test_unsolicited_advertisement_goes_to_all_nodes_with_override() -> None:
    frame = unsolicited_neighbor_advertisement(OUR_MAC, VIP6)
    assert frame[:6] == bytes.fromhex("333300000001")
    assert ipaddress.IPv6Address(frame[38:54]) == ipaddress.IPv6Address("ff02::1")
    assert struct.unpack("!I", frame[58:62])[0] == 0x20000000  # Override only
    # It is not a solicitation, so our own responder drops it even if it loops back.
    assert answer_ndp(frame, bytes.fromhex("02aa00000002"), lambda ip: True).reason is \
        DropReason.NOT_SOLICITATION
