"""The local state directory: the embedded default, a live world made of files.

With no cluster, each ServiceExposure stands in for its Service. ``state.json`` holds what a
cluster would: the IPs assigned to each stand-in (and, optionally, the nodes a user declares
for the speaker). The announcement table and each local tunnel's cloudflared config sit beside
it. Every write is atomic, and state.json is written last, so a crash half-way leaves a state
that the next run plans the rest of.

Two processes applying to one directory at once would each plan against what the other is
about to change (and hand one IP to two Services), so a writer holds an exclusive lock on the
directory (``flock`` on ``.lock`` inside it) for its whole read-plan-write; see :meth:`hold`.
The kernel drops the lock when its holder exits, however it exits: no stale lock files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.backends.base import ApplyReport
from reconciler.backends.tunnels import TunnelSide
from reconciler.common.atomic import write_atomic
from reconciler.common.errors import StateError, StateLocked
from reconciler.common.gcpause import gc_paused
from reconciler.desired.models import ServiceExposure
from reconciler.desired.state import DesiredState
from reconciler.planning.announcement_table import decode_table
from reconciler.planning.live import (
    ANNOTATION_POOL,
    LiveConnectors,
    LiveNode,
    LiveService,
    LiveState,
    ServicePort,
)
from reconciler.planning.plan import Plan
from reconciler.planning.planner import ANNOUNCEMENTS_ARTIFACT
from reconciler.tunnels.hostunit import UNIT, portside_units, unit_path
from reconciler.tunnels.local import DirectoryStore

if TYPE_CHECKING:  # the SDK takes 0.35 s to import; only a token needs it
    from reconciler.providers.cloudflare import CloudflareProvider

STATE_FILE = "state.json"
ANNOUNCEMENTS_FILE = "announcements.json"
LOCK_FILE = ".lock"
STATE_VERSION = 1
DEFAULT_LOCK_TIMEOUT_S = 30.0
LOCK_POLL_S = 0.05


class LocalBackend:
    read_only = False

    def __init__(self, state_dir: Path, cloudflare: CloudflareProvider | None = None) -> None:
        self.state_dir = state_dir
        self.description = f"local state directory {state_dir}"
        self.tunnels = TunnelSide(DirectoryStore(state_dir), cloudflare)

    # --- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, timeout: float = DEFAULT_LOCK_TIMEOUT_S, *, shared: bool = False) -> Iterator[None]:
        """Hold the directory's lock, waiting up to ``timeout`` seconds for another holder.

        Exclusive for a read-plan-write; ``shared`` for a read alone (`diff`, `snapshot`), so it
        never sees an apply's new announcements.json beside the old state.json, while readers do
        not wait for each other. Raises :class:`StateLocked` naming the directory (and the
        writer's pid, which an exclusive holder writes into the lock file) when the wait runs out.
        """
        path = self.state_dir / LOCK_FILE
        if shared:
            fd = _open_for_reading(path)
            if fd is None:  # no state yet, or none any writer could have locked: nothing to wait for
                yield
                return
        else:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._acquire(fd, path, timeout, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if not shared:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _acquire(self, fd: int, path: Path, timeout: float, mode: int) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StateError(f"{path}: cannot lock the local state directory ({exc.strerror})") from exc
            holder = _holder(fd)
            if time.monotonic() >= deadline:
                raise StateLocked(
                    f"the local state directory {self.state_dir} is in use by another portside process"
                    f"{holder}; gave up after {timeout:g} s. Let it finish, or wait longer with --lock-timeout")
            if not told:
                print(f"Waiting for the local state directory {self.state_dir}, in use by another portside "
                      f"process{holder} (up to {timeout:g} s).", file=sys.stderr)
                told = True
            # flock has no timeout of its own: poll the lock until the deadline.
            time.sleep(LOCK_POLL_S)

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
        # Tens of thousands of long-lived values at once: the cyclic collector would rescan
        # the growing heap several times over while they are built (a fifth of the read).
        with gc_paused():
            return self._read(desired)

    def _read(self, desired: DesiredState) -> LiveState:
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
            public_addresses=self.tunnels.addresses(desired),
            connectors=self._read_units(),
        )

    def _read_units(self) -> LiveConnectors:
        """portside's systemd units of host connectors, beside the configs they run."""
        directory = (self.state_dir / unit_path("x")).parent.resolve()
        found = {}
        for path in sorted(directory.glob("*.service")) if directory.is_dir() else []:
            try:
                found[path.name.removesuffix(".service")] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # not readable, so not one portside wrote and can keep
        return LiveConnectors(host_dir=str(directory), units=portside_units(found))

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
        for change in changes:
            if change.target.kind == UNIT:
                path = self.state_dir / unit_path(change.target.id)
                if change.action == "delete":
                    path.unlink(missing_ok=True)
                else:
                    write_atomic(path, str(change.detail["text"]))
                report.applied += 1
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


def holding(backend: object, timeout: float, *, shared: bool = False) -> contextlib.AbstractContextManager[None]:
    """The local state directory's lock when ``backend`` is one (clusters have their own guards)."""
    if isinstance(backend, LocalBackend):
        return backend.hold(timeout, shared=shared)
    return contextlib.nullcontext()


def _open_for_reading(path: Path) -> int | None:
    """The lock file to share, or None when there is none yet.

    Opened read-only (flock needs no more), so a reader never creates a file in a directory it
    only reads, nor one a writer of another user could not open. No lock file means no apply has
    ever run here: the only race left is with the very first apply, which writes each file whole.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _holder(fd: int) -> str:
    """" (pid N)" from the lock file, which its holder wrote; empty when it has not yet."""
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def _key(exposure: ServiceExposure) -> str:
    return exposure.spec.service.key


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
