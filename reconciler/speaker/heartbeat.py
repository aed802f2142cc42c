"""Heartbeats between speakers: a small signed UDP datagram, and the receiver's checks. Pure.

Wire format, version 2 (network byte order)::

    "PSHB" | version u8 | flags u8 | ticket 8 bytes | boot 8 bytes | counter u64 | echo u64
    | generation u64 | sent_at_ms i64 | node name length u16 | node name (UTF-8)
    | HMAC-SHA256 of everything before it (32 bytes)

No wall clock takes part in liveness. Each run of a speaker draws a random ``boot`` nonce and
counts its send rounds from 1 (``counter``). A heartbeat is sent to each peer on its own and
carries that peer's *ticket* — a key-derived tag of the peer's current boot nonce, learnt from
the peer's own heartbeats — and ``echo``, the newest counter heard from that peer. So a
receiver knows, by its own monotonic clock, how recent a heartbeat is: it was made after the
receiver sent the round it echoes. That is the challenge that makes replays harmless:

- a datagram captured before the receiver started carries a ticket of an older boot: it is
  authenticated but proves nothing, and never counts as liveness;
- within one boot of the receiver, a datagram proves its sender alive at the latest one
  ``dead_after`` after the round it echoes was sent (and counts not at all when that round is
  more than two ``dead_after`` old), so replays of a dead node's heartbeats keep it alive at most
  one ``dead_after`` longer than its last real one — while a receiver that stalled for a moment
  still takes the heartbeats that queued up meanwhile;
- per sender, only strictly increasing counters of its current boot are taken, and boots it
  has left behind are refused.

A restarted node is always heard again: until a peer's boot is confirmed, our heartbeats also
answer every authentic boot of it heard since (so it learns our boot from them), and its new
boot is adopted as soon as it echoes a fresh round of ours, whatever its clock says.
``sent_at_ms`` (the sender's wall clock) is only shown: the offset between two nodes' clocks goes
to the log and ``/status``.

The ticket sits at a fixed offset so the kernel can sort datagrams before Python sees them
(see ``lanes``): forged datagrams cannot crowd out the ones carrying our ticket.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections import deque
from dataclasses import dataclass, field

MAGIC = b"PSHB"
VERSION = 2
FLAG_LEAVING = 0x01
HEADER = struct.Struct("!4sBB8s8sQQQqH")
TICKET_OFFSET = 6  # where the kernel filter looks (after magic, version and flags)
TICKET_LEN = 8
BOOT_LEN = 8
NO_TICKET = bytes(TICKET_LEN)  # sent while the receiver's boot is not known yet
SIGNATURE_LEN = 32
MAX_NODE_NAME = 253  # a Kubernetes node name is a DNS subdomain
MAX_DATAGRAM = HEADER.size + MAX_NODE_NAME + SIGNATURE_LEN
MIN_KEY_LEN = 16
RETIRED_BOOTS = 16  # per peer: earlier boots whose replays are refused outright
LEARNT_BOOTS = 4  # per peer: unconfirmed boots answered at once
SEEN_BOOTS = 64  # per peer: other boots whose counters are remembered
SENT_LOG = 1024  # send rounds remembered for echo ages (>= dead_after / interval)
_TICKET_CONTEXT = b"portside heartbeat ticket v2"


class HeartbeatDrop(enum.Enum):
    """Why a received datagram was not taken as liveness (a metrics label)."""

    MALFORMED = "malformed"
    VERSION = "version"  # another protocol version: a mixed rollout, or not a speaker
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"  # a counter already seen, or a boot the sender has left behind
    OTHER_BOOT = "other_boot"  # authentic, but not made for this boot of ours: no proof it is recent
    STALE = "stale"  # made for this boot, but echoes a round older than two dead_after
    UNKNOWN_NODE = "unknown_node"
    SELF = "self"


@dataclass(frozen=True)
class Heartbeat:
    node: str
    boot: bytes  # the sender's boot nonce
    counter: int  # the sender's send round, from 1 in each boot
    ticket: bytes = NO_TICKET  # the receiver's ticket, as the sender knows it
    echo: int = 0  # the newest counter the sender heard from the receiver (0: none)
    generation: int = 0
    sent_at_ms: int = 0  # the sender's wall clock: shown, never trusted
    leaving: bool = False


def ticket_for(key: bytes, boot: bytes) -> bytes:
    """The tag a node with nonce ``boot`` expects in heartbeats to it; only key holders can make it."""
    return hmac.new(key, _TICKET_CONTEXT + boot, hashlib.sha256).digest()[:TICKET_LEN]


def _sign(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def encode_heartbeat(heartbeat: Heartbeat, key: bytes) -> bytes:
    name = heartbeat.node.encode()
    if not name or len(name) > MAX_NODE_NAME:
        raise ValueError(f"node name must be 1-{MAX_NODE_NAME} bytes")
    if len(heartbeat.boot) != BOOT_LEN or len(heartbeat.ticket) != TICKET_LEN:
        raise ValueError(f"boot nonce and ticket are {BOOT_LEN} bytes")
    flags = FLAG_LEAVING if heartbeat.leaving else 0
    body = HEADER.pack(MAGIC, VERSION, flags, heartbeat.ticket, heartbeat.boot, heartbeat.counter,
                       heartbeat.echo, heartbeat.generation, heartbeat.sent_at_ms, len(name)) + name
    return body + _sign(key, body)


@dataclass(frozen=True)
class Envelope:
    """What can be read from a datagram without checking its signature (cheap, untrusted)."""

    name: bytes
    boot: bytes
    counter: int
    body_len: int


def open_envelope(data: bytes) -> Envelope | HeartbeatDrop:
    """Size, magic, version and framing: the checks that cost nothing, before any HMAC."""
    if not HEADER.size < len(data) <= MAX_DATAGRAM or data[:4] != MAGIC:
        return HeartbeatDrop.MALFORMED
    if data[4] != VERSION:
        return HeartbeatDrop.VERSION
    name_len = int.from_bytes(data[HEADER.size - 2:HEADER.size], "big")
    end = HEADER.size + name_len
    if not 0 < name_len <= MAX_NODE_NAME:
        return HeartbeatDrop.MALFORMED
    if len(data) == end:
        return HeartbeatDrop.UNSIGNED
    if len(data) != end + SIGNATURE_LEN:
        return HeartbeatDrop.MALFORMED
    boot = data[14:22]
    counter = int.from_bytes(data[22:30], "big")
    return Envelope(data[HEADER.size:end], boot, counter, end)


def decode_heartbeat(data: bytes, key: bytes) -> Heartbeat | HeartbeatDrop:
    """The heartbeat in ``data`` if it is well formed and signed with ``key``."""
    envelope = open_envelope(data)
    if isinstance(envelope, HeartbeatDrop):
        return envelope
    return _verified(data, envelope, key)


def _verified(data: bytes, envelope: Envelope, key: bytes) -> Heartbeat | HeartbeatDrop:
    end = envelope.body_len
    if not hmac.compare_digest(_sign(key, data[:end]), data[end:]):
        return HeartbeatDrop.BAD_SIGNATURE
    try:
        node = envelope.name.decode()
    except UnicodeDecodeError:
        return HeartbeatDrop.MALFORMED
    _, _, flags, ticket, boot, counter, echo, generation, sent_at_ms, _ = HEADER.unpack_from(data)
    return Heartbeat(node, boot, counter, ticket, echo, generation, sent_at_ms, bool(flags & FLAG_LEAVING))


class SentLog:
    """When (monotonic seconds) each of our recent send rounds went out: the age of an echo."""

    def __init__(self, size: int = SENT_LOG) -> None:
        self._slots: list[tuple[int, float]] = [(0, 0.0)] * size

    def record(self, counter: int, now: float) -> None:
        self._slots[counter % len(self._slots)] = (counter, now)

    def sent_at(self, counter: int) -> float | None:
        stored, at = self._slots[counter % len(self._slots)]
        return at if counter > 0 and stored == counter else None


@dataclass
class PeerBoots:
    """What this node knows of one peer's runs."""

    boot: bytes | None = None  # its current boot: confirmed by a recent heartbeat
    counter: int = 0  # the newest counter taken from that boot
    # Other authentic boots, each with its newest counter (most recently advanced last), so a
    # replayed datagram of one of them is refused before its HMAC and cannot be used twice.
    seen: dict[bytes, int] = field(default_factory=dict)
    # Those heard since the last fresh heartbeat: our heartbeats answer them too, so a peer that
    # restarted (or a peer after we restarted) learns our boot, whatever replays of older boots
    # an attacker mixes in.
    learnt: dict[bytes, int] = field(default_factory=dict)
    retired: deque[bytes] = field(default_factory=lambda: deque(maxlen=RETIRED_BOOTS))
    clock_offset_ms: int | None = None  # its wall clock minus ours, from the last heartbeat taken

    def echo_targets(self) -> list[tuple[bytes, int]]:
        """The boots (and counters) our heartbeats to this peer answer: its current one first."""
        current = [] if self.boot is None else [(self.boot, self.counter)]
        return current + list(self.learnt.items())

    def newest_counter(self, boot: bytes) -> int | None:
        if boot == self.boot:
            return self.counter
        return self.seen.get(boot)

    def confirm(self, boot: bytes, counter: int) -> bool:
        """Take a fresh heartbeat of ``boot``; True when that is a new boot."""
        new_boot = boot != self.boot
        if new_boot:
            if self.boot is not None:
                self.retired.append(self.boot)
            self.boot = boot
            self.seen.pop(boot, None)
        self.counter = counter
        # A node runs one boot at a time: while this one is fresh, any other is a replay.
        self.learnt.clear()
        return new_boot

    def learn(self, boot: bytes, counter: int) -> None:
        """Remember an authentic heartbeat that proved nothing about now."""
        if boot == self.boot:
            self.counter = counter
            return
        for memory, limit in ((self.seen, SEEN_BOOTS), (self.learnt, LEARNT_BOOTS)):
            memory.pop(boot, None)
            memory[boot] = counter
            while len(memory) > limit:
                del memory[next(iter(memory))]


@dataclass(frozen=True)
class Accepted:
    """A heartbeat taken as proof that its sender was alive at ``proof_at`` (monotonic seconds)."""

    heartbeat: Heartbeat
    new_boot: bool  # the sender restarted (or was heard for the first time)
    proof_at: float  # its arrival, or one dead_after after the round it echoes, if earlier


@dataclass(frozen=True)
class Learnt:
    """An authentic heartbeat that proves nothing about now, but tells the sender's boot."""

    heartbeat: Heartbeat
    reason: HeartbeatDrop


class HeartbeatGuard:
    """The receiver's side of the protocol: which datagrams count, per sender and boot.

    ``check`` runs the cheap checks first (framing, sender, counter) and the HMAC only on what
    could still be taken; every answer costs at most one HMAC.
    """

    def __init__(self, key: bytes, boot: bytes) -> None:
        self.key = key
        self.boot = boot
        self.ticket = ticket_for(key, boot)
        self.sent = SentLog()
        self.peers: dict[str, PeerBoots] = {}
        self._names: dict[bytes, str] = {}
        self._self_name = b""

    def configure(self, node: str, peers: list[str]) -> None:
        self._self_name = node.encode()
        self._names = {name.encode(): name for name in peers}
        self.peers = {name: self.peers.get(name) or PeerBoots() for name in peers}

    def check(self, data: bytes, now: float, wall_ms: int, dead_after_s: float) -> Accepted | Learnt | HeartbeatDrop:
        """Judge one datagram received at ``now`` (monotonic)."""
        envelope = open_envelope(data)
        if isinstance(envelope, HeartbeatDrop):
            return envelope
        node = self._names.get(envelope.name)
        if node is None:
            return HeartbeatDrop.SELF if envelope.name == self._self_name else HeartbeatDrop.UNKNOWN_NODE
        peer = self.peers[node]
        newest = peer.newest_counter(envelope.boot)
        if envelope.boot in peer.retired or (newest is not None and envelope.counter <= newest):
            return HeartbeatDrop.REPLAYED
        beat = _verified(data, envelope, self.key)
        if isinstance(beat, HeartbeatDrop):
            return beat
        if beat.ticket != self.ticket:
            return self._learn(peer, beat, HeartbeatDrop.OTHER_BOOT)
        sent_at = self.sent.sent_at(beat.echo)
        if sent_at is None or now - sent_at > 2 * dead_after_s:
            return self._learn(peer, beat, HeartbeatDrop.STALE)
        new_boot = peer.confirm(beat.boot, beat.counter)
        peer.clock_offset_ms = beat.sent_at_ms - wall_ms
        return Accepted(beat, new_boot, min(now, sent_at + dead_after_s))

    def _learn(self, peer: PeerBoots, beat: Heartbeat, reason: HeartbeatDrop) -> Learnt:
        peer.learn(beat.boot, beat.counter)
        return Learnt(beat, reason)

    def replies_for(self, node: str) -> list[tuple[bytes, int]]:
        """(ticket, echo) of each heartbeat to send ``node`` this round (usually one)."""
        peer = self.peers.get(node)
        targets = [] if peer is None else peer.echo_targets()
        if not targets:
            return [(NO_TICKET, 0)]
        return [(ticket_for(self.key, boot), counter) for boot, counter in targets]
