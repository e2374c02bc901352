"""Pausing Python's cyclic garbage collector around the analyses that make many small objects on large graphs."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


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


def with_cycle_collector_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` run with the cyclic collector paused (a whole command: load, analysis, rewrite and write of a deep
    model make hundreds of thousands of objects, and every collection in between walked them all again)."""

    @functools.wraps(fn)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        with cycle_collector_paused():
            return fn(*args, **kwargs)

    return paused


def free_cycles() -> None:
    """Free the unreachable cycles now (with the collector paused they wait): before onnxruntime loads the models
    to check, so that what the rewrite held is gone even where it was part of a cycle."""
    gc.collect()
