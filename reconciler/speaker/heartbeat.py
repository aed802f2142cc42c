"""Heartbeats between speakers: a small signed UDP datagram, and the replay guard. Pure.

Wire format (network byte order)::

    "PSHB" | version u8 | flags u8 | generation u64 | boot_id u64 | seq u64 | sent_at_ms u64
    | node name length u16 | node name (UTF-8) | HMAC-SHA256 of everything before it (32 bytes)

``boot_id`` is the sender's start time in ns, so a restarted sender's heartbeats sort after the
previous run's; ``seq`` grows by one per datagram within a run. A receiver accepts a heartbeat
only with a valid HMAC and, per sender, a (boot, seq) beyond the last accepted one, so a
captured heartbeat cannot be replayed to keep a dead node looking alive.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

MAGIC = b"PSHB"
VERSION = 1
FLAG_LEAVING = 0x01
HEADER = struct.Struct("!4sBBQQQQH")
SIGNATURE_LEN = 32
MAX_NODE_NAME = 253  # a Kubernetes node name is a DNS subdomain
MIN_KEY_LEN = 16
# Heartbeats older than this by the receiver's clock are replays or come from a badly skewed
# clock; generous, because homelab clocks drift and the (boot, seq) order is the real guard.
MAX_AGE_MS = 30_000


class HeartbeatDrop(enum.Enum):
    """Why a received datagram was not taken as a heartbeat (a metrics label)."""

    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    STALE = "stale"
    UNKNOWN_NODE = "unknown_node"
    SELF = "self"


@dataclass(frozen=True)
class Heartbeat:
    node: str
    boot_id: int
    seq: int
    sent_at_ms: int
    generation: int
    leaving: bool = False


def _sign(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def encode_heartbeat(heartbeat: Heartbeat, key: bytes) -> bytes:
    name = heartbeat.node.encode()
    if not name or len(name) > MAX_NODE_NAME:
        raise ValueError(f"node name must be 1-{MAX_NODE_NAME} bytes")
    flags = FLAG_LEAVING if heartbeat.leaving else 0
    body = HEADER.pack(MAGIC, VERSION, flags, heartbeat.generation, heartbeat.boot_id, heartbeat.seq,
                       heartbeat.sent_at_ms, len(name)) + name
    return body + _sign(key, body)


def decode_heartbeat(data: bytes, key: bytes) -> Heartbeat | HeartbeatDrop:
    """The heartbeat in ``data`` if it is well formed and signed with ``key``."""
    if len(data) < HEADER.size:
        return HeartbeatDrop.MALFORMED
    magic, version, flags, generation, boot_id, seq, sent_at_ms, name_len = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or not 0 < name_len <= MAX_NODE_NAME:
        return HeartbeatDrop.MALFORMED
    end = HEADER.size + name_len
    if len(data) == end:
        return HeartbeatDrop.UNSIGNED
    if len(data) != end + SIGNATURE_LEN:
        return HeartbeatDrop.MALFORMED
    if not hmac.compare_digest(_sign(key, data[:end]), data[end:]):
        return HeartbeatDrop.BAD_SIGNATURE
    try:
        node = data[HEADER.size:end].decode()
    except UnicodeDecodeError:
        return HeartbeatDrop.MALFORMED
    return Heartbeat(node, boot_id, seq, sent_at_ms, generation, bool(flags & FLAG_LEAVING))


@dataclass
class _Last:
    boot_id: int
    seq: int


class ReplayGuard:
    """Remembers, per sender, the newest (boot, seq) accepted; older or equal ones are replays."""

    def __init__(self, max_age_ms: int = MAX_AGE_MS) -> None:
        self.max_age_ms = max_age_ms
        self._last: dict[str, _Last] = {}

    def check(self, heartbeat: Heartbeat, now_ms: int) -> HeartbeatDrop | None:
        """None (and remember it) when ``heartbeat`` is new; else why it is dropped."""
        if heartbeat.sent_at_ms < now_ms - self.max_age_ms:
            return HeartbeatDrop.STALE
        last = self._last.get(heartbeat.node)
        if last is not None and (heartbeat.boot_id, heartbeat.seq) <= (last.boot_id, last.seq):
            return HeartbeatDrop.REPLAYED
        self._last[heartbeat.node] = _Last(heartbeat.boot_id, heartbeat.seq)
        return None
