"""``POST /hooks/git``: a push notification, signed with HMAC-SHA256 over the raw body.

GitHub sends ``X-Hub-Signature-256: sha256=<hex>``; any other sender (Gitea, GitLab via a relay,
a CI job) can send the same format as ``X-Portside-Signature-256``. Every signature header present
must verify, compared in constant time. A good delivery asks for an immediate fetch; the payload
itself is not trusted for anything else (the fetch finds what changed).

Replays. A signature says who wrote a body, not when, so a captured delivery verifies forever.
Verified deliveries therefore pass a :class:`DeliveryGate` that acts on each at most once:

- GitHub's ``X-GitHub-Delivery`` id is remembered (the last few thousand), and so is the digest of
  the body it came with: the id is not signed, but GitHub bodies are unique per event (they carry
  the commits and the push time), so a replay with a forged or stripped id is caught by its body.
  A redelivery (same id) of a delivery already acted on is answered 200 "duplicate": it is
  handled, and GitHub should mark it so.
- A sender without an id may sign a timestamp: ``X-Portside-Timestamp: <unix seconds>`` and
  ``X-Portside-Signature-256`` over ``<timestamp>.<body>``. It is refused outside
  ``TIMESTAMP_WINDOW_S`` of our clock and remembered within it, so a replay is never acted on.
- A sender with neither (a fixed body from a CI job) cannot be told from its replay: it gets the
  rate limit below and nothing more (documented in the README).

Rate. Triggers pass a token bucket (a burst of ``burst``, then one per ``interval``). A valid push
beyond it is accepted (202 "coalesced") and folded into one trigger fired when the next token
comes: GitHub never redelivers on its own, so a 429 would leave that push to the next poll and
mark the delivery failed, while one fetch after a burst sees every commit of the burst anyway.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.common.httpserve import Request, Response
from reconciler.common.secrets import read_secret_file
from reconciler.controller.status import ControllerMetrics

log = logging.getLogger(__name__)

HUB_SIGNATURE = "X-Hub-Signature-256"
PORTSIDE_SIGNATURE = "X-Portside-Signature-256"
SIGNATURE_HEADERS = (HUB_SIGNATURE, PORTSIDE_SIGNATURE)
DELIVERY_HEADER = "X-GitHub-Delivery"
TIMESTAMP_HEADER = "X-Portside-Timestamp"
TIMESTAMP_WINDOW_S = 300.0  # how far a signed timestamp may be from our clock, either way
SECRET_ENV = "PORTSIDE_WEBHOOK_SECRET"
PREFIX = "sha256="


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    MISSING = "missing_signature"
    BAD = "bad_signature"
    STALE = "stale_timestamp"


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender computes: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def sign_with_timestamp(secret: bytes, timestamp: int, body: bytes) -> str:
    """``X-Portside-Signature-256`` of a sender that also sends ``X-Portside-Timestamp``."""
    return sign(secret, str(timestamp).encode() + b"." + body)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def verify_signature(secret: bytes, body: bytes, headers: Mapping[str, str], now: float | None = None) -> Verdict:
    """Check the signature headers of one delivery (header names are case-insensitive).

    With ``X-Portside-Timestamp``, ``X-Portside-Signature-256`` covers ``<timestamp>.<body>`` and the
    timestamp must be within ``TIMESTAMP_WINDOW_S`` of ``now``.
    """
    by_name = _lower(headers)
    timestamp_text = by_name.get(TIMESTAMP_HEADER.lower())
    if timestamp_text is not None:
        timestamp_text = timestamp_text.strip()
        if not timestamp_text.isdigit() or len(timestamp_text) > 12:
            return Verdict.BAD
    present = [(h, by_name[h.lower()]) for h in SIGNATURE_HEADERS if h.lower() in by_name]
    if not present:
        return Verdict.MISSING
    for header, value in present:
        content = body
        if header == PORTSIDE_SIGNATURE and timestamp_text is not None:
            content = timestamp_text.encode() + b"." + body
        candidate = value.strip()
        if not candidate.startswith(PREFIX):
            return Verdict.BAD
        # compare_digest takes the same time whatever the first differing byte is.
        expected = sign(secret, content).encode()
        if not hmac.compare_digest(expected, PREFIX.encode() + candidate[len(PREFIX):].lower().encode()):
            return Verdict.BAD
    if timestamp_text is not None:
        if PORTSIDE_SIGNATURE.lower() not in by_name:
            return Verdict.BAD  # a timestamp no signature covers proves nothing
        now = time.time() if now is None else now
        if abs(now - int(timestamp_text)) > TIMESTAMP_WINDOW_S:
            return Verdict.STALE
    return Verdict.ACCEPTED


def load_secret(path: Path | None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The webhook secret from ``--webhook-secret-file`` or ``$PORTSIDE_WEBHOOK_SECRET``."""
    environ = os.environ if environ is None else environ
    if path is None:
        value = environ.get(SECRET_ENV, "").strip()
        return value.encode() if value else None
    return read_secret_file("--webhook-secret-file", path)


# --- replays and rate --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryKeys:
    """How a verified delivery is recognised again: ``check`` keys refuse it when one was seen,
    ``record`` keys are remembered once it is taken."""

    check: tuple[str, ...]
    record: tuple[str, ...]


def delivery_keys(headers: Mapping[str, str], body: bytes) -> DeliveryKeys:
    by_name = _lower(headers)
    body_key = "body:" + hashlib.sha256(body).hexdigest()
    delivery = by_name.get(DELIVERY_HEADER.lower(), "").strip()[:128]
    timestamp = by_name.get(TIMESTAMP_HEADER.lower(), "").strip()
    if delivery:
        keys: tuple[str, ...] = ("id:" + delivery, body_key)
        return DeliveryKeys(keys, keys)
    if timestamp:
        key = f"ts:{timestamp}:{body_key}"
        return DeliveryKeys((key, body_key), (key,))
    # Neither: a fixed body may be sent again on purpose, so it is not remembered; it is still
    # refused when it is the body of a GitHub delivery already taken (an id stripped on replay).
    return DeliveryKeys((body_key,), ())


class Admission(enum.Enum):
    TRIGGER = "accepted"
    COALESCED = "coalesced"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class Decision:
    admission: Admission
    # Set on the one coalesced delivery that must schedule the deferred trigger: seconds from now.
    defer_s: float | None = None


class DeliveryGate:
    """Acts on each verified delivery at most once, and triggers at most ``burst`` at once and one
    per ``interval`` after; pure apart from a lock (time is passed in)."""

    def __init__(self, memory: int = 4096, burst: int = 5, interval: float = 6.0) -> None:
        self.memory = memory
        self.burst = burst
        self.interval = interval
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tokens = float(burst)
        self._updated: float | None = None
        self._deferred = False
        self._lock = threading.Lock()

    def admit(self, keys: DeliveryKeys, now: float) -> Decision:
        with self._lock:
            seen = [key for key in keys.check if key in self._seen]
            if seen:
                for key in seen:
                    self._seen.move_to_end(key)
                return Decision(Admission.REPLAYED)
            for key in keys.record:
                self._seen[key] = None
                self._seen.move_to_end(key)
            while len(self._seen) > self.memory:
                self._seen.popitem(last=False)
            if self._updated is not None:
                self._tokens = min(float(self.burst), self._tokens + (now - self._updated) / self.interval)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return Decision(Admission.TRIGGER)
            if self._deferred:
                return Decision(Admission.COALESCED)
            # Spend the next token now; the deferred trigger fires when it would have come.
            self._tokens -= 1.0
            self._deferred = True
            return Decision(Admission.COALESCED, defer_s=-self._tokens * self.interval)

    def deferred_fired(self) -> None:
        with self._lock:
            self._deferred = False


def webhook_handler(secret: bytes | None, on_push: Callable[[Request], None], metrics: ControllerMetrics,
                    gate: DeliveryGate | None = None,
                    clock: Callable[[], float] = time.monotonic) -> Callable[[Request], Response]:
    """The route for ``POST /hooks/git``."""
    gate = gate or DeliveryGate()
    lock = threading.Lock()
    coalesced: list[Request] = []  # the newest coalesced delivery, handed on when the timer fires

    def fire() -> None:
        with lock:
            request = coalesced.pop() if coalesced else None
            coalesced.clear()
        gate.deferred_fired()
        if request is not None:
            on_push(request)

    def handle(request: Request) -> Response:
        if secret is None:
            metrics.webhooks.inc(result="disabled")
            return Response.text(403, "webhooks are disabled: start with --webhook-secret-file\n")
        verdict = verify_signature(secret, request.body, request.headers)
        if verdict is not Verdict.ACCEPTED:
            metrics.webhooks.inc(result=verdict.value)
            log.warning("webhook refused: %s", verdict.value.replace("_", " "))
            return Response.text(401, f"{verdict.value.replace('_', ' ')}\n")
        if _lower(request.headers).get("x-github-event", "") == "ping":
            metrics.webhooks.inc(result=verdict.value)
            return Response.json(200, {"status": "pong"})
        decision = gate.admit(delivery_keys(request.headers, request.body), clock())
        metrics.webhooks.inc(result=decision.admission.value)
        if decision.admission is Admission.REPLAYED:
            log.warning("webhook delivery already taken: not acted on again")
            return Response.json(200, {"status": "duplicate"})
        if decision.admission is Admission.TRIGGER:
            on_push(request)
            return Response.json(202, {"status": "accepted"})
        with lock:
            coalesced[:] = [request]
        if decision.defer_s is not None:
            timer = threading.Timer(decision.defer_s, fire)
            timer.daemon = True
            timer.start()
        return Response.json(202, {"status": "coalesced"})

    return handle


FORWARDED_HEADER = "X-Portside-Forwarded"
_FORWARDED_HEADERS = ("content-type", "x-github-event", "x-github-delivery", "x-hub-signature-256",
                      "x-portside-signature-256", "x-portside-timestamp")


def is_forwarded(request: Request) -> bool:
    return any(k.lower() == FORWARDED_HEADER.lower() for k in request.headers)


def forward_push(address: str, request: Request, timeout: float = 3.0) -> bool:
    """Hand a verified push on to the leader, signature and all (it verifies again); a forwarded
    push is never forwarded twice, so two replicas that disagree on the leader cannot loop."""
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_HEADERS}
    headers[FORWARDED_HEADER] = "1"
    outgoing = urllib.request.Request(f"http://{address}/hooks/git", data=request.body, headers=headers,
                                      method="POST")
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError) as exc:
        log.warning("could not forward the webhook to the leader at %s: %s", address, exc)
        return False
