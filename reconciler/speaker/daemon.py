"""The speaker's event loop: one thread, one selector, every socket non-blocking.

Raw sockets, the netlink link-event socket and a wake-up socket (for tables arriving from the
source thread, peers changing state in the heartbeat thread, and signals) share one ``select``;
a timer armed at the next deadline (a peer about to turn dead, gratuitous ARP to repeat) ends
the wait. The thread answers at real-time priority where allowed and leaves it for long steps
(``sched``). So replies go out within microseconds of a request, a dead peer is noticed the
moment its ``dead_after`` ends, and an idle speaker wakes only a few times a second. Heartbeats
live in their own thread (``peers``), so a long step here never makes this node look dead.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import heapq
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.common.errors import UsageError
from reconciler.common.httpserve import HTTPService, Request, Response
from reconciler.common.metrics import CONTENT_TYPE, Registry
from reconciler.planning.announcement_table import Announcement, AnnouncementTable
from reconciler.speaker.election import compare, elect
from reconciler.speaker.links import Link, LinkWatcher
from reconciler.speaker.packets import (
    Answer,
    DropReason,
    gratuitous_arp,
    unsolicited_neighbor_advertisement,
)
from reconciler.speaker.peers import PeerCounters, PeerLink
from reconciler.speaker.responder import InterfaceSockets, Responder
from reconciler.speaker.sched import ANSWERING_PRIORITY, ThreadScheduling
from reconciler.speaker.sources import TableSource
from reconciler.speaker.timer import DeadlineTimer, deadline_timer

log = logging.getLogger(__name__)

# After the immediate gratuitous ARP on takeover, repeat it: a client may miss one frame, and a
# switch may still be learning the new port.
GARP_REPEATS_S = (0.5, 1.5, 3.0)
HEALTHY_TICK_S = 5.0
GARP_SLICE = 64  # IPs per loop turn (two frames each on each interface)
LOG_EACH_IP_UP_TO = 20
SLOW_STEP_S = 0.1  # half the default dead_after: worth a warning
MAX_SLEEP_S = 0.25  # the loop turns at least this often, so the heartbeat watchdog sees it alive
WATCHDOG_S = 2.0  # heartbeats stop when the loop has not turned for this long


class SpeakerMetrics:
    def __init__(self, registry: Registry) -> None:
        p = "portside_speaker_"
        self.requests = registry.counter(p + "requests_received_total",
                                         "ARP requests / Neighbor Solicitations for IPs in the table that "
                                         "reached the speaker (the kernel drops those for IPs it does not answer)",
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
        self.peer_clock_offset = registry.gauge(p + "peer_clock_offset_seconds",
                                                "the peer's wall clock minus ours, from its last heartbeat "
                                                "(shown only: liveness never depends on clocks)", ["node"])
        self.interfaces = registry.gauge(p + "interfaces", "interfaces with an open responder")
        self.generation = registry.gauge(p + "table_generation", "generation of the table in use")
        self.table_errors = registry.counter(p + "table_errors_total", "tables rejected or unreadable")


def _log_ips(what: str, ips: frozenset[str], announcements: Mapping[str, Announcement] | None = None) -> None:
    # One line per IP reads well for a homelab; ten thousand lines per failover do not.
    if len(ips) > LOG_EACH_IP_UP_TO:
        log.info("%s %d IPs (%s, ...)", what, len(ips), ", ".join(sorted(ips)[:3]))
        return
    for ip in sorted(ips):
        if announcements is None:
            log.info("%s %s", what, ip)
        else:
            a = announcements[ip]
            log.info("%s %s (%s) on %s", what, ip, a.service, ",".join(a.interfaces) or "every usable interface")


def _protocol(ip: str) -> str:
    return "ndp" if ":" in ip else "arp"


class Speaker:
    """One node's speaker. ``run()`` blocks until ``stop()`` (or SIGTERM via the CLI)."""

    def __init__(self, node: str, key: bytes, source: TableSource, listen: str | None = None,
                 registry: Registry | None = None) -> None:
        self.node = node
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
        self.peers = PeerLink(node, key, PeerCounters(
            self.metrics.heartbeats_received, self.metrics.heartbeats_dropped, self.metrics.heartbeats_sent,
            self.metrics.send_errors, self.metrics.peer_clock_offset),
            on_change=self._peers_changed, loop_alive=self._loop_alive)
        self.elected: dict[str, Announcement] = {}
        self._dirty = False
        self._expiry: float | None = None
        self._alive: frozenset[str] = frozenset()
        self._table_ips: frozenset[str] = frozenset()
        self._named_interfaces: frozenset[str] = frozenset()

        self.links: LinkWatcher | None = None
        self.interfaces: dict[int, InterfaceSockets] = {}
        self._garps: list[tuple[float, int, str]] = []  # (due, tie-break, ip): repeats to come
        self._garp_queue: collections.deque[str] = collections.deque()  # due now, sent in slices
        self._garp_queued: set[str] = set()
        self._services: dict[str, str] = {}  # ip -> service label of its announced gauge
        self._garp_counter = 0
        self.last_tick = time.monotonic()
        self._http: HTTPService | None = None
        self._raw_denied = False
        self._timer: DeadlineTimer | None = None
        self._sched = ThreadScheduling(ANSWERING_PRIORITY)  # the loop thread's, set when it runs

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
        """Run until stopped; :class:`UsageError` when the speaker cannot work at all here."""
        # Replies go out from this thread: let it preempt busy neighbours when a request comes.
        scheduling = self._sched.start()
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._timer = deadline_timer()
        if self._timer is not None:
            self.selector.register(self._timer, selectors.EVENT_READ, self._timer.fired)
        self.links = LinkWatcher()
        self.selector.register(self.links.fileno(), selectors.EVENT_READ, self._on_link_event)
        self._sync_links()
        if self._raw_denied and not self.interfaces:
            self.links.close()
            raise UsageError("not allowed to open raw packet sockets: the speaker needs CAP_NET_RAW "
                             "(run as root, or grant the capability, e.g. securityContext.capabilities.add "
                             "[NET_RAW] in Kubernetes)")
        if self.listen:
            routes = {("GET", "/healthz"): self._healthz, ("GET", "/metrics"): self._metrics_page,
                      ("GET", "/status"): self._status_page}
            try:
                self._http = HTTPService(self.listen, routes).start()
            except OSError as exc:
                self.links.close()
                raise UsageError(f"--listen {self.listen}: {exc.strerror}") from None
            log.info("serving /healthz, /metrics and /status on %s (port %d)", self.listen, self._http.port)
        self.peers.start()
        thread = threading.Thread(target=self._run_source, name="table-source", daemon=True)
        thread.start()
        log.info("speaker for node %s started; table from %s; replies at %s", self.node,
                 self.source.description, scheduling.value)
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
        started = time.monotonic()
        try:
            step()
        except Exception:  # a bug in one handler must not stop the answers for every IP
            log.exception("speaker loop step %s failed", getattr(step, "__name__", step))
        took = time.monotonic() - started
        if took > SLOW_STEP_S:
            # Peers declare us dead after dead_after without heartbeats: a slow step is why.
            log.warning("speaker loop step %s took %.0f ms", getattr(step, "__qualname__", step), took * 1000)

    def _run_source(self) -> None:
        try:
            self.source.run(self.submit_table, self._table_failed, self._source_stop)
        except Exception:  # the speaker keeps answering from its last table
            log.exception("the table source %s stopped", self.source.description)

    def _shutdown(self) -> None:
        # Stop answering first (the loop is over and nothing is elected), then tell peers, so that
        # for a moment nobody answers rather than two nodes at once. Closing packet sockets waits
        # for an RCU grace period (~10 ms each), so that comes after the peers know.
        self.elected = {}
        self.peers.stop(leaving=True)
        for iface in self.interfaces.values():
            iface.close()
        self.interfaces.clear()
        self._source_stop.set()
        if self.links is not None:
            self.links.close()
        if self._http is not None:
            self._http.stop()
        self.selector.close()
        if self._timer is not None:
            self._timer.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- the loop -------------------------------------------------------------------------------

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = []
        if self._expiry is not None:
            deadlines.append(self._expiry)
        if self._garps:
            deadlines.append(self._garps[0][0])
        if self._garp_queue:
            return 0.0
        nearest = min(deadlines, default=None)
        if self._timer is not None:
            # The timer wakes the loop on the deadline itself (a dead peer is taken over the
            # microsecond its dead_after ends); epoll's millisecond timeout is only the backstop.
            try:
                self._timer.arm(nearest)
                return 0.0 if nearest is not None and nearest <= now else MAX_SLEEP_S
            except OSError as exc:
                log.warning("deadline timer failed (%s): deadlines are kept to the millisecond", exc)
                self.selector.unregister(self._timer)
                self._timer.close()
                self._timer = None
        return max(0.0, min(now + MAX_SLEEP_S, nearest if nearest is not None else math.inf) - now)

    def _tick(self) -> None:
        now = time.monotonic()
        self.last_tick = now
        self._sched.account(now)  # a flood we cannot keep up with: no longer real-time
        if self._expiry is not None and now >= self._expiry and not self._dirty:
            # Usually the peer was heard meanwhile: only re-run the election (O(IPs)) when
            # someone's liveness actually changed.
            if self.peers.alive(now) != self._alive:
                self._dirty = True
            else:
                self._expiry = self.peers.next_expiry(now)
        if self._dirty or self._garp_queue or (self._garps and self._garps[0][0] <= now):
            # An election over thousands of IPs, or a slice of gratuitous ARP: not at the
            # answering thread's real-time priority (see sched).
            with self._sched.ordinary():
                self._catch_up(now)

    def _catch_up(self, now: float) -> None:
        if self._dirty:
            self._reelect(now)
        while self._garps and self._garps[0][0] <= now:
            _, _, ip = heapq.heappop(self._garps)
            self._queue_gratuitous(ip)
        # A slice at a time: a takeover of thousands of IPs must not hold up heartbeats (peers
        # would think us dead) or replies; the loop comes straight back while the queue is full.
        for _ in range(min(GARP_SLICE, len(self._garp_queue))):
            ip = self._garp_queue.popleft()
            self._garp_queued.discard(ip)
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
            with self._sched.ordinary():
                self._apply_table(table)

    # --- the table ------------------------------------------------------------------------------

    def _apply_table(self, table: AnnouncementTable) -> None:
        old = self.table
        for gone in set(self.liveness_nodes()) - set(table.nodes):
            self.metrics.peer_alive.remove(node=gone)
            self.metrics.peer_clock_offset.remove(node=gone)
        self.table = table
        self.peers.configure(table)
        self._table_ips = frozenset(a.ip for a in table.announcements)
        self._named_interfaces = frozenset(name for a in table.announcements for name in a.interfaces)
        own = table.nodes.get(self.node)
        self._sync_links()
        self._dirty = True
        self.metrics.generation.set(table.generation)
        mine = sum(1 for a in table.announcements if self.node in a.candidates)
        if own is None:
            log.warning("node %s is not in the announcement table; announcing nothing", self.node)
        if old is not None and table.generation < old.generation:
            log.warning("table generation went back from %d to %d", old.generation, table.generation)
        # The table is long-lived and acyclic; keep the cyclic garbage collector from walking
        # its ~10 objects per IP on every full collection (tens of ms at 10,000 IPs).
        gc.freeze()
        log.info("table generation %d (revision %s): %d IPs, %d with this node as a candidate",
                 table.generation, table.revision or "-", len(table.announcements), mine)

    def _peers_changed(self) -> None:
        """A peer came back or is leaving (called from the heartbeat thread)."""
        self._dirty = True
        self._wake()

    def _loop_alive(self) -> bool:
        return time.monotonic() - self.last_tick < WATCHDOG_S

    def liveness_nodes(self) -> list[str]:
        return [] if self.table is None else [n for n in self.table.nodes if n != self.node]

    # --- election -------------------------------------------------------------------------------

    def _reelect(self, now: float) -> None:
        self._dirty = False
        if self.table is None:
            return
        peers = self.liveness_nodes()
        self._alive = self.peers.alive(now)
        for peer in peers:
            self.metrics.peer_alive.set(1 if peer in self._alive else 0, node=peer)
        new = elect(self.table, self.node, self._alive.__contains__)
        change = compare(self.elected, new)
        self.elected = new
        self._expiry = self.peers.next_expiry(now)
        _log_ips("stopped announcing", change.released)
        for ip in change.released:
            self.metrics.announced.remove(ip=ip, service=self._services.pop(ip, ""))
        for ip in change.taken:
            self.metrics.announced.set(1, ip=ip, service=new[ip].service)
            self._services[ip] = new[ip].service
        self.metrics.announced_count.set(len(new))
        revived = self.peers.take_revived()
        refresh = {ip for ip, a in new.items() if revived & set(a.candidates)} - change.taken
        _log_ips("announcing", change.taken, new)
        # The kernel filters let the new IPs' requests through before the first gratuitous ARP
        # tells clients to ask us (the takeover is not delayed: a filter swap takes microseconds).
        self._update_interfaces()
        for ip in sorted(change.taken | refresh):
            # A revived lower-ranked peer may have answered for this IP while it could not hear
            # us (a partition); announce again so clients that followed it come back.
            self._announce(ip, now)

    def _queue_gratuitous(self, ip: str) -> None:
        if ip not in self._garp_queued:
            self._garp_queued.add(ip)
            self._garp_queue.append(ip)

    def _announce(self, ip: str, now: float) -> None:
        self._queue_gratuitous(ip)
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
        with self._sched.ordinary():  # netlink, new sockets and gratuitous ARP: a long step
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
                iface = InterfaceSockets(link, self._targets(link))
            except PermissionError as exc:
                self._raw_denied = True
                log.error("cannot open raw sockets on %s: %s (CAP_NET_RAW is needed)", link.name, exc)
                continue
            except OSError as exc:
                log.error("cannot open raw sockets on %s: %s", link.name, exc)
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
        self._update_interfaces()
        now = time.monotonic()
        for ip in self.elected:
            if self._announces_on(iface.link, ip):
                # (Sent on every interface the IP is announced on: harmless, and simpler.)
                self._queue_gratuitous(ip)
                self._garp_counter += 1
                heapq.heappush(self._garps, (now + GARP_REPEATS_S[0], self._garp_counter, ip))

    def _close_interface(self, index: int) -> None:
        iface = self.interfaces.pop(index)
        for sock, _, _ in iface.sockets():
            self.selector.unregister(sock)
        iface.close()

    def _targets(self, link: Link) -> list[str]:
        """The IPs answered on ``link``: the only ones whose requests its kernel filter lets through."""
        return [ip for ip in self.elected if self._announces_on(link, ip)]

    def _update_interfaces(self) -> None:
        """Filter each interface's sockets for, and join the solicited-node groups of, its IPs."""
        for iface in self.interfaces.values():
            targets = self._targets(iface.link)
            try:
                iface.set_targets(targets)
            except OSError as exc:
                log.warning("cannot filter for our IPs on %s: %s", iface.link.name, exc)
            try:
                iface.join_solicited_node_groups(ip for ip in targets if ":" in ip)
            except OSError as exc:
                log.warning("cannot join solicited-node groups on %s: %s", iface.link.name, exc)

    def _frame_handler(self, iface: InterfaceSockets, sock: socket.socket, protocol: str,
                       responder: Responder) -> Callable[[], None]:
        def announces(ip: str) -> bool:
            return self._announces_on(iface.link, ip)

        def handle() -> None:
            # Every reply of the burst goes out before any bookkeeping: the client waits for
            # the reply, nobody waits for the counters.
            answers = [responder(frame, iface.link.mac, announces) for frame in iface.receive(sock)]
            for answer in answers:
                if answer.reply is not None:
                    try:
                        iface.send(answer.reply, sock)
                    except OSError as exc:
                        self.metrics.send_errors.inc(kind="reply")
                        log.warning("reply on %s failed: %s", iface.link.name, exc)
            for answer in answers:
                self._count(protocol, answer)
        return handle

    def _count(self, protocol: str, answer: Answer) -> None:
        if answer.ip is not None and answer.ip in self._table_ips:
            self.metrics.requests.inc(protocol=protocol, ip=answer.ip)
        if answer.reason is DropReason.ANSWERED:
            assert answer.ip is not None
            self.metrics.replies.inc(protocol=protocol, ip=answer.ip)
        else:
            self.metrics.ignored.inc(protocol=protocol, reason=answer.reason.value)

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
        alive = self.peers.alive(now)
        return {
            "node": self.node,
            "generation": table.generation if table else None,
            "revision": table.revision if table else None,
            "announcing": sorted(dict(self.elected)),
            "peers": {peer: peer in alive for peer in self.liveness_nodes()},
            # By node: its boot nonce, when last heard, and its clock's offset from ours (shown
            # so a wrong clock is easy to spot; liveness never depends on it).
            "heartbeats": self.peers.details(now),
            "boot": self.peers.boot.hex(),
            "interfaces": sorted(iface.link.name for iface in list(self.interfaces.values())),
        }
