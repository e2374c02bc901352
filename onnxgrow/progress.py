"""Progress of long steps: the API calls an optional callback, the CLI turns the calls into progress bars.

A callback is called as `progress(step, done, total)`: `step` names the step (see `STEPS`), `done` and
`total` count its work in the step's own unit (bytes, weights, stages). A step is reported once with
`done == 0` when it starts and once with `done == total` when it ends, and in between as it goes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

ProgressFn = Callable[[str, int, int], None]

#: the steps the API reports, with the words a progress bar shows for them
STEPS = {
    "load": "load model",
    "analyse": "analyse",
    "grow": "grow weights",
    "write": "grow + write weights",
    "verify": "verify (onnxruntime)",
}


@contextmanager
def step(progress: ProgressFn | None, name: str, total: int = 1) -> Iterator[None]:
    """Report `name` as started on entry and as finished on a normal exit (a step without inner progress)."""
    if progress:
        progress(name, 0, total)
    yield
    if progress:
        progress(name, total, total)
