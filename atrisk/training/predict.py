"""The daily risk list: probability, rank, flag and the top reasons per student.

Reasons come from LightGBM's per-feature contributions (``pred_contrib=True``) on the
transformed features: the three features that raise the student's risk the most.
In-class PCA components are named after the original feature that loads most on them.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from atrisk.errors import AtriskError
from atrisk.ingest.logs import to_utc

if TYPE_CHECKING:
    from atrisk.training.model import RiskModel

#: Plain words for feature columns (windowed ``time_*_{w}d`` columns are matched by
#: pattern in :func:`reason_text`).
REASON_TEXT: dict[str, str] = {
    "out_days_since_order": "days since the latest order",
    "out_order_n_courses": "courses bought in the latest order",
    "out_order_n_sales_conversations": "sales talks before the latest order",
    "out_order_discount_ratio": "discount of the latest order",
    "out_courses_ordered": "courses ordered in total",
    "out_grade": "school grade",
    "out_days_since_enrolment": "days since enrolment",
    "out_follow_ups": "follow-ups since the first class",
    "out_last_follow_up_words": "words in the latest follow-up report",
    "out_reschedules": "reschedules so far",
    "out_follow_up_ratio": "follow-ups per class",
    "out_satisfaction": "latest satisfaction score",
    "time_mean_class_gap_30d": "average days between classes (past 30 days)",
    "time_days_since_last_class": "days since the last class",
    "time_classes_total": "classes so far",
    "time_teacher_students": "students the current teacher has taught",
    "time_teacher_classes": "classes the current teacher has taught",
    "time_teacher_dropout_rate": "dropout rate of the current teacher's past students",
}
_WINDOW = re.compile(r"^time_(classes|follow_ups|reschedules)_(\d+)d$")
_WINDOW_WORDS = {"classes": "classes", "follow_ups": "follow-ups", "reschedules": "reschedules"}


def reason_text(column: str) -> str:
    """Return plain words for a feature column (the column name when unknown).

    Example:
        >>> reason_text("time_classes_7d")
        'classes in the past 7 days'
    """
    if column in REASON_TEXT:
        return REASON_TEXT[column]
    m = _WINDOW.match(column)
    if m:
        return f"{_WINDOW_WORDS[m.group(1)]} in the past {m.group(2)} days"
    if column.startswith("in_"):
        return "in-class " + column[3:].replace("_", " ")
    return column


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _names(model: RiskModel, horizon: int) -> list[tuple[str, str | None]]:
    """Per transformed feature: (plain words, original column or None for PCA)."""
    pipe = model.pipeline(horizon)
    ct = pipe.named_steps["features"]
    out: list[tuple[str, str | None]] = []
    for name in ct.get_feature_names_out():
        block, _, col = str(name).partition("__")
        if block == "in_class":
            inner = ct.named_transformers_["in_class"]
            pca = inner.named_steps["pca"]
            kept = inner.named_steps["impute"].get_feature_names_out()
            k = int(re.sub(r"\D", "", col) or 0)
            top = str(kept[int(np.argmax(np.abs(pca.components_[k])))])
            out.append((f"in-class behaviour (component {k + 1}, mostly "
                        f"{reason_text(top)})", None))
        else:
            out.append((reason_text(col), col))
    return out


def explain(model: RiskModel, pairs: pd.DataFrame, horizon: int, n_reasons: int = 3) -> list[str]:
    """Return, per pair, the features that push its risk up most, in plain words.

    Args:
        model: The fitted model.
        pairs: Pairs with the model's feature columns.
        horizon: A trained horizon.
        n_reasons: How many reasons per pair.

    Returns:
        One non-empty string per pair, e.g. ``"days since the last class (9); ..."``.
    """
    pipe = model.pipeline(horizon)
    x = model.design_matrix(pairs)
    xt = pipe.named_steps["features"].transform(x)
    contrib = pipe.named_steps["model"].predict(xt, pred_contrib=True)
    contrib = np.asarray(contrib)[:, :-1]  # last column is the bias
    names = _names(model, horizon)
    values = x.to_numpy(dtype=float)
    col_pos = {c: k for k, c in enumerate(x.columns)}
    top = np.argsort(-contrib, axis=1, kind="stable")[:, :n_reasons]
    texts: list[str] = []
    for i in range(len(x)):
        parts = []
        for j in top[i]:
            if contrib[i, j] <= 0:
                break
            words, col = names[j]
            parts.append(f"{words} ({_fmt(values[i, col_pos[col]])})" if col else words)
        texts.append("; ".join(parts) if parts else "no single factor raises the risk")
    return texts


def predict_risk(model: RiskModel, pairs_at_date: pd.DataFrame, horizon: int,
                 date) -> pd.DataFrame:
    """Return the ranked risk list of one date.

    Args:
        model: The fitted model.
        pairs_at_date: Pairs of that date (from ``build_pairs(..., keys=...)``); when it
            has a ``t`` column only rows with ``t`` on ``date`` are used.
        horizon: A trained horizon (days).
        date: The date (anything ``pandas`` parses; taken as a UTC day).

    Returns:
        DataFrame ``date``, ``student_id``, ``probability`` (in [0, 1]), ``rank`` (1 =
        highest risk), ``flagged`` (the top ``flag_share`` of students, at least one) and
        ``top_reasons``, sorted by rank.

    Raises:
        HorizonError: When ``horizon`` was not trained (lists the trained horizons).
        AtriskError: When no pair is on ``date`` or feature columns are missing.
    """
    model.pipeline(horizon)  # fails early on an untrained horizon
    day = to_utc(date).dt.floor("D").iloc[0]
    if pd.isna(day):
        raise AtriskError(f"date {date!r} is not a date")
    df = pairs_at_date
    if "t" in df.columns:
        df = df[(to_utc(df["t"]).dt.floor("D") == day).to_numpy()]
    if df.empty:
        raise AtriskError(f"no pairs on {day.date()}: build them with build_pairs(keys=...)")
    df = df.drop_duplicates("student_id", keep="last")
    proba = np.clip(model.predict_proba(df, horizon), 0.0, 1.0)
    out = pd.DataFrame({
        "date": day.date(),
        "student_id": df["student_id"].astype(str).to_numpy(),
        "probability": proba,
        "top_reasons": explain(model, df, horizon),
    })
    out = out.sort_values(["probability", "student_id"], ascending=[False, True],
                          kind="stable").reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    n_flag = max(1, math.ceil(round(model.training.flag_share * len(out), 9)))
    out["flagged"] = out["rank"] <= n_flag
    return out[["date", "student_id", "probability", "rank", "flagged", "top_reasons"]]
