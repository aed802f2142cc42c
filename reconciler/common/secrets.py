"""Reading secrets (tokens, webhook secrets, heartbeat keys) from files, never echoing them.

Messages name the flag and the file, never the content: a secret must not reach a log or an error.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.common.errors import UsageError


def read_secret_file(flag: str, path: Path) -> bytes:
    """The stripped content of ``path`` (given with ``flag``); unreadable or empty is a UsageError."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    if not secret:
        raise UsageError(f"{flag} {path}: the file is empty")
    return secret
