"""What every backend offers the engine: read the live world, apply a plan to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from reconciler.desired.state import DesiredState
from reconciler.planning.live import LiveState
from reconciler.planning.plan import Plan


@dataclass
class ApplyReport:
    """What an apply did: the changes it carried out and the ones that failed (retried next run)."""

    applied: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: ApplyReport) -> None:
        self.applied += other.applied
        self.errors.extend(other.errors)


class Backend(Protocol):
    description: str
    read_only: bool

    def read(self, desired: DesiredState) -> LiveState:
        """The live world, as far as ``desired`` needs it (which tunnels and zones to read)."""
        ...

    def apply(self, plan: Plan) -> ApplyReport:
        """Carry out exactly ``plan``'s actionable changes, in order."""
        ...
