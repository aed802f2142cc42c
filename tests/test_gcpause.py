"""gc_paused: the collector is off inside, the survivors are frozen after, and cycles left by
earlier pauses are still reclaimed (the long-running controller must not leak)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from reconciler.common import gcpause
from reconciler.common.gcpause import FULL_COLLECTION_EVERY, gc_paused


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_the_collector_is_off_inside_and_nested_pauses_leave_it_off() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_survivors_are_frozen_so_later_collections_skip_them() -> None:
    gc.unfreeze()
    with gc_paused():
        kept = [Node() for _ in range(1000)]
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_count()[0] < 100  # the first allocations afterwards do not scan the pause's work


def test_a_disabled_collector_stays_disabled_and_nothing_is_frozen() -> None:
    gc.unfreeze()
    gc.disable()
    with gc_paused():
        Node()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_cycles_frozen_by_a_pause_are_reclaimed_within_a_few_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpause, "_pauses", 0)
    with gc_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
    gc.collect()
    assert alive() is not None, "frozen: a collection alone does not see the cycle"
    for _ in range(FULL_COLLECTION_EVERY):
        with gc_paused():
            pass
    assert alive() is None, "the periodic full collection reclaims it"
