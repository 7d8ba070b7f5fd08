"""Evaluation: AUC per horizon Δ, baselines, recall at the flagged share, HTML report.

:func:`evaluate` scores the held-out students' pairs (those in
``model.test_students_``) and fits the baselines on the model's training students.
:func:`write_report` writes ``metrics.json`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from atrisk.training.fit import fit_baselines
from atrisk.training.labels import add_labels, label_column
from atrisk.workspace import write_text

if TYPE_CHECKING:
    from atrisk.training.model import RiskModel

#: Name of the main model in the result tables.
MAIN = "gbdt"
#: Baselines, in report order.
BASELINES = ("lr", "dt", "rf", "gbdt_none")


def _auc(y: np.ndarray, p: np.ndarray) -> tuple[float | None, str | None]:
    if len(y) == 0:
        return None, "no pairs"
    if len(np.unique(y)) < 2:
        return None, f"only one class in the labels ({'all positive' if y[0] else 'no positives'})"
    return float(roc_auc_score(y, p)), None


def recall_at_top(pairs: pd.DataFrame, proba: np.ndarray, label: str, share: float) -> float | None:
    """Share of positive pairs caught when flagging the top ``share`` of students each day.

    Each day ``t`` flags ``max(1, ceil(share * n_t))`` students with the highest
    probability.

    Args:
        pairs: Pairs with ``t`` and the label column.
        proba: Probabilities aligned with ``pairs``.
        label: Label column.
        share: Share of students flagged per day.

    Returns:
        The recall, or ``None`` when there is no positive pair.
    """
    df = pd.DataFrame({"t": pairs["t"].to_numpy(), "p": proba,
                       "y": pairs[label].to_numpy()})
    if df["y"].sum() == 0:
        return None
    df["rank"] = df.groupby("t")["p"].rank(method="first", ascending=False)
    n_t = df.groupby("t")["p"].transform("size")
    k = np.maximum(1, np.ceil(np.round(share * n_t, 9)))
    return float(df.loc[df["rank"] <= k, "y"].sum() / df["y"].sum())


@dataclass
class EvaluationReport:
    """What :meth:`RiskModel.evaluate` measured.

    Attributes:
        metrics: The JSON-ready results: ``evaluated_on``, ``n_pairs``, ``n_students``,
            ``horizons``, ``model_horizon``, ``positive_ratio``, ``auc`` (``{model: {Δ:
            value or None}}``), ``recall_at_top30``, ``flag_share`` and ``notes``.
        failures: Input rows that were rejected (one dict each), when known.
    """

    metrics: dict
    failures: list[dict] = field(default_factory=list)

    def auc(self, model: str = "gbdt") -> dict[int, float | None]:
        """Return the AUC per Δ of ``model`` (``gbdt`` or a baseline name)."""
        return {int(k): v for k, v in self.metrics["auc"].get(model, {}).items()}

    def to_dict(self) -> dict:
        """Return the metrics with the failures, JSON-ready (NaN as ``None``)."""
        return _clean({**self.metrics, "failures": self.failures})

    def write(self, folder: Path | str) -> Path:
        """Write ``metrics.json`` and ``report.html`` into ``folder``; return the HTML path."""
        return write_report(self.to_dict(), folder)


def _model_horizon(model: RiskModel, delta: int) -> int | None:
    trained = model.horizons
    if not trained:
        return None
    if delta in trained:
        return delta
    below = [h for h in trained if h <= delta]
    return max(below) if below else min(trained)


def evaluate(model: RiskModel, pairs: pd.DataFrame, horizons: list[int] | None = None,
             baselines: bool = True) -> EvaluationReport:
    """Evaluate ``model`` on the held-out students' pairs.

    Args:
        model: A fitted :class:`RiskModel`.
        pairs: Pairs of both training and held-out students (features, ``student_id``,
            ``t``, ``dropout_time``).  When none belongs to ``model.test_students_`` (a
            fresh data set), every pair is evaluated and ``evaluated_on`` says so.
        horizons: Δ values (days); default the model's configured horizons.  A Δ without
            its own model uses the nearest trained horizon ≤ Δ (``model_horizon``).
        baselines: Also fit and score LR / DT / RF / LightGBM-without-augmentation on the
            model's training students.

    Returns:
        The report; its ``metrics`` say why a value is null in ``notes``.
    """
    cfg = model.training
    horizons = sorted(set(horizons or cfg.horizons))
    labelled = add_labels(pairs, horizons)
    sid = labelled["student_id"].astype(str)
    test_mask = sid.isin(set(model.test_students_))
    notes: list[str] = []
    if test_mask.any():
        evaluated_on = "held-out students"
        test = labelled[test_mask]
    else:
        evaluated_on = "all given pairs (none belongs to the model's held-out students)"
        test = labelled
    train = labelled[sid.isin(set(model.train_students_))]
    result: dict = {
        "evaluated_on": evaluated_on,
        "n_pairs": int(len(test)),
        "n_students": int(test["student_id"].nunique()),
        "flag_share": cfg.flag_share,
        "horizons": horizons,
        "model_horizon": {},
        "positive_ratio": {},
        "auc": {MAIN: {}},
        "recall_at_top30": {},
        "notes": notes,
    }
    if baselines:
        for b in BASELINES:
            result["auc"][b] = {}
        if train.empty:
            notes.append("baselines skipped: no pairs of the model's training students given")
    cache: dict[int, np.ndarray] = {}
    for delta in horizons:
        key = str(delta)
        y = test[label_column(delta)].to_numpy()
        result["positive_ratio"][key] = float(y.mean()) if len(y) else None
        h = _model_horizon(model, delta)
        result["model_horizon"][key] = h
        if h is None:
            result["auc"][MAIN][key] = None
            result["recall_at_top30"][key] = None
            notes.append(f"Δ={delta}: no trained horizon")
        else:
            if h != delta:
                notes.append(f"Δ={delta}: no model of its own, scored with the Δ={h} model")
            if h not in cache:
                cache[h] = model.predict_proba(test, h)
            auc, why = _auc(y, cache[h])
            result["auc"][MAIN][key] = auc
            if why:
                notes.append(f"Δ={delta} {MAIN}: AUC null, {why}")
            result["recall_at_top30"][key] = recall_at_top(
                test, cache[h], label_column(delta), cfg.flag_share)
        if baselines:
            fitted = fit_baselines(train, delta, cfg) if not train.empty else {}
            if not fitted and not train.empty:
                notes.append(f"Δ={delta}: baselines skipped, one class only in training")
            for b in BASELINES:
                if b not in fitted:
                    result["auc"][b][key] = None
                    continue
                pipe = fitted[b]
                cols = list(pipe.feature_names_in_)
                p = pipe.predict_proba(test.reindex(columns=cols).astype(float))[:, 1]
                auc, why = _auc(y, p)
                result["auc"][b][key] = auc
                if why:
                    notes.append(f"Δ={delta} {b}: AUC null, {why}")
    return EvaluationReport(result)


def _clean(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _figure_png(result: dict) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    xs = result["horizons"]
    for name, values in result["auc"].items():
        ys = [values.get(str(d)) for d in xs]
        ys = [np.nan if v is None else v for v in ys]
        ax.plot(xs, ys, marker="o", label=name, linewidth=2.5 if name == MAIN else 1.2)
    ax.set_xlabel("Δ (days)")
    ax.set_ylabel("AUC")
    ax.set_title("AUC per horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_report(result: dict, out_dir: Path | str) -> Path:
    """Write ``metrics.json`` and a self-contained ``report.html`` into ``out_dir``.

    Args:
        result: The metrics of an :class:`EvaluationReport` (``to_dict()``).
        out_dir: Output folder (created).

    Returns:
        The path of ``report.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = _clean(result)
    write_text(json.dumps(clean, indent=2, sort_keys=True), out_dir / "metrics.json")

    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    models = list(clean["auc"])
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    rows = []
    for d in clean["horizons"]:
        k = str(d)
        cells = "".join(f"<td>{cell(clean['auc'][m].get(k))}</td>" for m in models)
        rows.append(
            f"<tr><td>{d}</td><td>{clean['model_horizon'].get(k)}</td>{cells}"
            f"<td>{cell(clean['recall_at_top30'].get(k))}</td>"
            f"<td>{cell(clean['positive_ratio'].get(k))}</td></tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in clean["notes"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>atrisk evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>Dropout-risk evaluation</h1>
<p>Evaluated on {html.escape(clean['evaluated_on'])}: {clean['n_pairs']} pairs,
{clean['n_students']} students. Recall: share of positive pairs caught when flagging the
top {clean['flag_share']:.0%} of students each day.</p>
<table><tr><th>Δ (days)</th><th>model Δ</th>{head}<th>recall@top</th>
<th>positive ratio</th></tr>
{''.join(rows)}
</table>
<p><img alt="AUC vs Δ" src="data:image/png;base64,{_figure_png(result)}"></p>
<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>
</body></html>
"""
    return write_text(page, out_dir / "report.html")
