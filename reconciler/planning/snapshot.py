"""LiveState <-> JSON, so CI can diff a pull request against saved live state, with no credentials.

A snapshot holds no secrets: Services, Nodes, the published announcement table, tunnel ingress
rules and DNS records are what `kubectl get` and the Cloudflare dashboard show anyway.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from reconciler.backends.base import ApplyReport
from reconciler.common.atomic import write_atomic
from reconciler.common.errors import StateError, UsageError
from reconciler.desired.state import DesiredState
from reconciler.planning.live import LiveNode, LiveService, LiveState, ServicePort
from reconciler.planning.plan import Plan
from reconciler.tunnels import tunnels_from_json, tunnels_to_json, zones_from_json, zones_to_json

SNAPSHOT_VERSION = 1


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # What the constructor takes: a field worked out from the others (init=False) is not data.
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, (frozenset, set)) else items
    return value


def state_to_json(state: LiveState) -> dict[str, Any]:
    # Connectors are left out: their token digests stay in memory, and without a token no
    # connector is planned from a snapshot anyway (the plan says so).
    live = _plain(replace(state, tunnels={}, zones={}, connectors=None))
    live.pop("connectors", None)
    live["tunnels"] = tunnels_to_json(state.tunnels)
    live["zones"] = zones_to_json(state.zones)
    return {"version": SNAPSHOT_VERSION, "live": live}


def _service(raw: dict[str, Any]) -> LiveService:
    fields = dict(raw)
    fields["ports"] = tuple(ServicePort(**p) for p in raw.get("ports", []))
    fields["ip_families"] = tuple(raw.get("ip_families", ("IPv4",)))
    fields["ingress"] = tuple(raw.get("ingress", ()))
    return LiveService(**fields)


def state_from_json(raw: Any, source: str) -> LiveState:
    if not isinstance(raw, dict) or raw.get("version") != SNAPSHOT_VERSION or "live" not in raw:
        raise StateError(f"{source}: not a portside snapshot (version {SNAPSHOT_VERSION})")
    live = raw["live"]
    try:
        return LiveState(
            services=tuple(_service(s) for s in live.get("services", [])),
            released=tuple(_service(s) for s in live.get("released", [])),
            nodes=tuple(LiveNode(**n) for n in live.get("nodes", [])),
            namespace_labels=dict(live.get("namespace_labels", {})),
            ready_endpoint_nodes={k: frozenset(v) for k, v in live.get("ready_endpoint_nodes", {}).items()},
            announcements=live.get("announcements"),
            tunnels=tunnels_from_json(live.get("tunnels", {})),
            zones=zones_from_json(live.get("zones", {})),
        )
    except (TypeError, AttributeError) as exc:
        raise StateError(f"{source}: malformed snapshot ({exc})") from exc


def save_snapshot(state: LiveState, path: Path) -> None:
    write_atomic(path, json.dumps(state_to_json(state), indent=1, sort_keys=True) + "\n")


class SnapshotBackend:
    """Read-only: the live state as it was saved. Good for `diff`, refused for `apply`."""

    read_only = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"snapshot {path}"

    def read(self, desired: DesiredState) -> LiveState:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"{self.path}: cannot read snapshot ({exc})") from exc
        return state_from_json(raw, str(self.path))

    def apply(self, plan: Plan) -> ApplyReport:
        raise UsageError("a snapshot is read-only: use it with `portside diff`, not `apply`")
