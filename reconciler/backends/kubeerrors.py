"""Kubernetes client errors, wrapped at the boundary into portside's own."""

from __future__ import annotations

import contextlib
import json

from kubernetes.client.exceptions import ApiException

from reconciler.common.errors import ConflictError, ProviderError

RETRYABLE = {429, 500, 502, 503, 504}


def api_error(exc: ApiException, doing: str) -> ProviderError:
    """Wrap a client error: what we were doing, the status and the server's message."""
    status = int(exc.status or 0)
    message = exc.reason or ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(exc.body or "{}").get("message", message)
    if status == 409:
        return ConflictError(f"{doing}: {message}")
    hint = " (check the RBAC rules of portside's ServiceAccount)" if status == 403 else ""
    return ProviderError(f"{doing}: HTTP {status} {message}{hint}", temporary=status in RETRYABLE or status == 0,
                         status=status)
