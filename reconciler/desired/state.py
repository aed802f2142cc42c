"""DesiredState: the validated documents of one revision, as the planner consumes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.common.errors import Diagnostic
from reconciler.desired.models import (
    DynamicDNS,
    IPAddressPool,
    L2Advertisement,
    ServiceExposure,
    Tunnel,
    TunnelRoute,
)


@dataclass(frozen=True, order=True, slots=True)
class Origin:
    """Where a document (or a field of it) was declared: 1-based line and column.

    Slots: a large repo keeps one per document (a quarter of the memory without them).
    """

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class DesiredState:
    """Everything one revision of the repo declares, already validated.

    Tuples are sorted by name, so everything computed from a DesiredState is deterministic
    whatever the file layout. ``origins`` maps (kind, name) to where the document was declared,
    for messages that point the user at the file.
    """

    pools: tuple[IPAddressPool, ...] = ()
    advertisements: tuple[L2Advertisement, ...] = ()
    exposures: tuple[ServiceExposure, ...] = ()
    tunnels: tuple[Tunnel, ...] = ()
    routes: tuple[TunnelRoute, ...] = ()
    dynamic_dns: tuple[DynamicDNS, ...] = ()
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict, compare=False)
    revision: str | None = None
    # What loading found that is not an error (MetalLB kinds portside does not support, skipped;
    # file names relative to the repo), and a one-line account of the documents that were not
    # portside's ("12 documents of other kinds skipped").
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
    skipped: str | None = field(default=None, compare=False)

    def pool(self, name: str) -> IPAddressPool | None:
        return next((p for p in self.pools if p.metadata.name == name), None)

    def tunnel(self, name: str) -> Tunnel | None:
        return next((t for t in self.tunnels if t.metadata.name == name), None)
