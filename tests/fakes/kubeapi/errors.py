"""Errors as metav1.Status bodies, and field errors in the real server's message format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fakes.kubeapi.kinds import (
    _REASONS,
    Obj,
    _Kind,
)


class _ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: Obj | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason or _REASONS.get(code, "Unknown"),
                            "code": code}
        if details is not None:
            self.status["details"] = details
        self.code = code
        self.headers = headers or {}


def _details(kind: _Kind, name: str, **extra: Any) -> Obj:
    d: Obj = {"name": name}
    if kind.group:
        d["group"] = kind.group
    d["kind"] = kind.plural
    d.update(extra)
    return d


def _kind_details(kind: _Kind, name: str) -> Obj:
    """Details as NewInvalid gives them: the kind (not the resource) and its group."""
    return {"name": name, **({"group": kind.group} if kind.group else {}), "kind": kind.kind}


def _not_found(kind: _Kind, name: str) -> _ApiError:
    return _ApiError(404, f'{kind.resource} "{name}" not found', details=_details(kind, name))


def _conflict(kind: _Kind, name: str, why: str) -> _ApiError:
    return _ApiError(409, f'Operation cannot be fulfilled on {kind.resource} "{name}": {why}',
                     details=_details(kind, name))


_STALE = "the object has been modified; please apply your changes to the latest version and try again"


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, message)


def _rejected(cause: str) -> _ApiError:
    """422 as NewGenericServerResponse builds it for JSON patch failures."""
    return _ApiError(422, "the server rejected our request due to an error in our request",
                     details={"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]})


@dataclass(frozen=True)
class _GoValue:
    """A value shown as Go's %#v shows it (unquoted), e.g. 0x0 for a uint64 zero."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _FieldError:
    type: str  # Required | Invalid | NotSupported | Duplicate | Forbidden
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        shown = json.dumps(self.value) if isinstance(self.value, str | int | float) else str(self.value)
        if self.type == "Required":
            text = "Required value"
        elif self.type == "Invalid":
            text = f"Invalid value: {shown}"
        elif self.type == "NotSupported":
            text = f"Unsupported value: {shown}"
        elif self.type == "Duplicate":
            return f"Duplicate value: {shown}"
        else:
            text = "Forbidden"
        return f"{text}: {self.detail}" if self.detail else text


def _invalid(kind_name: str, name: str, errors: list[_FieldError], details: Obj | None = None) -> _ApiError:
    parts = [f"{e.field}: {e.body()}" for e in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    d = dict(details or {"name": name, "kind": kind_name})
    d["causes"] = [{"reason": f"FieldValue{e.type}", "message": e.body(), "field": e.field} for e in errors]
    return _ApiError(422, f'{kind_name} "{name}" is invalid: {joined}', details=d)

