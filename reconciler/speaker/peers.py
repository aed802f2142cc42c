"""Heartbeats on the wire: the UDP socket, in a thread of its own.

Heartbeats are sent and received here, not in the event loop, so that a long step of the loop
(applying a 10,000-IP table, a burst of gratuitous ARP, a garbage collection) never makes this
node look dead to its peers, which would make them take over, send their own bursts, stall in
turn and flap. A loop that is truly stuck still stops the heartbeats: they are sent only while
``loop_alive()`` says the loop has turned recently.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.common.metrics import Counter
from reconciler.planning.announcement_table import DEFAULT_HEARTBEAT, AnnouncementTable
from reconciler.speaker.election import Liveness
from reconciler.speaker.heartbeat import (
    Heartbeat,
    HeartbeatDrop,
    ReplayGuard,
    decode_heartbeat,
    encode_heartbeat,
)

log = logging.getLogger(__name__)

RETRY_BIND_S = 1.0
LEAVING_COPIES = 2  # a lost "leaving" datagram would cost peers a whole dead_after


@dataclass(frozen=True)
class PeerCounters:
    received: Counter
    dropped: Counter
    sent: Counter
    send_errors: Counter


@dataclass(frozen=True)
class _Config:
    bind: tuple[str, int] | None
    peers: tuple[tuple[str, str], ...]  # (node, address)
    port: int
    interval_s: float
    generation: int


class PeerLink:
    """Sends this node's heartbeats and keeps the liveness of its peers (thread-safe)."""

    def __init__(self, node: str, key: bytes, counters: PeerCounters, on_change: Callable[[], None],
                 loop_alive: Callable[[], bool]) -> None:
        self.node = node
        self._key = key
        self.counters = counters
        self._on_change = on_change
        self._loop_alive = loop_alive
        self._lock = threading.Lock()
        # Until the socket is bound we cannot hear anyone, so every peer counts as alive; the
        # startup grace (one dead_after) begins when we can listen.
        self._liveness = Liveness(DEFAULT_HEARTBEAT.dead_after_ms / 1000, math.inf)
        self._guard = ReplayGuard()
        self._revived: set[str] = set()
        self._config: _Config | None = None
        self._sock: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self.boot_id = time.time_ns()  # later runs sort after earlier ones (replay protection)
        self._seq = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)

    # --- used by the event loop -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def configure(self, table: AnnouncementTable) -> None:
        own = table.nodes.get(self.node)
        settings = table.heartbeat
        config = _Config(
            bind=(own.address, settings.port) if own is not None else None,
            peers=tuple((name, info.address) for name, info in sorted(table.nodes.items()) if name != self.node),
            port=settings.port, interval_s=settings.interval_ms / 1000, generation=table.generation)
        with self._lock:
            self._config = config
            self._liveness.dead_after_s = settings.dead_after_ms / 1000
            self._liveness.forget(name for name, _ in config.peers)
        self._wake()

    def alive(self, now: float) -> frozenset[str]:
        with self._lock:
            peers = [] if self._config is None else [name for name, _ in self._config.peers]
            return frozenset(p for p in peers if self._liveness.is_alive(p, now))

    def next_expiry(self, now: float) -> float | None:
        with self._lock:
            peers = [] if self._config is None else [name for name, _ in self._config.peers]
            return self._liveness.next_expiry(peers, now)

    def take_revived(self) -> set[str]:
        """Peers heard again after being dead since the last call."""
        with self._lock:
            revived, self._revived = self._revived, set()
            return revived

    def stop(self, leaving: bool) -> None:
        """Stop the thread; with ``leaving``, tell every peer we are going, so they take over now."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5)
        if leaving and self._sock is not None and self._config is not None:
            for _ in range(LEAVING_COPIES):
                self._send(self._config, leaving=True)
            log.info("sent leaving heartbeats to %d peers", len(self._config.peers))
        if self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already woken, or closed
            self._wake_w.send(b"\x00")

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        next_send = 0.0
        next_bind = 0.0
        while not self._stop.is_set():
            config = self._config
            now = time.monotonic()
            if (config is not None and config.bind != self._bound and now >= next_bind
                    and not self._bind(config.bind)):
                next_bind = now + RETRY_BIND_S
            timeout = RETRY_BIND_S
            if self._sock is not None and config is not None:
                timeout = max(0.0, next_send - now)
            readable = [self._wake_r] + ([self._sock] if self._sock is not None else [])
            ready, _, _ = select.select(readable, [], [], timeout)
            if self._wake_r in ready:
                self._wake_r.recv(4096)
            if self._sock is not None and self._sock in ready:
                self._receive()
            now = time.monotonic()
            config = self._config
            if self._sock is not None and config is not None and now >= next_send:
                if self._loop_alive():
                    self._send(config, leaving=False)
                next_send = max(next_send + config.interval_s, now)

    def _bind(self, address: tuple[str, int] | None) -> bool:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._bound = None, None
        if address is None:
            self._bound = None
            return True
        family = socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            log.error("cannot listen for heartbeats on %s port %d: %s", *address, exc)
            return False
        sock.setblocking(False)
        self._sock, self._bound = sock, address
        log.info("heartbeats on %s port %d", *address)
        with self._lock:
            if self._liveness.started_at == math.inf:
                self._liveness.started_at = time.monotonic()
        self._on_change()
        return True

    def _send(self, config: _Config, leaving: bool) -> None:
        assert self._sock is not None
        self._seq += 1
        beat = Heartbeat(self.node, self.boot_id, self._seq, time.time_ns() // 1_000_000, config.generation,
                         leaving)
        data = encode_heartbeat(beat, self._key)
        for peer, address in config.peers:
            try:
                self._sock.sendto(data, (address, config.port))
                self.counters.sent.inc()
            except OSError as exc:
                self.counters.send_errors.inc(kind="heartbeat")
                log.debug("heartbeat to %s failed: %s", peer, exc)

    def _receive(self) -> None:
        assert self._sock is not None
        for _ in range(256):
            try:
                data = self._sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP port unreachable reported on the socket
                log.debug("heartbeat socket: %s", exc)
                continue
            self.take(data, time.monotonic(), time.time_ns() // 1_000_000)

    def take(self, data: bytes, now: float, wall_ms: int) -> HeartbeatDrop | None:
        """Check one datagram and record it; returns why it was dropped, if it was."""
        beat = decode_heartbeat(data, self._key)
        reason: HeartbeatDrop | None
        changed = False
        with self._lock:
            known = set() if self._config is None else {name for name, _ in self._config.peers}
            if isinstance(beat, HeartbeatDrop):
                reason = beat
            elif beat.node == self.node:
                reason = HeartbeatDrop.SELF
            elif beat.node not in known:
                reason = HeartbeatDrop.UNKNOWN_NODE
            else:
                reason = self._guard.check(beat, wall_ms)
            if reason is None and not isinstance(beat, HeartbeatDrop):
                revived = self._liveness.heard(beat.node, now, leaving=beat.leaving)
                if revived:
                    self._revived.add(beat.node)
                changed = revived or beat.leaving
        if reason is not None:
            self.counters.dropped.inc(reason=reason.value)
            log.debug("heartbeat dropped: %s", reason.value)
            return reason
        assert not isinstance(beat, HeartbeatDrop)
        self.counters.received.inc(node=beat.node)
        if changed:
            log.info("peer %s is %s", beat.node, "leaving" if beat.leaving else "alive")
            self._on_change()
        return None
