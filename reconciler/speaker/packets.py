"""ARP and NDP on Ethernet: decode what arrives, build what the speaker sends. Pure, no sockets.

The responder hands every received frame to :func:`answer_arp` or :func:`answer_ndp` together with
an injected "do I announce this IP here?" predicate, and gets back either a reply frame or the
reason it stays silent. The reasons are an enum so that logs and metrics name them the same way
(MetalLB's ``dropReason``).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

ETH_P_ARP = 0x0806
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_HEADER_LEN = 14
ETH_MIN_FRAME = 60  # without FCS; short frames are padded, as drivers must
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

ARP_HEADER = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa
ARP_HTYPE_ETHERNET = 1
ARP_OP_REQUEST = 1
ARP_OP_REPLY = 2

IPV6_HEADER = struct.Struct("!IHBB16s16s")  # version/class/flow, payload length, next header, hop limit
IPPROTO_ICMPV6 = 58
ICMPV6_NEIGHBOR_SOLICITATION = 135
ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
NDP_OPT_SOURCE_LLADDR = 1
NDP_OPT_TARGET_LLADDR = 2
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
ALL_NODES = ipaddress.IPv6Address("ff02::1")

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


class DropReason(enum.Enum):
    """Why a received frame got no answer (``ANSWERED`` when it did)."""

    ANSWERED = "answered"
    TRUNCATED = "truncated"
    WRONG_ETHERTYPE = "wrong_ethertype"
    NOT_ETHERNET_IPV4 = "not_ethernet_ipv4"
    NOT_REQUEST = "not_request"
    OWN_FRAME = "own_frame"
    NOT_FOR_US = "not_for_us"
    BAD_SENDER = "bad_sender"
    GRATUITOUS = "gratuitous"
    NOT_ANNOUNCED = "not_announced"
    NOT_ICMPV6 = "not_icmpv6"
    NOT_SOLICITATION = "not_solicitation"
    BAD_HOP_LIMIT = "bad_hop_limit"
    BAD_CHECKSUM = "bad_checksum"
    BAD_OPTION = "bad_option"


@dataclass(frozen=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: IPv4
    target_mac: bytes
    target_ip: IPv4


@dataclass(frozen=True)
class NeighborSolicitation:
    source_ip: IPv6
    dest_ip: IPv6
    target_ip: IPv6
    source_lladdr: bytes | None


class Answer(NamedTuple):
    """The outcome for one received frame: the reply to send (if any), why, and which IP was asked.

    (A named tuple, not a dataclass: one is made per received frame, and it is 4x cheaper.)
    """

    reply: bytes | None
    reason: DropReason
    ip: str | None = None


Announces = Callable[[str], bool]
"""``announces(ip)``: does this node answer for ``ip`` on the interface the frame came in on?"""


def mac_to_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a MAC address")
    return bytes(int(p, 16) for p in parts)


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _is_multicast(mac: bytes) -> bool:
    return bool(mac[0] & 1)


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    frame = dst + src + struct.pack("!H", ethertype) + payload
    return frame.ljust(ETH_MIN_FRAME, b"\x00")


def encode_arp(packet: ArpPacket) -> bytes:
    return ARP_HEADER.pack(ARP_HTYPE_ETHERNET, ETH_P_IPV4, 6, 4, packet.op, packet.sender_mac,
                           packet.sender_ip.packed, packet.target_mac, packet.target_ip.packed)


def decode_arp(frame: bytes) -> ArpPacket | DropReason:
    """An Ethernet frame carrying Ethernet/IPv4 ARP, or why it is not one."""
    if len(frame) < ETH_HEADER_LEN:
        return DropReason.TRUNCATED
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_ARP:
        return DropReason.WRONG_ETHERTYPE
    if len(frame) < ETH_HEADER_LEN + 8:
        return DropReason.TRUNCATED
    htype, ptype, hlen, plen = struct.unpack_from("!HHBB", frame, ETH_HEADER_LEN)
    if (htype, ptype, hlen, plen) != (ARP_HTYPE_ETHERNET, ETH_P_IPV4, 6, 4):
        return DropReason.NOT_ETHERNET_IPV4
    if len(frame) < ETH_HEADER_LEN + ARP_HEADER.size:
        return DropReason.TRUNCATED
    _, _, _, _, op, sha, spa, tha, tpa = ARP_HEADER.unpack_from(frame, ETH_HEADER_LEN)
    return ArpPacket(op, sha, IPv4(spa), tha, IPv4(tpa))


_ARP_ETHERNET_IPV4 = struct.pack("!HHBB", ARP_HTYPE_ETHERNET, ETH_P_IPV4, 6, 4)
_ARP_REQUEST = struct.pack("!H", ARP_OP_REQUEST)
_ARP_REPLY_HEAD = struct.pack("!H", ETH_P_ARP) + _ARP_ETHERNET_IPV4 + struct.pack("!H", ARP_OP_REPLY)
_ARP_FRAME_LEN = ETH_HEADER_LEN + ARP_HEADER.size
_ARP_REPLY_PADDING = bytes(ETH_MIN_FRAME - _ARP_FRAME_LEN)


def answer_arp(frame: bytes, our_mac: bytes, announces: Announces) -> Answer:
    """The unicast ARP reply to a who-has for an IP we announce, or why there is none.

    It works on the frame's bytes, as :func:`decode_arp` would read them: the speaker runs it for
    every request, and the objects of a decoded packet cost more than all of its checks.
    """
    if len(frame) >= ETH_HEADER_LEN and frame[6:12] == our_mac:
        return Answer(None, DropReason.OWN_FRAME)
    if len(frame) < _ARP_FRAME_LEN or frame[12:14] != b"\x08\x06" or frame[14:20] != _ARP_ETHERNET_IPV4:
        reason = decode_arp(frame)  # not Ethernet/IPv4 ARP: it says why
        assert isinstance(reason, DropReason)
        return Answer(None, reason)
    sender_mac, sender_ip, target_ip = frame[22:28], frame[28:32], frame[38:42]
    ip = f"{target_ip[0]}.{target_ip[1]}.{target_ip[2]}.{target_ip[3]}"
    if frame[20:22] != _ARP_REQUEST:
        return Answer(None, DropReason.NOT_REQUEST, ip)
    dst = frame[0:6]
    if dst != our_mac and dst != BROADCAST_MAC:
        return Answer(None, DropReason.NOT_FOR_US, ip)
    if sender_mac[0] & 1 or sender_mac == ZERO_MAC:  # multicast or unset
        return Answer(None, DropReason.BAD_SENDER, ip)
    if sender_ip == target_ip:
        # Someone else announcing (or probing with) this IP: not a question to answer.
        return Answer(None, DropReason.GRATUITOUS, ip)
    if not announces(ip):
        return Answer(None, DropReason.NOT_ANNOUNCED, ip)
    # Ethernet to the asker, from us; ARP reply: we have target_ip, to the asker's MAC and IP.
    reply = (sender_mac + our_mac + _ARP_REPLY_HEAD + our_mac + target_ip + sender_mac + sender_ip
             + _ARP_REPLY_PADDING)
    return Answer(reply, DropReason.ANSWERED, ip)


def gratuitous_arp(our_mac: bytes, ip: str) -> tuple[bytes, bytes]:
    """A gratuitous ARP request and reply for ``ip`` (both broadcast).

    Some clients heed only one kind. Linux treats both as gratuitous (and so updates a neighbour
    entry even within its ``locktime``) when sender IP == target IP and, for the reply, target
    MAC == sender MAC.
    """
    address = IPv4(ip)
    request = ArpPacket(ARP_OP_REQUEST, our_mac, address, ZERO_MAC, address)
    reply = ArpPacket(ARP_OP_REPLY, our_mac, address, our_mac, address)
    return (ethernet(BROADCAST_MAC, our_mac, ETH_P_ARP, encode_arp(request)),
            ethernet(BROADCAST_MAC, our_mac, ETH_P_ARP, encode_arp(reply)))


# --- NDP (IPv6) ---------------------------------------------------------------------------------

def solicited_node_mac(ip: str) -> bytes:
    """The multicast MAC a Neighbor Solicitation for ``ip`` is sent to (RFC 4291, RFC 2464)."""
    return b"\x33\x33\xff" + IPv6(ip).packed[-3:]


def solicited_node_ip(ip: str) -> IPv6:
    return IPv6(IPv6("ff02::1:ff00:0").packed[:13] + IPv6(ip).packed[-3:])


def _multicast_mac(ip: IPv6) -> bytes:
    return b"\x33\x33" + ip.packed[-4:]


def icmpv6_checksum(src: IPv6, dst: IPv6, message: bytes) -> int:
    """The ICMPv6 checksum over the IPv6 pseudo-header and ``message`` (its checksum field zeroed)."""
    data = src.packed + dst.packed + struct.pack("!IxxxB", len(message), IPPROTO_ICMPV6) + message
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv6_packet(src: IPv6, dst: IPv6, icmp_without_checksum: bytes) -> bytes:
    checksum = icmpv6_checksum(src, dst, icmp_without_checksum)
    icmp = icmp_without_checksum[:2] + struct.pack("!H", checksum) + icmp_without_checksum[4:]
    header = IPV6_HEADER.pack(6 << 28, len(icmp), IPPROTO_ICMPV6, 255, src.packed, dst.packed)
    return header + icmp


def encode_neighbor_solicitation(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """A Neighbor Solicitation frame, as a client sends it (used by tests and the bench)."""
    target = IPv6(target_ip)
    dst = solicited_node_ip(target_ip)
    icmp = struct.pack("!BBHI", ICMPV6_NEIGHBOR_SOLICITATION, 0, 0, 0) + target.packed
    icmp += struct.pack("!BB", NDP_OPT_SOURCE_LLADDR, 1) + src_mac
    return ethernet(_multicast_mac(dst), src_mac, ETH_P_IPV6, _ipv6_packet(IPv6(src_ip), dst, icmp))


def encode_neighbor_advertisement(our_mac: bytes, target_ip: str, dst_mac: bytes, dst_ip: IPv6,
                                  solicited: bool) -> bytes:
    """A Neighbor Advertisement for ``target_ip`` with Override set and our MAC as target lladdr."""
    target = IPv6(target_ip)
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_SOLICITED if solicited else 0)
    icmp = struct.pack("!BBHI", ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, 0, flags) + target.packed
    icmp += struct.pack("!BB", NDP_OPT_TARGET_LLADDR, 1) + our_mac
    return ethernet(dst_mac, our_mac, ETH_P_IPV6, _ipv6_packet(target, dst_ip, icmp))


def unsolicited_neighbor_advertisement(our_mac: bytes, ip: str) -> bytes:
    """The IPv6 counterpart of a gratuitous ARP: to all nodes, Override on, Solicited off."""
    return encode_neighbor_advertisement(our_mac, ip, _multicast_mac(ALL_NODES), ALL_NODES, solicited=False)


def decode_neighbor_solicitation(frame: bytes) -> NeighborSolicitation | DropReason:
    """A valid Neighbor Solicitation (RFC 4861 section 7.1.1 checks), or why the frame is not one."""
    if len(frame) < ETH_HEADER_LEN:
        return DropReason.TRUNCATED
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_IPV6:
        return DropReason.WRONG_ETHERTYPE
    if len(frame) < ETH_HEADER_LEN + IPV6_HEADER.size:
        return DropReason.TRUNCATED
    header = IPV6_HEADER.unpack_from(frame, ETH_HEADER_LEN)
    vtf, payload_len, next_header, hop_limit, src_raw, dst_raw = header
    if vtf >> 28 != 6 or next_header != IPPROTO_ICMPV6:
        return DropReason.NOT_ICMPV6  # extension headers before ICMPv6 are not NDP we answer
    start = ETH_HEADER_LEN + IPV6_HEADER.size
    if len(frame) < start + payload_len or payload_len < 4:
        return DropReason.TRUNCATED
    icmp = frame[start:start + payload_len]  # frames may carry Ethernet padding after the packet
    if icmp[0] != ICMPV6_NEIGHBOR_SOLICITATION or icmp[1] != 0:
        return DropReason.NOT_SOLICITATION
    if len(icmp) < 24:
        return DropReason.TRUNCATED
    if hop_limit != 255:
        return DropReason.BAD_HOP_LIMIT  # a router forwarded it: not from this link
    src, dst = IPv6(src_raw), IPv6(dst_raw)
    zeroed = icmp[:2] + b"\x00\x00" + icmp[4:]
    if icmpv6_checksum(src, dst, zeroed) != struct.unpack_from("!H", icmp, 2)[0]:
        return DropReason.BAD_CHECKSUM
    target = IPv6(icmp[8:24])
    lladdr = None
    offset = 24
    while offset < len(icmp):
        if offset + 2 > len(icmp):
            return DropReason.BAD_OPTION
        opt_type, opt_len = icmp[offset], icmp[offset + 1]
        if opt_len == 0 or offset + opt_len * 8 > len(icmp):
            return DropReason.BAD_OPTION
        if opt_type == NDP_OPT_SOURCE_LLADDR:
            lladdr = icmp[offset + 2:offset + 8]
        offset += opt_len * 8
    if src.is_unspecified and (lladdr is not None or dst != solicited_node_ip(str(target))):
        return DropReason.BAD_OPTION  # duplicate address detection rules (RFC 4861 7.1.1)
    return NeighborSolicitation(src, dst, target, lladdr)


def answer_ndp(frame: bytes, our_mac: bytes, announces: Announces) -> Answer:
    """The Neighbor Advertisement for a solicitation of an IP we announce, or why there is none."""
    if len(frame) >= ETH_HEADER_LEN and frame[6:12] == our_mac:
        return Answer(None, DropReason.OWN_FRAME)
    solicitation = decode_neighbor_solicitation(frame)
    if isinstance(solicitation, DropReason):
        return Answer(None, solicitation)
    ip = str(solicitation.target_ip)
    dst_mac = frame[0:6]
    if dst_mac != our_mac and not dst_mac.startswith(b"\x33\x33"):
        return Answer(None, DropReason.NOT_FOR_US, ip)
    if not announces(ip):
        return Answer(None, DropReason.NOT_ANNOUNCED, ip)
    if solicitation.source_ip.is_unspecified:
        # Someone runs duplicate address detection on our IP: tell all nodes it is taken.
        return Answer(unsolicited_neighbor_advertisement(our_mac, ip), DropReason.ANSWERED, ip)
    reply_mac = solicitation.source_lladdr or frame[6:12]
    reply = encode_neighbor_advertisement(our_mac, ip, reply_mac, solicitation.source_ip, solicited=True)
    return Answer(reply, DropReason.ANSWERED, ip)
