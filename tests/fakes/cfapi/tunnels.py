"""Cloudflare Tunnels and their configurations, with cloudflared's ingress validation."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.cfapi.dns import _object_body
from tests.fakes.cfapi.envelopes import (
    CONFIG_INVALID_CODE,
    ApiError,
    _bool_param,
    _envelope,
    _now,
    _paginate,
    _Response,
    _SharedState,
)


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


def _new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _token(tunnel: dict[str, Any], secret: str) -> str:
    payload = {"a": tunnel["account_tag"], "t": tunnel["id"], "s": secret}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


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



class _Tunnels(_SharedState):
    """Tunnels and tunnel configurations."""

    _secrets: dict[str, str]  # tunnel id -> base64 tunnel secret (never in a tunnel object)

    def _account(self, account_id: str) -> None:
        raise NotImplementedError  # provided by _Zones

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
            self._secrets[tunnel["id"]] = _new_secret()
            self._configs[tunnel["id"]] = {"version": 0, "config": None, "created_at": tunnel["created_at"]}
            if config is not None:
                self._configs[tunnel["id"]] = {"version": 1, "config": copy.deepcopy(config),
                                               "created_at": _now()}
            return copy.deepcopy(tunnel)

    def set_tunnel_secret(self, tunnel_id: str, secret: str | None = None) -> None:
        """Give a tunnel a new secret (base64; random by default), as rotating it does: its token
        changes."""
        with self._lock:
            self._secrets[tunnel_id] = secret or _new_secret()

    def tunnel_token(self, tunnel_id: str) -> str:
        """The token GET .../token answers for this tunnel now."""
        with self._lock:
            return _token(self._tunnels[tunnel_id], self._secrets[tunnel_id])

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
        self._secrets[tunnel["id"]] = str(secret) if secret is not None else _new_secret()
        self._configs[tunnel["id"]] = {"version": 0, "config": None, "created_at": tunnel["created_at"]}
        return _Response(200, _envelope(copy.deepcopy(tunnel)))

    def _get_tunnel(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        return _Response(200, _envelope(copy.deepcopy(self._tunnel(account, tunnel))))

    def _delete_tunnel(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        t = self._tunnel(account, tunnel)
        if t["deleted_at"] is None:
            t["deleted_at"] = _now()
        return _Response(200, _envelope(copy.deepcopy(t)))

    def _get_token(self, query: dict[str, str], body: Any, account: str, tunnel: str) -> _Response:
        """The token `cloudflared tunnel run --token` takes: base64 of {"a": account, "t": tunnel id,
        "s": the tunnel secret}, as a bare string ``result``."""
        t = self._tunnel(account, tunnel)
        return _Response(200, _envelope(_token(t, self._secrets[t["id"]])))

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
