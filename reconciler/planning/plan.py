"""The Plan: an ordered list of changes, a value that renders and applies the same way.

A Change names its target (kind + identity), an action, the before and after values (plain,
JSON-able data) and a one-line reason. Providers apply changes by target kind; renderers show
them. ``no-op`` changes are kept in the value (so a converged world can be shown as such) but
left out of the JSON contract and the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

Action = Literal["create", "update", "delete", "no-op", "conflict"]
ACTIONS: tuple[Action, ...] = ("create", "update", "delete", "conflict")

# Target kinds, in apply order: IPs reach Services before routes point at them, and the
# speakers learn an IP before clients are told to use it. Deletions run in reverse order.
KIND_ORDER: tuple[str, ...] = (
    "Service",
    "Announcement",
    "Tunnel",
    "TunnelConfiguration",
    # A connector's token before the pods that read it; its config (TunnelConfiguration) too.
    "ConnectorSecret",
    "ConnectorDeployment",
    "ConnectorBudget",
    "ConnectorUnit",
    "DNSRecord",
)

JSON = Any  # plain JSON-able data: dict/list/str/int/float/bool/None


# Targets and changes are immutable named tuples rather than frozen dataclasses: a plan makes
# two of each per Service, and a frozen dataclass sets every field through object.__setattr__,
# three times slower to build (some 15 ms of a 10,000-Service plan; a named tuple is built in C).


class Target(NamedTuple):
    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


_NO_DETAIL: Mapping[str, JSON] = MappingProxyType({})  # a shared default must not be mutable


class Change(NamedTuple):
    target: Target
    action: Action
    before: JSON = None
    after: JSON = None
    reason: str = ""
    # Provider-only data (record ids, zone ids, resourceVersions): applied but never rendered,
    # and no part of what a change is (equality leaves it out).
    detail: Mapping[str, JSON] = _NO_DETAIL

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and self[:5] == other[:5]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:5])

    def as_dict(self) -> dict[str, JSON]:
        return {
            "target": {"kind": self.target.kind, "id": self.target.id},
            "action": self.action,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Plan:
    """What apply will do, in order. ``artifacts`` carries whole documents a change needs
    written at once (the announcement table, a cloudflared config file), keyed by target."""

    changes: tuple[Change, ...] = ()
    revision: str | None = None
    artifacts: dict[str, JSON] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = ()

    @property
    def actionable(self) -> tuple[Change, ...]:
        """The changes apply will act on (conflicts are shown, never acted on)."""
        return tuple(c for c in self.changes if c.action in ("create", "update", "delete"))

    @property
    def visible(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != "no-op")

    def summary(self) -> dict[str, int]:
        counts = Counter(c.action for c in self.changes)
        return {action: counts.get(action, 0) for action in ACTIONS}

    @property
    def has_changes(self) -> bool:
        return bool(self.visible)

    def as_dict(self) -> dict[str, JSON]:
        """The stable JSON contract of DESIGN.md (no-op changes left out)."""
        return {"changes": [c.as_dict() for c in self.visible], **self.header()}

    def header(self) -> dict[str, JSON]:
        """The contract's fields besides ``changes``: summary, revision (if any), warnings (if any)."""
        out: dict[str, JSON] = {"summary": self.summary()}
        if self.revision is not None:
            out["revision"] = self.revision
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def ordered(changes: list[Change]) -> tuple[Change, ...]:
    """Apply order: creates and updates by kind, then deletes in reverse kind order.

    The sort is stable: within a kind, changes keep the planner's (natural) order.
    Deleting last means a route is removed from the tunnel before its DNS record goes, and a
    Service's IP is withdrawn only after nothing points at it any more.
    """

    ranks: dict[tuple[bool, str], int] = {}  # computed once per (delete?, kind): plans hold 20,000 changes
    last = len(KIND_ORDER)  # the rank of an unknown kind

    def rank(change: Change) -> int:
        key = (change.action == "delete", change.target.kind)
        found = ranks.get(key)
        if found is None:
            # Creates and updates take 0..last by kind; deletes come after all of them, kinds reversed.
            found = ranks[key] = (2 * last + 1 - kind_rank(key[1])) if key[0] else kind_rank(key[1])
        return found

    return tuple(sorted(changes, key=rank))
