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


def _with_ci(value: float | None, ci: list | None) -> str:
    if value is None:
        return "—"
    if not ci:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.2f}–{ci[1]:.2f}]"


def caveat_line(caveats: list[str], per_horizon: dict, min_pos: int = 20) -> str | None:
    """One line naming the horizons with fewer than ``min_pos`` positive pairs, or ``None``."""
    few = sorted((int(d) for d, r in per_horizon.items()
                  if r.get("n_pos") is not None and r["n_pos"] < min_pos))
    if not few and not caveats:
        return None
    if not few:
        return caveats[0]
    n = [per_horizon[str(d)]["n_pos"] for d in few]
    days = (f"Δ = {few[0]}" if len(few) == 1 else
            f"Δ = {few[0]}–{few[-1]}" if few == list(range(few[0], few[-1] + 1)) else
            "Δ = " + ", ".join(map(str, few)))
    students = per_horizon[str(few[0])].get("n_students")
    return (f"{days} rest on fewer than {min_pos} positive pairs ({min(n)}–{max(n)} among "
            f"{students} held-out students): those AUCs are unstable; read them with "
            "their intervals")


def print_evaluation(metrics: dict) -> None:
    """Print an evaluation: per Δ the AUC with its interval, positives, recall, Brier.

    One row per Δ: the model's AUC with its bootstrap interval (by student), the
    positive pairs and students behind it, recall of the top flagged share with its
    interval and the Brier score of the calibrated probability; then the baselines'
    AUCs, one caveat line naming the horizons with fewer than 20 positive pairs, and
    the temporal hold-out.

    Args:
        metrics: ``EvaluationReport.metrics`` (or its ``to_dict()``).
    """
    per = metrics.get("per_horizon") or {}
    if not per:
        print_auc_table(metrics.get("auc", {}), metrics.get("n_students"))
        return
    level = metrics.get("level", 0.95)
    share = metrics.get("flag_share", 0.3)
    table = Table(title=f"Dropout risk by horizon Δ (days), held-out students, "
                  f"{level:.0%} intervals by student")
    for name in ("Δ", "AUC [CI]", "n_pos", "students", f"recall top {share:.0%} [CI]",
                 "Brier"):
        table.add_column(name, justify="right", no_wrap=True)
    for d in sorted(per, key=int):
        r = per[d]
        table.add_row(d, _with_ci(r.get("auc"), r.get("auc_ci")), str(r.get("n_pos")),
                      str(r.get("n_students")),
                      _with_ci(r.get("recall_at_top"), r.get("recall_at_top_ci")),
                      "—" if r.get("brier") is None else f"{r['brier']:.4f}")
    console.print(table)
    baselines = {m: v for m, v in metrics.get("auc", {}).items() if m != "gbdt"}
    if baselines:
        print_auc_table({"gbdt": metrics["auc"].get("gbdt", {}), **baselines},
                        metrics.get("n_students"))
    line = caveat_line(metrics.get("caveats", []), per)
    if line:
        console.print(f"[yellow]caveat:[/] {line}", highlight=False)
    temporal = metrics.get("temporal")
    if temporal and temporal.get("per_horizon"):
        parts = [f"Δ{d} {_with_ci(r.get('auc'), r.get('auc_ci'))} (n_pos {r.get('n_pos')})"
                 for d, r in sorted(temporal["per_horizon"].items(), key=lambda kv: int(kv[0]))]
        console.print(f"temporal hold-out, cut {temporal['cut']} ({temporal['n_students']} "
                      f"students after it): AUC " + "; ".join(parts), highlight=False)
