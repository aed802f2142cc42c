"""Where the desired state comes from: a git repository or a local directory.

A source hands the controller immutable :class:`Checkout` values: a revision and a directory
holding exactly that revision's files. Nothing reads a working tree that a later fetch could change
under its feet, and the last good revision can be materialized again while a broken one is at the
head of the branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Checkout:
    """One revision of the desired state, on disk. ``root`` is the directory to load from."""

    revision: str
    root: Path


class Source(Protocol):
    """What the controller needs from a source."""

    def sync(self) -> Checkout:
        """Fetch what is new and return the checkout of the followed ref.

        Raises ``SourceError`` (temporary: a dead remote, try again later), ``SignatureError``
        (the head commit is not verified; permanent for that commit) or ``ConfigError`` (the
        revision cannot be loaded at all, e.g. the configured sub-path is missing, or it holds a
        path or a link that leads outside the repository).
        """
        ...

    def checkout(self, revision: str) -> Checkout:
        """Materialize an earlier revision again (the last good one, say), without fetching."""
        ...

    def describe(self) -> str:
        """A name for logs and status, free of credentials."""
        ...


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/portside``, or ``~/.cache/portside``."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "portside"


__all__ = ["Checkout", "Source", "default_cache_dir"]
