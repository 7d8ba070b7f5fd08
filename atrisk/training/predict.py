"""The daily risk list: probability, rank, flag and the top reasons per student.

Students are ranked by the model's raw score; ``probability`` is the calibrated chance
of dropping out within Δ days (:meth:`RiskModel.calibrate`), which a calibration map
may tie but never reorders.  Reasons: :func:`atrisk.training.reasons.explain`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from atrisk.errors import AtriskError
from atrisk.ingest.logs import to_utc
from atrisk.training.reasons import explain

if TYPE_CHECKING:
    from atrisk.training.model import RiskModel

__all__ = ["explain", "predict_risk"]


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
        DataFrame ``date``, ``student_id``, ``probability`` (calibrated, in [0, 1]),
        ``rank`` (1 = highest raw score), ``flagged`` (the top ``flag_share`` of students,
        at least one) and ``top_reasons``, sorted by rank.

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
    score = model.predict_score(df, horizon)
    out = pd.DataFrame({
        "date": day.date(),
        "student_id": df["student_id"].astype(str).to_numpy(),
        "probability": model.calibrate(score, horizon),
        "_score": score,
        "top_reasons": explain(model, df, horizon),
    })
    out = out.sort_values(["_score", "student_id"], ascending=[False, True],
                          kind="stable").reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    n_flag = max(1, math.ceil(round(model.training.flag_share * len(out), 9)))
    out["flagged"] = out["rank"] <= n_flag
    return out[["date", "student_id", "probability", "rank", "flagged", "top_reasons"]]
