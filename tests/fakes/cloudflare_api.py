"""A faithful fake of the Cloudflare v4 API, for tests that drive the official ``cloudflare`` SDK.

The fake is a real HTTP server on 127.0.0.1 (port 0, so parallel tests never collide).  The official
Stainless-generated SDK talks to it exactly as to ``https://api.cloudflare.com/client/v4``: same paths,
same query encoding (``name.exact=...``, ``account.id=...``), same envelopes, same status codes, so a
provider tested here meets no surprise against the real API.

    with FakeCloudflare() as cf:
        zone = cf.add_zone("example.com")
        client = cf.client()                      # cloudflare.Cloudflare, max_retries=0
        client.dns.records.create(zone_id=zone, name="www", type="CNAME", content="t.cfargotunnel.com",
                                  ttl=1, proxied=True)
        assert cf.records(zone)[0]["name"] == "www.example.com"

Behaviours reproduced (and where the detail comes from):

Envelopes
  ``{"success", "errors": [{"code", "message"}], "messages": [], "result"}``, plus ``result_info``
  ``{page, per_page, count, total_count, total_pages}`` on lists.  Page-number pagination answers a
  page past the end with an empty ``result`` - the SDK's ``V4PagePaginationArray`` stops on it, so it
  always fetches one extra page, as against the real API.

Authentication and permissions
  ``Authorization: Bearer <token>`` is required.  No credentials at all: 400, code 9106 "Missing
  X-Auth-Key, X-Auth-Email or Authorization headers".  A wrong token: 403, code 10000
  "Authentication error" (the status and code the real API answers, per public bug reports).
  ``deny("dns_records:edit")`` withdraws a permission from the token: requests needing it get 403,
  code 10000 "Authentication error" (what the real API answers for a token missing a permission;
  ``deny(..., code=9109)`` gives "Unauthorized to access requested resource" instead).
  Permission names: see ``PERMISSIONS``.

Zones
  ``GET /zones`` with filters ``name`` (exact), ``account.id``, ``account.name``, ``status``;
  ``per_page`` 5..50 (default 20, clamped), ``GET /zones/{id}``.  An unknown or malformed zone id:
  400 with codes 7003 "Could not route to /zones/..., perhaps your object identifier is invalid?"
  and 7000 "No route for that URI" (the real API's answer for zone-scoped paths).

DNS records (``/zones/{zone}/dns_records``)
  list / get / create (POST) / overwrite (PUT) / edit (PATCH) / delete (result ``{"id"}``) / batch.
  Names are stored fully qualified and lower-case: ``www`` and ``@`` are expanded against the zone,
  as the real API does.  List filters: ``name``, ``name.exact|contains|startswith|endswith``,
  ``type``, ``content`` (+ the same operators), ``comment`` (+ operators and ``comment.present`` /
  ``comment.absent``), ``tag`` (``name:value`` or ``name``), ``proxied``, ``match=any|all``,
  ``order``/``direction``; ``per_page`` 5..5000000, default 100.  Records carry id (32 hex),
  zone_id, zone_name, name, type, content, proxiable, proxied, ttl (1 = automatic), comment, tags,
  settings, meta, created_on, modified_on.
  Errors: a CNAME whose name already holds an A, AAAA or CNAME -> 400 / 81053 "An A, AAAA, or CNAME
  record with that host already exists."; an A/AAAA whose name holds a CNAME -> 400 / 81054 "A
  CNAME record with that host already exists."; an identical record (type, name, content) -> 400 /
  81057 "The record already exists."; unknown record -> 404 / 81044 "Record does not exist."
  (codes and texts as reported against the real API).  Content/TTL/proxied validation uses 9005
  (bad content), 9021 (TTL not 1 or 60..86400) and 9004 (type cannot be proxied) - plausible codes
  from the 9000 DNS-validation range, not verified one by one.
  Batch (``POST .../dns_records/batch``) runs deletes, patches, puts, posts in that order, each
  against the state the previous ones left (so delete-A-then-post-CNAME works in one batch), and is
  all or nothing: the first failure answers its error envelope and no change is kept.  Result
  ``{"deletes": [...], "patches": [...], "puts": [...], "posts": [...]}`` of full records.

Cloudflare Tunnels (``/accounts/{acct}/cfd_tunnel``)
  list (filters ``name``, ``uuid``, ``is_deleted``, ``status``; per_page 1..1000, default 20),
  create (``name``, ``config_src`` "local" (default) | "cloudflare", ``tunnel_secret`` base64 of at
  least 32 bytes), get, delete (soft: ``deleted_at`` is set, the tunnel stays listable with
  ``is_deleted=true``).  A name already used by a live tunnel: 409 / 1013 "You already have a tunnel
  with this name. Delete the existing tunnel, or choose a different name for your new tunnel" (code
  and text as reported; the 409 status is an assumption).  Unknown tunnel: 404 / 1003 "Tunnel not
  found" (assumed code).  Unknown account: 403 / 10000 "Authentication error" (a token sees only its
  accounts).

Tunnel configurations (``.../cfd_tunnel/{id}/configurations``)
  GET -> ``{tunnel_id, account_id, version, config, source, created_at}``; ``config`` is null and
  version 0 until the first PUT.  PUT ``{"config": {...}}`` replaces the whole config and increments
  ``version``; ``originRequest`` defaults to ``{}`` and ``warp-routing`` to ``{"enabled": false}`` as
  the real API echoes them.  Validation follows cloudflared's ``ingress`` package, with its texts
  prefixed "Bad Configuration: Validation failed: " as the API returns them: no rules; the last rule
  not a catch-all (hostname empty or ``*`` and no path); a catch-all before the last rule ("Rule #N
  is matching the hostname '...', but this will match every hostname, ..."); a hostname with a port;
  a misplaced wildcard; an invalid path regex; a missing or invalid ``service``.  Status 400, code
  1056 (the code is an assumption: not found in public sources).

Fault injection
  ``fail(status, method=, path=, times=, ...)`` makes the next matching requests fail; ``path`` is a
  regex searched in the API path (``/zones/<id>/dns_records``).  ``after_apply=True`` performs the
  request first and then answers the fault (a write that happened although the client saw an
  error); ``delay`` holds the answer back (for client-timeout tests) - with ``after_apply`` the
  change is already made while the client waits, so a timed-out write can be checked at once.
  Envelope code 7010 "Service unavailable" by default (what the API answers when a backend is down).
  ``rate_limit(retry_after=)`` answers 429 with a ``Retry-After`` header and code 971 "Please wait
  and consider throttling your request speed".  ``fail_success_false()`` answers 200 with
  ``success: false`` - the real API sometimes does this, and the SDK then returns ``None``.

Request log
  ``log`` (every request, in order), ``calls(method=, path_regex=)``, ``writes()`` (non-GET),
  ``clear_log()``; entries are ``LoggedRequest(method, path, query, body, status)``.

Everything is guarded by one lock, so tests may call the helpers while the server is serving.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import ipaddress
import json
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    import cloudflare

API_PREFIX = "/client/v4"

# Permission names used by deny()/allow(), with the dashboard's name for each (what a "which
# permission is missing" message should tell the user to grant).
PERMISSIONS: dict[str, str] = {
    "zone:read": "Zone / Zone / Read",
    "dns_records:read": "Zone / DNS / Read",
    "dns_records:edit": "Zone / DNS / Edit",
    "cfd_tunnel:read": "Account / Cloudflare Tunnel / Read",
    "cfd_tunnel:edit": "Account / Cloudflare Tunnel / Edit",
}

RATE_LIMIT_CODE = 971
RATE_LIMIT_MESSAGE = "Please wait and consider throttling your request speed"
# What the API answers when a backend is down: `503 {"code": 7010, "message": "Service unavailable"}`.
UNAVAILABLE_CODE = 7010
CONFIG_INVALID_CODE = 1056
PROXIABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})
ADDRESS_TYPES = frozenset({"A", "AAAA"})
RECORD_TYPES = frozenset(
    {"A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS",
     "OPENPGPKEY", "PTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI"}
)
_WRITABLE = ("name", "type", "content", "proxied", "ttl", "comment", "tags", "settings")
_DENIED_MESSAGES = {10000: "Authentication error", 9109: "Unauthorized to access requested resource"}
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    """An error answer: HTTP status plus the envelope's ``errors`` list."""

    def __init__(self, status: int, code: int, message: str, *more: tuple[int, str]) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.errors = [{"code": code, "message": message}] + [{"code": c, "message": m} for c, m in more]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the fake saw it.  ``path`` is relative to /client/v4; repeated query keys are
    joined with ","."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int


@dataclass
class Fault:
    """A programmed failure; ``hits`` counts the requests it answered."""

    status: int
    method: str | None = None
    path: re.Pattern[str] | None = None
    times: int = 1
    code: int = 10000
    message: str = ""
    retry_after: float | None = None
    after_apply: bool = False
    delay: float = 0.0
    raw_body: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or self.path.search(path) is not None


@dataclass
class _Response:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None


def _envelope(result: Any, result_info: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def _error_envelope(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success": False, "errors": errors, "messages": [], "result": None}


def _paginate(items: list[Any], query: dict[str, str], default: int, low: int, high: int) -> _Response:
    page = max(1, _int_param(query, "page", 1))
    per_page = min(high, max(low, _int_param(query, "per_page", default)))
    total = len(items)
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": total,
        "total_pages": max(1, -(-total // per_page)),
    }
    return _Response(200, _envelope(copy.deepcopy(chunk), info))


def _int_param(query: dict[str, str], key: str, default: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        # The SDK types page/per_page as float, so "2.0" is what may arrive.
        return int(float(raw))
    except ValueError:
        raise ApiError(400, 1001, f"Invalid '{key}' value: {raw!r}") from None


def _bool_param(query: dict[str, str], key: str) -> bool | None:
    raw = query.get(key)
    if raw is None:
        return None
    return raw.lower() in ("true", "1")


def _string_match(value: str, op: str, wanted: str) -> bool:
    value, wanted = value.lower(), wanted.lower()
    if op == "exact":
        return value == wanted
    if op == "contains":
        return wanted in value
    if op == "startswith":
        return value.startswith(wanted)
    if op == "endswith":
        return value.endswith(wanted)
    raise ApiError(400, 1004, f"Unsupported filter operator {op!r}")


class FakeCloudflare:
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

    def add_account(self, name: str = "Other account", account_id: str | None = None) -> str:
        with self._lock:
            acct = account_id or uuid.uuid4().hex
            self._accounts[acct] = name
            return acct

    def add_zone(self, name: str, account_id: str | None = None, *, status: str = "active") -> str:
        """Create a zone and return its id."""
        with self._lock:
            acct = account_id or self.account_id
            self._accounts.setdefault(acct, "Test account")
            zone_id = uuid.uuid4().hex
            stamp = _now()
            self._zones[zone_id] = {
                "id": zone_id,
                "name": name.lower().rstrip("."),
                "status": status,
                "paused": False,
                "type": "full",
                "development_mode": 0,
                "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
                "original_name_servers": None,
                "original_registrar": None,
                "original_dnshost": None,
                "created_on": stamp,
                "modified_on": stamp,
                "activated_on": stamp,
                "meta": {"step": 4, "custom_certificate_quota": 0, "page_rule_quota": 3,
                         "phishing_detected": False},
                "owner": {"id": None, "type": "user", "email": None},
                "account": {"id": acct, "name": self._accounts[acct]},
                "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
                "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website",
                         "price": 0, "currency": "USD", "frequency": "", "is_subscribed": False,
                         "can_subscribe": False, "legacy_id": "free", "legacy_discount": False,
                         "externally_managed": False},
            }
            self._records[zone_id] = []
            return zone_id

    def add_record(
        self,
        zone_id: str,
        name: str,
        type: str,
        content: str,
        *,
        proxied: bool = False,
        ttl: int = 1,
        comment: str | None = None,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Seed a record without the API's conflict checks (to build states the API would refuse
        is not the point; use it for what already exists).  Returns a copy of the record."""
        with self._lock:
            zone = self._zone(zone_id)
            record = _new_record(zone, {"name": name, "type": type, "content": content, "proxied": proxied,
                                        "ttl": ttl, "comment": comment, "tags": list(tags)})
            self._records[zone_id].append(record)
            return copy.deepcopy(record)

    def records(self, zone_id: str) -> list[dict[str, Any]]:
        """Copies of the zone's records, in creation order."""
        with self._lock:
            return copy.deepcopy(self._records[zone_id])

    def add_tunnel(
        self,
        account_id: str | None,
        name: str,
        *,
        config_src: str = "cloudflare",
        tunnel_id: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Seed a tunnel (remotely managed by default), optionally with a configuration that is
        stored as version 1 without validation.  Returns a copy of the tunnel object."""
        with self._lock:
            acct = account_id or self.account_id
            self._accounts.setdefault(acct, "Test account")
            tunnel = _new_tunnel(acct, name, config_src, tunnel_id)
            self._tunnels[tunnel["id"]] = tunnel
            self._configs[tunnel["id"]] = {"version": 0, "config": None, "created_at": tunnel["created_at"]}
            if config is not None:
                self._configs[tunnel["id"]] = {"version": 1, "config": copy.deepcopy(config),
                                               "created_at": _now()}
            return copy.deepcopy(tunnel)

    def tunnels(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of the account's tunnels, deleted ones included."""
        with self._lock:
            acct = account_id or self.account_id
            return [copy.deepcopy(t) for t in self._tunnels.values() if t["account_tag"] == acct]

    def tunnel_config(self, account_id: str | None, tunnel_id: str) -> dict[str, Any]:
        """The configuration as GET .../configurations would answer it (the ``result``)."""
        with self._lock:
            tunnel = self._tunnel(account_id or self.account_id, tunnel_id)
            return self._config_result(tunnel)

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

    def _zone(self, zone_id: str, path: str | None = None) -> dict[str, Any]:
        zone = self._zones.get(zone_id)
        if zone is None:
            raise _no_route(path or f"/zones/{zone_id}")
        return zone

    def _record(self, zone_id: str, record_id: str, records: list[dict[str, Any]] | None = None) -> Any:
        return _find(records if records is not None else self._records[zone_id], record_id)

    def _account(self, account_id: str) -> None:
        if not _HEX32.match(account_id):
            raise _no_route(f"/accounts/{account_id}")
        if account_id not in self._accounts:
            raise ApiError(403, 10000, "Authentication error")

    def _tunnel(self, account_id: str, tunnel_id: str) -> dict[str, Any]:
        self._account(account_id)
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel["account_tag"] != account_id:
            raise ApiError(404, 1003, "Tunnel not found")
        return tunnel

    def _config_result(self, tunnel: dict[str, Any]) -> dict[str, Any]:
        stored = self._configs[tunnel["id"]]
        return {
            "tunnel_id": tunnel["id"],
            "account_id": tunnel["account_tag"],
            "version": stored["version"],
            "config": copy.deepcopy(stored["config"]),
            "source": tunnel["config_src"],
            "created_at": stored["created_at"],
        }

    # ------------------------------------------------------------------ zones

    def _list_zones(self, query: dict[str, str], body: Any) -> _Response:
        zones = list(self._zones.values())
        if "name" in query:
            zones = [z for z in zones if z["name"] == query["name"].lower().rstrip(".")]
        if "account.id" in query:
            zones = [z for z in zones if z["account"]["id"] == query["account.id"]]
        if "account.name" in query:
            zones = [z for z in zones if z["account"]["name"] == query["account.name"]]
        if "status" in query:
            zones = [z for z in zones if z["status"] == query["status"]]
        zones.sort(key=lambda z: z["name"], reverse=query.get("direction") == "desc")
        return _paginate(zones, query, default=20, low=5, high=50)

    def _get_zone(self, query: dict[str, str], body: Any, zone: str) -> _Response:
        return _Response(200, _envelope(copy.deepcopy(self._zone(zone))))

    # ------------------------------------------------------------------ DNS records

    def _list_records(self, query: dict[str, str], body: Any, zone: str) -> _Response:
        self._zone(zone, f"/zones/{zone}/dns_records")
        zone_name = self._zones[zone]["name"]
        tests = _record_filters(query, zone_name)
        records = self._records[zone]
        if tests:
            combine = any if query.get("match") == "any" else all
            records = [r for r in records if combine(t(r) for t in tests)]
        order = query.get("order")
        if order in ("type", "name", "content", "ttl", "proxied"):
            records = sorted(records, key=lambda r: r[order], reverse=query.get("direction") == "desc")
        return _paginate(records, query, default=100, low=5, high=5_000_000)

    def _get_record(self, query: dict[str, str], body: Any, zone: str, record: str) -> _Response:
        self._zone(zone)
        return _Response(200, _envelope(copy.deepcopy(self._record(zone, record))))

    def _create_record(self, query: dict[str, str], body: Any, zone: str) -> _Response:
        z = self._zone(zone)
        records = self._records[zone]
        record = _create_into(z, records, _object_body(body))
        return _Response(200, _envelope(copy.deepcopy(record)))

    def _put_record(self, query: dict[str, str], body: Any, zone: str, record: str) -> _Response:
        z = self._zone(zone)
        updated = _overwrite_into(z, self._records[zone], record, _object_body(body))
        return _Response(200, _envelope(copy.deepcopy(updated)))

    def _patch_record(self, query: dict[str, str], body: Any, zone: str, record: str) -> _Response:
        z = self._zone(zone)
        updated = _patch_into(z, self._records[zone], record, _object_body(body))
        return _Response(200, _envelope(copy.deepcopy(updated)))

    def _delete_record(self, query: dict[str, str], body: Any, zone: str, record: str) -> _Response:
        self._zone(zone)
        records = self._records[zone]
        records.remove(self._record(zone, record, records))
        return _Response(200, _envelope({"id": record}))

    def _batch_records(self, query: dict[str, str], body: Any, zone: str) -> _Response:
        z = self._zone(zone)
        request = _object_body(body)
        unknown = set(request) - {"deletes", "patches", "puts", "posts"}
        if unknown:
            raise ApiError(400, 1004, f"Unknown batch operation(s): {sorted(unknown)}")
        # Work on copies: any failure leaves the zone exactly as it was (all or nothing).
        work = copy.deepcopy(self._records[zone])
        result: dict[str, list[dict[str, Any]]] = {"deletes": [], "patches": [], "puts": [], "posts": []}
        for op in _list_of_objects(request, "deletes"):
            target = self._record(zone, str(op.get("id", "")), work)
            work.remove(target)
            result["deletes"].append(target)
        for op in _list_of_objects(request, "patches"):
            result["patches"].append(_patch_into(z, work, str(op.get("id", "")), op))
        for op in _list_of_objects(request, "puts"):
            result["puts"].append(_overwrite_into(z, work, str(op.get("id", "")), op))
        for op in _list_of_objects(request, "posts"):
            result["posts"].append(_create_into(z, work, op))
        self._records[zone] = work
        return _Response(200, _envelope(copy.deepcopy(result)))

    # ------------------------------------------------------------------ tunnels

    def _list_tunnels(self, query: dict[str, str], body: Any, account: str) -> _Response:
        self._account(account)
        tunnels = [t for t in self._tunnels.values() if t["account_tag"] == account]
        if "name" in query:
            tunnels = [t for t in tunnels if t["name"] == query["name"]]
        if "uuid" in query:
            tunnels = [t for t in tunnels if t["id"] == query["uuid"]]
        if "status" in query:
            tunnels = [t for t in tunnels if t["status"] == query["status"]]
        deleted = _bool_param(query, "is_deleted")
        if deleted is not None:
            tunnels = [t for t in tunnels if (t["deleted_at"] is not None) == deleted]
        return _paginate(tunnels, query, default=20, low=1, high=1000)

    def _create_tunnel(self, query: dict[str, str], body: Any, account: str) -> _Response:
        self._account(account)
        request = _object_body(body)
        name = request.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, 1001, "Tunnel name is required")
        config_src = request.get("config_src", "local")
        if config_src not in ("local", "cloudflare"):
            raise ApiError(400, 1001, "config_src must be 'local' or 'cloudflare'")
        secret = request.get("tunnel_secret")
        if secret is not None:
            try:
                if len(base64.b64decode(str(secret), validate=True)) < 32:
                    raise ValueError
            except (ValueError, binascii.Error):
                raise ApiError(400, 1001, "tunnel_secret must be base64 of at least 32 bytes") from None
        if any(t["name"] == name and t["account_tag"] == account and t["deleted_at"] is None
               for t in self._tunnels.values()):
            raise ApiError(409, 1013, "You already have a tunnel with this name. Delete the existing tunnel, "
                           "or choose a different name for your new tunnel")
        tunnel = _new_tunnel(account, name, config_src, None)
        self._tunnels[tunnel["id"]] = tunnel
        self._configs[tunnel["id"]] = {"version": 0, "config": None, "created_at": tunnel["created_at"]}
        return _Response(200, _envelope(copy.deepcopy(tunnel)))

    def _get_tunnel(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        return _Response(200, _envelope(copy.deepcopy(self._tunnel(account, tunnel))))

    def _delete_tunnel(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        t = self._tunnel(account, tunnel)
        if t["deleted_at"] is None:
            t["deleted_at"] = _now()
        return _Response(200, _envelope(copy.deepcopy(t)))

    def _get_config(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        return _Response(200, _envelope(self._config_result(self._tunnel(account, tunnel))))

    def _put_config(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        t = self._tunnel(account, tunnel)
        request = _object_body(body)
        config = request.get("config")
        if not isinstance(config, dict):
            raise ApiError(400, CONFIG_INVALID_CODE, "Bad Configuration: config is required")
        problem = validate_ingress(config.get("ingress"))
        if problem is not None:
            raise ApiError(400, CONFIG_INVALID_CODE, f"Bad Configuration: Validation failed: {problem}")
        stored = copy.deepcopy(config)
        stored.setdefault("originRequest", {})
        stored.setdefault("warp-routing", {"enabled": False})
        previous = self._configs[t["id"]]
        self._configs[t["id"]] = {"version": previous["version"] + 1, "config": stored, "created_at": _now()}
        return _Response(200, _envelope(self._config_result(t)))


# ---------------------------------------------------------------------- record logic (pure-ish)


def _object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, 9207, "Request body is invalid: expected a JSON object")
    return body


def _list_of_objects(request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = request.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ApiError(400, 9207, f"Request body is invalid: {key} must be a list of objects")
    return value


def _fqdn(name: str, zone_name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if name in ("", "@"):
        return zone_name
    if name == zone_name or name.endswith("." + zone_name):
        return name
    return f"{name}.{zone_name}"


def _validate_record(fields: dict[str, Any]) -> None:
    rtype, content, ttl = fields["type"], fields["content"], fields["ttl"]
    if rtype not in RECORD_TYPES:
        raise ApiError(400, 9000, f"DNS record type '{rtype}' is invalid.")
    if not isinstance(content, str) or not content:
        raise ApiError(400, 9005, "Content for the record is required.")
    if rtype in ADDRESS_TYPES:
        version = 4 if rtype == "A" else 6
        try:
            ok = ipaddress.ip_address(content).version == version
        except ValueError:
            ok = False
        if not ok:
            raise ApiError(400, 9005, f"Content for {rtype} record must be a valid IPv{version} address.")
    if rtype == "CNAME" and not _HOSTNAME.match(content.lower().rstrip(".")):
        raise ApiError(400, 9005, "Content for CNAME record is invalid.")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 60 <= ttl <= 86400):
        raise ApiError(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
    if fields["proxied"] and rtype not in PROXIABLE_TYPES:
        raise ApiError(400, 9004, "This record type cannot be proxied.")
    if not _HOSTNAME.match(fields["name"]):
        raise ApiError(400, 9005, f"DNS name {fields['name']!r} is invalid.")


def _normalise(zone: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a record's writable fields, validated."""
    name, rtype = fields.get("name"), fields.get("type")
    if not isinstance(name, str) or not isinstance(rtype, str):
        raise ApiError(400, 9000, "DNS record name and type are required.")
    ttl = fields.get("ttl", 1)
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)
    comment = fields.get("comment")
    tags = fields.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, 9005, "tags must be a list of strings")
    normal = {
        "name": _fqdn(name, zone["name"]),
        "type": rtype.upper(),
        "content": fields.get("content"),
        "proxied": bool(fields.get("proxied", False)),
        "ttl": ttl,
        "comment": comment if comment else None,
        "tags": list(tags),
        "settings": fields.get("settings") or {},
    }
    if normal["type"] in ("A", "AAAA") and isinstance(normal["content"], str):
        # The API answers addresses in canonical form (e.g. IPv6 compressed).
        with contextlib.suppress(ValueError):
            normal["content"] = str(ipaddress.ip_address(normal["content"]))
    if normal["type"] == "CNAME" and isinstance(normal["content"], str):
        normal["content"] = normal["content"].lower().rstrip(".")
    _validate_record(normal)
    return normal


def _new_record(zone: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    normal = _normalise(zone, fields)
    stamp = _now()
    return {
        "id": uuid.uuid4().hex,
        "zone_id": zone["id"],
        "zone_name": zone["name"],
        **normal,
        "proxiable": normal["type"] in PROXIABLE_TYPES,
        "meta": {},
        "created_on": stamp,
        "modified_on": stamp,
        "comment_modified_on": stamp if normal["comment"] else None,
        "tags_modified_on": stamp if normal["tags"] else None,
    }


def _check_conflicts(records: list[dict[str, Any]], candidate: dict[str, Any], ignore_id: str | None) -> None:
    for other in records:
        if other["id"] == ignore_id or other["name"] != candidate["name"]:
            continue
        if other["type"] == candidate["type"] and other["content"] == candidate["content"]:
            raise ApiError(400, 81057, "The record already exists.")
        if candidate["type"] == "CNAME" and other["type"] in ("A", "AAAA", "CNAME"):
            raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
        if candidate["type"] in ADDRESS_TYPES and other["type"] == "CNAME":
            raise ApiError(400, 81054, "A CNAME record with that host already exists.")


def _create_into(
    zone: dict[str, Any], records: list[dict[str, Any]], fields: dict[str, Any]
) -> dict[str, Any]:
    record = _new_record(zone, fields)
    _check_conflicts(records, record, None)
    records.append(record)
    return record


def _replace(record: dict[str, Any], normal: dict[str, Any]) -> None:
    stamp = _now()
    if normal["comment"] != record["comment"]:
        record["comment_modified_on"] = stamp
    if normal["tags"] != record["tags"]:
        record["tags_modified_on"] = stamp
    record.update(normal)
    record["proxiable"] = record["type"] in PROXIABLE_TYPES
    record["modified_on"] = stamp


def _overwrite_into(
    zone: dict[str, Any], records: list[dict[str, Any]], record_id: str, fields: dict[str, Any]
) -> dict[str, Any]:
    record = _find(records, record_id)
    normal = _normalise(zone, fields)
    _check_conflicts(records, normal | {"id": record_id}, record_id)
    _replace(record, normal)
    return record


def _patch_into(
    zone: dict[str, Any], records: list[dict[str, Any]], record_id: str, fields: dict[str, Any]
) -> dict[str, Any]:
    record = _find(records, record_id)
    merged = {k: record[k] for k in _WRITABLE}
    merged.update({k: v for k, v in fields.items() if k != "id"})
    normal = _normalise(zone, merged)
    _check_conflicts(records, normal, record_id)
    _replace(record, normal)
    return record


def _find(records: list[dict[str, Any]], record_id: str) -> dict[str, Any]:
    for record in records:
        if record["id"] == record_id:
            return record
    raise ApiError(404, 81044, "Record does not exist.")


def _record_filters(query: dict[str, str], zone_name: str) -> list[Callable[[dict[str, Any]], bool]]:
    """One predicate per filter in the query, as the DNS list endpoint understands them."""
    tests: list[Callable[[dict[str, Any]], bool]] = []

    def text(field_name: str, op: str, wanted: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: _string_match(r[field_name] or "", op, wanted)

    for key, value in query.items():
        base, _, op = key.partition(".")
        if base == "name":
            # A bare name is matched exactly, after the same expansion the API applies on writes.
            wanted = _fqdn(value, zone_name) if op in ("", "exact") else value
            tests.append(text("name", op or "exact", wanted))
        elif base == "content":
            tests.append(text("content", op or "exact", value))
        elif base == "type":
            tests.append(_equals("type", value.upper()))
        elif base == "proxied":
            tests.append(_equals("proxied", value.lower() == "true"))
        elif base == "comment":
            if op == "present":
                tests.append(lambda r: bool(r["comment"]))
            elif op == "absent":
                tests.append(lambda r: not r["comment"])
            else:
                tests.append(text("comment", op or "exact", value))
        elif base == "tag":
            tests.append(_tag_filter(op or "exact", value))
    return tests


def _equals(field_name: str, wanted: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda r: bool(r[field_name] == wanted)


def _tag_filter(op: str, value: str) -> Callable[[dict[str, Any]], bool]:
    tag_name, _, tag_value = value.partition(":")

    def test(record: dict[str, Any]) -> bool:
        pairs = [t.partition(":") for t in record["tags"]]
        named = [v for n, _, v in pairs if n.lower() == tag_name.lower()]
        if op == "present":
            return bool(named)
        if op == "absent":
            return not named
        return any(_string_match(v, op, tag_value) for v in named)

    return test


def _new_tunnel(account_id: str, name: str, config_src: str, tunnel_id: str | None) -> dict[str, Any]:
    return {
        "id": tunnel_id or str(uuid.uuid4()),
        "account_tag": account_id,
        "created_at": _now(),
        "deleted_at": None,
        "name": name,
        "connections": [],
        "conns_active_at": None,
        "conns_inactive_at": None,
        "tun_type": "cfd_tunnel",
        "metadata": {},
        "status": "inactive",
        "remote_config": config_src == "cloudflare",
        "config_src": config_src,
    }


# ---------------------------------------------------------------------- ingress validation


def validate_ingress(ingress: Any) -> str | None:
    """cloudflared's ingress validation: the problem in cloudflared's words, or None when valid."""
    if not isinstance(ingress, list) or not ingress:
        return "The config file doesn't contain any ingress rules"
    for index, rule in enumerate(ingress):
        if not isinstance(rule, dict):
            return f"Rule #{index + 1} is not an object"
        hostname = str(rule.get("hostname") or "")
        path = str(rule.get("path") or "")
        if re.search(r":\d+$", hostname):
            return "Hostname cannot contain a port"
        if hostname.rfind("*") > 0:
            return ('Hostname patterns can have at most one wildcard character ("*") and it can only be '
                    'used for subdomains, e.g. "*.example.com"')
        catch_all = hostname in ("", "*") and path == ""
        last = index == len(ingress) - 1
        if last and not catch_all:
            return ("The last ingress rule must match all URLs "
                    "(i.e. it should not have a hostname or path filter)")
        if not last and catch_all:
            return (f"Rule #{index + 1} is matching the hostname '{hostname}', but this will match every "
                    "hostname, meaning the rules which follow it will never be triggered.")
        if path:
            try:
                re.compile(path)
            except re.error as err:
                return f"Rule #{index + 1} has an invalid regex: {err}"
        problem = _service_problem(rule.get("service"))
        if problem is not None:
            return problem
    return None


def _service_problem(service: Any) -> str | None:
    if not isinstance(service, str) or not service:
        return "service is required on every ingress rule"
    if service.startswith("http_status:"):
        code = service.removeprefix("http_status:")
        if not code.isdigit() or not 100 <= int(code) <= 999:
            return f"invalid HTTP status code: {code}"
        return None
    if service.startswith("unix:") or service.startswith("unix+tls:") or service in (
            "hello_world", "hello-world", "bastion"):
        return None
    parts = urlsplit(service)
    if not parts.scheme or not parts.hostname:
        return f"{service} is an invalid address, please make sure it has a scheme and a hostname"
    if parts.path not in ("", "/"):
        return (f"{service} is an invalid address, ingress rules don't support proxying to a different path "
                "on the origin service. The path will be the same as the eyeball request's path")
    return None


# ---------------------------------------------------------------------- faults and routes


def _no_route(path: str) -> ApiError:
    return ApiError(400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?",
                    (7000, "No route for that URI"))


def _default_fault_message(status: int) -> str:
    return {
        200: "Service unavailable",
        429: RATE_LIMIT_MESSAGE,
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, f"Injected failure {status}")


def _fault_response(fault: Fault) -> _Response:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        # Retry-After is whole seconds, rounded up, as the real API sends it.
        headers["Retry-After"] = str(int(-(-fault.retry_after // 1)))
    if fault.raw_body is not None:
        return _Response(fault.status, None, headers, raw=fault.raw_body)
    return _Response(fault.status, _error_envelope([{"code": fault.code, "message": fault.message}]), headers)


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

