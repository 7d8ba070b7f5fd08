"""A small synthetic pairs table where one feature carries the dropout signal."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_pairs(n_students: int = 80, days: int = 30, seed: int = 0) -> pd.DataFrame:
    """Pairs of ``n_students`` over ``days`` days; half drop out.

    ``time_days_since_last_class`` grows as a dropout approaches (the signal); the other
    features and the in-class columns are noise.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for i in range(n_students):
        drop = i % 2 == 0
        d_time = start + pd.Timedelta(days=int(rng.integers(12, days)), hours=12) if drop \
            else pd.NaT
        n_days = (d_time - start).days + 1 if drop else days
        for k in range(n_days):
            t = start + pd.Timedelta(days=k)
            to_drop = (d_time - t) / pd.Timedelta(days=1) if drop else 99.0
            rows.append({
                "student_id": f"s{i:03d}", "t": t,
                "time_days_since_last_class": 10 * np.exp(-to_drop / 4) + rng.normal(0, 0.3),
                "time_classes_7d": float(rng.integers(0, 5)),
                "out_satisfaction": float(rng.integers(1, 6)),
                "in_student_loudness_sma3_amean": rng.normal(),
                "in_teacher_loudness_sma3_amean": rng.normal(),
                "in_inter_qa_rounds": rng.normal() if rng.uniform() > 0.1 else np.nan,
                "dropout_time": d_time,
            })
    df = pd.DataFrame(rows)
    df["dropout_time"] = df["dropout_time"].astype("datetime64[ns, UTC]")
    return df
