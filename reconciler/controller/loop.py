"""The trigger loop: one reconcile at a time, triggers coalesced, the last good revision kept.

Anything may ask for a reconcile (a poll timer, a webhook, a directory save, a watch event, the
periodic resync, a new leadership). Requests arriving while a reconcile runs collapse into one
follow-up. A revision that fails to load or validate is never applied: the last good one stays in
force, and drift repair and new Services keep being served from it. Temporary errors (a dead
remote, 429, 5xx) back off with jitter and retry. Nothing here lets an exception end the loop: an
unexpected one (a bug, in the source or anywhere a reconcile reaches) is shown like any other error
(``/status``, an Event, ``portside_errors_total{kind="internal"}``), secrets masked, and retried with
backoff, since the next attempt may well pass.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.common.errors import ConfigError, PlanRefused, PortsideError, SignatureError, SourceError
from reconciler.common.secrets import environment_secrets, redact
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.source import Checkout, Source

log = logging.getLogger(__name__)


class Trigger(enum.Enum):
    STARTUP = "startup"
    POLL = "poll"
    WEBHOOK = "webhook"
    SOURCE = "source"  # a directory save
    WATCH = "watch"  # a Service, Node or EndpointSlice changed in the cluster
    RESYNC = "resync"  # the periodic full reconcile that repairs drift
    RETRY = "retry"  # after a temporary error, when the backoff expires
    LEADER = "leader"  # this replica just became the leader
    ADDRESS = "address"  # time to look the public address up again (DynamicDNS)


FETCHING = frozenset({Trigger.STARTUP, Trigger.POLL, Trigger.WEBHOOK, Trigger.SOURCE, Trigger.RESYNC,
                      Trigger.RETRY, Trigger.LEADER})
# Reconcile even when the revision is the one already applied: the live world may have moved.
FORCING = frozenset({Trigger.STARTUP, Trigger.WATCH, Trigger.RESYNC, Trigger.RETRY, Trigger.LEADER,
                     Trigger.ADDRESS})
# A human or a new commit asked: do not make them wait out a backoff.
URGENT = frozenset({Trigger.STARTUP, Trigger.WEBHOOK, Trigger.SOURCE, Trigger.LEADER})
# The Event reason for each error kind a human should see in `kubectl get events`.
EVENT_REASONS = {"config": "InvalidRevision", "signature": "UnverifiedRevision", "refused": "PlanRefused",
                 "internal": "ReconcileError"}


class ReconcileOutcome(Protocol):
    """What the engine's ``ReconcileResult`` offers the loop."""

    @property
    def changes_applied(self) -> int: ...

    @property
    def summary(self) -> Mapping[str, int]: ...

    @property
    def errors(self) -> list[str]: ...


ReconcileFn = Callable[[Checkout], ReconcileOutcome]
EventSink = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**n``, capped, times a random factor in [0.5, 1]."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        if failures <= 0:
            return 0.0
        raw = min(self.cap, self.base * 2.0 ** min(failures - 1, 64))
        return raw * (0.5 + 0.5 * rand())


@dataclass(frozen=True)
class Timing:
    interval: float = 60.0  # poll the source
    resync: float = 600.0  # full reconcile against the live world
    backoff: Backoff = field(default_factory=Backoff)


def error_kind(exc: BaseException) -> str:
    """The metric label of an error: what kind of thing went wrong."""
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, SignatureError):
        return "signature"
    if isinstance(exc, SourceError):
        return "source"
    if isinstance(exc, PlanRefused):
        return "refused"
    if isinstance(exc, PortsideError):
        return "provider" if exc.temporary else "permanent"
    return "internal"


def error_lines(exc: BaseException) -> list[str]:
    """Status lines: one per diagnostic (``file:line:col: message``) for a broken revision; an
    unexpected exception shows its type too (``TypeError: ...``), since its message alone rarely
    says what went wrong."""
    if isinstance(exc, ConfigError):
        return [str(d) for d in exc.diagnostics]
    if isinstance(exc, PortsideError):
        return [str(exc) or type(exc).__name__]
    message = str(exc).strip()
    return [f"internal error: {type(exc).__name__}: {message}" if message else
            f"internal error: {type(exc).__name__}"]


class Controller:
    """Runs reconciles of ``source`` through ``reconcile_fn``, one at a time, as triggers arrive."""

    def __init__(self, source: Source, reconcile_fn: ReconcileFn, *, timing: Timing = Timing(),
                 status: StatusBoard | None = None, metrics: ControllerMetrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True, events: EventSink | None = None,
                 clock: Callable[[], float] = time.monotonic, secrets: Sequence[str] = ()) -> None:
        self.source = source
        self.reconcile_fn = reconcile_fn
        self.timing = timing
        self.status = status or StatusBoard()
        self.metrics = metrics or ControllerMetrics()
        self.is_leader = is_leader
        self.events = events
        self.clock = clock
        # Masked in every error shown (status, Events, logs): a library may put a token or a URL
        # with credentials into an exception message.
        self._secrets = [*secrets, *environment_secrets()]
        self._cond = threading.Condition()
        self._pending: set[Trigger] = set()
        self._head: Checkout | None = None  # what the source last returned
        self._last_good: Checkout | None = None  # the last revision applied without error
        self._broken: str | None = None  # a head revision that cannot be applied as it is
        self._failures = 0  # consecutive temporary failures, for the backoff
        self._retry_at: float | None = None
        self._sync_failed = False
        # Errors that stand until the head changes (a broken or unverified head, a dead remote):
        # a later successful reconcile of the last good revision must not hide them.
        self._standing: list[str] = []
        self._last_event: tuple[str, str] | None = None
        now = clock()
        self._next_poll = now + timing.interval
        self._next_resync = now + timing.resync
        self._next_address: float | None = None  # set by a reconcile whose repo has DynamicDNS
        self.reconciles = 0  # completed reconcile attempts, for tests and benchmarks
        self.first_step = threading.Event()  # set once the first batch of triggers was handled

    # -- triggers ------------------------------------------------------------------------------------

    def trigger(self, reason: Trigger) -> None:
        """Ask for a reconcile; safe from any thread. Coalesces with what is already pending."""
        self.metrics.triggers.inc(reason=reason.value)
        with self._cond:
            self._pending.add(reason)
            self._cond.notify_all()

    def run(self, stop: threading.Event) -> None:
        """Serve triggers until ``stop`` is set. Starts with a full reconcile."""
        self.trigger(Trigger.STARTUP)
        while not stop.is_set():
            reasons = self._wait(stop)
            if reasons:
                self.step(reasons)
                self.first_step.set()

    def stop_waiting(self) -> None:
        """Wake the loop so it notices its stop event at once."""
        with self._cond:
            self._cond.notify_all()

    def _wait(self, stop: threading.Event) -> frozenset[Trigger]:
        with self._cond:
            while not stop.is_set():
                now = self.clock()
                if now >= self._next_poll:
                    self._pending.add(Trigger.POLL)
                    self._next_poll = now + self.timing.interval
                if now >= self._next_resync:
                    self._pending.add(Trigger.RESYNC)
                    self._next_resync = now + self.timing.resync
                if self._retry_at is not None and now >= self._retry_at:
                    self._pending.add(Trigger.RETRY)
                    self._retry_at = None
                if self._next_address is not None and now >= self._next_address:
                    self._pending.add(Trigger.ADDRESS)
                    self._next_address = None
                ready = self._ready(now)
                if ready:
                    self._pending -= ready
                    return ready
                deadlines = [self._next_poll, self._next_resync]
                deadlines += [t for t in (self._retry_at, self._next_address) if t is not None]
                self._cond.wait(timeout=max(0.0, min(deadlines) - now))
        return frozenset()

    def _ready(self, now: float) -> frozenset[Trigger]:
        """The pending triggers that may run now: during a backoff only urgent ones may."""
        if not self._pending:
            return frozenset()
        if self._retry_at is not None and now < self._retry_at and not (self._pending & URGENT):
            return frozenset()
        return frozenset(self._pending)

    # -- one step ------------------------------------------------------------------------------------

    def step(self, reasons: frozenset[Trigger]) -> None:
        """Handle one coalesced batch of triggers: maybe fetch, maybe reconcile. Never raises."""
        try:
            self._step(reasons)
        except Exception as exc:  # the last net: each stage handles its own errors, a bug must not kill us
            self._log_unexpected(exc, "a reconcile step")
            self._record_error(exc, revision=None)
            self._schedule_retry()

    def _step(self, reasons: frozenset[Trigger]) -> None:
        leader = self.is_leader()
        self.status.update(leader=leader)
        if not leader:
            return  # only the leader writes; it will be told to resync when it leads
        if reasons & FETCHING and not self._sync(reasons):
            return
        checkout = self._choose(reasons)
        if checkout is not None:
            self._reconcile(checkout, reasons)

    def _sync(self, reasons: frozenset[Trigger]) -> bool:
        """Fetch the source; False when there is nothing to reconcile after a failure."""
        started = self.clock()
        try:
            head = self.source.sync()
        except Exception as exc:  # a bug in the source too: shown, retried, the loop goes on
            if not isinstance(exc, PortsideError):
                self._log_unexpected(exc, f"fetching {self.source.describe()}")
            self.metrics.fetches.inc(result="error")
            self._standing = self._lines(exc)
            self._record_error(exc, revision=None)
            if not isinstance(exc, PortsideError) or exc.temporary:
                self._sync_failed = True
                self._schedule_retry()
            else:
                self._clear_retry()  # retrying cannot help; a new commit (poll or webhook) can
            # Cluster changes and drift are still served from the revision already in force.
            return bool(reasons & {Trigger.WATCH, Trigger.RESYNC}) and self._last_good is not None
        self.metrics.fetches.inc(result="ok")
        self.metrics.fetch_seconds.set(self.clock() - started)
        if self._sync_failed:
            self._sync_failed = False
            self._clear_retry()
        if self._head is None or head.revision != self._head.revision:
            log.info("source %s at revision %s", self.source.describe(), head.revision)
            self._standing = []
        elif self._standing and self._broken != head.revision:
            self._standing = []  # the remote is back, or the head is verified now
        self._head = head
        return True

    def _choose(self, reasons: frozenset[Trigger]) -> Checkout | None:
        head = self._head
        if head is not None and head.revision != self._broken:
            applied = self._last_good is not None and self._last_good.revision == head.revision
            if applied and not reasons & FORCING:
                return None  # already in force, and nothing says the live world moved
            return head
        # The head cannot be applied: serve cluster changes and drift repair from the last good one.
        if self._last_good is not None and reasons & (FORCING - {Trigger.RETRY}):
            return self._refreshed(self._last_good)
        return None

    def _refreshed(self, checkout: Checkout) -> Checkout | None:
        if checkout.root.is_dir():
            return checkout
        try:
            return self.source.checkout(checkout.revision)
        except Exception as exc:
            log.warning("cannot restore the last good revision %s: %s", checkout.revision,
                        "; ".join(self._lines(exc)))
            return None

    def _reconcile(self, checkout: Checkout, reasons: frozenset[Trigger]) -> None:
        why = ",".join(sorted(r.value for r in reasons))
        log.info("reconciling revision %s (%s)", checkout.revision, why)
        started = self.clock()
        self.status.update(lastAttemptedRevision=checkout.revision)
        try:
            outcome = self.reconcile_fn(checkout)
        except Exception as exc:  # a bug or an API error must never end the controller
            self.reconciles += 1
            self._finish(started, error_kind(exc))
            if not isinstance(exc, PortsideError):
                self._log_unexpected(exc, f"the reconcile of {checkout.revision}")
            if isinstance(exc, ConfigError | SignatureError):
                self._broken = checkout.revision
                self._standing = self._lines(exc)
                self._clear_retry()
            self._record_error(exc, revision=checkout.revision)
            if not isinstance(exc, ConfigError | SignatureError | PlanRefused):
                self._schedule_retry()  # those need a human or a new commit; the rest may pass
            return
        self.reconciles += 1
        self._finish(started, "success")
        self._last_good = checkout
        recheck = getattr(outcome, "recheck_after", None)
        with self._cond:  # every reconcile looks the address up, so the next look is from now
            self._next_address = None if recheck is None else self.clock() + recheck
        if self._head is not None and checkout.revision == self._head.revision and not self._sync_failed:
            self._broken = None
            self._standing = []
        self.metrics.changes.inc(outcome.changes_applied)
        self.metrics.applied_revision(checkout.revision)
        apply_errors = list(outcome.errors)
        if apply_errors:
            # Part of the plan failed (a 5xx on one record, say): the rest is in force, retry the rest.
            self.metrics.errors.inc(len(apply_errors), kind="apply")
            self._schedule_retry()
        elif not self._sync_failed:  # a dead remote keeps its own retry going
            self._clear_retry()
        self.status.update(lastAppliedRevision=checkout.revision, lastPlanSummary=dict(outcome.summary),
                           errors=self._standing + [self._redact(e) for e in apply_errors],
                           lastReconcileTime=time.time())
        self.status.keep_outcome(outcome)
        if outcome.changes_applied:
            log.info("applied %d change(s) from revision %s", outcome.changes_applied, checkout.revision)

    def _finish(self, started: float, result: str) -> None:
        self.metrics.reconciles.inc(result=result)
        self.metrics.observe_duration(self.clock() - started)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _lines(self, exc: BaseException) -> list[str]:
        return [self._redact(line) for line in error_lines(exc)]

    def _log_unexpected(self, exc: BaseException, during: str) -> None:
        """The traceback, for whoever fixes the bug, with secrets masked like everything else."""
        trace = "".join(traceback.format_exception(exc)).rstrip()
        log.error("unexpected error during %s:\n%s", during, self._redact(trace))

    def _record_error(self, exc: BaseException, revision: str | None) -> None:
        kind = error_kind(exc)
        lines = self._lines(exc)
        self.metrics.errors.inc(kind=kind)
        shown = lines if lines == self._standing else self._standing + lines
        self.status.update(errors=shown, lastReconcileTime=time.time())
        where = f"revision {revision}" if revision else self.source.describe()
        log.warning("%s: %s error: %s", where, kind, "; ".join(lines[:5]))
        reason = EVENT_REASONS.get(kind)
        if self.events is None or reason is None:
            return
        message = f"{where}: " + "\n".join(lines[:20])
        if self._last_event == (reason, message):  # one Event per problem, not one per poll
            return
        self._last_event = (reason, message)
        try:
            self.events("Warning", reason, message)
        except Exception as error:  # recording an Event is best effort: the status still says it
            log.warning("could not record event %s: %s", reason, self._redact(str(error)))

    def _schedule_retry(self) -> None:
        self._failures += 1
        delay = self.timing.backoff.delay(self._failures)
        with self._cond:
            self._retry_at = self.clock() + delay
        log.info("retrying in %.1fs (failure %d)", delay, self._failures)

    def _clear_retry(self) -> None:
        self._failures = 0
        with self._cond:
            self._retry_at = None
