"""The local state directory: the embedded default, a live world made of files.

With no cluster, each ServiceExposure stands in for its Service. ``state.json`` holds what a
cluster would: the IPs assigned to each stand-in (and, optionally, the nodes a user declares
for the speaker). The announcement table and each local tunnel's cloudflared config sit beside
it. Every write is atomic, and state.json is written last, so a crash half-way leaves a state
that the next run plans the rest of.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.backends.base import ApplyReport
from reconciler.backends.tunnels import TunnelSide
from reconciler.common.atomic import write_atomic
from reconciler.common.errors import StateError
from reconciler.desired.models import ServiceExposure
from reconciler.desired.state import DesiredState
from reconciler.planning.announcement_table import decode_table
from reconciler.planning.live import ANNOTATION_POOL, LiveNode, LiveService, LiveState, ServicePort
from reconciler.planning.plan import Plan
from reconciler.planning.planner import ANNOUNCEMENTS_ARTIFACT
from reconciler.tunnels.local import DirectoryStore

if TYPE_CHECKING:  # the SDK takes 0.35 s to import; only a token needs it
    from reconciler.providers.cloudflare import CloudflareProvider

STATE_FILE = "state.json"
ANNOUNCEMENTS_FILE = "announcements.json"
STATE_VERSION = 1


class LocalBackend:
    read_only = False

    def __init__(self, state_dir: Path, cloudflare: CloudflareProvider | None = None) -> None:
        self.state_dir = state_dir
        self.description = f"local state directory {state_dir}"
        self.tunnels = TunnelSide(DirectoryStore(state_dir), cloudflare)

    # --- reading ---------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return {"version": STATE_VERSION, "services": {}}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"{path}: unreadable ({exc}); fix or remove it to start over") from exc
        if not isinstance(state, dict) or not isinstance(state.get("services", {}), dict):
            raise StateError(f"{path}: expected an object with a 'services' object")
        if state.get("version", STATE_VERSION) != STATE_VERSION:
            raise StateError(f"{path}: state version {state.get('version')} is not {STATE_VERSION}")
        state.setdefault("services", {})
        return state

    def read(self, desired: DesiredState) -> LiveState:
        state = self._load_state()
        recorded: dict[str, Any] = state["services"]
        ports: dict[tuple[int, str, str | None], ServicePort] = {}  # shared: most exposures repeat a few ports
        services = tuple([_stand_in(e, recorded.get(e.spec.service.key, _NOTHING), ports) for e in desired.exposures])
        declared = {s.key for s in services}
        released = tuple(_recorded_service(key, value) for key, value in sorted(recorded.items())
                         if key not in declared)
        announcements_path = self.state_dir / ANNOUNCEMENTS_FILE
        announcements = announcements_path.read_text(encoding="utf-8") if announcements_path.exists() else None
        tunnels, zones = self.tunnels.read(desired)
        return LiveState(
            services=services,
            released=released,
            nodes=_nodes(state.get("nodes")),
            announcements=announcements,
            tunnels=tunnels,
            zones=zones,
        )

    # --- writing ---------------------------------------------------------------------------

    def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        changes = plan.actionable
        if not changes:
            return report
        if ANNOUNCEMENTS_ARTIFACT in plan.artifacts:
            text = str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT])
            decode_table(text, "the planned announcement table")  # never publish what speakers reject
            write_atomic(self.state_dir / ANNOUNCEMENTS_FILE, text + "\n")
        report.merge(self.tunnels.apply(plan))
        state = self._load_state()
        for change in changes:
            if change.target.kind == "Service":
                if change.after is None:
                    state["services"].pop(change.target.id, None)
                else:
                    state["services"][change.target.id] = change.after
                report.applied += 1
            elif change.target.kind == "Announcement":
                report.applied += 1
        write_atomic(self.state_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
        return report


_NOTHING: dict[str, Any] = {}
_FAMILIES = {"SingleStack": ("IPv4",), "PreferDualStack": ("IPv4", "IPv6"), "RequireDualStack": ("IPv4", "IPv6")}


def _stand_in(exposure: ServiceExposure, recorded: dict[str, Any],
              ports: dict[tuple[int, str, str | None], ServicePort]) -> LiveService:
    """The Service an exposure stands in for, holding what state.json recorded for it.

    Runs once per exposure on every read (10,000 at a time): values that repeat (ports, IP
    families) are shared, which is safe because live values are never changed in place.
    """
    spec = exposure.spec
    pool = recorded.get("pool")
    service_ports = []
    for p in spec.ports:
        port = ports.get((p.port, p.protocol, p.name))
        if port is None:
            port = ports[(p.port, p.protocol, p.name)] = ServicePort(p.port, p.protocol, p.name)
        service_ports.append(port)
    labels = exposure.metadata.labels
    ingress = recorded.get("ingress")
    return LiveService(
        namespace=spec.service.namespace,
        name=spec.service.name,
        ports=tuple(service_ports),
        labels=dict(labels) if labels else {},
        annotations={ANNOTATION_POOL: str(pool)} if pool else {},
        external_traffic_policy=spec.externalTrafficPolicy,
        ip_family_policy=spec.ipFamilyPolicy,
        ip_families=_FAMILIES[spec.ipFamilyPolicy],
        ingress=tuple([str(ip) for ip in ingress]) if ingress else (),
    )


def _recorded_service(key: str, recorded: dict[str, Any]) -> LiveService:
    namespace, _, name = key.partition("/")
    annotations = {ANNOTATION_POOL: str(recorded["pool"])} if recorded.get("pool") else {}
    return LiveService(namespace=namespace, name=name, annotations=annotations,
                       ingress=tuple(str(ip) for ip in recorded.get("ingress", [])))


def _nodes(declared: object) -> tuple[LiveNode, ...]:
    """The nodes a user put in state.json, else this machine alone (so a lone speaker works)."""
    if isinstance(declared, dict) and declared:
        return tuple(
            LiveNode(name=str(name), labels=dict(info.get("labels", {})), address=info.get("address"))
            for name, info in sorted(declared.items()) if isinstance(info, dict)
        )
    return (LiveNode(name=socket.gethostname(), address="127.0.0.1"),)
