"""The temporal hold-out: train on what was known before a cut date, test after it.

Next to the split by student, a model is fitted as it would have been on the cut day
``c``: on the pairs whose label was already known then — ``t + Δ ≤ c`` for "dropout
within Δ days" (``t + 1 ≤ c`` for the seed construction, whose positive is the dropout
pair) — with every outcome after ``c`` unknown (a dropout after ``c`` is not a dropout
yet).  It is tested on the pairs with ``t ≥ c``, of every student: a student active on
both sides of the cut is in both (as when a model trained on the past scores today's
students); the report says how many.
"""

from __future__ import annotations

import pandas as pd

from atrisk.errors import AtriskError
from atrisk.ingest.logs import to_utc

#: Share of the pairs (by day) before an automatic cut.
AUTO_SHARE = 0.7
DAY = pd.Timedelta(days=1)


def resolve_cut(pairs: pd.DataFrame, spec: str | None) -> pd.Timestamp | None:
    """Return the cut day of ``spec`` for ``pairs``.

    Args:
        pairs: Pairs with ``t``.
        spec: ``None`` or ``"none"`` (no temporal hold-out), ``"auto"`` (the first day
            on or after which fewer than ``1 − AUTO_SHARE`` of the pairs lie), or a date
            string.

    Returns:
        A UTC midnight, or ``None``.

    Raises:
        AtriskError: When ``spec`` is not a date.
    """
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        if pairs.empty:
            return None
        t = to_utc(pairs["t"]).dt.floor("D")
        return pd.Timestamp(t.quantile(AUTO_SHARE, interpolation="higher"))
    day = to_utc(pd.Series([spec])).iloc[0]
    if pd.isna(day):
        raise AtriskError(f"temporal cut {spec!r} is not a date (use YYYY-MM-DD)")
    return day.normalize()


def censor(pairs: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    """Return a copy of ``pairs`` as known on ``cut``: later dropouts are not known yet.

    Args:
        pairs: Pairs with ``t`` and ``dropout_time``.
        cut: The cut day (UTC).

    Returns:
        The pairs with ``t < cut``; ``dropout_time`` is NaT where it is after ``cut``.
    """
    t = to_utc(pairs["t"])
    out = pairs[(t < cut).to_numpy()].copy()
    drop = to_utc(out["dropout_time"])
    drop.index = out.index
    out["dropout_time"] = drop.where(drop <= cut)
    return out


def known_by(pairs: pd.DataFrame, cut: pd.Timestamp, days: int) -> pd.DataFrame:
    """Return the pairs whose ``days``-day label is known on ``cut``: ``t + days ≤ cut``.

    Args:
        pairs: Pairs with ``t``.
        cut: The cut day.
        days: Δ (or 1 for the seed construction's dropout pair).

    Returns:
        The subset (same columns).
    """
    t = to_utc(pairs["t"])
    return pairs[(t + days * DAY <= cut).to_numpy()]


def after(pairs: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    """Return the test pairs of the temporal hold-out: ``t ≥ cut``."""
    return pairs[(to_utc(pairs["t"]) >= cut).to_numpy()]
