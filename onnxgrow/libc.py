"""Functions of the C library that Python does not wrap (glibc on Linux), looked up once; None elsewhere."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable


@functools.cache
def glibc_function(
    name: str, argtypes: tuple[Any, ...] | None = None, restype: Any = None
) -> Callable[..., int] | None:
    """glibc's function `name` with its ctypes signature, or None where the C library is not glibc (musl,
    macOS, Windows): the callers then skip what it would do (it only ever saves time or memory)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        call = getattr(ctypes.CDLL("libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None
    if argtypes is not None:
        call.argtypes = list(argtypes)
    if restype is not None:
        call.restype = restype
    return call
