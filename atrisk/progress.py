"""Rich progress bars for long work, switched off by ``--quiet``/``--json``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Console for messages and bars: stderr, so ``--json`` output on stdout stays clean.
console = Console(stderr=True)


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **kwargs) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, task_id):
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)

    def update(self, **kwargs) -> None:
        self._progress.update(self._id, **kwargs)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[object]:
    """Show a progress bar while the block runs; yields an object with ``advance(n)``.

    Args:
        description: Text left of the bar.
        total: Number of steps (``None`` when unknown).
        enabled: ``False`` shows nothing (quiet mode, or stderr not a terminal in tests).
    """
    if not enabled:
        yield _NullTask()
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=not sys.stderr.isatty()) as prog:
        yield _Task(prog, prog.add_task(description, total=total))
