"""Leader election on a ``coordination.k8s.io/v1`` Lease: only the leader reconciles and writes.

The algorithm is client-go's: a candidate takes the Lease when it is free, or when the record it
last saw has not changed for ``lease_duration`` by *its own* clock (never comparing timestamps
written by another machine's clock). Every write carries the resourceVersion it read, so two
candidates racing for an expired Lease get one success and one 409. The leader renews every
``renew_period``; when it could not renew for ``renew_deadline`` (shorter than the lease
duration) it stops leading before anyone else may start. A graceful shutdown releases the Lease,
so the next replica takes over at its next attempt.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

LEASE_NAME = "portside-reconciler"
Action = Literal["create", "acquire", "renew", "follow"]

# The leader writes its own address on the Lease, so a standby that receives a push webhook (a
# Service spreads them over both replicas) can hand it on instead of dropping it.
ADDRESS_ANNOTATION = "portside.io/webhook-address"


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease the election reads."""

    holder: str
    renew_time: str
    duration: int
    transitions: int
    resource_version: str
    address: str = ""  # where the holder takes forwarded webhooks (host:port), if it said

    @classmethod
    def from_object(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec, metadata = lease.get("spec") or {}, lease.get("metadata") or {}
        return cls(holder=spec.get("holderIdentity") or "", renew_time=spec.get("renewTime") or "",
                   duration=int(spec.get("leaseDurationSeconds") or 0),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=str(metadata.get("resourceVersion") or ""),
                   address=str((metadata.get("annotations") or {}).get(ADDRESS_ANNOTATION) or ""))

    @property
    def observed(self) -> tuple[str, str]:
        """What changes when the holder renews: holder and renew time."""
        return self.holder, self.renew_time


def decide(record: LeaseRecord | None, identity: str, *, observed_for: float) -> Action:
    """What a candidate does, given the Lease and how long (by its clock) that record has stood.

    ======================  =========
    no Lease                create
    we hold it              renew
    nobody holds it         acquire
    unchanged > duration    acquire   (the holder died or is cut off)
    otherwise               follow
    ======================  =========
    """
    if record is None:
        return "create"
    if record.holder == identity:
        return "renew"
    if not record.holder:
        return "acquire"
    if observed_for > max(record.duration, 1):
        return "acquire"
    return "follow"


def micro_time(now: datetime | None = None) -> str:
    """A ``MicroTime`` as the API server writes it: exactly six fractional digits.

    The API server refuses a MicroTime without them (400, "cannot parse ... as ".000000""). The
    official client (>= 35, pydantic models) parses the string we pass into a ``datetime`` and sends
    its ``isoformat()``, which leaves the fraction out when it is zero; so a whole second is moved
    on by one microsecond, which the election does not notice and the server accepts.
    """
    moment = now or datetime.now(UTC)
    if moment.microsecond == 0:
        moment = moment.replace(microsecond=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(record: LeaseRecord | None, identity: str, namespace: str, name: str, *,
               duration: int, action: Action, address: str | None = None) -> dict[str, Any]:
    """The Lease to write for ``action`` (``resourceVersion`` makes it conditional)."""
    now = micro_time()
    spec: dict[str, Any] = {"holderIdentity": identity, "leaseDurationSeconds": duration, "renewTime": now}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if address:
        metadata["annotations"] = {ADDRESS_ANNOTATION: address}
    if record is None:
        spec.update(acquireTime=now, leaseTransitions=0)
    else:
        metadata["resourceVersion"] = record.resource_version
        spec["leaseTransitions"] = record.transitions + (1 if action == "acquire" else 0)
        if action == "acquire":
            spec["acquireTime"] = now
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


class LeaderElector:
    """Runs the election in a thread; ``is_leader()`` is what the controller asks before writing."""

    def __init__(self, api: client.ApiClient, namespace: str, identity: str, *, name: str = LEASE_NAME,
                 lease_duration: float = 15.0, renew_deadline: float | None = None,
                 retry_period: float = 2.0, on_change: Callable[[bool], None] = lambda _: None,
                 clock: Callable[[], float] = time.monotonic, address: str | None = None) -> None:
        # Typed as Any: the generated client wants its models; we send and read raw JSON.
        self.leases: Any = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.lease_duration = max(1, round(lease_duration))
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        self.retry_period = retry_period
        self.on_change = on_change
        self.clock = clock
        self.address = address
        self._leading = False
        self._renewed_at = 0.0
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def is_leader(self) -> bool:
        """True only while the last successful renewal is within the renew deadline."""
        with self._lock:
            return self._leading and self.clock() - self._renewed_at < self.renew_deadline

    def start(self) -> LeaderElector:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; a leader gives the Lease up so a standby takes over at once."""
        self._stop.set()
        self._thread.join(timeout=10)
        if release and self._leading:
            self._release()
        self._set_leading(False)

    # -- the campaign --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.attempt()
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                log.warning("leader election: cannot reach the lease: %s", exc)
            except Exception:  # an unexpected reply must not end the election thread
                log.exception("leader election attempt failed")
            with self._lock:
                stale = self._leading and self.clock() - self._renewed_at >= self.renew_deadline
            if stale:
                log.warning("could not renew the lease within %.0fs; stepping down", self.renew_deadline)
                self._set_leading(False)
            self._stop.wait(self.retry_period)

    def attempt(self) -> bool:
        """One round: read the Lease, then create, take, renew or follow. True if leading after."""
        record = self._read()
        now = self.clock()
        if record is not None and record.observed != self._observed:
            self._observed, self._observed_at = record.observed, now
        action = decide(record, self.identity, observed_for=now - self._observed_at)
        if action == "follow":
            if self._leading:
                log.warning("lease %s is held by %s now; stepping down", self.name, record and record.holder)
            self._set_leading(False)
            return False
        body = lease_body(record, self.identity, self.namespace, self.name,
                          duration=self.lease_duration, action=action, address=self.address)
        try:
            if action == "create":
                self.leases.create_namespaced_lease(self.namespace, body, _preload_content=False)
            else:
                self.leases.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first: it leads, we follow
                self._set_leading(False)
                return False
            log.warning("lease %s: %s %s", action, exc.status, exc.reason)
            return self._leading
        with self._lock:
            self._renewed_at = self.clock()
        if action == "acquire":
            log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
        self._set_leading(True)
        return True

    def leader_address(self) -> str | None:
        """Where the current leader takes forwarded webhooks; None when unknown or when we lead."""
        try:
            record = self._read()
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            log.warning("cannot read the lease to find the leader: %s", exc)
            return None
        if record is None or not record.holder or record.holder == self.identity:
            return None
        return record.address or None

    def _read(self) -> LeaseRecord | None:
        try:
            response = self.leases.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return LeaseRecord.from_object(json.loads(response.data))

    def _release(self) -> None:
        try:
            record = self._read()
            if record is None or record.holder != self.identity:
                return
            body = lease_body(record, self.identity, self.namespace, self.name, duration=1, action="renew")
            body["spec"]["holderIdentity"] = ""
            self.leases.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False)
            log.info("released lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError, ValueError) as exc:
            log.warning("could not release lease %s: %s", self.name, exc)

    def _set_leading(self, leading: bool) -> None:
        with self._lock:
            changed = leading != self._leading
            self._leading = leading
        if changed:
            self.on_change(leading)
