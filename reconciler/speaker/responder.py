"""Raw AF_PACKET sockets on one interface: receive ARP requests and Neighbor Solicitations, send
replies and gratuitous announcements. Needs CAP_NET_RAW and nothing else.

The announced IPs are never added to the interface, so the kernel neither answers for them nor
keeps them after the speaker stops; the only answers come from here.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable

from reconciler.speaker import bpf
from reconciler.speaker.links import Link
from reconciler.speaker.packets import (
    ETH_P_ARP,
    ETH_P_IPV6,
    Answer,
    answer_arp,
    answer_ndp,
    solicited_node_mac,
)

log = logging.getLogger(__name__)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23
RECV_SIZE = 2048
MAX_BURST = 64  # frames handled per wakeup before looking at other sockets and timers


def _filter(protocol: int, targets: frozenset[str]) -> list[bpf.Instruction]:
    """The kernel filter for one socket: requests for ``targets`` only, or for any IP if too many."""
    build = bpf.arp_request_filter if protocol == ETH_P_ARP else bpf.neighbor_solicitation_filter
    program = build(targets)
    if program is None:  # more IPs than a program can hold: filter by frame type, Python does the rest
        log.info("%d IPs are more than a kernel filter holds: %s requests for any IP reach the speaker",
                 len(targets), "ARP" if protocol == ETH_P_ARP else "NDP")
        program = build(None)
        assert program is not None
    return program


def _packet_socket(link: Link, protocol: int, targets: frozenset[str]) -> socket.socket:
    # Created with protocol 0 (receives nothing) and bound only once the filter is attached, so
    # no unfiltered frame is ever queued.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        bpf.attach(sock, bpf.SO_ATTACH_FILTER, _filter(protocol, targets))
        with contextlib.suppress(OSError):  # Linux >= 4.20; else own frames are dropped in Python
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.bind((link.name, protocol))
    except OSError:
        sock.close()
        raise
    return sock


Responder = Callable[[bytes, bytes, Callable[[str], bool]], Answer]


class InterfaceSockets:
    """The ARP and the NDP socket of one interface, each filtered in the kernel for our IPs.

    ``targets`` are the IPs answered on this interface; requests for any other IP (and every
    other frame) never reach the speaker. No frame that should be answered is lost when the
    targets change: attaching a filter replaces the old one atomically, and frames already
    queued under the old one are still checked in Python.
    """

    def __init__(self, link: Link, targets: Iterable[str] = ()) -> None:
        self.link = link
        ips = frozenset(targets)
        self._ipv4 = frozenset(ip for ip in ips if ":" not in ip)
        self._ipv6 = ips - self._ipv4
        self.arp = _packet_socket(link, ETH_P_ARP, self._ipv4)
        try:
            self.ndp = _packet_socket(link, ETH_P_IPV6, self._ipv6)
        except OSError:
            self.arp.close()
            raise
        self._groups: set[bytes] = set()

    def set_targets(self, targets: Iterable[str]) -> None:
        """Let through requests for exactly these IPs from now on (re-filters only what changed)."""
        ips = frozenset(targets)
        ipv4 = frozenset(ip for ip in ips if ":" not in ip)
        ipv6 = ips - ipv4
        if ipv4 != self._ipv4:
            bpf.attach(self.arp, bpf.SO_ATTACH_FILTER, _filter(ETH_P_ARP, ipv4))
            self._ipv4 = ipv4
        if ipv6 != self._ipv6:
            bpf.attach(self.ndp, bpf.SO_ATTACH_FILTER, _filter(ETH_P_IPV6, ipv6))
            self._ipv6 = ipv6

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
