"""Live tunnels and zones as plain JSON, so ``portside snapshot`` can save Cloudflare state too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.common.errors import StateError
from reconciler.planning.live import DNSRecord, IngressRule, LiveTunnel, LiveZone
from reconciler.planning.plan import JSON


def tunnels_to_json(tunnels: Mapping[str, LiveTunnel]) -> dict[str, JSON]:
    return {
        name: {
            "name": t.name,
            "tunnelId": t.tunnel_id,
            "ingress": None if t.ingress is None else [r.as_dict() for r in t.ingress],
            "originRequest": dict(t.origin_request),
            "error": t.error,
        }
        for name, t in sorted(tunnels.items())
    }


def zones_to_json(zones: Mapping[str, LiveZone]) -> dict[str, JSON]:
    return {
        name: {
            "name": z.name,
            "zoneId": z.zone_id,
            "records": [
                {"name": r.name, "type": r.type, "content": r.content, "proxied": r.proxied,
                 "comment": r.comment, "id": r.record_id, **({"ttl": r.ttl} if r.ttl != 1 else {})}
                for r in z.records
            ],
            "error": z.error,
        }
        for name, z in sorted(zones.items())
    }


def tunnels_from_json(data: Any) -> dict[str, LiveTunnel]:
    """The inverse of :func:`tunnels_to_json`; a malformed snapshot is a StateError naming where."""
    out: dict[str, LiveTunnel] = {}
    for key, raw in _mapping(data, "tunnels").items():
        where = f"tunnels.{key}"
        item = _mapping(raw, where)
        try:
            ingress = item.get("ingress")
            rules = None if ingress is None else tuple(_rule(r, f"{where}.ingress") for r in ingress)
            out[key] = LiveTunnel(
                name=str(item["name"]),
                tunnel_id=_opt_str(item.get("tunnelId")),
                ingress=rules,
                origin_request=dict(_mapping(item.get("originRequest", {}), f"{where}.originRequest")),
                error=_opt_str(item.get("error")),
            )
        except (KeyError, TypeError) as exc:
            raise StateError(f"snapshot {where}: missing or malformed field {exc}") from exc
    return out


def zones_from_json(data: Any) -> dict[str, LiveZone]:
    out: dict[str, LiveZone] = {}
    for key, raw in _mapping(data, "zones").items():
        where = f"zones.{key}"
        item = _mapping(raw, where)
        try:
            records = tuple(
                DNSRecord(zone=str(item["name"]), name=str(r["name"]), type=str(r["type"]),
                          content=str(r["content"]), proxied=bool(r["proxied"]),
                          comment=str(r.get("comment") or ""), record_id=_opt_str(r.get("id")),
                          ttl=int(r.get("ttl") or 1))
                for r in item.get("records", [])
            )
            out[key] = LiveZone(name=str(item["name"]), zone_id=_opt_str(item.get("zoneId")),
                                records=records, error=_opt_str(item.get("error")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"snapshot {where}: missing or malformed field {exc}") from exc
    return out


def _rule(raw: Any, where: str) -> IngressRule:
    item = _mapping(raw, where)
    hostname, path = item.get("hostname"), item.get("path")
    return IngressRule(service=str(item["service"]),
                       hostname=None if hostname is None else str(hostname),
                       path=None if path is None else str(path),
                       origin_request=dict(_mapping(item.get("originRequest", {}), f"{where}.originRequest")))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StateError(f"snapshot {where}: expected an object, found {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
