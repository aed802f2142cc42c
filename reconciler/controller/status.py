"""What the controller shows the world: the ``/status`` document and the Prometheus metrics."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from reconciler.common.metrics import Counter, Gauge, Registry, Summary


class StatusBoard:
    """The ``/status`` JSON, updated by the loop and the leader elector, read by the HTTP server."""

    def __init__(self, source: str = "", identity: str = "") -> None:
        self._lock = threading.Lock()
        self._fields: dict[str, Any] = {
            "source": source,
            "identity": identity,
            "leader": False,
            "lastAttemptedRevision": None,
            "lastAppliedRevision": None,
            "lastPlanSummary": None,
            "lastReconcileTime": None,
            "errors": [],
            "startTime": time.time(),
        }
        self._outcome: object | None = None

    def keep_outcome(self, outcome: object) -> None:
        """Keep the last applied reconcile's result (its plan, desired and live state) for the
        status page, which renders from it: a page view reads nothing from the world."""
        with self._lock:
            self._outcome = outcome

    def outcome(self) -> object | None:
        """The result :meth:`keep_outcome` kept (immutable values, safe to read without a copy)."""
        with self._lock:
            return self._outcome

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._fields.update(fields)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy: the caller may serialize it while the loop keeps updating."""
        with self._lock:
            return copy.deepcopy(self._fields)


class ControllerMetrics:
    """The controller's series, registered on one :class:`Registry` served at ``/metrics``."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.reconciles: Counter = r.counter(
            "portside_reconciles_total", "Reconcile attempts, by result (success or the error kind).",
            ["result"])
        # A summary serves the same _sum and _count series the two counters before it did.
        self.duration: Summary = r.summary(
            "portside_reconcile_duration_seconds", "Time spent reconciling (_sum) and reconciles timed (_count).")
        self.last_duration: Gauge = r.gauge(
            "portside_reconcile_last_duration_seconds", "Duration of the last reconcile.")
        self.changes: Counter = r.counter(
            "portside_changes_applied_total", "Changes carried out in the cluster and at Cloudflare.")
        self.errors: Counter = r.counter(
            "portside_errors_total",
            "Errors by kind: config, signature, source, refused, provider, apply, permanent, internal.",
            ["kind"])
        self.revision: Gauge = r.gauge(
            "portside_last_applied_revision_info", "The revision in force (value 1).", ["revision"])
        self.applied_time: Gauge = r.gauge(
            "portside_last_applied_timestamp_seconds", "When the last reconcile succeeded (Unix time).")
        self.triggers: Counter = r.counter(
            "portside_triggers_total", "Reconcile requests, by what asked.", ["reason"])
        self.fetches: Counter = r.counter(
            "portside_source_fetches_total", "Source syncs, by result.", ["result"])
        self.fetch_seconds: Gauge = r.gauge(
            "portside_source_last_fetch_seconds", "Duration of the last successful source sync.")
        self.webhooks: Counter = r.counter(
            "portside_webhook_requests_total",
            "Webhook deliveries: accepted, coalesced (rate-limited into a later trigger), replayed, or refused "
            "for a bad or missing signature.", ["result"])
        self.leader: Gauge = r.gauge("portside_leader", "1 while this replica is the leader.")
        self._revision_label: str | None = None

    def observe_duration(self, seconds: float) -> None:
        self.duration.observe(max(0.0, seconds))
        self.last_duration.set(seconds)

    def applied_revision(self, revision: str) -> None:
        if self._revision_label is not None and self._revision_label != revision:
            self.revision.remove(revision=self._revision_label)
        self._revision_label = revision
        self.revision.set(1, revision=revision)
        self.applied_time.set(time.time())
