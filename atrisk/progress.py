"""Terminal output: the console, Rich progress bars (off with ``--quiet``/``--json``), tables."""

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
from rich.table import Table

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


def print_auc_table(
    aucs: dict[str, dict[str, float | None]], n_students: int | None = None
) -> None:
    """Print AUC per horizon: one row per Δ, one column per model (fits 80 columns)."""
    if not aucs:
        return
    models = list(aucs)
    deltas = sorted({int(d) for m in models for d in aucs[m]})
    who = f"{n_students} held-out students" if n_students else "held-out students"
    table = Table(title=f"AUC by horizon Δ (days), {who}")
    table.add_column("Δ", justify="right")
    for m in models:
        table.add_column(m, justify="right")
    for d in deltas:
        cells = []
        for m in models:
            v = aucs[m].get(str(d), aucs[m].get(d))
            cells.append("—" if v is None else f"{v:.3f}")
        table.add_row(str(d), *cells)
    console.print(table)
