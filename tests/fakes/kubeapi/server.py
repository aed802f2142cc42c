"""HTTP: the server, request routing, the request log and injected faults; FakeKube itself."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import sys
import threading
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.kubeapi.discovery import discover
from tests.fakes.kubeapi.errors import (
    _ApiError,
    _bad_request,
)
from tests.fakes.kubeapi.kinds import (
    _PHRASES,
    _TRUE,
    _VERSION,
    Obj,
    _Kind,
)
from tests.fakes.kubeapi.store import _Store, _typed
from tests.fakes.kubeapi.verbs import _Response, _Verbs
from tests.fakes.kubeapi.watch import _Watch, _Watching


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the fake saw it. `body` is the parsed JSON body (None when there was none)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    status: int
    body: Any = None


@dataclass
class Fault:
    """An injected failure: the next `remaining` requests matching method and path fail with `status`."""

    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    retry_after: int | None = None
    message: str | None = None
    reason: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and bool(self.path.search(path))

    def error(self) -> _ApiError:
        headers, details = {}, None
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
            details = {"retryAfterSeconds": self.retry_after}
        message = self.message or _PHRASES.get(self.status, f"injected fault ({self.status})")
        return _ApiError(self.status, message, self.reason, details, headers)




class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing leaks
    block_on_close = True

    def __init__(self, fake: FakeKube, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the kill tests) resets its socket: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle's algorithm meets the
        # client's delayed ACK and every response takes ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeKube(_Verbs, _Watching, _Store):
    """A Kubernetes API server fake on http://127.0.0.1:<port>; see the module docstring."""

    def __init__(self, *, history: int = 1000, bookmark_interval: float = 60.0,
                 namespaces: Iterable[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
                 token: str | None = None, host: str = "127.0.0.1", crds: Iterable[Obj] = ()) -> None:
        self.bookmark_interval = bookmark_interval
        self._token = token
        self._host = host
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._closed = False
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        super().__init__(history, namespaces, crds)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeKube:
        """Listen on an ephemeral loopback port and serve in a background thread."""
        self._httpd = _Server(self, (self._host, 0))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kube",
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch, close every connection and join every thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._httpd.drop_connections()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeKube is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def client_configuration(self) -> Any:
        """A `kubernetes.client.Configuration` pointing at this server."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        if self._token:
            config.api_key = {"BearerToken": self._token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this server; close it when done."""
        from kubernetes import client

        return client.ApiClient(self.client_configuration())

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON, which is YAML) that `kubernetes.config.load_kube_config` accepts."""
        user: Obj = {"token": self._token} if self._token else {}
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake",
                          "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))
        return target

    # -- test helpers: log, faults, state --------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, oldest first; only those with `method` and a path matching regex `path`
        when given."""
        with self._lock:
            return [r for r in self._log if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    def writes(self) -> list[LoggedRequest]:
        """Logged requests that are not GETs (creates, updates, patches, deletes)."""
        with self._lock:
            return [r for r in self._log if r.method != "GET"]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def fail_next(self, method: str, path: str, status: int, *, count: int = 1,
                  retry_after: int | None = None, message: str | None = None,
                  reason: str | None = None) -> Fault:
        """Make the next `count` requests with `method` ("*" for any) and a path matching regex `path`
        fail with `status` and a Status body. 429 gets `Retry-After: 1` unless `retry_after` is given."""
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(method.upper() if method != "*" else "*", re.compile(path), status, count,
                      retry_after, message, reason)
        with self._lock:
            self._faults.append(fault)
        return fault


    # -- HTTP ------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        method = handler.command
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type")
        try:
            logged_body = json.loads(raw) if raw else None
        except ValueError:
            logged_body = raw.decode("utf-8", "replace")
        try:
            result = self._dispatch(handler, method, url.path, query, content_type, raw)
        except _ApiError as e:
            result = _Response(e.code, e.status, e.headers)
        except Exception as e:  # a bug in the fake: show it, answer like the apiserver does
            traceback.print_exc()
            result = _Response(500, _ApiError(500, f"Internal error occurred: {e!r}").status)
        status = 200 if isinstance(result, _Watch) else result.status
        with self._lock:
            self._log.append(LoggedRequest(method, url.path, query, content_type, status, logged_body))
        try:
            if isinstance(result, _Watch):
                self._stream(handler, result)
            else:
                data = json.dumps(result.body).encode()
                handler.send_response(result.status)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(data)))
                for name, value in result.headers.items():
                    handler.send_header(name, value)
                handler.end_headers()
                handler.wfile.write(data)
        except OSError:  # the client went away
            handler.close_connection = True

    def _dispatch(self, handler: _Handler, method: str, path: str, query: dict[str, str],
                  content_type: str | None, raw: bytes) -> _Response | _Watch:
        if self._token is not None and handler.headers.get("Authorization") != f"Bearer {self._token}":
            raise _ApiError(401, "Unauthorized")
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, path)), None)
            if fault is not None:
                fault.remaining -= 1
                fault.hits += 1
                raise fault.error()
        if path in ("/version", "/version/") and method == "GET":
            return _Response(200, _VERSION)
        if method == "GET":
            with self._lock:
                document = discover(path, self._kinds.values())
            if document is not None:
                return _Response(200, document)
        kind, namespace, name, sub = self._route(path)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise _bad_request(f"error decoding request body: {e}") from None
        dry_run = query.get("dryRun") == "All"
        with self._changed:
            if name is None:
                if method == "GET":
                    if query.get("watch") in _TRUE:
                        return self._watch_plan(kind, namespace, query)
                    return _Response(200, self._list(kind, namespace, query))
                if method == "POST" and (namespace is not None or not kind.namespaced):
                    return _Response(201, self._create(kind, namespace, body, dry_run))
                if method == "DELETE":
                    return _Response(200, self._delete_collection(kind, namespace, query, dry_run))
            else:
                if method == "GET":
                    return _Response(200, _typed(kind, copy.deepcopy(self._get(kind, namespace, name))))
                if method == "PUT":
                    return self._replace(kind, namespace, name, body, sub, dry_run)
                if method == "PATCH":
                    patched = self._patch(kind, namespace, name, body, content_type or "", sub, dry_run)
                    return _Response(200, patched)
                if method == "DELETE" and sub is None:
                    return _Response(200, self._delete(kind, namespace, name, body, dry_run))
        raise _ApiError(405, "the server does not allow this method on the requested resource")

    def _route(self, path: str) -> tuple[_Kind, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            group, version, rest = None, "", []
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        kind = self._route_of(group, version, rest[0]) if group is not None and rest else None
        if kind is None or len(rest) > 3 or (namespace is not None and not kind.namespaced) \
                or (len(rest) == 3 and (rest[2] != "status" or not kind.status)) \
                or (len(rest) >= 2 and kind.namespaced and namespace is None):
            raise _ApiError(404, "the server could not find the requested resource", details={})
        return kind, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
