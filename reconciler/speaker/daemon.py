"""The speaker's event loop: one thread, one selector, every socket non-blocking.

Raw sockets, the heartbeat socket, the netlink link-event socket and a wake-up socket (for
tables arriving from the source thread and for signals) share one ``select``; its timeout is the
next deadline (heartbeat to send, peer about to turn dead, gratuitous ARP to repeat). So replies
go out within microseconds of a request, a dead peer is noticed the millisecond its
``dead_after`` ends, and an idle speaker wakes only to send heartbeats.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.announcement_table import DEFAULT_HEARTBEAT, Announcement, AnnouncementTable
from reconciler.httpserve import HTTPService, Request, Response
from reconciler.metrics import CONTENT_TYPE, Registry
from reconciler.speaker.election import Liveness, compare, elect
from reconciler.speaker.heartbeat import (
    Heartbeat,
    HeartbeatDrop,
    ReplayGuard,
    decode_heartbeat,
    encode_heartbeat,
)
from reconciler.speaker.links import Link, LinkWatcher
from reconciler.speaker.packets import (
    Answer,
    DropReason,
    gratuitous_arp,
    unsolicited_neighbor_advertisement,
)
from reconciler.speaker.responder import InterfaceSockets, Responder
from reconciler.speaker.sources import TableSource

log = logging.getLogger(__name__)

# After the immediate gratuitous ARP on takeover, repeat it: a client may miss one frame, and a
# switch may still be learning the new port.
GARP_REPEATS_S = (0.5, 1.5, 3.0)
LEAVING_COPIES = 2  # a lost "leaving" datagram would cost peers a whole dead_after
HEALTHY_TICK_S = 5.0
RETRY_BIND_S = 1.0


class SpeakerMetrics:
    def __init__(self, registry: Registry) -> None:
        p = "portside_speaker_"
        self.requests = registry.counter(p + "requests_received_total",
                                         "ARP requests / Neighbor Solicitations for IPs in the table",
                                         ["protocol", "ip"])
        self.replies = registry.counter(p + "replies_sent_total",
                                        "ARP replies / Neighbor Advertisements sent", ["protocol", "ip"])
        self.ignored = registry.counter(p + "frames_ignored_total", "received frames not answered, by reason",
                                        ["protocol", "reason"])
        self.gratuitous = registry.counter(p + "gratuitous_sent_total",
                                           "gratuitous ARP / unsolicited NA frames sent", ["protocol", "ip"])
        self.send_errors = registry.counter(p + "send_errors_total",
                                            "frames or datagrams that failed to send", ["kind"])
        self.heartbeats_received = registry.counter(p + "heartbeats_received_total",
                                                    "authenticated heartbeats accepted", ["node"])
        self.heartbeats_dropped = registry.counter(p + "heartbeats_dropped_total",
                                                   "heartbeats dropped, by reason", ["reason"])
        self.heartbeats_sent = registry.counter(p + "heartbeats_sent_total", "heartbeat datagrams sent")
        self.announced = registry.gauge(p + "announced", "1 for each IP this node answers for",
                                        ["ip", "service"])
        self.announced_count = registry.gauge(p + "announced_ips", "IPs this node answers for")
        self.peer_alive = registry.gauge(p + "peer_alive", "1 when the peer is alive to this node", ["node"])
        self.interfaces = registry.gauge(p + "interfaces", "interfaces with an open responder")
        self.generation = registry.gauge(p + "table_generation", "generation of the table in use")
        self.table_errors = registry.counter(p + "table_errors_total", "tables rejected or unreadable")


def _protocol(ip: str) -> str:
    return "ndp" if ":" in ip else "arp"


class Speaker:
    """One node's speaker. ``run()`` blocks until ``stop()`` (or SIGTERM via the CLI)."""

    def __init__(self, node: str, key: bytes, source: TableSource, listen: str | None = None,
                 registry: Registry | None = None) -> None:
        self.node = node
        self._key = key
        self.source = source
        self.listen = listen
        self.registry = registry or Registry()
        self.metrics = SpeakerMetrics(self.registry)
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._pending_table: AnnouncementTable | None = None
        self._stop = threading.Event()
        self._source_stop = threading.Event()

        self.table: AnnouncementTable | None = None
        self.started = time.monotonic()
        self.liveness = Liveness(DEFAULT_HEARTBEAT.dead_after_ms / 1000, self.started)
        self.guard = ReplayGuard()
        self.elected: dict[str, Announcement] = {}
        self._dirty = False
        self._revived: set[str] = set()
        self._expiry: float | None = None
        self._alive: frozenset[str] = frozenset()
        self._table_ips: frozenset[str] = frozenset()
        self._named_interfaces: frozenset[str] = frozenset()

        self.links: LinkWatcher | None = None
        self.interfaces: dict[int, InterfaceSockets] = {}
        self._heartbeat_sock: socket.socket | None = None
        self._heartbeat_bound: tuple[str, int] | None = None
        self._next_bind_try = 0.0
        self.boot_id = time.time_ns()
        self._seq = 0
        self._next_send = 0.0
        self._garps: list[tuple[float, int, str]] = []
        self._garp_counter = 0
        self.last_tick = time.monotonic()
        self._http: HTTPService | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop (safe from signal handlers and other threads)."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        # A full socket means a wake-up is already pending; a closed one, that we are stopping.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\x00")

    def submit_table(self, table: AnnouncementTable) -> None:
        """Hand over a new table (from the source thread); the loop applies it."""
        with self._lock:
            self._pending_table = table
        self._wake()

    def _table_failed(self, message: str) -> None:
        self.metrics.table_errors.inc()
        log.error("announcement table: %s", message)

    def run(self) -> int:
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.links = LinkWatcher()
        self.selector.register(self.links.fileno(), selectors.EVENT_READ, self._on_link_event)
        self._sync_links()
        if self.listen:
            self._http = HTTPService(self.listen, {
                ("GET", "/healthz"): self._healthz,
                ("GET", "/metrics"): self._metrics_page,
                ("GET", "/status"): self._status_page,
            }).start()
            log.info("serving /healthz, /metrics and /status on %s", self.listen)
        thread = threading.Thread(target=self._run_source, name="table-source", daemon=True)
        thread.start()
        log.info("speaker for node %s started; table from %s", self.node, self.source.description)
        try:
            while not self._stop.is_set():
                for key, _events in self.selector.select(self._timeout()):
                    # An earlier handler of this batch may have closed this socket (a link went
                    # away), and a new socket may even have its fd number: skip stale keys.
                    if self.selector.get_map().get(key.fd) is not key:
                        continue
                    self._guarded(key.data)
                self._guarded(self._tick)
        finally:
            self._shutdown()
        return 0

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # a bug in one handler must not stop the answers for every IP
            log.exception("speaker loop step %s failed", getattr(step, "__name__", step))

    def _run_source(self) -> None:
        try:
            self.source.run(self.submit_table, self._table_failed, self._source_stop)
        except Exception:  # the speaker keeps answering from its last table
            log.exception("the table source %s stopped", self.source.description)

    def _shutdown(self) -> None:
        # Stop answering first, then tell peers, so that for a moment nobody answers rather
        # than two nodes at once.
        self.elected = {}
        for iface in self.interfaces.values():
            iface.close()
        self.interfaces.clear()
        if self.table is not None and self._heartbeat_sock is not None:
            for _ in range(LEAVING_COPIES):
                self._send_heartbeats(leaving=True)
            log.info("sent leaving heartbeats to %d peers", len(self.table.nodes) - 1)
        if self._heartbeat_sock is not None:
            self._heartbeat_sock.close()
        self._source_stop.set()
        if self.links is not None:
            self.links.close()
        if self._http is not None:
            self._http.stop()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- the loop -------------------------------------------------------------------------------

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [now + RETRY_BIND_S]
        if self.table is not None and self._heartbeat_sock is not None:
            deadlines.append(self._next_send)
        if self._expiry is not None:
            deadlines.append(self._expiry)
        if self._garps:
            deadlines.append(self._garps[0][0])
        return max(0.0, min(deadlines) - now)

    def _tick(self) -> None:
        now = time.monotonic()
        self.last_tick = now
        if self.table is not None:
            if self._heartbeat_sock is None and now >= self._next_bind_try:
                self._bind_heartbeat()
            if self._heartbeat_sock is not None and now >= self._next_send:
                self._send_heartbeats(leaving=False)
                interval = self.table.heartbeat.interval_ms / 1000
                self._next_send = max(self._next_send + interval, now)
        if self._expiry is not None and now >= self._expiry and not self._dirty:
            # Usually the peer was heard meanwhile: only re-run the election (O(IPs)) when
            # someone's liveness actually changed.
            if self._alive_now(now) != self._alive:
                self._dirty = True
            else:
                self._expiry = self.liveness.next_expiry(self.liveness_nodes(), now)
        if self._dirty:
            self._reelect(now)
        while self._garps and self._garps[0][0] <= now:
            _, _, ip = heapq.heappop(self._garps)
            if ip in self.elected:
                self._send_gratuitous(ip)

    def _on_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            table, self._pending_table = self._pending_table, None
        if table is not None:
            self._apply_table(table)

    # --- the table ------------------------------------------------------------------------------

    def _apply_table(self, table: AnnouncementTable) -> None:
        old = self.table
        for gone in set(self.liveness_nodes()) - set(table.nodes):
            self.metrics.peer_alive.remove(node=gone)
        self.table = table
        settings = table.heartbeat
        self.liveness.dead_after_s = settings.dead_after_ms / 1000
        self.liveness.forget(table.nodes)
        self._table_ips = frozenset(a.ip for a in table.announcements)
        self._named_interfaces = frozenset(name for a in table.announcements for name in a.interfaces)
        own = table.nodes.get(self.node)
        wanted_bind = (own.address, settings.port) if own is not None else None
        if wanted_bind != self._heartbeat_bound:
            self._close_heartbeat()
            self._next_bind_try = 0.0
        if own is not None and self._heartbeat_sock is None:
            self._bind_heartbeat()
        self._sync_links()
        self._dirty = True
        self.metrics.generation.set(table.generation)
        mine = sum(1 for a in table.announcements if self.node in a.candidates)
        if own is None:
            log.warning("node %s is not in the announcement table; announcing nothing", self.node)
        if old is not None and table.generation < old.generation:
            log.warning("table generation went back from %d to %d", old.generation, table.generation)
        log.info("table generation %d (revision %s): %d IPs, %d with this node as a candidate",
                 table.generation, table.revision or "-", len(table.announcements), mine)

    def _alive_now(self, now: float) -> frozenset[str]:
        return frozenset(peer for peer in self.liveness_nodes() if self.liveness.is_alive(peer, now))

    def liveness_nodes(self) -> list[str]:
        return [] if self.table is None else [n for n in self.table.nodes if n != self.node]

    # --- election -------------------------------------------------------------------------------

    def _reelect(self, now: float) -> None:
        self._dirty = False
        if self.table is None:
            return
        peers = self.liveness_nodes()
        self._alive = self._alive_now(now)
        for peer in peers:
            self.metrics.peer_alive.set(1 if peer in self._alive else 0, node=peer)
        new = elect(self.table, self.node, self._alive.__contains__)
        change = compare(self.elected, new)
        self.elected = new
        self._expiry = self.liveness.next_expiry(peers, now)
        for ip in sorted(change.released):
            log.info("stopped announcing %s", ip)
        self.metrics.announced.clear()
        for ip, announcement in new.items():
            self.metrics.announced.set(1, ip=ip, service=announcement.service)
        self.metrics.announced_count.set(len(new))
        revived, self._revived = self._revived, set()
        refresh = {ip for ip, a in new.items() if revived & set(a.candidates)} - change.taken
        for ip in sorted(change.taken):
            log.info("announcing %s (%s) on %s", ip, new[ip].service,
                     ",".join(new[ip].interfaces) or "every usable interface")
        for ip in sorted(change.taken | refresh):
            # A revived lower-ranked peer may have answered for this IP while it could not hear
            # us (a partition); announce again so clients that followed it come back.
            self._announce(ip, now)
        if change.taken or change.released:
            self._update_ndp_groups()

    def _announce(self, ip: str, now: float) -> None:
        self._send_gratuitous(ip)
        for delay in GARP_REPEATS_S:
            self._garp_counter += 1
            heapq.heappush(self._garps, (now + delay, self._garp_counter, ip))

    def _send_gratuitous(self, ip: str) -> None:
        for iface in self.interfaces.values():
            if self._announces_on(iface.link, ip):
                self._gratuitous_on(iface, ip)

    def _gratuitous_on(self, iface: InterfaceSockets, ip: str) -> None:
        if _protocol(ip) == "arp":
            frames: tuple[bytes, ...] = gratuitous_arp(iface.link.mac, ip)
        else:
            frames = (unsolicited_neighbor_advertisement(iface.link.mac, ip),)
        for frame in frames:
            try:
                iface.send(frame)
            except OSError as exc:
                self.metrics.send_errors.inc(kind="gratuitous")
                log.warning("gratuitous %s for %s on %s failed: %s", _protocol(ip), ip, iface.link.name, exc)
                return
        self.metrics.gratuitous.inc(len(frames), protocol=_protocol(ip), ip=ip)

    def _announces_on(self, link: Link, ip: str) -> bool:
        announcement = self.elected.get(ip)
        if announcement is None:
            return False
        if announcement.interfaces:
            return link.name in announcement.interfaces
        return link.default_usable

    # --- interfaces -----------------------------------------------------------------------------

    def _on_link_event(self) -> None:
        assert self.links is not None
        self.links.drain()
        self._sync_links()

    def _sync_links(self) -> None:
        assert self.links is not None
        try:
            found = self.links.links()
        except Exception as exc:  # netlink trouble must not stop the answers on open sockets
            log.warning("could not list interfaces: %s", exc)
            return
        wanted = {index: link for index, link in found.items()
                  if link.up and (link.default_usable or link.name in self._named_interfaces)}
        for index in list(self.interfaces):
            iface = self.interfaces[index]
            link = wanted.get(index)
            if link is None or link.name != iface.link.name:
                log.info("interface %s gone or down: no longer answering on it", iface.link.name)
                self._close_interface(index)
            elif link != iface.link:
                mac_changed = link.mac != iface.link.mac
                iface.link = link
                if mac_changed:
                    self._refresh_interface(iface)
        for index, link in wanted.items():
            if index in self.interfaces:
                continue
            try:
                iface = InterfaceSockets(link)
            except OSError as exc:
                log.error("cannot open raw sockets on %s: %s (CAP_NET_RAW is needed)", link.name, exc)
                continue
            self.interfaces[index] = iface
            for sock, protocol, responder in iface.sockets():
                handler = self._frame_handler(iface, sock, protocol, responder)
                self.selector.register(sock, selectors.EVENT_READ, handler)
            log.info("answering on %s (%s)", link.name, ":".join(f"{b:02x}" for b in link.mac))
            self._refresh_interface(iface)
        self.metrics.interfaces.set(len(self.interfaces))

    def _refresh_interface(self, iface: InterfaceSockets) -> None:
        """A new interface or a new MAC: announce our IPs there so clients learn it."""
        self._update_ndp_groups()
        now = time.monotonic()
        for ip in self.elected:
            if self._announces_on(iface.link, ip):
                self._gratuitous_on(iface, ip)
                self._garp_counter += 1
                heapq.heappush(self._garps, (now + GARP_REPEATS_S[0], self._garp_counter, ip))

    def _close_interface(self, index: int) -> None:
        iface = self.interfaces.pop(index)
        for sock, _, _ in iface.sockets():
            self.selector.unregister(sock)
        iface.close()

    def _update_ndp_groups(self) -> None:
        for iface in self.interfaces.values():
            ipv6 = [ip for ip in self.elected if ":" in ip and self._announces_on(iface.link, ip)]
            try:
                iface.join_solicited_node_groups(ipv6)
            except OSError as exc:
                log.warning("cannot join solicited-node groups on %s: %s", iface.link.name, exc)

    def _frame_handler(self, iface: InterfaceSockets, sock: socket.socket, protocol: str,
                       responder: Responder) -> Callable[[], None]:
        def announces(ip: str) -> bool:
            return self._announces_on(iface.link, ip)

        def handle() -> None:
            for frame in iface.receive(sock):
                answer = responder(frame, iface.link.mac, announces)
                self._count(protocol, answer)
                if answer.reply is not None:
                    try:
                        iface.send(answer.reply, sock)
                    except OSError as exc:
                        self.metrics.send_errors.inc(kind="reply")
                        log.warning("reply on %s failed: %s", iface.link.name, exc)
        return handle

    def _count(self, protocol: str, answer: Answer) -> None:
        if answer.ip is not None and answer.ip in self._table_ips:
            self.metrics.requests.inc(protocol=protocol, ip=answer.ip)
        if answer.reason is DropReason.ANSWERED:
            assert answer.ip is not None
            self.metrics.replies.inc(protocol=protocol, ip=answer.ip)
        else:
            self.metrics.ignored.inc(protocol=protocol, reason=answer.reason.value)

    # --- heartbeats -----------------------------------------------------------------------------

    def _bind_heartbeat(self) -> None:
        assert self.table is not None
        own = self.table.nodes.get(self.node)
        if own is None:
            return
        address = (own.address, self.table.heartbeat.port)
        family = socket.AF_INET6 if ipaddress.ip_address(own.address).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            self._next_bind_try = time.monotonic() + RETRY_BIND_S
            log.error("cannot listen for heartbeats on %s port %d: %s", *address, exc)
            return
        sock.setblocking(False)
        self._heartbeat_sock = sock
        self._heartbeat_bound = address
        self.selector.register(sock, selectors.EVENT_READ, self._on_heartbeat)
        log.info("heartbeats on %s port %d", *address)

    def _close_heartbeat(self) -> None:
        if self._heartbeat_sock is not None:
            self.selector.unregister(self._heartbeat_sock)
            self._heartbeat_sock.close()
        self._heartbeat_sock = None
        self._heartbeat_bound = None

    def _send_heartbeats(self, leaving: bool) -> None:
        assert self.table is not None and self._heartbeat_sock is not None
        self._seq += 1
        beat = Heartbeat(self.node, self.boot_id, self._seq, time.time_ns() // 1_000_000,
                         self.table.generation, leaving)
        data = encode_heartbeat(beat, self._key)
        port = self.table.heartbeat.port
        for peer, info in self.table.nodes.items():
            if peer == self.node:
                continue
            try:
                self._heartbeat_sock.sendto(data, (info.address, port))
                self.metrics.heartbeats_sent.inc()
            except OSError as exc:
                self.metrics.send_errors.inc(kind="heartbeat")
                log.debug("heartbeat to %s failed: %s", peer, exc)

    def _on_heartbeat(self) -> None:
        assert self._heartbeat_sock is not None
        for _ in range(256):
            try:
                data = self._heartbeat_sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("heartbeat socket: %s", exc)
                continue
            self._take_heartbeat(data)

    def _take_heartbeat(self, data: bytes) -> None:
        beat = decode_heartbeat(data, self._key)
        if isinstance(beat, HeartbeatDrop):
            self._drop(beat)
            return
        if beat.node == self.node:
            self._drop(HeartbeatDrop.SELF)
            return
        if self.table is None or beat.node not in self.table.nodes:
            self._drop(HeartbeatDrop.UNKNOWN_NODE)
            return
        reason = self.guard.check(beat, time.time_ns() // 1_000_000)
        if reason is not None:
            self._drop(reason)
            return
        self.metrics.heartbeats_received.inc(node=beat.node)
        revived = self.liveness.heard(beat.node, time.monotonic(), leaving=beat.leaving)
        if beat.leaving:
            log.info("peer %s is leaving", beat.node)
            self._dirty = True
        elif revived:
            log.info("peer %s is alive", beat.node)
            self._revived.add(beat.node)
            self._dirty = True

    def _drop(self, reason: HeartbeatDrop) -> None:
        self.metrics.heartbeats_dropped.inc(reason=reason.value)
        log.debug("heartbeat dropped: %s", reason.value)

    # --- HTTP -----------------------------------------------------------------------------------

    def _healthz(self, _request: Request) -> Response:
        if time.monotonic() - self.last_tick > HEALTHY_TICK_S:
            return Response.text(503, "event loop stalled\n")
        return Response.text(200, "ok\n")

    def _metrics_page(self, _request: Request) -> Response:
        return Response(200, self.registry.render().encode(), CONTENT_TYPE)

    def _status_page(self, _request: Request) -> Response:
        return Response.json(200, self.status())

    def status(self) -> dict[str, Any]:
        table = self.table
        now = time.monotonic()
        return {
            "node": self.node,
            "generation": table.generation if table else None,
            "revision": table.revision if table else None,
            "announcing": sorted(dict(self.elected)),
            "peers": {peer: self.liveness.is_alive(peer, now) for peer in self.liveness_nodes()},
            "interfaces": sorted(iface.link.name for iface in list(self.interfaces.values())),
        }
