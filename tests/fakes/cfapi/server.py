"""HTTP: FakeCloudflare itself, its routes, faults, permissions and request log."""

from __future__ import annotations

import copy
import json
import re
import sys
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    import cloudflare


from tests.fakes.cfapi.dns import _Dns
from tests.fakes.cfapi.envelopes import (
    _DENIED_MESSAGES,
    API_PREFIX,
    PERMISSIONS,
    RATE_LIMIT_CODE,
    RATE_LIMIT_MESSAGE,
    UNAVAILABLE_CODE,
    ApiError,
    Fault,
    LoggedRequest,
    _default_fault_message,
    _error_envelope,
    _fault_response,
    _no_route,
    _Response,
)
from tests.fakes.cfapi.tunnels import _Tunnels
from tests.fakes.cfapi.zones import _Zones


class FakeCloudflare(_Zones, _Dns, _Tunnels):
    """The fake API server and its state.  Construct, then ``start()`` (or use as a context manager).

    ``token`` is the only API token accepted.  ``account_id`` is the default account used by
    ``add_zone`` and ``add_tunnel``; more accounts come from ``add_account``.
    """

    def __init__(self, token: str = "fake-cloudflare-token", *, account_id: str | None = None) -> None:
        self.token = token
        self.account_id = account_id or uuid.uuid4().hex
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._accounts: dict[str, str] = {self.account_id: "Test account"}
        self._zones: dict[str, dict[str, Any]] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._tunnels: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._secrets: dict[str, str] = {}
        self._denied: dict[str, int] = {}
        self._faults: list[Fault] = []
        self._log: list[LoggedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeCloudflare:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._stopping.clear()
        # A short poll interval keeps stop() (and so every test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-cloudflare",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; delayed answers are released at once."""
        self._stopping.set()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeCloudflare:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeCloudflare is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's ``base_url`` (or ``CLOUDFLARE_BASE_URL``)."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    def client(self, **kw: Any) -> cloudflare.Cloudflare:
        """An official SDK client aimed at this fake.  ``max_retries`` defaults to 0: retrying is
        the product's job, and tests must see every 429/5xx the fake answers."""
        import cloudflare

        kw.setdefault("api_token", self.token)
        kw.setdefault("base_url", self.base_url)
        kw.setdefault("max_retries", 0)
        return cloudflare.Cloudflare(**kw)

    # ------------------------------------------------------------------ seeding and inspection

    # ------------------------------------------------------------------ permissions

    def deny(self, *permissions: str, code: int = 10000) -> None:
        """Withdraw permissions (names from ``PERMISSIONS``) from the token.  ``code`` 10000 answers
        "Authentication error", 9109 "Unauthorized to access requested resource"."""
        with self._lock:
            for perm in permissions:
                if perm not in PERMISSIONS:
                    raise ValueError(f"unknown permission {perm!r}; known: {sorted(PERMISSIONS)}")
                self._denied[perm] = code

    def allow(self, *permissions: str) -> None:
        """Give back permissions withdrawn by ``deny`` (all of them when none are named)."""
        with self._lock:
            if not permissions:
                self._denied.clear()
            for perm in permissions:
                self._denied.pop(perm, None)

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        after_apply: bool = False,
        delay: float = 0.0,
        raw_body: str | None = None,
    ) -> Fault:
        """Make the next ``times`` requests matching ``method`` and the ``path`` regex answer
        ``status`` with an error envelope (or ``raw_body``, e.g. an HTML 502 page from the edge).
        The envelope's code defaults to 971 for 429 and to 7010 (the API's "Service unavailable")
        otherwise.
        Faults are consulted before authentication, in the order they were added."""
        fault = Fault(
            status=status,
            method=method.upper() if method else None,
            path=re.compile(path) if path is not None else None,
            times=times,
            code=code if code is not None else (RATE_LIMIT_CODE if status == 429 else UNAVAILABLE_CODE),
            message=message or _default_fault_message(status),
            retry_after=retry_after,
            after_apply=after_apply,
            delay=delay,
            raw_body=raw_body,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def rate_limit(
        self, *, retry_after: float = 2, times: int = 1, method: str | None = None, path: str | None = None
    ) -> Fault:
        """Answer the next matching requests with 429, ``Retry-After: <seconds>`` and code 971."""
        return self.fail(429, method=method, path=path, times=times, code=RATE_LIMIT_CODE,
                         message=RATE_LIMIT_MESSAGE, retry_after=retry_after)

    def fail_success_false(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        code: int = 7010,
        message: str = "Service unavailable",
        after_apply: bool = False,
    ) -> Fault:
        """Answer 200 OK with ``success: false`` and ``result: null``."""
        return self.fail(200, method=method, path=path, times=times, code=code, message=message,
                         after_apply=after_apply)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ------------------------------------------------------------------ request log

    @property
    def log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[LoggedRequest]:
        """Logged requests with this method and whose path the regex is found in."""
        pattern = re.compile(path_regex) if path_regex is not None else None
        return [r for r in self.log
                if (method is None or r.method == method.upper())
                and (pattern is None or pattern.search(r.path))]

    def writes(self) -> list[LoggedRequest]:
        """Every logged request that was not a GET (whatever its answer)."""
        return [r for r in self.log if r.method != "GET"]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ request handling

    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> _Response:
        """Answer one request (called by the HTTP handler; usable directly in unit tests)."""
        split = urlsplit(raw_path)
        path = split.path[len(API_PREFIX):] if split.path.startswith(API_PREFIX) else split.path
        path = path.rstrip("/") or "/"
        query: dict[str, str] = {}
        for key, value in parse_qsl(split.query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        body: Any = None
        response: _Response
        try:
            body = json.loads(raw_body) if raw_body.strip() else None
        except ValueError:
            errors = [{"code": 6007, "message": "Malformed JSON in request body"}]
            response = _Response(400, _error_envelope(errors))
            self._record_log(method, path, query, raw_body.decode("utf-8", "replace"), response.status)
            return response

        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
        if fault is None or fault.after_apply:
            with self._lock:
                response = self._dispatch(method, path, query, headers, body)
        if fault is not None:
            # An after_apply fault has already written when its delay starts: a client that times
            # out finds the change made, as against a real API that was merely slow to answer.
            if fault.delay > 0:
                self._stopping.wait(fault.delay)
            response = _fault_response(fault)
        self._record_log(method, path, query, body, response.status)
        return response

    def _record_log(self, method: str, path: str, query: dict[str, str], body: Any, status: int) -> None:
        with self._lock:
            self._log.append(LoggedRequest(method, path, dict(query), copy.deepcopy(body), status))

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> _Response:
        try:
            self._authenticate(headers)
            for pattern, routes in _ROUTES:
                match = pattern.match(path)
                if match is None:
                    continue
                if method not in routes:
                    raise ApiError(405, 10405, f"Method {method} not allowed for this route")
                permission, handler = routes[method]
                if permission in self._denied:
                    code = self._denied[permission]
                    raise ApiError(403, code, _DENIED_MESSAGES.get(code, "Authentication error"))
                return handler(self, query, body, **match.groupdict())
            raise _no_route(path)
        except ApiError as err:
            return _Response(err.status, _error_envelope(err.errors))

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization")
        if auth is None and "x-auth-key" not in headers:
            raise ApiError(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        if auth is None or auth != f"Bearer {self.token}":
            raise ApiError(403, 10000, "Authentication error")

    # ------------------------------------------------------------------ lookups


_Handler_t = Callable[..., _Response]
_ZONE = r"(?P<zone>[^/]+)"
_ACCT = r"(?P<account>[^/]+)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, tuple[str, _Handler_t]]]] = [
    (re.compile(r"^/zones$"), {"GET": ("zone:read", FakeCloudflare._list_zones)}),
    (re.compile(rf"^/zones/{_ZONE}$"), {"GET": ("zone:read", FakeCloudflare._get_zone)}),
    (re.compile(rf"^/zones/{_ZONE}/dns_records$"), {
        "GET": ("dns_records:read", FakeCloudflare._list_records),
        "POST": ("dns_records:edit", FakeCloudflare._create_record),
    }),
    (re.compile(rf"^/zones/{_ZONE}/dns_records/batch$"), {
        "POST": ("dns_records:edit", FakeCloudflare._batch_records),
    }),
    (re.compile(rf"^/zones/{_ZONE}/dns_records/(?P<record>[^/]+)$"), {
        "GET": ("dns_records:read", FakeCloudflare._get_record),
        "PUT": ("dns_records:edit", FakeCloudflare._put_record),
        "PATCH": ("dns_records:edit", FakeCloudflare._patch_record),
        "DELETE": ("dns_records:edit", FakeCloudflare._delete_record),
    }),
    (re.compile(rf"^/accounts/{_ACCT}/cfd_tunnel$"), {
        "GET": ("cfd_tunnel:read", FakeCloudflare._list_tunnels),
        "POST": ("cfd_tunnel:edit", FakeCloudflare._create_tunnel),
    }),
    (re.compile(rf"^/accounts/{_ACCT}/cfd_tunnel/(?P<tunnel>[^/]+)$"), {
        "GET": ("cfd_tunnel:read", FakeCloudflare._get_tunnel),
        "DELETE": ("cfd_tunnel:edit", FakeCloudflare._delete_tunnel),
    }),
    # The token wants Cloudflare Tunnel:Edit (Write), not Read.
    (re.compile(rf"^/accounts/{_ACCT}/cfd_tunnel/(?P<tunnel>[^/]+)/token$"), {
        "GET": ("cfd_tunnel:edit", FakeCloudflare._get_token),
    }),
    (re.compile(rf"^/accounts/{_ACCT}/cfd_tunnel/(?P<tunnel>[^/]+)/configurations$"), {
        "GET": ("cfd_tunnel:read", FakeCloudflare._get_config),
        "PUT": ("cfd_tunnel:edit", FakeCloudflare._put_config),
    }),
]


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed its socket before a delayed answer: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCloudflare
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    # Headers and body leave in one segment: with Nagle plus delayed ACKs, two small writes per
    # answer would cost ~40 ms each on loopback.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.fake.handle(self.command, self.path, headers, raw)
        if response.raw is not None:
            payload = response.raw.encode()
            content_type = "text/html; charset=UTF-8"
        else:
            payload = json.dumps(response.body).encode()
            content_type = "application/json"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("cf-ray", uuid.uuid4().hex[:16] + "-FAKE")
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # The fake keeps its own request log; stderr noise would bury test output.
        pass
