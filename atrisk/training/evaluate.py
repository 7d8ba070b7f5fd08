"""Evaluation a user can act on: per Δ, intervals, calibration, groups, a temporal hold-out.

:func:`evaluate` scores the held-out students' pairs (those in ``model.test_students_``):
per Δ the AUC with a bootstrap interval resampled by student
(:mod:`~atrisk.training.uncertainty`), the positive pairs and students behind it,
recall at the flagged share with its interval, the Brier score of the calibrated
probabilities and reliability data; the baselines (fitted on the model's training
students); the fairness table per student group; and the temporal hold-out (a copy of
the model fitted as on the cut day, scored after it; :mod:`~atrisk.training.temporal`).
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

from atrisk.errors import AtriskError
from atrisk.ingest.logs import to_utc
from atrisk.training.fit import fit_baselines
from atrisk.training.labels import add_labels, label_column
from atrisk.training.temporal import after
from atrisk.training.uncertainty import (
    MIN_POSITIVES,
    bootstrap_auc,
    brier_score,
    group_report,
    reliability_curve,
)
from atrisk.training.uncertainty import recall_at_top as recall_at_top_ci
from atrisk.workspace import write_text

if TYPE_CHECKING:
    from atrisk.training.model import RiskModel

#: Name of the main model in the result tables.
MAIN = "gbdt"
#: Baselines, in report order.
BASELINES = ("lr", "dt", "rf", "gbdt_none")


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


def _ci(interval) -> list[float] | None:
    return interval.to_dict()["ci"]


def _horizon_metrics(y: np.ndarray, score: np.ndarray, proba: np.ndarray, sid: np.ndarray,
                     t: np.ndarray, cfg, calibrated: bool) -> dict:
    """Every number of one Δ, with intervals from the same student resamples."""
    auc = bootstrap_auc(y, score, sid, cfg.n_boot, cfg.seed, cfg.ci_level)
    out = {"auc": auc.value, "auc_ci": _ci(auc), "n_pos": auc.n_pos, "n_neg": auc.n_neg,
           "n_pairs": auc.n_pairs, "n_students": auc.n_students, "n_boot": cfg.n_boot,
           "n_boot_usable": auc.n_usable, "level": cfg.ci_level, "calibrated": calibrated,
           "notes": [auc.note] if auc.note else []}
    if len(y):
        br = brier_score(y, proba, sid, cfg.n_boot, cfg.seed, cfg.ci_level)
        rate = float(np.mean(y))
        out.update({"brier": br.value, "brier_ci": _ci(br),
                    "brier_base_rate": rate * (1 - rate), "mean_p": float(np.mean(proba)),
                    "observed_rate": rate})
        rec = recall_at_top_ci(y, score, t, sid, cfg.flag_share, cfg.n_boot, cfg.seed,
                               cfg.ci_level)
        out.update({"recall_at_top": rec.value, "recall_at_top_ci": _ci(rec)})
    else:
        out.update({"brier": None, "brier_ci": None, "recall_at_top": None,
                    "recall_at_top_ci": None})
    return out


def _attribute_frame(test: pd.DataFrame, columns: list[str],
                     attributes: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """Return the group columns per test pair: ``attributes`` by student, else ``out_<col>``."""
    frame = pd.DataFrame(index=test.index)
    notes = []
    sid = test["student_id"].astype(str)
    for col in columns:
        if attributes is not None and col in attributes.columns:
            frame[col] = sid.map(attributes[col]).to_numpy()
        elif f"out_{col}" in test.columns:
            frame[col] = test[f"out_{col}"].to_numpy()
        else:
            notes.append(f"fairness: no student attribute {col!r} (students.csv column)")
    return frame, notes


def evaluate(model: RiskModel, pairs: pd.DataFrame, horizons: list[int] | None = None,
             baselines: bool = True, attributes: pd.DataFrame | None = None,
             temporal: bool = True) -> EvaluationReport:
    """Evaluate ``model`` on its held-out pairs, with intervals, calibration and groups.

    Args:
        model: A fitted :class:`RiskModel`.
        pairs: Pairs of both training and held-out students (features, ``student_id``,
            ``t``, ``dropout_time``).  When none belongs to ``model.test_students_`` (a
            fresh data set), every pair is evaluated and ``evaluated_on`` says so.  A
            model fitted for a temporal hold-out (``model.cut_``) is scored on the pairs
            with ``t ≥ cut``.
        horizons: Δ values (days); default the model's configured horizons.  A Δ without
            its own model uses the nearest trained horizon ≤ Δ (``model_horizon``).
        baselines: Also fit and score LR / DT / RF / LightGBM-without-augmentation on the
            model's training students.
        attributes: Student attributes by ``student_id`` (index) for the fairness table
            (``training.group_columns``); a missing ``grade`` falls back to ``out_grade``.
        temporal: Also fit a model as on the cut day ``training.temporal_cut`` and score
            the pairs after it (``metrics["temporal"]``); skipped when the cut is
            ``"none"``.

    Returns:
        The report; its ``metrics`` say why a value is null in ``notes``; ``caveats``
        lists the horizons with fewer than 20 positive pairs.
    """
    cfg = model.training
    horizons = sorted(set(horizons or cfg.horizons))
    labelled = add_labels(pairs, horizons)
    sid = labelled["student_id"].astype(str)
    notes: list[str] = []
    cut = getattr(model, "cut_", None)
    if cut is not None:
        evaluated_on = f"pairs on or after the temporal cut {cut.date()}"
        test = after(labelled, cut)
    elif sid.isin(set(model.test_students_)).any():
        evaluated_on = "held-out students"
        test = labelled[sid.isin(set(model.test_students_))]
    else:
        evaluated_on = "all given pairs (none belongs to the model's held-out students)"
        test = labelled
    train = labelled[sid.isin(set(model.train_students_))] if cut is None else \
        labelled.iloc[:0]
    tsid = test["student_id"].astype(str).to_numpy()
    tday = to_utc(test["t"]).dt.floor("D").to_numpy()
    result: dict = {
        "evaluated_on": evaluated_on,
        "labels": cfg.labels,
        "balance": cfg.balance,
        "calibration": cfg.calibration,
        "n_pairs": int(len(test)),
        "n_students": int(test["student_id"].nunique()),
        "flag_share": cfg.flag_share,
        "n_boot": cfg.n_boot,
        "level": cfg.ci_level,
        "horizons": horizons,
        "model_horizon": {},
        "positive_ratio": {},
        "auc": {MAIN: {}},
        "auc_ci": {MAIN: {}},
        "recall_at_top30": {},
        "per_horizon": {},
        "reliability": {},
        "notes": notes,
        "caveats": [],
    }
    if baselines and cut is None:
        for b in BASELINES:
            result["auc"][b] = {}
            result["auc_ci"][b] = {}
        if train.empty:
            notes.append("baselines skipped: no pairs of the model's training students given")
    scores: dict[int, np.ndarray] = {}
    for delta in horizons:
        key = str(delta)
        y = test[label_column(delta)].to_numpy()
        result["positive_ratio"][key] = float(y.mean()) if len(y) else None
        h = _model_horizon(model, delta)
        result["model_horizon"][key] = h
        if h is None:
            result["auc"][MAIN][key] = None
            result["auc_ci"][MAIN][key] = None
            result["recall_at_top30"][key] = None
            notes.append(f"Δ={delta}: no trained horizon")
        else:
            if h != delta:
                notes.append(f"Δ={delta}: no model of its own, scored with the Δ={h} model")
            if h not in scores:
                scores[h] = model.predict_score(test, h)
            score = scores[h]
            proba = model.calibrate(score, delta if model.is_calibrated(delta) else h)
            m = _horizon_metrics(y, score, proba, tsid, tday, cfg, model.is_calibrated(delta))
            result["per_horizon"][key] = m
            result["auc"][MAIN][key] = m["auc"]
            result["auc_ci"][MAIN][key] = m["auc_ci"]
            result["recall_at_top30"][key] = m["recall_at_top"]
            if m["auc"] is None:
                notes.append(f"Δ={delta} {MAIN}: AUC null, {m['notes'][0]}")
            if m["n_pos"] < MIN_POSITIVES:
                result["caveats"].append(
                    f"Δ={delta}: only {m['n_pos']} positive pair(s) among "
                    f"{m['n_students']} held-out students (< {MIN_POSITIVES}): the AUC is "
                    "unstable; read it with its interval")
            if len(y) and 0 < y.sum() < len(y):
                result["reliability"][key] = reliability_curve(y, proba)
        if baselines and cut is None:
            fitted = fit_baselines(train, delta, cfg) if not train.empty else {}
            if not fitted and not train.empty:
                notes.append(f"Δ={delta}: baselines skipped, one class only in training")
            for b in BASELINES:
                if b not in fitted:
                    result["auc"][b][key] = None
                    result["auc_ci"][b][key] = None
                    continue
                pipe = fitted[b]
                cols = list(pipe.feature_names_in_)
                p = pipe.predict_proba(test.reindex(columns=cols).astype(float))[:, 1]
                auc = bootstrap_auc(y, p, tsid, cfg.n_boot, cfg.seed, cfg.ci_level)
                result["auc"][b][key] = auc.value
                result["auc_ci"][b][key] = _ci(auc)
                if auc.value is None:
                    notes.append(f"Δ={delta} {b}: AUC null, {auc.note}")
    result["fairness"] = _fairness(model, test, horizons, scores, attributes, cfg, notes)
    if temporal and cut is None and cfg.temporal_cut != "none":
        result["temporal"] = _temporal(model, pairs, horizons, notes)
    return EvaluationReport(result)


def _fairness(model: RiskModel, test: pd.DataFrame, horizons: list[int],
              scores: dict[int, np.ndarray], attributes: pd.DataFrame | None, cfg,
              notes: list[str]) -> dict:
    """Per group of each attribute column: flag rate, recall, AUC, calibration (first Δ)."""
    delta = horizons[0]
    h = _model_horizon(model, delta)
    if h is None or h not in scores or test.empty:
        return {}
    frame, missing = _attribute_frame(test, cfg.group_columns, attributes)
    notes.extend(missing)
    proba = model.calibrate(scores[h], delta if model.is_calibrated(delta) else h)
    frame["y"] = test[label_column(delta)].to_numpy()
    frame["p"] = proba
    frame["student_id"] = test["student_id"].astype(str).to_numpy()
    frame["t"] = to_utc(test["t"]).dt.floor("D").to_numpy()
    out: dict = {"horizon": delta, "flag_share": cfg.flag_share, "columns": {}}
    for col in cfg.group_columns:
        if col in frame.columns:
            out["columns"][col] = group_report(frame, col, share=cfg.flag_share,
                                               n_boot=cfg.n_boot, seed=cfg.seed,
                                               level=cfg.ci_level)
    return out


def _temporal(model: RiskModel, pairs: pd.DataFrame, horizons: list[int],
              notes: list[str]) -> dict | None:
    """Fit a copy of ``model`` as on the cut day and score the pairs after the cut."""
    cfg = model.training
    try:
        clone = type(model)(model.config_).fit_pairs(pairs, cut=cfg.temporal_cut)
    except AtriskError as exc:
        notes.append(f"temporal hold-out skipped: {exc}")
        return None
    rep = evaluate(clone, pairs, horizons, baselines=False, temporal=False).metrics
    test = after(pairs, clone.cut_)
    seen = set(clone.train_students_)
    n_seen = int(test["student_id"].astype(str).isin(seen).groupby(
        test["student_id"].astype(str)).any().sum())
    return {
        "cut": str(clone.cut_.date()),
        "rule": "trained on pairs with t + Δ ≤ cut (t + 1 ≤ cut for seed labels) and the "
                "outcomes known at the cut; tested on every pair with t ≥ cut",
        "n_train_pairs": clone.metadata_["n_train_pairs"],
        "n_train_students": clone.metadata_["n_train_students"],
        "n_pairs": rep["n_pairs"],
        "n_students": rep["n_students"],
        "n_students_also_in_training": n_seen,
        "per_horizon": rep["per_horizon"],
        "auc": rep["auc"][MAIN],
        "auc_ci": rep["auc_ci"][MAIN],
        "caveats": rep["caveats"],
        "notes": rep["notes"],
    }


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


def _png(fig) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(values: dict, xs: list[int]) -> np.ndarray:
    return np.array([np.nan if values.get(str(d)) is None else values[str(d)] for d in xs],
                    dtype=float)


def _band(cis: dict, xs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    lo = [np.nan if not cis.get(str(d)) else cis[str(d)][0] for d in xs]
    hi = [np.nan if not cis.get(str(d)) else cis[str(d)][1] for d in xs]
    return np.array(lo, dtype=float), np.array(hi, dtype=float)


def _figure_png(result: dict) -> str:
    """AUC vs Δ: the model with its interval band, the baselines, the temporal hold-out."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    xs = result["horizons"]
    for name, values in result["auc"].items():
        ys = _series(values, xs)
        line, = ax.plot(xs, ys, marker="o", label=name,
                        linewidth=2.5 if name == MAIN else 1.0,
                        alpha=1.0 if name == MAIN else 0.7)
        if name == MAIN and result.get("auc_ci", {}).get(MAIN):
            lo, hi = _band(result["auc_ci"][MAIN], xs)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2,
                            label=f"{MAIN} {result.get('level', 0.95):.0%} CI")
    temporal = result.get("temporal") or {}
    if temporal.get("auc"):
        ys = _series(temporal["auc"], xs)
        line, = ax.plot(xs, ys, marker="s", linestyle="--", color="k",
                        label=f"{MAIN}, temporal (cut {temporal['cut']})")
        lo, hi = _band(temporal.get("auc_ci", {}), xs)
        ax.fill_between(xs, lo, hi, color="k", alpha=0.08)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("Δ (days)")
    ax.set_ylabel("AUC")
    ax.set_title("AUC per horizon (held-out students)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _reliability_png(result: dict) -> str | None:
    """Reliability plot: mean predicted probability vs observed rate per quantile bin."""
    curves = result.get("reliability") or {}
    if not curves:
        return None
    from matplotlib.figure import Figure

    keys = sorted(curves, key=int)
    show = list(dict.fromkeys([keys[0], *[k for k in ("7", "14") if k in curves], keys[-1]]))
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    top = 0.0
    for k in show:
        c = curves[k]
        ax.plot(c["mean_predicted"], c["observed_rate"], marker="o", label=f"Δ = {k}")
        top = max(top, *c["mean_predicted"], *c["observed_rate"])
    top = min(1.0, max(0.05, top * 1.1))
    ax.plot([0, top], [0, top], "k--", linewidth=0.8, label="perfect")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("observed dropout share")
    ax.set_title("Reliability (quantile bins)")
    ax.legend(fontsize=7)
    return _png(fig)


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _with_ci(v, ci, digits: int = 3) -> str:
    if v is None:
        return "–"
    if not ci:
        return _fmt(v, digits)
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _horizon_table(per: dict, horizons: list, extra: dict | None = None) -> str:
    extra = extra or {}
    head = (f"<tr><th>Δ</th><th>{MAIN} AUC [CI]</th><th>n_pos</th><th>n_students</th>"
            "<th>recall@top [CI]</th><th>Brier [CI]</th><th>base-rate Brier</th>"
            "<th>calibrated</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in extra)
            + "</tr>")
    rows = []
    for d in horizons:
        m = per.get(str(d))
        if not m:
            continue
        cells = "".join(f"<td>{_with_ci(extra[n].get(str(d)), None)}</td>" for n in extra)
        rows.append(
            f"<tr><td>{d}</td><td>{_with_ci(m['auc'], m['auc_ci'])}</td><td>{m['n_pos']}</td>"
            f"<td>{m['n_students']}</td>"
            f"<td>{_with_ci(m.get('recall_at_top'), m.get('recall_at_top_ci'))}</td>"
            f"<td>{_with_ci(m.get('brier'), m.get('brier_ci'), 4)}</td>"
            f"<td>{_fmt(m.get('brier_base_rate'), 4)}</td>"
            f"<td>{'yes' if m.get('calibrated') else 'no'}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _fairness_html(fair: dict) -> str:
    if not fair or not fair.get("columns"):
        return "<p>No student attribute to group by.</p>"
    parts = [f"<p>Δ = {fair['horizon']}; each day the top {fair['flag_share']:.0%} of all "
             "students is flagged; a group's rates are read off those flags (docs/method.md "
             "§6 says how to read them).</p>"]
    for col, rows in fair["columns"].items():
        body = "".join(
            f"<tr><td>{html.escape(str(r['group']))}</td><td>{r['n_students']}</td>"
            f"<td>{r['n_pairs']}</td><td>{r['n_pos']}</td>"
            f"<td>{_with_ci(r['flag_rate'], r['flag_rate_ci'])}</td>"
            f"<td>{_with_ci(r['recall_at_top'], r['recall_at_top_ci'])}</td>"
            f"<td>{_with_ci(r['false_flag_rate'], r['false_flag_rate_ci'])}</td>"
            f"<td>{_with_ci(r['auc'], r['auc_ci'])}</td>"
            f"<td>{_fmt(r['mean_p'], 4)}</td><td>{_fmt(r['observed_rate'], 4)}</td>"
            f"<td>{_with_ci(r['calibration_gap'], r['calibration_gap_ci'], 4)}</td></tr>"
            for r in rows)
        parts.append(
            f"<h3>{html.escape(col)}</h3><table><tr><th>group</th><th>students</th>"
            "<th>pairs</th><th>n_pos</th><th>flag rate</th><th>recall@top</th>"
            "<th>false-flag rate</th><th>AUC</th><th>mean p</th><th>observed</th>"
            f"<th>calibration gap</th></tr>{body}</table>")
    return "".join(parts)


def write_report(result: dict, out_dir: Path | str) -> Path:
    """Write ``metrics.json`` and a self-contained ``report.html`` into ``out_dir``.

    The page has the per-Δ table (AUC with its interval, positives and students behind
    it, recall at the top share, Brier), AUC vs Δ with interval bands, the reliability
    plot, the fairness table and the temporal hold-out.

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
    horizons = clean["horizons"]
    baselines = {m: v for m, v in clean["auc"].items() if m != MAIN}
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in clean["notes"])
    caveats = "".join(f"<li>{html.escape(n)}</li>" for n in clean.get("caveats", []))
    rel = _reliability_png(clean)
    temporal = clean.get("temporal")
    temporal_html = "<p>Not run (training.temporal_cut is \"none\").</p>"
    if temporal:
        temporal_html = (
            f"<p>Cut {html.escape(temporal['cut'])}: {html.escape(temporal['rule'])}. "
            f"Trained on {temporal['n_train_pairs']} pairs of "
            f"{temporal['n_train_students']} students; tested on {temporal['n_pairs']} pairs "
            f"of {temporal['n_students']} students, {temporal['n_students_also_in_training']}"
            " of whom also have training pairs (before the cut).</p>"
            + _horizon_table(temporal["per_horizon"], horizons))
    level = clean.get("level", 0.95)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>atrisk evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;
margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right;
font-size:90%}}</style></head><body>
<h1>Dropout-risk evaluation</h1>
<p>Evaluated on {html.escape(clean['evaluated_on'])}: {clean['n_pairs']} pairs,
{clean['n_students']} students. Labels: {html.escape(str(clean.get('labels')))}, balance:
{html.escape(str(clean.get('balance')))}, calibration:
{html.escape(str(clean.get('calibration')))}. Intervals: {level:.0%} percentile bootstrap,
{clean.get('n_boot')} resamples by student. Recall: share of positive pairs caught when
flagging the top {clean['flag_share']:.0%} of students each day (ranked by the raw score).
Brier: mean squared error of the calibrated probability (lower is better; the base-rate
column is what always predicting the observed rate scores).</p>
{'<h2>Caveats</h2><ul>' + caveats + '</ul>' if caveats else ''}
<h2>Per horizon</h2>
{_horizon_table(clean.get('per_horizon', {}), horizons, baselines)}
<p><img alt="AUC vs Δ with interval bands" src="data:image/png;base64,{_figure_png(clean)}"></p>
<h2>Calibration</h2>
{f'<p><img alt="reliability plot" src="data:image/png;base64,{rel}"></p>' if rel
 else '<p>No reliability data (one class only).</p>'}
<h2>Fairness by student group</h2>
{_fairness_html(clean.get('fairness') or {})}
<h2>Temporal hold-out</h2>
{temporal_html}
<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>
</body></html>
"""
    return write_text(page, out_dir / "report.html")
