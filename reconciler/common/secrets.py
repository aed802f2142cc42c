"""Reading secrets (tokens, webhook secrets, heartbeat keys) from files, never echoing them.

Messages name the flag and the file, never the content: a secret must not reach a log or an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.common.errors import UsageError

# Environment variables that hold a secret (see DESIGN.md): their values never reach output.
SECRET_ENV = ("CLOUDFLARE_API_TOKEN", "PORTSIDE_GIT_TOKEN", "PORTSIDE_GIT_SSH_KEY", "PORTSIDE_WEBHOOK_SECRET",
              "PORTSIDE_HEARTBEAT_KEY")
MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def read_secret_file(flag: str, path: Path) -> bytes:
    """The stripped content of ``path`` (given with ``flag``); unreadable or empty is a UsageError."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    if not secret:
        raise UsageError(f"{flag} {path}: the file is empty")
    return secret


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret environment variables that are set."""
    environ = os.environ if environ is None else environ
    return [value.strip() for name in SECRET_ENV if (value := environ.get(name, "")).strip()]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and any ``user:password@`` in a URL, replaced by ``***``.

    Longest first, so a secret containing a shorter one is masked whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
