"""A small threaded HTTP server for the health, metrics, status and webhook endpoints.

Routes are plain callables from a :class:`Request` to a :class:`Response`, so handlers stay
testable without sockets. The server runs in a daemon thread and stops cleanly.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reconciler.common.errors import UsageError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # a webhook payload larger than 1 MiB is not one we want


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
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
Routes = Mapping[tuple[str, str], Handler]  # (method, path) -> handler


def parse_listen(listen: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``:7473``, ``127.0.0.1:7473`` or ``[::1]:7473`` -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT or :PORT")
    host = host.strip("[]") or default_host
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper or webhook sender that hangs up mid-request is routine, not a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s hung up", client_address)
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server6(_Server):
    address_family = socket.AF_INET6


class HTTPService:
    """Serve ``routes`` on ``listen`` in a background thread."""

    def __init__(self, listen: str, routes: Routes) -> None:
        host, port = parse_listen(listen)
        routes_by_key = dict(routes)

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _dispatch(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    # Drain a modest excess so the client reads the 413 instead of a reset; close
                    # rather than read an arbitrarily large body.
                    remaining = min(length, 4 * MAX_BODY)
                    while remaining > 0 and (chunk := self.rfile.read(min(remaining, 65536))):
                        remaining -= len(chunk)
                    self.close_connection = True
                    self._send(Response(413, b"payload too large\n", headers={"Connection": "close"}))
                    return
                body = self.rfile.read(length) if length else b""
                handler = routes_by_key.get((self.command, path))
                if handler is None:
                    known = any(p == path for _, p in routes_by_key)
                    self._send(Response.text(405 if known else 404, "not found\n"))
                    return
                try:
                    response = handler(Request(self.command, path, dict(self.headers.items()), body))
                except Exception:  # a handler bug must not kill the server thread
                    log.exception("handler for %s %s failed", self.command, path)
                    response = Response.text(500, "internal error\n")
                self._send(response)

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = _dispatch
            do_POST = _dispatch

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        try:
            self._server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise UsageError(f"--listen {listen}: cannot listen there ({exc.strerror})") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HTTPService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
