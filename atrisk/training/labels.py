"""Labels, time-aware pseudo-positives and importance re-weighting of the positives.

For a pair ``<s, t>`` with dropout time ``d`` (NaT when the student did not drop out)
and a horizon ``h`` (days):

- ``dropout_within_h = 1`` iff ``t < d <= t + h days`` (P); every other pair is N.
- Pseudo-positives P̃ (lookback ``Λ`` days): pairs with ``h < (d - t) <= h + Λ`` days.
  With ``k = ceil((d - t) / 1 day) - h`` (``1 <= k <= Λ``) and ``x = k / (Λ + 1)`` the
  weight is ``G(x)``: linear ``1 - x``, convex ``(1 - x)^2``, concave ``1 - x^2``,
  constant ``1``.  They get label 1 and weight ``G``; P and N have weight 1.
- Class balance: :func:`oversample` scales the weights of the positive rows (P ∪ P̃) by
  one factor until they carry the target share of the total weight (re-weighting;
  :func:`atrisk.training.seed_labels.balance` also draws copies instead).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atrisk.errors import AtriskError
from atrisk.ingest.logs import to_utc

#: Weighting functions G(x), x = k / (Λ + 1).
WEIGHTINGS = {
    "linear": lambda x: 1.0 - x,
    "convex": lambda x: (1.0 - x) ** 2,
    "concave": lambda x: 1.0 - x**2,
    "constant": lambda x: np.ones_like(x),
}


def label_column(horizon: int) -> str:
    """Return the label column of ``horizon`` days, e.g. ``dropout_within_7``."""
    return f"dropout_within_{int(horizon)}"


def _days_to_dropout(pairs: pd.DataFrame) -> pd.Series:
    for col in ("t", "dropout_time"):
        if col not in pairs.columns:
            raise AtriskError(f"pairs table needs a {col!r} column to make labels")
    days = (to_utc(pairs["dropout_time"]) - to_utc(pairs["t"])) / pd.Timedelta(days=1)
    days.index = pairs.index
    return days


def add_labels(pairs: pd.DataFrame, horizons: list[int]) -> pd.DataFrame:
    """Return a copy of ``pairs`` with ``dropout_within_{Δ}`` (0/1) for each Δ.

    Args:
        pairs: Pairs with ``t`` and ``dropout_time``.
        horizons: Δ values in days.

    Returns:
        A new DataFrame (the input is not changed).

    Raises:
        AtriskError: When ``t`` or ``dropout_time`` is missing.
    """
    days = _days_to_dropout(pairs)
    out = pairs.copy()
    for h in horizons:
        out[label_column(h)] = ((days > 0) & (days <= h)).astype("int8")
    return out


def augment(pairs: pd.DataFrame, horizon: int, lookback: int,
            weighting: str = "convex") -> pd.DataFrame:
    """Return a copy of ``pairs`` with ``label``, ``weight`` and ``is_pseudo`` for ``horizon``.

    Args:
        pairs: Pairs with ``t`` and ``dropout_time``.
        horizon: ``h`` in days.
        lookback: ``Λ`` in days (0: no pseudo-positives).
        weighting: ``linear``, ``convex``, ``concave`` or ``constant``.

    Returns:
        A new DataFrame; ``label`` is 1 for P and P̃, ``weight`` is 1 for P and N and
        ``G(k / (Λ + 1))`` for P̃.

    Raises:
        AtriskError: For an unknown weighting, negative lookback, or missing columns.
    """
    if weighting not in WEIGHTINGS:
        raise AtriskError(f"unknown weighting {weighting!r}; use one of {sorted(WEIGHTINGS)}")
    if lookback < 0:
        raise AtriskError(f"lookback must be >= 0, got {lookback}")
    days = _days_to_dropout(pairs).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        positive = (days > 0) & (days <= horizon)
        pseudo = (days > horizon) & (days <= horizon + lookback)
    k = np.ceil(np.where(pseudo, days, horizon + 1)) - horizon
    x = k / (lookback + 1)
    g = np.asarray(WEIGHTINGS[weighting](x), dtype=float)
    out = pairs.copy()
    out["label"] = (positive | pseudo).astype("int8")
    out["weight"] = np.where(pseudo, g, 1.0)
    out["is_pseudo"] = pseudo
    return out


def oversample(df: pd.DataFrame, target_share: float) -> pd.DataFrame:
    """Re-weight the positives (``label == 1``) to a share of the weight; copy no rows.

    Every positive row's ``weight`` is multiplied by one factor ``f`` so that the
    positives carry ``target_share`` of the total weight:
    ``f = s·W₋ / ((1 − s)·W₊)`` with ``W₊``/``W₋`` the summed weights of positive and
    negative rows.  This is the expectation of the seed's weighted over-sampling
    (drawing positive copies with probability ∝ weight), without the draws;
    ``balance(rows, "oversample")`` in :mod:`atrisk.training.seed_labels` draws the
    copies instead (``[training] balance`` chooses; ``docs/method.md`` has the
    measured comparison).  Pseudo-positives keep their relative weights ``G``.

    Nothing changes when the share is already reached, the target is 0, or there
    are no positives or no negatives.

    Args:
        df: Rows with ``label`` and ``weight`` (from :func:`augment`).
        target_share: Wanted share of the total weight on positive rows, in [0, 1).

    Returns:
        A new DataFrame (same rows, fresh index) with rescaled ``weight``.

    Raises:
        AtriskError: When ``target_share`` is outside [0, 1) or columns are missing.
    """
    if not 0 <= target_share < 1:
        raise AtriskError(f"target_share must be in [0, 1), got {target_share}")
    for col in ("label", "weight"):
        if col not in df.columns:
            raise AtriskError(f"oversample needs a {col!r} column (run augment first)")
    out = df.reset_index(drop=True)
    pos = out["label"].to_numpy() == 1
    w = out["weight"].to_numpy(dtype=float).copy()
    w_pos, w_neg = w[pos].sum(), w[~pos].sum()
    if target_share == 0 or w_pos <= 0 or w_neg <= 0 or w_pos / (w_pos + w_neg) >= target_share:
        return out.copy()
    w[pos] *= target_share * w_neg / ((1 - target_share) * w_pos)
    return out.assign(weight=w)
