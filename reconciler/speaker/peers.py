"""Heartbeats on the wire: the UDP sockets, in a thread of their own.

Heartbeats are sent and received here, not in the event loop, so that a long step of the loop
(applying a 10,000-IP table, a burst of gratuitous ARP, a garbage collection) never makes this
node look dead to its peers, which would make them take over, send their own bursts, stall in
turn and flap. A loop that is truly stuck still stops the heartbeats: they are sent only while
``loop_alive()`` says the loop has turned recently.

Liveness is decided from the moment (monotonic) an authenticated, fresh heartbeat is read. The
kernel sorts datagrams into two lanes (``lanes``): the trusted lane is read in full on every
turn; the open lane, where any flood of forgeries ends up, is read on a budget, so a flood costs
a bounded share of a core and can neither starve the trusted lane nor delay our own sends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.common.metrics import Counter, Gauge
from reconciler.planning.announcement_table import DEFAULT_HEARTBEAT, AnnouncementTable
from reconciler.speaker.election import Liveness
from reconciler.speaker.heartbeat import (
    BOOT_LEN,
    MAX_DATAGRAM,
    Accepted,
    Heartbeat,
    HeartbeatDrop,
    HeartbeatGuard,
    Learnt,
    encode_heartbeat,
)
from reconciler.speaker.lanes import HeartbeatSockets
from reconciler.speaker.sched import HEARTBEAT_PRIORITY, ThreadScheduling

log = logging.getLogger(__name__)

RETRY_BIND_S = 1.0
LEAVING_COPIES = 2  # a lost "leaving" datagram would cost peers a whole dead_after
TRUSTED_BATCH = 1024  # datagrams read from the trusted lane per turn (it holds no flood)
OPEN_LANE_RATE = 10_000  # datagrams per second read from the open lane, at most
OPEN_LANE_BURST = 64  # ... and in batches of this many, so a flood costs few wake-ups
VERSION_NOTICE_S = 60.0  # how often heartbeats of another protocol version are logged, at most
CLOCK_NOTICE_MS = 1000  # a peer's clock offset is logged when it moves by this much


@dataclass(frozen=True)
class PeerCounters:
    received: Counter
    dropped: Counter
    sent: Counter
    send_errors: Counter
    clock_offset: Gauge | None = None  # seconds, by node


@dataclass(frozen=True)
class _Config:
    bind: tuple[str, int] | None
    peers: tuple[tuple[str, str], ...]  # (node, address)
    port: int
    interval_s: float
    dead_after_s: float
    generation: int


class _Budget:
    """A token bucket: how many open-lane datagrams may be read now."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def available(self, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return int(self.tokens)

    def spend(self, count: int) -> None:
        self.tokens -= count

    def full_at(self) -> float:
        return self.at + max(0.0, self.burst - self.tokens) / self.rate


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
        self.boot = os.urandom(BOOT_LEN)  # this run's nonce: random, so no clock can make it repeat
        self._guard = HeartbeatGuard(key, self.boot)
        self._revived: set[str] = set()
        self._clock_logged: dict[str, int] = {}
        self._config: _Config | None = None
        self._sockets: HeartbeatSockets | None = None
        self._bound: tuple[str, int] | None = None
        self._counter = 0
        self._last_round = -math.inf
        self._reply_soon = False
        self._budget = _Budget(OPEN_LANE_RATE, OPEN_LANE_BURST)
        self._version_noticed = -math.inf
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
            port=settings.port, interval_s=settings.interval_ms / 1000,
            dead_after_s=settings.dead_after_ms / 1000, generation=table.generation)
        with self._lock:
            self._config = config
            self._liveness.dead_after_s = config.dead_after_s
            self._liveness.forget(name for name, _ in config.peers)
            self._guard.configure(self.node, [name for name, _ in config.peers])
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

    def details(self, now: float) -> dict[str, dict[str, Any]]:
        """Per peer, for /status: alive, its boot, when last heard, and how far its clock is off."""
        with self._lock:
            peers = [] if self._config is None else [name for name, _ in self._config.peers]
            result: dict[str, dict[str, Any]] = {}
            for name in peers:
                boots = self._guard.peers.get(name)
                heard = self._liveness.heard_at(name)
                result[name] = {
                    "alive": self._liveness.is_alive(name, now),
                    "boot": boots.boot.hex() if boots is not None and boots.boot is not None else None,
                    "lastHeardMsAgo": None if heard is None or not math.isfinite(heard)
                    else round((now - heard) * 1000),
                    "clockOffsetMs": None if boots is None else boots.clock_offset_ms,
                }
            return result

    def stop(self, leaving: bool) -> None:
        """Stop the thread; with ``leaving``, tell every peer we are going, so they take over now."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5)
        if leaving and self._sockets is not None and self._config is not None:
            for _ in range(LEAVING_COPIES):
                self._send_round(self._config, leaving=True)
            log.info("sent leaving heartbeats to %d peers", len(self._config.peers))
        if self._sockets is not None:
            self._sockets.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already woken, or closed
            self._wake_w.send(b"\x00")

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        # Heartbeats on time even when the node's cores are busy, and before the answering
        # thread's frames (a late heartbeat is a false failover; a late reply, a slow one).
        scheduling = ThreadScheduling(HEARTBEAT_PRIORITY)
        log.debug("heartbeats at %s", scheduling.start().value)
        next_send = 0.0
        next_bind = 0.0
        while not self._stop.is_set():
            config = self._config
            now = time.monotonic()
            if (config is not None and config.bind != self._bound and now >= next_bind
                    and not self._bind(config.bind)):
                next_bind = now + RETRY_BIND_S
            lanes = self._sockets
            deadline = now + RETRY_BIND_S
            readable: list[Any] = [self._wake_r]
            if lanes is not None and config is not None:
                deadline = next_send
                if self._reply_soon:
                    deadline = min(deadline, self._last_round + config.interval_s / 4)
                readable.append(lanes.trusted)
                if lanes.open is not None:
                    if self._budget.available(now) >= OPEN_LANE_BURST:
                        readable.append(lanes.open)
                    else:  # over budget: the kernel drops what the open lane cannot hold
                        deadline = min(deadline, self._budget.full_at())
            ready, _, _ = select.select(readable, [], [], max(0.0, deadline - now))
            scheduling.account(time.monotonic())
            if self._wake_r in ready:
                self._wake_r.recv(4096)
            if lanes is not None:
                if lanes.trusted in ready:
                    self._drain(lanes.trusted, TRUSTED_BATCH)
                if lanes.open is not None and lanes.open in ready:
                    allowed = min(self._budget.available(time.monotonic()), OPEN_LANE_BURST)
                    self._budget.spend(self._drain(lanes.open, allowed))
            now = time.monotonic()
            config = self._config
            if self._sockets is None or config is None:
                continue
            reply = self._reply_soon and now >= self._last_round + config.interval_s / 4
            if now >= next_send or reply:
                if self._loop_alive():
                    self._send_round(config, leaving=False)
                else:
                    self._reply_soon = False  # silent while the loop is stuck: nothing to answer
                if now >= next_send:
                    next_send = max(next_send + config.interval_s, now)

    def _bind(self, address: tuple[str, int] | None) -> bool:
        if self._sockets is not None:
            self._sockets.close()
            self._sockets, self._bound = None, None
        if address is None:
            self._bound = None
            return True
        try:
            self._sockets = HeartbeatSockets(address, self._guard.ticket)
        except OSError as exc:
            log.error("cannot listen for heartbeats on %s port %d: %s", *address, exc)
            return False
        self._bound = address
        log.info("heartbeats on %s port %d (boot %s%s)", *address, self.boot.hex(),
                 "" if self._sockets.steered else ", one unsorted lane")
        with self._lock:
            if self._liveness.started_at == math.inf:
                self._liveness.started_at = time.monotonic()
        self._on_change()
        return True

    def _send_round(self, config: _Config, leaving: bool) -> None:
        assert self._sockets is not None
        now = time.monotonic()
        wall_ms = time.time_ns() // 1_000_000
        with self._lock:
            self._counter += 1
            self._guard.sent.record(self._counter, now)
            replies = {peer: self._guard.replies_for(peer) for peer, _ in config.peers}
            self._last_round, self._reply_soon = now, False
        for peer, address in config.peers:
            for ticket, echo in replies[peer]:
                beat = Heartbeat(self.node, self.boot, self._counter, ticket, echo, config.generation, wall_ms,
                                 leaving)
                try:
                    self._sockets.trusted.sendto(encode_heartbeat(beat, self._key), (address, config.port))
                    self.counters.sent.inc()
                except OSError as exc:
                    self.counters.send_errors.inc(kind="heartbeat")
                    log.debug("heartbeat to %s failed: %s", peer, exc)

    def _drain(self, sock: socket.socket, limit: int) -> int:
        """Read up to ``limit`` datagrams; how many were read."""
        for count in range(limit):
            try:
                data = sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError as exc:  # e.g. an ICMP port unreachable reported on the socket
                log.debug("heartbeat socket: %s", exc)
                continue
            self.take(data, time.monotonic(), time.time_ns() // 1_000_000)
        return limit

    def take(self, data: bytes, now: float, wall_ms: int) -> HeartbeatDrop | None:
        """Check one datagram read at ``now`` and record it; returns why it was dropped, if it was."""
        changed = False
        offset: int | None = None
        with self._lock:
            verdict = self._guard.check(data, now, wall_ms, self._liveness.dead_after_s)
            if isinstance(verdict, Learnt | Accepted) and self._is_news(verdict):
                self._reply_soon = True  # a peer is (re)starting: answer it now, not next round
            if isinstance(verdict, Accepted):
                beat = verdict.heartbeat
                revived = self._liveness.heard(beat.node, now, leaving=beat.leaving, proof_at=verdict.proof_at)
                if revived:
                    self._revived.add(beat.node)
                changed = revived or beat.leaving
                offset = self._guard.peers[beat.node].clock_offset_ms
        if isinstance(verdict, HeartbeatDrop):
            self.counters.dropped.inc(reason=verdict.value)
            if verdict is HeartbeatDrop.VERSION and now - self._version_noticed >= VERSION_NOTICE_S:
                self._version_noticed = now
                log.warning("heartbeats of another protocol version arrive: a speaker of another portside "
                            "version runs; until all speakers run one version, they count each other as dead")
            return verdict
        if isinstance(verdict, Learnt):
            self.counters.dropped.inc(reason=verdict.reason.value)
            return verdict.reason
        beat = verdict.heartbeat
        self.counters.received.inc(node=beat.node)
        if verdict.new_boot:
            log.info("peer %s runs boot %s", beat.node, beat.boot.hex())
        if offset is not None:
            self._note_clock(beat.node, offset)
        if changed:
            log.info("peer %s is %s", beat.node, "leaving" if beat.leaving else "alive")
            self._on_change()
        return None

    def _is_news(self, verdict: Learnt | Accepted) -> bool:
        if isinstance(verdict, Accepted):
            return verdict.new_boot
        peer = self._guard.peers[verdict.heartbeat.node]
        # The sender does not know our boot yet (it restarted, or we did): let it learn it now.
        return verdict.reason is HeartbeatDrop.OTHER_BOOT and peer.boot != verdict.heartbeat.boot

    def _note_clock(self, node: str, offset_ms: int) -> None:
        if self.counters.clock_offset is not None:
            self.counters.clock_offset.set(offset_ms / 1000, node=node)
        logged = self._clock_logged.get(node, 0)
        if abs(offset_ms - logged) < CLOCK_NOTICE_MS:
            return
        self._clock_logged[node] = offset_ms
        if abs(offset_ms) >= CLOCK_NOTICE_MS:
            log.warning("the clock of peer %s is %+.1f s off ours (liveness does not depend on it)",
                        node, offset_ms / 1000)
        else:
            log.info("the clock of peer %s agrees with ours again (%+d ms)", node, offset_ms)
