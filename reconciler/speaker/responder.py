"""Raw AF_PACKET sockets on one interface: receive ARP requests and Neighbor Solicitations, send
replies and gratuitous announcements. Needs CAP_NET_RAW and nothing else.

The announced IPs are never added to the interface, so the kernel neither answers for them nor
keeps them after the speaker stops; the only answers come from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
from collections.abc import Callable, Iterable

from reconciler.speaker.links import Link
from reconciler.speaker.packets import (
    ETH_P_ARP,
    ETH_P_IPV6,
    Answer,
    answer_arp,
    answer_ndp,
    solicited_node_mac,
)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
RECV_SIZE = 2048
MAX_BURST = 64  # frames handled per wakeup before looking at other sockets and timers

# Classic BPF: keep only ARP requests that are not gratuitous (sender IP != target IP). When
# thousands of IPs move, every speaker broadcasts gratuitous ARP for each of them; without this
# filter every other speaker would wake up for each frame only to drop it.
_ARP_REQUEST_FILTER = [
    (0x28, 0, 0, 12),      # ldh [12]            ethertype
    (0x15, 0, 7, 0x0806),  # jeq ARP else drop
    (0x28, 0, 0, 20),      # ldh [20]            operation
    (0x15, 0, 5, 1),       # jeq request else drop
    (0x20, 0, 0, 28),      # ld [28]             sender IP
    (0x07, 0, 0, 0),       # tax
    (0x20, 0, 0, 38),      # ld [38]             target IP
    (0x1D, 1, 0, 0),       # jeq x: gratuitous, drop
    (0x06, 0, 0, 0x40000),  # ret 256 KiB: accept
    (0x06, 0, 0, 0),       # ret 0: drop
]

# Classic BPF: keep only ICMPv6 Neighbor Solicitations without extension headers, so the
# speaker is not woken for every IPv6 packet on the link.
_NS_FILTER = [
    (0x28, 0, 0, 12),      # ldh [12]            ethertype
    (0x15, 0, 5, 0x86DD),  # jeq IPv6 else drop
    (0x30, 0, 0, 20),      # ldb [20]            next header
    (0x15, 0, 3, 58),      # jeq ICMPv6 else drop
    (0x30, 0, 0, 54),      # ldb [54]            ICMPv6 type
    (0x15, 0, 1, 135),     # jeq NS else drop
    (0x06, 0, 0, 0x40000),  # ret 256 KiB: accept
    (0x06, 0, 0, 0),       # ret 0: drop
]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _packet_socket(link: Link, protocol: int, program: list[tuple[int, int, int, int]]) -> socket.socket:
    # Created with protocol 0 (receives nothing) and bound only once the filter is attached, so
    # no unfiltered frame is ever queued.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _attach_filter(sock, program)
        with contextlib.suppress(OSError):  # Linux >= 4.20; else own frames are dropped in Python
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.bind((link.name, protocol))
    except OSError:
        sock.close()
        raise
    return sock


Responder = Callable[[bytes, bytes, Callable[[str], bool]], Answer]


class InterfaceSockets:
    """The ARP and the NDP socket of one interface."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.arp = _packet_socket(link, ETH_P_ARP, _ARP_REQUEST_FILTER)
        try:
            self.ndp = _packet_socket(link, ETH_P_IPV6, _NS_FILTER)
        except OSError:
            self.arp.close()
            raise
        self._groups: set[bytes] = set()

    def sockets(self) -> list[tuple[socket.socket, str, Responder]]:
        return [(self.arp, "arp", answer_arp), (self.ndp, "ndp", answer_ndp)]

    def receive(self, sock: socket.socket) -> list[bytes]:
        """Up to MAX_BURST frames waiting on ``sock`` (never blocks), without our own outgoing ones."""
        frames = []
        for _ in range(MAX_BURST):
            try:
                data, address = sock.recvfrom(RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENETDOWN: the link went down; the link watcher closes us next
                break
            if address[2] != PACKET_OUTGOING:
                frames.append(data)
        return frames

    def send(self, frame: bytes, sock: socket.socket | None = None) -> None:
        (sock or self.arp).send(frame)

    def join_solicited_node_groups(self, ipv6_addresses: Iterable[str]) -> None:
        """Receive the multicast solicitations for exactly these IPv6 addresses.

        The IPs are not on the interface, so the kernel has not joined their solicited-node
        groups; a NIC filtering multicast would otherwise never deliver the solicitations.
        """
        wanted = {solicited_node_mac(ip) for ip in ipv6_addresses}
        for mac in wanted - self._groups:
            self._membership(PACKET_ADD_MEMBERSHIP, mac)
        for mac in self._groups - wanted:
            self._membership(PACKET_DROP_MEMBERSHIP, mac)
        self._groups = wanted

    def _membership(self, option: int, mac: bytes) -> None:
        mreq = struct.pack("iHH8s", self.link.index, PACKET_MR_MULTICAST, len(mac), mac)
        self.ndp.setsockopt(SOL_PACKET, option, mreq)

    def close(self) -> None:
        self.arp.close()
        self.ndp.close()
