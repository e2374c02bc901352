"""Rich progress bars on stderr for the steps the API reports (see onnxgrow.progress); CLI only.

A step's bar appears once the step has run for `delay` seconds, so quick steps and small models print
nothing; `on_stderr()` gives None (no callback at all) when stderr is not a terminal, which keeps
pipes, logs and tests free of bar output.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, Task, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from .progress import STEPS


class _DelayedProgress(Progress):
    """A rich Progress that renders only the tasks that have run for at least `delay` seconds."""

    delay: float = 1.0

    def get_renderables(self) -> Iterable[RenderableType]:
        shown = [t for t in self.tasks if t.visible and _duration(t) >= self.delay]
        yield self.make_tasks_table(shown)


def _duration(task: Task) -> float:
    """How long a step ran (finished) or has been running."""
    took = task.finished_time if task.finished else task.elapsed
    return took or 0.0


class ProgressBars:
    """A `ProgressFn` drawing one bar per step; use as a context manager around the API call."""

    def __init__(self, console: Console | None = None, delay: float = 1.0) -> None:
        self._progress = _DelayedProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
            refresh_per_second=8,
        )
        self._progress.delay = delay
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "ProgressBars":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, step: str, done: int, total: int) -> None:
        task = self._tasks.get(step)
        if task is None or (done == 0 and self._task(task).finished):
            # a step that starts again (a second verification) gets a fresh bar
            task = self._progress.add_task(STEPS.get(step, step), total=max(total, 1))
            self._tasks[step] = task
        self._progress.update(task, completed=done, total=max(total, 1))

    def _task(self, task: TaskID) -> Task:
        return next(t for t in self._progress.tasks if t.id == task)


@contextmanager
def on_stderr(delay: float = 1.0) -> Iterator[ProgressBars | None]:
    """Progress bars while the block runs when stderr is a terminal; else None (nothing drawn or called)."""
    if not sys.stderr.isatty():
        yield None
        return
    with ProgressBars(delay=delay) as bars:
        yield bars
