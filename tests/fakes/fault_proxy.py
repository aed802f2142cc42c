"""A small HTTP proxy in front of a Kubernetes API server (the fake, or a real cluster) for tests.

The code under test talks plain HTTP to the proxy on 127.0.0.1; the proxy forwards each request to
the upstream server with the upstream's own credentials and TLS settings (taken from a
`kubernetes.client.Configuration`), and answers with the upstream's reply. On the way it

- logs every request (`requests()`, `writes()`, `clear_log()`), as `LoggedRequest`s, so request-
  shape assertions (no writes when converged, the RBAC check) work against a real cluster too;
- injects faults without asking the upstream: `fail_next()` answers a Status body with the given
  code (429 with Retry-After, 500, 409 ...), `drop_next()` closes the connection without an answer,
  `end_watch_next()` lets a watch deliver a number of events and then ends its stream, as a real
  server does when its watch timeout or an etcd compaction ends a watch.

Watches (`?watch=true`) are streamed line by line; everything else is read whole. Each request
opens its own upstream connection: simple, and a dropped watch never poisons a pool.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.kubeapi.errors import _ApiError
from tests.fakes.kubeapi.kinds import _PHRASES
from tests.fakes.kubeapi.server import LoggedRequest

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "host", "content-length", "authorization"}
_MAX_BODY = 16 * 1024 * 1024  # bounded: nothing in these tests comes near it


@dataclass
class ProxyFault:
    """The next `remaining` requests with `method` ("*": any) and a path matching `path` get `action`."""

    method: str
    path: re.Pattern[str]
    action: str  # status | drop | end-watch
    remaining: int
    status: int = 0
    retry_after: int | None = None
    message: str | None = None
    reason: str | None = None
    events: int = 0  # end-watch: how many events pass before the stream ends
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and bool(self.path.search(path))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.server.proxy._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FaultProxy:
    """Forward to `upstream` (a `kubernetes.client.Configuration`); see the module docstring."""

    def __init__(self, upstream: Any) -> None:
        self._upstream = upstream
        split = urlsplit(upstream.host)
        self._scheme, self._netloc = split.scheme, split.netloc
        self._base_path = split.path.rstrip("/")
        self._ssl = self._ssl_context(upstream) if self._scheme == "https" else None
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._faults: list[ProxyFault] = []
        self._open: set[http.client.HTTPConnection] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _ssl_context(config: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file or None)
        return context

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._httpd = _Server(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-proxy",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._lock:  # unblock watches waiting on the upstream
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    if conn.sock is not None:
                        conn.sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def client_configuration(self) -> Any:
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return config

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig for the code under test: the proxy, no credentials (the proxy adds them)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy",
                          "context": {"cluster": "proxy", "user": "proxy", "namespace": namespace}}],
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))
        return target

    # -- test surface --------------------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, oldest first; only those with `method` and a path matching regex `path`."""
        with self._lock:
            return [r for r in self._log if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    def writes(self) -> list[LoggedRequest]:
        """Logged requests that are not GETs."""
        with self._lock:
            return [r for r in self._log if r.method != "GET"]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def fail_next(self, method: str, path: str, status: int, *, count: int = 1, retry_after: int | None = None,
                  message: str | None = None, reason: str | None = None) -> ProxyFault:
        """Answer the next `count` matching requests with `status` and a Status body, not forwarding
        them. 429 gets `Retry-After: 1` unless `retry_after` says otherwise."""
        if status == 429 and retry_after is None:
            retry_after = 1
        return self._add(ProxyFault(method, re.compile(path), "status", count, status, retry_after, message,
                                    reason))

    def drop_next(self, method: str, path: str, *, count: int = 1) -> ProxyFault:
        """Close the connection of the next `count` matching requests without answering."""
        return self._add(ProxyFault(method, re.compile(path), "drop", count))

    def end_watch_next(self, path: str, *, after_events: int = 0, count: int = 1) -> ProxyFault:
        """End the next `count` watches on a matching path after `after_events` events."""
        return self._add(ProxyFault("GET", re.compile(path), "end-watch", count, events=after_events))

    def _add(self, fault: ProxyFault) -> ProxyFault:
        fault.method = fault.method.upper() if fault.method != "*" else "*"
        with self._lock:
            self._faults.append(fault)
        return fault

    # -- forwarding ------------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        method, url = handler.command, urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            handler.send_error(413)
            return
        raw = handler.rfile.read(length) if length else b""
        try:
            logged: Any = json.loads(raw) if raw else None
        except ValueError:
            logged = raw.decode("utf-8", "replace")
        watching = method == "GET" and query.get("watch") in _TRUE
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, url.path)
                          and (f.action != "end-watch" or watching)), None)
            if fault is not None:
                fault.remaining -= 1
                fault.hits += 1

        def log(status: int) -> None:
            with self._lock:
                self._log.append(LoggedRequest(method, url.path, query, handler.headers.get("Content-Type"),
                                               status, logged))

        if fault is not None and fault.action == "drop":
            log(0)
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.action == "status":
            log(fault.status)
            self._answer_fault(handler, fault)
            return
        conn = self._connect(watching)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
            headers.update(self._auth_headers())
            conn.request(method, self._base_path + handler.path, body=raw or None, headers=headers)
            response = conn.getresponse()
            log(response.status)
            if watching and response.status == 200:
                self._stream(handler, response, fault.events if fault is not None else None)
            else:
                self._relay(handler, response)
        except OSError:
            handler.close_connection = True
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _connect(self, watching: bool) -> http.client.HTTPConnection:
        timeout = None if watching else 60.0
        conn: http.client.HTTPConnection
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(self._netloc, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._netloc, timeout=timeout)
        with self._lock:
            self._open.add(conn)
        return conn

    def _auth_headers(self) -> dict[str, str]:
        config = self._upstream
        if config.refresh_api_key_hook is not None:  # exec/OIDC plugins renew their token here
            config.refresh_api_key_hook(config)
        token = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
        headers = {"Authorization": token} if token else {}
        if config.username and config.password:
            headers["Authorization"] = config.get_basic_auth_token()
        return headers

    @staticmethod
    def _answer_fault(handler: _Handler, fault: ProxyFault) -> None:
        headers, details = {}, None
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
            details = {"retryAfterSeconds": fault.retry_after}
        message = fault.message or _PHRASES.get(fault.status, f"injected fault ({fault.status})")
        if fault.status == 409 and fault.message is None:
            message = ("Operation cannot be fulfilled: the object has been modified; please apply your "
                       "changes to the latest version and try again")
        error = _ApiError(fault.status, message, fault.reason, details, headers)
        data = json.dumps(error.status).encode()
        handler.send_response(fault.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _relay(handler: _Handler, response: http.client.HTTPResponse) -> None:
        data = response.read(_MAX_BODY)
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _stream(handler: _Handler, response: http.client.HTTPResponse, limit: int | None) -> None:
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", response.getheader("Content-Type") or "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sent = 0
        while limit is None or sent < limit:
            line = response.readline(_MAX_BODY)
            if not line:
                break
            handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            handler.wfile.flush()
            sent += 1
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
