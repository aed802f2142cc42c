"""DNS records: the /zones/{zone}/dns_records endpoints and the record rules behind them."""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from tests.fakes.cfapi.envelopes import (
    _HOSTNAME,
    _WRITABLE,
    ADDRESS_TYPES,
    PROXIABLE_TYPES,
    RECORD_TYPES,
    ApiError,
    _envelope,
    _now,
    _paginate,
    _Response,
    _SharedState,
    _string_match,
)


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



class _Dns(_SharedState):
    """DNS records."""

    def _zone(self, zone_id: str, path: str | None = None) -> dict[str, Any]:
        raise NotImplementedError  # provided by _Zones

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


    def _record(self, zone_id: str, record_id: str, records: list[dict[str, Any]] | None = None) -> Any:
        return _find(records if records is not None else self._records[zone_id], record_id)

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
