"""Accounts and zones: seeding, lookups and the /zones endpoints."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.fakes.cfapi.envelopes import _HEX32, ApiError, _envelope, _no_route, _now, _paginate, _Response, _SharedState


class _Zones(_SharedState):
    """Accounts and zones."""

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


    def _zone(self, zone_id: str, path: str | None = None) -> dict[str, Any]:
        zone = self._zones.get(zone_id)
        if zone is None:
            raise _no_route(path or f"/zones/{zone_id}")
        return zone

    def _account(self, account_id: str) -> None:
        if not _HEX32.match(account_id):
            raise _no_route(f"/accounts/{account_id}")
        if account_id not in self._accounts:
            raise ApiError(403, 10000, "Authentication error")


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
