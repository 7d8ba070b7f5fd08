"""Terminal rendering shared by the CLI commands and the demo."""

from __future__ import annotations

from rich.table import Table

from atrisk.progress import console


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
