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
from collections.abc import Callable, Mapping
from pathlib import Path

from reconciler.controller.status import ControllerMetrics
from reconciler.errors import UsageError
from reconciler.httpserve import Request, Response

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
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise UsageError(f"--webhook-secret-file {path}: cannot read it ({exc.strerror})") from exc
    if not secret:
        raise UsageError(f"--webhook-secret-file {path}: the file is empty")
    return secret


def webhook_handler(secret: bytes | None, on_push: Callable[[], None],
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
        on_push()
        return Response.json(202, {"status": "accepted"})

    return handle
