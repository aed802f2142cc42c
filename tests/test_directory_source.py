"""The local directory source: content revisions, snapshots and the save watcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from reconciler.common.errors import SourceError, UsageError
from reconciler.source.directory import DirectorySource, content_revision


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_revision_follows_yaml_content_only(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    first = content_revision(tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".portside").mkdir()
    (tmp_path / ".portside" / "tunnel.yml").write_text("tool state, not desired state")
    assert content_revision(tmp_path) == first
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("b: 1\n")
    second = content_revision(tmp_path)
    assert second != first
    (tmp_path / "sub" / "b.yml").rename(tmp_path / "sub" / "c.yml")  # a rename is a change too
    assert content_revision(tmp_path) not in (first, second)


def test_sync_snapshots_and_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.yaml").write_text("a: 1\n")
    source = DirectorySource(repo, cache_dir=tmp_path / "cache")
    first = source.sync()
    assert (first.root / "a.yaml").read_text() == "a: 1\n"
    (repo / "a.yaml").write_text("a: 2\n")
    second = source.sync()
    assert second.revision != first.revision
    assert (first.root / "a.yaml").read_text() == "a: 1\n"
    assert source.checkout(first.revision) == first
    with pytest.raises(SourceError, match="no longer in the cache"):
        source.checkout("dir-unknown")


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        DirectorySource(tmp_path / "missing", cache_dir=tmp_path)


def test_watch_reports_saves(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    source = DirectorySource(repo, cache_dir=tmp_path / "cache")
    seen: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=source.watch, args=(stop, lambda: seen.append(time.monotonic())))
    thread.start()
    try:
        # The watcher is ready once a save is seen; until then keep saving (no fixed sleep).
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            (repo / "a.yaml").write_text(f"a: {time.monotonic()}\n")
            wait_until = time.monotonic() + 0.3
            while not seen and time.monotonic() < wait_until:
                time.sleep(0.01)
        assert seen, "the watcher never reported a save"
        before = len(seen)
        (repo / "ignored.txt").write_text("x")
        (repo / "b.yaml").write_text("b: 1\n")
        saved = time.monotonic()
        wait_for(lambda: len(seen) > before)
        assert seen[-1] - saved < 1.0
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
