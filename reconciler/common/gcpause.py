"""Pausing the cyclic garbage collector around bounded, allocation-heavy pure work.

Loading a repo and planning allocate hundreds of thousands of small acyclic objects over a large
long-lived heap; every generation-2 pass rescans that heap, which doubled the time of a
10,000-Service load or plan. Reference counting still frees everything at once; the collector is
only deferred until the work is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
