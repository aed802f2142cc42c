"""Heartbeat codec, signatures, and the receiver's checks (boots, counters, tickets, echoes)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from reconciler.speaker.heartbeat import (
    HEADER,
    NO_TICKET,
    TICKET_OFFSET,
    Accepted,
    Heartbeat,
    HeartbeatDrop,
    HeartbeatGuard,
    Learnt,
    decode_heartbeat,
    encode_heartbeat,
    ticket_for,
)

KEY = b"0123456789abcdef-shared-key"
BEAT = Heartbeat(node="node-a", boot=b"\x01" * 8, counter=42, ticket=b"T" * 8, echo=7, generation=7,
                 sent_at_ms=1_700_000_000_000)


def test_round_trip() -> None:
    for beat in [BEAT, Heartbeat("nöde-ü", b"12345678", 2, NO_TICKET, 0, 4, -5, leaving=True)]:
        assert decode_heartbeat(encode_heartbeat(beat, KEY), KEY) == beat


def test_encoding_is_fixed_size_plus_name_and_the_ticket_sits_where_the_kernel_looks() -> None:
    data = encode_heartbeat(BEAT, KEY)
    assert len(data) == HEADER.size + len("node-a") + 32
    assert data[TICKET_OFFSET:TICKET_OFFSET + 8] == b"T" * 8


def test_tickets_depend_on_the_key_and_the_boot() -> None:
    assert ticket_for(KEY, b"\x01" * 8) != ticket_for(KEY, b"\x02" * 8)
    assert ticket_for(KEY, b"\x01" * 8) != ticket_for(b"another-key-0123456", b"\x01" * 8)
    assert len(ticket_for(KEY, b"\x01" * 8)) == 8


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


SIGNED = encode_heartbeat(BEAT, KEY)


@pytest.mark.parametrize(("data", "drop"), [
    (b"", HeartbeatDrop.MALFORMED),
    (SIGNED[:10], HeartbeatDrop.MALFORMED),
    (b"XXXX" + SIGNED[4:], HeartbeatDrop.MALFORMED),
    (_flip(SIGNED, 4), HeartbeatDrop.VERSION),  # version 3
    (SIGNED[:4] + b"\x01" + SIGNED[5:], HeartbeatDrop.VERSION),  # a speaker of the previous protocol
    (SIGNED[:-32], HeartbeatDrop.UNSIGNED),
    (SIGNED[:-1], HeartbeatDrop.MALFORMED),
    (SIGNED + b"\x00", HeartbeatDrop.MALFORMED),
    (SIGNED + bytes(400), HeartbeatDrop.MALFORMED),
    (_flip(SIGNED, 5), HeartbeatDrop.BAD_SIGNATURE),  # leaving flag forged on
    (_flip(SIGNED, TICKET_OFFSET), HeartbeatDrop.BAD_SIGNATURE),
    (_flip(SIGNED, 16), HeartbeatDrop.BAD_SIGNATURE),  # boot
    (_flip(SIGNED, 25), HeartbeatDrop.BAD_SIGNATURE),  # counter
    (_flip(SIGNED, 33), HeartbeatDrop.BAD_SIGNATURE),  # echo
    (_flip(SIGNED, HEADER.size), HeartbeatDrop.BAD_SIGNATURE),  # node name
    (_flip(SIGNED, len(SIGNED) - 1), HeartbeatDrop.BAD_SIGNATURE),
    (encode_heartbeat(BEAT, b"another-key-of-16-bytes"), HeartbeatDrop.BAD_SIGNATURE),
    (encode_heartbeat(BEAT, b""), HeartbeatDrop.BAD_SIGNATURE),
])
def test_bad_datagrams(data: bytes, drop: HeartbeatDrop) -> None:
    assert decode_heartbeat(data, KEY) is drop


def test_name_that_is_not_utf8_is_malformed_even_when_signed() -> None:
    body = HEADER.pack(b"PSHB", 2, 0, NO_TICKET, b"\x01" * 8, 1, 0, 1, 1, 2) + b"\xff\xfe"
    data = body + hmac.new(KEY, body, hashlib.sha256).digest()
    assert decode_heartbeat(data, KEY) is HeartbeatDrop.MALFORMED


def test_encode_refuses_empty_or_huge_names_and_odd_nonces() -> None:
    for beat in [Heartbeat("", b"\x01" * 8, 1), Heartbeat("n" * 254, b"\x01" * 8, 1), Heartbeat("n", b"\x01", 1)]:
        with pytest.raises(ValueError):
            encode_heartbeat(beat, KEY)


OURS = b"R" * 8  # the receiver's boot
X1, X2, X0 = b"\x11" * 8, b"\x12" * 8, b"\x10" * 8  # boots of peer x (X0: before the receiver started)
WINDOW = 0.2  # dead_after


def _from_x(boot: bytes, counter: int, echo: int = 0, *, for_boot: bytes | None = OURS, key: bytes = KEY,
            node: str = "x") -> bytes:
    ticket = NO_TICKET if for_boot is None else ticket_for(KEY, for_boot)
    return encode_heartbeat(Heartbeat(node, boot, counter, ticket, echo, 1, 0), key)


def _guard() -> HeartbeatGuard:
    guard = HeartbeatGuard(KEY, OURS)
    guard.configure("r", ["x", "y"])
    for counter in range(1, 21):  # our rounds 1..20 went out every 50 ms from t=0
        guard.sent.record(counter, (counter - 1) * 0.05)
    return guard


def _verdict(result: Accepted | Learnt | HeartbeatDrop) -> str:
    if isinstance(result, Accepted):
        return "new boot" if result.new_boot else "alive"
    if isinstance(result, Learnt):
        return f"learnt ({result.reason.value})"
    return result.value


def test_guard_walk() -> None:
    """One receiver, one peer, through start-up, replays, a restart and a stepped clock."""
    guard = _guard()
    steps: list[tuple[str, bytes, float, str]] = [
        ("x starts, not knowing us", _from_x(X1, 1, for_boot=None), 0.01, "learnt (other_boot)"),
        ("it echoes our round 1 with our ticket", _from_x(X1, 2, 1), 0.06, "new boot"),
        ("the same datagram again", _from_x(X1, 2, 1), 0.07, "replayed"),
        ("an older counter", _from_x(X1, 1, 1), 0.07, "replayed"),
        ("the next one", _from_x(X1, 3, 2), 0.1, "alive"),
        ("gaps are fine (lost datagrams)", _from_x(X1, 9, 3), 0.12, "alive"),
        ("an echo older than two dead_after", _from_x(X1, 10, 2), 0.5, "learnt (stale)"),
        ("an echo of a round never sent", _from_x(X1, 11, 999), 0.5, "learnt (stale)"),
        ("made for an earlier boot of ours", _from_x(X1, 12, 5, for_boot=b"old boot"), 0.5, "learnt (other_boot)"),
        ("signed with another key", _from_x(X1, 13, 6, key=b"not-the-shared-key"), 0.5, "bad_signature"),
        ("x restarts (whatever its clock says)", _from_x(X2, 1, for_boot=None), 0.51, "learnt (other_boot)"),
        ("x's new boot answers our round", _from_x(X2, 2, 7), 0.52, "new boot"),
        ("the boot x left behind, replayed", _from_x(X1, 20, 7), 0.53, "replayed"),
        ("a boot from before we started", _from_x(X0, 50, for_boot=b"previous"), 0.53, "learnt (other_boot)"),
        ("y is tracked apart", _from_x(X1, 1, 7, node="y"), 0.54, "new boot"),
        ("a stranger", _from_x(X1, 1, 7, node="mallory"), 0.54, "unknown_node"),
        ("ourselves, looped back", _from_x(X1, 1, 7, node="r"), 0.54, "self"),
    ]
    for i, (what, data, now, expected) in enumerate(steps):
        assert _verdict(guard.check(data, now, 0, WINDOW)) == expected, f"step {i}: {what}"


def test_counters_and_retired_boots_are_refused_before_any_hmac() -> None:
    guard = _guard()
    assert isinstance(guard.check(_from_x(X1, 5, 1), 0.05, 0, WINDOW), Accepted)
    assert isinstance(guard.check(_from_x(X2, 1, 2), 0.06, 0, WINDOW), Accepted)  # X1 retired
    # Signed with a wrong key: had the HMAC been checked, these would be bad_signature.
    forged_key = b"forger-has-no-key"
    assert guard.check(_from_x(X2, 1, 2, key=forged_key), 0.07, 0, WINDOW) is HeartbeatDrop.REPLAYED
    assert guard.check(_from_x(X1, 99, 2, key=forged_key), 0.07, 0, WINDOW) is HeartbeatDrop.REPLAYED
    assert guard.check(_from_x(X2, 2, 2, key=forged_key), 0.07, 0, WINDOW) is HeartbeatDrop.BAD_SIGNATURE


def test_a_fresh_receiver_never_takes_captured_heartbeats() -> None:
    """Heartbeats captured before the receiver started carry a ticket of its earlier boot."""
    captured = [_from_x(X1, n, n, for_boot=b"earlier!") for n in range(1, 200)]
    guard = _guard()
    assert {_verdict(guard.check(d, 0.1, 0, WINDOW)) for d in captured} == {"learnt (other_boot)"}
    assert guard.peers["x"].boot is None


def test_replays_within_our_boot_keep_a_dead_peer_alive_for_at_most_one_more_dead_after() -> None:
    guard = _guard()
    # x's last real heartbeat echoed our round 10 (sent at 0.45) and x died then; its datagrams
    # were captured but never reached us (so their counters are new to us), and come now.
    captured = [_from_x(X1, n, min(n, 10)) for n in range(1, 80)]
    proofs = [result.proof_at for n, data in enumerate(captured)
              if isinstance(result := guard.check(data, 0.45 + n * 0.01, 0, WINDOW), Accepted)]
    assert proofs, "replays that answer a recent round are taken..."
    assert max(proofs) <= 0.45 + WINDOW, "...but prove nothing later than one dead_after after it"
    # Undisturbed, x would have been dead at 0.45 + WINDOW; the replays held it to 0.45 + 2 WINDOW.


def test_a_receiver_that_stalled_takes_the_heartbeats_that_queued_meanwhile() -> None:
    guard = _guard()
    assert isinstance(guard.check(_from_x(X1, 1, 10), 0.46, 0, WINDOW), Accepted)
    # We stalled 300 ms (longer than dead_after) after round 10; x's heartbeats meanwhile echo it.
    late = guard.check(_from_x(X1, 2, 10), 0.76, 0, WINDOW)
    assert isinstance(late, Accepted) and late.proof_at == pytest.approx(0.45 + WINDOW)


def test_a_restarted_receiver_answers_every_authentic_boot_until_one_is_confirmed() -> None:
    guard = _guard()
    guard.check(_from_x(X0, 7, for_boot=b"earlier!"), 0.01, 0, WINDOW)  # a replay of an old boot
    guard.check(_from_x(X1, 3, for_boot=b"earlier!"), 0.02, 0, WINDOW)  # the real x
    assert guard.replies_for("x") == [(ticket_for(KEY, X0), 7), (ticket_for(KEY, X1), 3)]
    assert guard.replies_for("y") == [(NO_TICKET, 0)]
    guard.check(_from_x(X1, 4, 1), 0.03, 0, WINDOW)
    assert guard.replies_for("x") == [(ticket_for(KEY, X1), 4)]


def test_clock_offset_is_recorded_and_changes_nothing() -> None:
    guard = _guard()
    ahead = encode_heartbeat(Heartbeat("x", X1, 1, ticket_for(KEY, OURS), 1, 1, 1_000_000 + 45_000), KEY)
    result = guard.check(ahead, 0.05, 1_000_000, WINDOW)
    assert isinstance(result, Accepted)
    assert guard.peers["x"].clock_offset_ms == 45_000
    behind = encode_heartbeat(Heartbeat("x", X1, 2, ticket_for(KEY, OURS), 2, 1, -10**12), KEY)
    assert isinstance(guard.check(behind, 0.06, 1_000_000, WINDOW), Accepted)


def test_a_known_peer_that_restarted_is_answered_on_both_boots_until_its_new_one_is_confirmed() -> None:
    guard = _guard()
    assert isinstance(guard.check(_from_x(X1, 5, 1), 0.05, 0, WINDOW), Accepted)
    # x restarts and does not know our boot yet: we keep answering X1, and answer X2 as well,
    # so x learns our boot from a heartbeat it can take.
    guard.check(_from_x(X2, 1, for_boot=None), 0.1, 0, WINDOW)
    assert guard.replies_for("x") == [(ticket_for(KEY, X1), 5), (ticket_for(KEY, X2), 1)]
    assert isinstance(guard.check(_from_x(X2, 2, 3), 0.12, 0, WINDOW), Accepted)
    assert guard.replies_for("x") == [(ticket_for(KEY, X2), 2)]


def test_replays_of_many_old_boots_are_each_usable_once() -> None:
    guard = _guard()
    old_boots = [bytes([0x20 + i]) * 8 for i in range(10)]
    captured = [_from_x(boot, 7, for_boot=b"earlier!") for boot in old_boots]
    assert {_verdict(guard.check(d, 0.1, 0, WINDOW)) for d in captured} == {"learnt (other_boot)"}
    # Cycling the same captures again (to push the real boot out of what we answer) costs no HMAC
    # and changes nothing.
    assert {_verdict(guard.check(d, 0.2, 0, WINDOW)) for d in captured} == {"replayed"}
    guard.check(_from_x(X1, 3, for_boot=b"earlier!"), 0.3, 0, WINDOW)
    assert (ticket_for(KEY, X1), 3) in guard.replies_for("x")
    assert len(guard.replies_for("x")) == 4
