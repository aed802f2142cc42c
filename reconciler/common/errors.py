"""The one exception tree of portside.

Every error a user can cause says what to fix and where. Library errors are wrapped at the
boundary (``raise ... from exc``) and classified: ``temporary`` errors (rate limits, 5xx,
timeouts, a dead remote) are retried on the next run; permanent ones need a human.
Secrets never go into a message: callers pass only names, never token values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in the desired state, pinned to a place in a file.

    ``path`` is the field path inside the document (``spec.addresses[1]``); empty when the
    problem is the document or the file itself.
    """

    file: str
    line: int
    col: int
    message: str
    path: str = field(default="", compare=False)
    # Other places the message names as file:line:col ("first declared at ..."): renamed with
    # the diagnostic's own file by under(), so every location in one message has the same base.
    related: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        field_part = f" {self.path}:" if self.path else ""
        return f"{where}:{field_part} {self.message}"

    def under(self, directory: str) -> Diagnostic:
        """The same problem with its file named below ``directory`` (the one the user named), so a
        terminal or a CI annotation can jump to it from where the command ran."""
        message = self.message
        for file, line, col in self.related:
            shown = os.path.normpath(os.path.join(directory, file))
            message = message.replace(f"{file}:{line}:{col}", f"{shown}:{line}:{col}")
        return replace(self, file=os.path.normpath(os.path.join(directory, self.file)), message=message,
                       related=tuple((os.path.normpath(os.path.join(directory, f)), ln, c)
                                     for f, ln, c in self.related))

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "col": self.col, "path": self.path,
                "message": self.message}


class PortsideError(Exception):
    """Root of every error portside raises on purpose."""

    temporary: bool = False


class ConfigError(PortsideError):
    """The desired state did not load or validate; nothing was planned or written."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        count = len(self.diagnostics)
        head = "\n".join(str(d) for d in self.diagnostics[:20])
        more = f"\n... and {count - 20} more" if count > 20 else ""
        super().__init__(f"{count} error(s) in the desired state:\n{head}{more}")


def shown_under(error: ConfigError, directory: str) -> ConfigError:
    """``error`` with every file named below ``directory`` (see :meth:`Diagnostic.under`)."""
    return ConfigError([d.under(directory) for d in error.diagnostics])


class UsageError(PortsideError):
    """The command line or environment asks for something that cannot work."""


class SourceError(PortsideError):
    """The git (or directory) source could not be read."""

    temporary = True


class SignatureError(SourceError):
    """A commit's signature could not be verified while verification is required."""

    temporary = False


class StateError(PortsideError):
    """The local state directory or a snapshot is unreadable or inconsistent."""


class StateLocked(StateError):
    """Another process holds the local state directory's lock; trying again later can succeed."""

    temporary = True


class ProviderError(PortsideError):
    """A live API (Kubernetes, Cloudflare) refused or failed a call."""

    def __init__(self, message: str, *, temporary: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.status = status


class ConflictError(ProviderError):
    """Optimistic concurrency lost (HTTP 409): re-read and re-plan, never overwrite blindly."""

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True, status=409)


class PlanRefused(PortsideError):
    """The plan is unsafe to apply without an explicit override (mass deletion, say)."""
