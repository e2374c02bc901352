"""Pausing Python's cyclic garbage collector around the analyses that make many small objects on large graphs."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: the analyses make many small objects and few cycles, and each
    collection would walk every object of the loaded model and of the analysis again (a quarter of the analysis
    time at 20k nodes, and more with every object alive: the step times grew faster than the graph).
    Objects are still freed as their last reference goes; cycles wait for the next collection after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
