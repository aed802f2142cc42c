"""Envelopes, errors, pagination and injected-fault answers, as the Cloudflare v4 API shapes them."""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


class _SharedState:
    """The state every part of FakeCloudflare (zones, DNS, tunnels) works on; set in its __init__."""

    _lock: threading.RLock
    account_id: str
    _accounts: dict[str, str]
    _zones: dict[str, dict[str, Any]]
    _records: dict[str, list[dict[str, Any]]]
    _tunnels: dict[str, dict[str, Any]]
    _configs: dict[str, dict[str, Any]]
