"""The HTTP ports (health, metrics, status, webhooks), served by waitress.

Routes are plain callables from a :class:`Request` to a :class:`Response`, so handlers stay
testable without sockets; :class:`HTTPService` serves them from a background thread.

These ports face the cluster network (the speaker's listens on every node), so every resource a
stranger can make the server hold is bounded:

- waitress reads requests on one event-loop thread (poll, not select, so descriptors above 1024
  work): an idle or half-sent connection costs a socket and a few KiB, never a thread; handlers
  run on a small fixed pool.
- Request line and headers are limited to ``max_header_bytes`` (431 beyond). Framing is parsed
  strictly: ``Content-Length: abc`` or ``-1``, bare CR/LF, an unknown transfer coding: 400 (501).
- A body is read only for a route that takes one (a POST route), at most ``max_body_bytes``
  (413 beyond, decided from the header before a byte of the body is read), and at most
  ``bodies_in_flight`` bodies are being received at once (503 beyond): body memory is bounded
  by their product, whatever the number of connections. Bodies stay in memory, never a temp file
  (the root filesystem is read-only in the Deployment).
- A connection with nothing to do for ``idle_timeout`` is closed, and so is one whose request has
  not fully arrived ``request_timeout`` after its first byte: a slowloris sending one byte every
  few seconds is cut as surely as a silent one.
- At most ``connection_limit`` connections are open (derived from the descriptor limit). A new
  connection beyond it is still accepted: the oldest connection that is not being answered (a
  half-sent request, an idle keep-alive) is closed to make room. So a probe gets its answer in
  milliseconds however many connections an attacker holds, where waitress alone would stop
  accepting and leave the probe in the listen queue (backlog 1024) until a timeout freed a slot.
"""

from __future__ import annotations

import http
import json
import logging
import math
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error as _WaitressError
from waitress.utilities import RequestEntityTooLarge

from reconciler.common.errors import UsageError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # a webhook payload larger than 1 MiB is not one we want
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
EVICTION_SLACK = 16  # connections over the limit while evicted ones wait for the loop to close them
IDLE_TIMEOUT_ENV = "PORTSIDE_HTTP_IDLE_TIMEOUT"
REQUEST_TIMEOUT_ENV = "PORTSIDE_HTTP_REQUEST_TIMEOUT"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    """What a route answers. ``headers`` may add any end-to-end header (a Content-Security-Policy,
    a Cache-Control); hop-by-hop ones such as Connection are the server's to set."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode())

    @classmethod
    def json(cls, status: int, value: object) -> Response:
        return cls(status, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n",
                   "application/json")


Handler = Callable[[Request], Response]
Routes = Mapping[tuple[str, str], Handler]  # (method, path) -> handler; POST routes take a body


def default_connection_limit() -> int:
    """Half the descriptors this process may open (the other half is for git, the API clients,
    the speaker's sockets), at most 1000: 512 with the common limit of 1024."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, min(1000, soft // 2))


def _seconds_from(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"${name}={text!r}: expected a number of seconds") from None
    if not value > 0 or math.isinf(value):
        raise UsageError(f"${name}={text!r}: expected a positive number of seconds")
    return value


@dataclass(frozen=True)
class Limits:
    """What one client may make the server hold (see the module docstring)."""

    idle_timeout: float = 30.0
    request_timeout: float = 15.0
    connection_limit: int = field(default_factory=default_connection_limit)
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = MAX_BODY
    bodies_in_flight: int = 8
    threads: int = 4
    backlog: int = 1024

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with the timeouts from ``$PORTSIDE_HTTP_IDLE_TIMEOUT`` and
        ``$PORTSIDE_HTTP_REQUEST_TIMEOUT`` (seconds) when set: tests and benches use short ones."""
        environ = os.environ if environ is None else environ
        return cls(idle_timeout=_seconds_from(environ, IDLE_TIMEOUT_ENV, cls.idle_timeout),
                   request_timeout=_seconds_from(environ, REQUEST_TIMEOUT_ENV, cls.request_timeout))


def parse_listen(listen: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``:7473``, ``127.0.0.1:7473`` or ``[::1]:7473`` -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT or :PORT")
    host = host.strip("[]") or default_host
    return host, int(port_text)


# --- the WSGI side: routes ------------------------------------------------------------------------


def _request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Header names as ``X-Github-Delivery`` (HTTP header names are case-insensitive)."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        headers["-".join(part.capitalize() for part in name.split("_"))] = str(value)
    return headers


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _respond(routes: Mapping[tuple[str, str], Handler], environ: Mapping[str, Any]) -> Response:
    method = str(environ["REQUEST_METHOD"])
    path = str(environ.get("PATH_INFO") or "/")
    handler = routes.get((method, path))
    if handler is None:
        allowed = sorted(m for m, p in routes if p == path)
        if allowed:
            return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)})
        return Response.text(404, "not found\n")
    # The parser refused any body to a route that takes none, and bounded the others.
    body = environ["wsgi.input"].read() if method in BODY_METHODS else b""
    try:
        return handler(Request(method, path, _request_headers(environ), body))
    except Exception:  # a handler bug must not take the server down
        log.exception("handler for %s %s failed", method, path)
        return Response.text(500, "internal error\n")


def _wsgi_app(routes: Mapping[tuple[str, str], Handler]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = _respond(routes, environ)
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   *response.headers.items()]
        start_response(f"{response.status} {_reason(response.status)}", headers)
        return [response.body]

    return app


# --- the waitress side: admission of bodies, deadlines ------------------------------------------


class _Busy(_WaitressError):  # type: ignore[misc]
    code = 503
    reason = "Service Unavailable"


class _NotFound(_WaitressError):  # type: ignore[misc]
    code = 404
    reason = "Not Found"


class _MethodNotAllowed(_WaitressError):  # type: ignore[misc]
    code = 405
    reason = "Method Not Allowed"


class _Parser(HTTPRequestParser):  # type: ignore[misc]
    """waitress's strict parser, plus: when the headers are in, decide whether a body may follow
    (before it is read), and remember when the request began (for its deadline)."""

    # waitress's attributes, as this module uses them (annotations only: no class attributes).
    completed: bool
    headers_finished: bool
    expect_continue: bool
    error: _WaitressError | None
    body_rcv: Any
    command: str
    path: str

    def __init__(self, adj: Adjustments, server: _Server) -> None:
        super().__init__(adj)
        self.server = server
        self.started = time.monotonic()
        self._admission_done = False

    def received(self, data: bytes) -> int:
        consumed = int(super().received(data))
        if self.headers_finished and not self._admission_done:
            self._admission_done = True
            if not self.completed and self.error is None:  # a body follows the headers
                refusal = self.server.refuse_body(self)
                if refusal is not None:
                    self.error = refusal
                    self.completed = True
                    self.expect_continue = False  # no "100 Continue" for a body we will not read
        return consumed

    @property
    def receiving_body(self) -> bool:
        return bool(self.headers_finished and not self.completed and self.body_rcv is not None)


class _Channel(HTTPChannel):  # type: ignore[misc]
    # waitress creates each request's parser as ``self.parser_class(self.adj)``.
    def parser_class(self, adj: Adjustments) -> _Parser:
        return _Parser(adj, self.server)


class _Server(TcpWSGIServer):  # type: ignore[misc]
    channel_class = _Channel

    def __init__(self, app: Callable[..., Iterable[bytes]], sock: socket.socket, limits: Limits,
                 route_keys: frozenset[tuple[str, str]]) -> None:
        self.limits = limits
        self.route_keys = route_keys
        self.evicted = 0
        self._next_eviction_log = 0.0
        self.body_routes = frozenset(key for key in route_keys if key[0] in BODY_METHODS)
        adj = Adjustments(
            sockets=[sock], threads=limits.threads, backlog=limits.backlog,
            # waitress stops accepting at its limit; ours (handle_accept) makes room first, so
            # waitress's is only a backstop for connections whose requests are all being answered.
            connection_limit=limits.connection_limit + EVICTION_SLACK,
            # Our maintenance() below applies the timeouts (in fractions of a second too); it runs
            # every second, so a timed-out connection is closed within about a second of it.
            channel_timeout=max(1, math.ceil(limits.idle_timeout)), cleanup_interval=1,
            max_request_header_size=limits.max_header_bytes,
            max_request_body_size=limits.max_body_bytes + 1,  # waitress refuses length >= this
            inbuf_overflow=limits.max_body_bytes + 2,  # bodies in memory, never in a temp file
            asyncore_use_poll=True, log_socket_errors=False, clear_untrusted_proxy_headers=False,
            ident="portside", expose_tracebacks=False)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(limits.threads)
        sockname = sock.getsockname()
        super().__init__(app, map={}, _sock=sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sockname))

    def refuse_body(self, parser: _Parser) -> _WaitressError | None:
        """Called on the event-loop thread when a request's headers announce a body."""
        key = (parser.command, parser.path)
        if key not in self.body_routes:
            if key in self.route_keys:
                return RequestEntityTooLarge("this endpoint takes no request body")
            if any(path == parser.path for _, path in self.route_keys):
                return _MethodNotAllowed(f"{parser.command} is not served here")
            return _NotFound("no such endpoint")
        receiving = sum(1 for channel in self.active_channels.values()
                        if isinstance(channel.request, _Parser) and channel.request is not parser
                        and channel.request.receiving_body)
        if receiving >= self.limits.bodies_in_flight:
            return _Busy("too many request bodies arriving at once; retry shortly")
        return None

    def handle_accept(self) -> None:
        live = [channel for channel in self.active_channels.values() if not channel.will_close]
        if len(live) >= self.limits.connection_limit:
            waiting = [channel for channel in live if not channel.requests]
            if waiting:
                # Closed by the loop on its next turn (closing it now could free its descriptor
                # for the connection accepted below, which would then get its stale events).
                min(waiting, key=lambda channel: channel.creation_time).will_close = True
                self.evicted += 1
                if time.monotonic() >= self._next_eviction_log:
                    self._next_eviction_log = time.monotonic() + 60
                    log.warning("HTTP: %d connections open (the limit): closing the oldest waiting ones "
                                "to take new ones (%d so far)", len(live), self.evicted)
        super().handle_accept()

    def maintenance(self, now: float) -> None:
        # waitress's own rule, with float timeouts, plus a deadline for each request to arrive.
        idle_cutoff = now - self.limits.idle_timeout
        late = time.monotonic() - self.limits.request_timeout
        for channel in list(self.active_channels.values()):
            if channel.requests:
                continue  # a handler is answering: its own time, not the client's
            request = channel.request
            if channel.last_activity < idle_cutoff or (isinstance(request, _Parser) and request.started < late):
                channel.will_close = True


# --- the service ---------------------------------------------------------------------------------


def _bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # IPV6_V6ONLY stays at the system default: ``[::]:PORT`` serves IPv4 clients too.
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen {listen}: cannot listen there ({exc.strerror})") from None
    return sock


class HTTPService:
    """Serve ``routes`` on ``listen`` in a background thread."""

    def __init__(self, listen: str, routes: Routes, limits: Limits | None = None) -> None:
        self.limits = limits or Limits.from_environ()
        by_key = dict(routes)
        self._sock = _bind(listen)
        try:
            self._server = _Server(_wsgi_app(by_key), self._sock, self.limits, frozenset(by_key))
        except BaseException:
            self._sock.close()
            raise
        self._map: dict[int, Any] = self._server._map
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> HTTPService:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket, and let the threads end."""
        if self._thread.is_alive():
            # Closed from inside the loop (a trigger runs it there), which then finds its map empty.
            self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            self._thread.join(timeout=5)
        else:
            wasyncore.close_all(self._map)
        self._server.task_dispatcher.shutdown(timeout=2)
