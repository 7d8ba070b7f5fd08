"""The CLI/demo evaluation table: intervals, denominators and one caveat line."""

from __future__ import annotations

import io

from rich.console import Console

from atrisk import progress
from atrisk.progress import caveat_line, print_evaluation


def _row(auc, lo, hi, n_pos, n_students=40):
    return {"auc": auc, "auc_ci": [lo, hi], "n_pos": n_pos, "n_students": n_students,
            "recall_at_top": 0.5, "recall_at_top_ci": [0.3, 0.7], "brier": 0.0312}


METRICS = {
    "per_horizon": {"1": _row(0.71, 0.52, 0.88, 6), "2": _row(0.70, 0.55, 0.84, 12),
                    "7": _row(0.66, 0.58, 0.74, 45)},
    "auc": {"gbdt": {"1": 0.71, "2": 0.70, "7": 0.66}},
    "caveats": ["Δ=1: only 6 positive pair(s) …", "Δ=2: only 12 positive pair(s) …"],
    "flag_share": 0.3, "level": 0.95,
    "temporal": {"cut": "2024-03-20", "n_students": 30,
                 "per_horizon": {"1": _row(0.61, 0.45, 0.77, 9)}},
}


def _printed(monkeypatch, metrics: dict) -> str:
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, width=160))
    print_evaluation(metrics)
    return buf.getvalue()


def test_table_prints_intervals_denominators_and_one_caveat_line(monkeypatch):
    text = _printed(monkeypatch, METRICS)
    assert "0.710 [0.52–0.88]" in text and "0.660 [0.58–0.74]" in text
    assert "0.500 [0.30–0.70]" in text  # recall of the top 30 % with its interval
    assert "0.0312" in text  # Brier
    assert text.count("caveat:") == 1
    line = next(x for x in text.splitlines() if "caveat:" in x)
    assert "Δ = 1–2" in line and "6–12" in line and "40 held-out students" in line
    assert "temporal hold-out, cut 2024-03-20" in text and "0.610 [0.45–0.77]" in text


def test_no_caveat_when_every_horizon_has_20_positive_pairs(monkeypatch):
    per = {"7": _row(0.66, 0.58, 0.74, 45), "14": _row(0.64, 0.57, 0.71, 20)}
    text = _printed(monkeypatch, {**METRICS, "per_horizon": per, "caveats": [],
                                  "temporal": None})
    assert "caveat" not in text
    assert caveat_line([], per) is None


def test_caveat_names_scattered_horizons():
    per = {"1": _row(0.7, 0.5, 0.9, 3), "3": _row(0.7, 0.5, 0.9, 30),
           "5": _row(0.7, 0.5, 0.9, 19)}
    assert caveat_line([], per).startswith("Δ = 1, 5 rest on fewer than 20 positive pairs (3–19")
