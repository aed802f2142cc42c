"""A local directory as the source (``portside run --source ./dir``): re-plan on every save.

Each sync snapshots the YAML files into the cache, named by a digest of their paths and contents.
The reconcile reads the snapshot, so an editor saving half-way through a load cannot mix two
versions, and the revision changes exactly when a YAML file does.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import watchfiles

from reconciler.common.errors import SourceError, UsageError
from reconciler.source import Checkout

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
KEEP_SNAPSHOTS = 4


def desired_files(root: Path) -> Iterator[Path]:
    """Every YAML file below ``root``, in a stable order, skipping hidden directories.

    Hidden directories hold tool state (``.git``, ``.portside`` with its cloudflared YAML), never
    desired state.
    """
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix in YAML_SUFFIXES and path.is_file():
            yield path


def content_revision(root: Path) -> str:
    """A digest of the YAML files' relative paths and contents: the directory's revision."""
    digest = hashlib.sha256()
    for path in desired_files(root):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return "dir-" + digest.hexdigest()[:32]


def _is_desired_change(_change: watchfiles.Change, path: str) -> bool:
    name = Path(path).name
    return name.endswith(YAML_SUFFIXES) and not name.startswith(".")


class DirectorySource:
    """See :class:`reconciler.source.Source`; ``watch`` reports saves."""

    def __init__(self, path: Path, *, cache_dir: Path) -> None:
        if not path.is_dir():
            raise UsageError(f"--source {path}: not a directory (and not a git URL)")
        self.path = path.resolve()
        key = hashlib.sha256(str(self.path).encode()).hexdigest()[:16]
        self._snapshots = cache_dir / "dir" / key

    def describe(self) -> str:
        return f"directory {self.path}"

    def sync(self) -> Checkout:
        try:
            for _attempt in range(3):  # a file saved while we read it: read again
                revision = content_revision(self.path)
                snapshot = self._snapshot(revision)
                if content_revision(snapshot) == revision:
                    return Checkout(revision, snapshot)
                shutil.rmtree(snapshot, ignore_errors=True)
        except OSError as exc:
            raise SourceError(f"{self.describe()}: cannot read {exc.filename}: {exc.strerror}") from exc
        raise SourceError(f"{self.describe()}: files kept changing while being read")

    def checkout(self, revision: str) -> Checkout:
        snapshot = self._snapshots / revision
        if not snapshot.is_dir():
            raise SourceError(f"{self.describe()}: revision {revision} is no longer in the cache")
        return Checkout(revision, snapshot)

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` after each burst of YAML saves, until ``stop`` is set."""
        for _changes in watchfiles.watch(self.path, watch_filter=_is_desired_change, stop_event=stop,
                                         debounce=100, step=20, raise_interrupt=False):
            on_change()

    def _snapshot(self, revision: str) -> Path:
        target = self._snapshots / revision
        if target.is_dir():
            target.touch()  # keeps it among the newest for pruning
            return target
        self._snapshots.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{revision}.", dir=self._snapshots))
        for path in desired_files(self.path):
            copy = tmp / path.relative_to(self.path)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        try:
            tmp.rename(target)
        except OSError:  # another sync made the same snapshot first
            shutil.rmtree(tmp, ignore_errors=True)
        self._prune(keep=target)
        return target

    def _prune(self, keep: Path) -> None:
        snapshots = sorted((p for p in self._snapshots.iterdir()
                            if p.is_dir() and not p.name.startswith(".")),
                           key=lambda p: p.stat().st_mtime, reverse=True)
        for old in snapshots[KEEP_SNAPSHOTS:]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
