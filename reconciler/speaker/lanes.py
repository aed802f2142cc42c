"""The heartbeat port as two lanes, sorted by the kernel: datagrams carrying our ticket, and the rest.

A flood of forged heartbeats (well formed, wrong signature) at a rate Python cannot keep up
with fills a socket's receive queue, and the kernel then drops real heartbeats with the rest:
a live peer would look dead. So two sockets share the port (``SO_REUSEPORT``) and a classic BPF
program, run by the kernel for every datagram before it is queued, steers the ones whose ticket
field is this boot's ticket to the *trusted* lane and everything else to the *open* lane. The
ticket is derived from the shared key: a forger without the key (who cannot read unicast
heartbeats to us) cannot make it, so a flood only ever fills the open lane, which is read on a
budget. Nothing is trusted for being in a lane: every datagram still goes through every check.

Where the kernel refuses the program, one socket takes everything, as before.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct

from reconciler.speaker.bpf import JEQ_K, LD_W_ABS, RET_K, Instruction, attach
from reconciler.speaker.heartbeat import TICKET_LEN, TICKET_OFFSET

log = logging.getLogger(__name__)

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>; not in Python's socket module
RECEIVE_BUFFER = 1 << 20

_NOT_SUPPORTED = (errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM)
OPEN, TRUSTED = 0, 1  # socket indexes in the reuseport group: the order they were bound in


def steering_program(ticket: bytes) -> list[Instruction]:
    """(code, jt, jf, k) instructions: TRUSTED when the ticket field equals ``ticket``, else OPEN.

    The reuseport program sees the UDP payload at offset 0. A datagram too short to hold a
    ticket makes the load fail, and a failed load returns 0: OPEN, as it must.
    """
    assert len(ticket) == TICKET_LEN
    high, low = struct.unpack("!II", ticket)
    return [
        (LD_W_ABS, 0, 0, TICKET_OFFSET),
        (JEQ_K, 0, 3, high),
        (LD_W_ABS, 0, 0, TICKET_OFFSET + 4),
        (JEQ_K, 0, 1, low),
        (RET_K, 0, 0, TRUSTED),
        (RET_K, 0, 0, OPEN),
    ]


class HeartbeatSockets:
    """The bound heartbeat port: ``trusted`` (also used to send) and ``open`` (None: unsteered)."""

    def __init__(self, address: tuple[str, int], ticket: bytes) -> None:
        self.family = socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6 else socket.AF_INET
        self.open: socket.socket | None = None
        try:
            self.open, self.trusted = self._steered(address, ticket)
        except OSError as exc:
            if exc.errno not in _NOT_SUPPORTED:
                raise
            log.warning("the kernel will not sort heartbeats (%s): a flood of forged heartbeats can "
                        "hide real ones", exc.strerror)
            self.trusted = self._bound(address, reuse=False)

    def _bound(self, address: tuple[str, int], reuse: bool) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _steered(self, address: tuple[str, int], ticket: bytes) -> tuple[socket.socket, socket.socket]:
        open_lane = self._bound(address, reuse=True)
        try:
            trusted = self._bound(address, reuse=True)
        except OSError:
            open_lane.close()
            raise
        try:
            attach(open_lane, SO_ATTACH_REUSEPORT_CBPF, steering_program(ticket))
        except OSError:
            open_lane.close()
            trusted.close()
            raise
        return open_lane, trusted

    @property
    def steered(self) -> bool:
        return self.open is not None

    def close(self) -> None:
        if self.open is not None:
            self.open.close()
        self.trusted.close()
