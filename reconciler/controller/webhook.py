"""``POST /hooks/git``: a push notification, signed with HMAC-SHA256 over the raw body.

GitHub sends ``X-Hub-Signature-256: sha256=<hex>``; any other sender (Gitea, GitLab via a relay,
a CI job) can send the same format as ``X-Portside-Signature-256``. Every signature header present
must verify, compared in constant time. A good delivery asks for an immediate fetch; the payload
itself is not trusted for anything else (the fetch finds what changed).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from reconciler.common.httpserve import Request, Response
from reconciler.common.secrets import read_secret_file
from reconciler.controller.status import ControllerMetrics

log = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Portside-Signature-256")
SECRET_ENV = "PORTSIDE_WEBHOOK_SECRET"
PREFIX = "sha256="


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    MISSING = "missing_signature"
    BAD = "bad_signature"


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender computes: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, headers: Mapping[str, str]) -> Verdict:
    """Check the signature headers of one delivery (header names are case-insensitive)."""
    by_name = {name.lower(): value for name, value in headers.items()}
    present = [by_name[h.lower()] for h in SIGNATURE_HEADERS if h.lower() in by_name]
    if not present:
        return Verdict.MISSING
    expected = sign(secret, body).encode()
    for value in present:
        candidate = value.strip()
        if not candidate.startswith(PREFIX):
            return Verdict.BAD
        # compare_digest takes the same time whatever the first differing byte is.
        if not hmac.compare_digest(expected, PREFIX.encode() + candidate[len(PREFIX):].lower().encode()):
            return Verdict.BAD
    return Verdict.ACCEPTED


def load_secret(path: Path | None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The webhook secret from ``--webhook-secret-file`` or ``$PORTSIDE_WEBHOOK_SECRET``."""
    environ = os.environ if environ is None else environ
    if path is None:
        value = environ.get(SECRET_ENV, "").strip()
        return value.encode() if value else None
    return read_secret_file("--webhook-secret-file", path)


def webhook_handler(secret: bytes | None, on_push: Callable[[Request], None],
                    metrics: ControllerMetrics) -> Callable[[Request], Response]:
    """The route for ``POST /hooks/git``."""

    def handle(request: Request) -> Response:
        if secret is None:
            metrics.webhooks.inc(result="disabled")
            return Response.text(403, "webhooks are disabled: start with --webhook-secret-file\n")
        verdict = verify_signature(secret, request.body, request.headers)
        metrics.webhooks.inc(result=verdict.value)
        if verdict is not Verdict.ACCEPTED:
            log.warning("webhook refused: %s", verdict.value.replace("_", " "))
            return Response.text(401, f"{verdict.value.replace('_', ' ')}\n")
        event = {k.lower(): v for k, v in request.headers.items()}.get("x-github-event", "")
        if event == "ping":
            return Response.json(200, {"status": "pong"})
        on_push(request)
        return Response.json(202, {"status": "accepted"})

    return handle


FORWARDED_HEADER = "X-Portside-Forwarded"
_FORWARDED_HEADERS = ("content-type", "x-github-event", "x-github-delivery", "x-hub-signature-256",
                      "x-portside-signature-256")


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
