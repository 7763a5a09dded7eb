"""Python's cycle collector paused while a bulk loop builds rows.

CPython frees an object when its last reference goes; the cycle collector exists for
objects that refer to each other in a loop. It runs after every 700 new containers
(lists, tuples, dicts) and walks the young ones, and every tenth and hundredth run walks
older ones, up to every object the process holds. A loop that reads a million CSV
records or builds a million event rows creates containers by the million and keeps a
batch of them alive between two writes, so the collector walks the same batch again
and again and finds nothing to free: a fifth of such a loop's time, measured. Memory
stays flat while it is paused (reference counting frees each batch), and the collector
runs again when the loop ends. Paused: the import's reading of its file
(contacts/imports/staging.py) and an engagement batch (workflows/scoring.py).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cycle collector for the block; restore it as it was (nested blocks too)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
