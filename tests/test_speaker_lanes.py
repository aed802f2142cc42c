"""The kernel sorts heartbeat datagrams by ticket into two lanes (real sockets on loopback)."""

from __future__ import annotations

import select
import socket

import pytest

from reconciler.speaker.heartbeat import NO_TICKET, Heartbeat, encode_heartbeat, ticket_for
from reconciler.speaker.lanes import HeartbeatSockets

KEY = b"lanes-test-key-0123456789"
OURS = b"our boot"


def _free_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _drain(sock: socket.socket | None) -> list[bytes]:
    assert sock is not None
    received = []
    while select.select([sock], [], [], 0.5)[0]:
        received.append(sock.recv(4096))
    return received


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_only_datagrams_with_our_ticket_reach_the_trusted_lane(family: int, host: str) -> None:
    port = _free_port(family, host)
    lanes = HeartbeatSockets((host, port), ticket_for(KEY, OURS))
    try:
        assert lanes.steered
        ours = encode_heartbeat(Heartbeat("b", b"b's boot", 1, ticket_for(KEY, OURS), 3), KEY)
        learning = encode_heartbeat(Heartbeat("b", b"b's boot", 2, NO_TICKET), KEY)
        forged = encode_heartbeat(Heartbeat("b", b"b's boot", 3, b"guessed!", 3), b"no key")
        with socket.socket(family, socket.SOCK_DGRAM) as sender:
            for datagram in [forged, ours, learning, b"", b"PSHB", forged]:
                sender.sendto(datagram, (host, port))
        trusted = _drain(lanes.trusted)
        assert trusted == [ours]
        assert _drain(lanes.open) == [forged, learning, b"", b"PSHB", forged]
    finally:
        lanes.close()
