"""Heartbeat codec, signatures and replay protection."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from reconciler.speaker.heartbeat import (
    HEADER,
    Heartbeat,
    HeartbeatDrop,
    ReplayGuard,
    decode_heartbeat,
    encode_heartbeat,
)

KEY = b"0123456789abcdef-shared-key"
BEAT = Heartbeat(node="node-a", boot_id=1_700_000_000_000_000_000, seq=42, sent_at_ms=1_700_000_000_000,
                 generation=7)


def test_round_trip() -> None:
    for beat in [BEAT, Heartbeat("nöde-ü", 1, 2, 3, 4, leaving=True)]:
        assert decode_heartbeat(encode_heartbeat(beat, KEY), KEY) == beat


def test_encoding_is_fixed_size_plus_name() -> None:
    assert len(encode_heartbeat(BEAT, KEY)) == HEADER.size + len("node-a") + 32


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


SIGNED = encode_heartbeat(BEAT, KEY)


@pytest.mark.parametrize(("data", "drop"), [
    (b"", HeartbeatDrop.MALFORMED),
    (SIGNED[:10], HeartbeatDrop.MALFORMED),
    (b"XXXX" + SIGNED[4:], HeartbeatDrop.MALFORMED),
    (_flip(SIGNED, 4), HeartbeatDrop.MALFORMED),  # version 0
    (SIGNED[:-32], HeartbeatDrop.UNSIGNED),
    (SIGNED[:-1], HeartbeatDrop.MALFORMED),
    (SIGNED + b"\x00", HeartbeatDrop.MALFORMED),
    (_flip(SIGNED, 5), HeartbeatDrop.BAD_SIGNATURE),  # leaving flag forged on
    (_flip(SIGNED, 20), HeartbeatDrop.BAD_SIGNATURE),  # boot id
    (_flip(SIGNED, 30), HeartbeatDrop.BAD_SIGNATURE),  # seq
    (_flip(SIGNED, HEADER.size), HeartbeatDrop.BAD_SIGNATURE),  # node name
    (_flip(SIGNED, len(SIGNED) - 1), HeartbeatDrop.BAD_SIGNATURE),
    (encode_heartbeat(BEAT, b"another-key-of-16-bytes"), HeartbeatDrop.BAD_SIGNATURE),
    (encode_heartbeat(BEAT, b""), HeartbeatDrop.BAD_SIGNATURE),
])
def test_bad_datagrams(data: bytes, drop: HeartbeatDrop) -> None:
    assert decode_heartbeat(data, KEY) is drop


def test_name_that_is_not_utf8_is_malformed_even_when_signed() -> None:
    body = HEADER.pack(b"PSHB", 1, 0, 1, 1, 1, 1, 2) + b"\xff\xfe"
    data = body + hmac.new(KEY, body, hashlib.sha256).digest()
    assert decode_heartbeat(data, KEY) is HeartbeatDrop.MALFORMED


def test_encode_refuses_empty_or_huge_names() -> None:
    for name in ["", "n" * 254]:
        with pytest.raises(ValueError):
            encode_heartbeat(Heartbeat(name, 1, 1, 1, 1), KEY)


def _beat(boot: int, seq: int, sent_at_ms: int = 1_000_000, node: str = "node-a") -> Heartbeat:
    return Heartbeat(node, boot, seq, sent_at_ms, 1)


def test_replay_guard_walk() -> None:
    guard = ReplayGuard(max_age_ms=30_000)
    now = 1_000_000
    steps: list[tuple[Heartbeat, HeartbeatDrop | None]] = [
        (_beat(100, 1), None),
        (_beat(100, 2), None),
        (_beat(100, 2), HeartbeatDrop.REPLAYED),  # the same datagram again
        (_beat(100, 1), HeartbeatDrop.REPLAYED),  # an older one
        (_beat(100, 5), None),  # gaps are fine (lost datagrams)
        (_beat(100, 4), HeartbeatDrop.REPLAYED),  # reordered: too late to matter
        (_beat(200, 1), None),  # the sender restarted
        (_beat(100, 6), HeartbeatDrop.REPLAYED),  # the previous run, replayed
        (_beat(200, 1, node="node-b"), None),  # senders are tracked apart
        (_beat(200, 2, sent_at_ms=now - 30_001), HeartbeatDrop.STALE),
        (_beat(200, 2, sent_at_ms=now - 29_999), None),
    ]
    for i, (beat, expected) in enumerate(steps):
        assert guard.check(beat, now) is expected, f"step {i}: {beat}"
