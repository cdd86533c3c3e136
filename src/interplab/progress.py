"""Progress that is visible wherever the output goes.

On a terminal, long work shows a rich progress bar. When the output goes to a file or a CI log,
rich draws nothing until the end (a live display needs a terminal), so a run would look hung for
minutes; there, :class:`LineProgress` prints one plain line when a task starts, at every tenth of
its work (at most one line per ``min_interval`` seconds), after ``heartbeat`` seconds of work
without a line (so a long tenth is not minutes of silence), and when it ends. Work reports its
progress per batch (a harvest's token counts through :class:`TaskAdvance`), so lines come at batch
granularity and never once per item.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class LineProgress:
    """The subset of :class:`rich.progress.Progress` the studies use, as plain log lines."""

    def __init__(self, console: Console, min_interval: float = 5.0,
                 heartbeat: float = 12.0) -> None:
        self.console = console
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        """A task of ``total`` steps; ``unit=`` names them in the lines (a rich ``Progress``
        keeps it as a field of the task)."""
        task_id = len(self._tasks)
        now = time.perf_counter()
        unit = str(fields.get("unit", "steps"))
        self._tasks[task_id] = {"description": description, "total": total, "done": 0.0,
                                "start": now, "printed_at": now, "printed_tenth": 0,
                                "unit": unit}
        size = f" ({total:g} {unit})" if total else ""
        self.console.print(f"{description}: started{size}", highlight=False)
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self._tasks[task_id]
        task["done"] += advance
        total = task["total"]
        now = time.perf_counter()
        elapsed = now - task["start"]
        if total and task["done"] >= total:
            self.console.print(f"{task['description']}: {task['done']:g}/{total:g} "
                               f"{task['unit']} done in {elapsed:.0f} s", highlight=False)
            task["total"] = None  # report completion once
            return
        tenth = int(10 * task["done"] / total) if total else 0
        quiet_for = now - task["printed_at"]
        if ((tenth > task["printed_tenth"] and quiet_for >= self.min_interval)
                or quiet_for >= self.heartbeat):
            task["printed_tenth"], task["printed_at"] = max(tenth, task["printed_tenth"]), now
            done = (f"{task['done']:g}/{total:g}" if total else f"{task['done']:g}") + \
                f" {task['unit']}"
            self.console.print(f"{task['description']}: {done} ({elapsed:.0f} s)",
                               highlight=False)


class TaskAdvance:
    """A progress sink with tqdm's ``update(n)``, the interface a harvest reports each batch
    through (its token count), forwarded to ``task`` of a rich ``Progress`` or a
    :class:`LineProgress`."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress = progress
        self.task = task

    def update(self, n: float = 1) -> None:
        self.progress.advance(self.task, n)


def progress_display(console: Console, *, enabled: bool = True) -> Progress | LineProgress:
    """A rich bar on a terminal, :class:`LineProgress` elsewhere, a silent bar when disabled."""
    if enabled and not console.is_terminal:
        return LineProgress(console)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    return Progress(*columns, console=console, disable=not enabled, transient=False)


_SINK: ContextVar[Callable[[float], None] | None] = ContextVar("interplab_progress", default=None)


@contextlib.contextmanager
def reporting(progress: Progress | LineProgress, description: str, *, total: float | None = None,
              unit: str = "rows") -> Iterator[None]:
    """Within the block, every :func:`tick` of lower-level code (the intervention engine's batch
    loops) advances a task ``description`` of ``progress``: a study shows the progress of work
    whose batches it does not run itself, without passing a callback through every call."""
    task = progress.add_task(description, total=total, unit=unit)
    token = _SINK.set(lambda n: progress.advance(task, n))
    try:
        yield
    finally:
        _SINK.reset(token)


def tick(n: float = 1) -> None:
    """Report ``n`` units of work done to the enclosing :func:`reporting` block (none: nothing)."""
    sink = _SINK.get()
    if sink is not None:
        sink(n)


def counted(slices: Iterator[slice] | list[slice]) -> Iterator[slice]:
    """Yield ``slices`` and :func:`tick` each one's length once the loop body has run on it."""
    for sl in slices:
        yield sl
        tick(sl.stop - sl.start)
