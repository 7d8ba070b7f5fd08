"""Compare two feature tables of the same pairs: out-of-fold AUC and its paired difference.

Used by ``scripts/recipes/compare_prosody_auc.py`` to tell how much the dropout model's AUC
changes when only the prosody backend (``opensmile`` or ``torch``) changes.  Both tables
hold the same ``<student, t>`` pairs in the same order; every model is fitted exactly as
:class:`~atrisk.training.model.RiskModel` fits a horizon (augmentation with Λ and G,
weighted over-sampling, in-class PCA block, LightGBM) on the same folds, grouped by
student, so the two AUCs differ only by the features.

The uncertainty of the difference is a paired bootstrap over **students** (the unit the
folds hold out): each resample draws students with replacement, weights each pair by
its student's multiplicity and recomputes both AUCs on that resample.

Example:
    >>> y = np.array([0, 0, 1, 1])
    >>> weighted_auc(y, np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from atrisk.config import TrainingConfig
from atrisk.training.fit import IN_CLASS_PREFIX, fit_horizon
from atrisk.training.labels import add_labels, label_column

__all__ = ["auc_difference", "horizon_labels", "oof_predictions", "student_folds", "weighted_auc"]


def weighted_auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None
                 ) -> float | None:
    """Area under the ROC curve with pair weights (ties count one half).

    Equals :func:`sklearn.metrics.roc_auc_score` with ``sample_weight``; written out so
    that a bootstrap can call it thousands of times on the same scores cheaply.

    Args:
        y: Labels 0/1.
        score: Scores (higher = more likely positive).
        weight: Non-negative weights (default 1).

    Returns:
        The AUC, or ``None`` when the weighted positives or negatives are 0.
    """
    y = np.asarray(y, dtype=bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    _, codes = np.unique(np.asarray(score, dtype=float), return_inverse=True)
    pos = np.bincount(codes, weights=w * y)
    neg = np.bincount(codes, weights=w * ~y)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return None
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))


def student_folds(students: pd.Series, folds: int, config: TrainingConfig
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test row indices grouped by student.

    Args:
        students: Student id of each pair.
        folds: ``1``: the single split of ``atrisk train`` (``config.test_size`` of the
            students held out, ``GroupShuffleSplit`` seeded by ``config.seed``);
            ``k >= 2``: ``GroupKFold`` (every student is held out exactly once).
        config: Test share and seed.

    Returns:
        A list of ``(train_idx, test_idx)`` positional index arrays.

    Raises:
        ValueError: When ``folds < 1`` or there are fewer students than folds.
    """
    groups = students.astype(str).to_numpy()
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    if folds == 1:
        split = GroupShuffleSplit(n_splits=1, test_size=config.test_size,
                                  random_state=config.seed)
        return [next(split.split(groups, groups=groups))]
    n = len(np.unique(groups))
    if n < folds:
        raise ValueError(f"{folds} folds need at least {folds} students, got {n}")
    return list(GroupKFold(n_splits=folds).split(groups, groups=groups))


def oof_predictions(pairs: pd.DataFrame, horizon: int, columns: list[str],
                    config: TrainingConfig, splits: list[tuple[np.ndarray, np.ndarray]]
                    ) -> np.ndarray:
    """Held-out probabilities of dropping out within ``horizon`` days, fold by fold.

    Each fold's model is fitted like a :class:`~atrisk.training.model.RiskModel`
    horizon (``config.lookback``, ``config.weighting``, over-sampling, in-class PCA).
    In-class columns (``in_``) empty in a fold's training rows are left out of it.

    Args:
        pairs: Pairs with ``student_id``, ``t``, ``dropout_time`` and the feature columns.
        horizon: Δ in days.
        columns: Feature columns to use (``in_`` ones go through the PCA block).
        config: Model parameters and seed.
        splits: Folds from :func:`student_folds`.

    Returns:
        One probability per row of ``pairs``; NaN for rows in no test fold and for folds
        whose training labels have a single class.
    """
    labelled = add_labels(pairs, [horizon])
    out = np.full(len(pairs), np.nan)
    for tr, te in splits:
        train = labelled.iloc[tr]
        in_cols = [c for c in columns if c.startswith(IN_CLASS_PREFIX) and train[c].notna().any()]
        other = [c for c in columns if not c.startswith(IN_CLASS_PREFIX)]
        pipe, _ = fit_horizon(train, horizon, in_cols, other, config, config.lookback)
        if pipe is not None:
            x = labelled.iloc[te][in_cols + other].astype(float)
            out[te] = pipe.predict_proba(x)[:, 1]
    return out


def auc_difference(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, students: np.ndarray,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """AUC of two score vectors on the same pairs, their difference and its bootstrap CI.

    Rows where either score is NaN are left out (of both).  The bootstrap resamples
    students with replacement (``numpy.random.default_rng(seed)``); a pair's weight is
    its student's multiplicity in the resample; resamples without both classes are
    skipped.

    Args:
        y: Labels 0/1.
        p_a: Scores of model ``a``.
        p_b: Scores of model ``b`` (same rows).
        students: Student id of each row.
        n_boot: Resamples (0: no interval).
        seed: Seed of the resampling.
        level: Coverage of the percentile interval.

    Returns:
        ``{"a", "b", "diff" (a − b), "ci" ([low, high] of a − b or None), "n_boot"
        (resamples used), "n_pairs", "n_positive", "n_students"}``; the AUCs are ``None``
        when the labels have one class only.
    """
    y = np.asarray(y).astype(int)
    p_a, p_b = np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)
    keep = ~(np.isnan(p_a) | np.isnan(p_b))
    y, p_a, p_b = y[keep], p_a[keep], p_b[keep]
    _, codes = np.unique(np.asarray(students)[keep].astype(str), return_inverse=True)
    n_students = int(codes.max()) + 1 if len(codes) else 0
    a, b = weighted_auc(y, p_a), weighted_auc(y, p_b)
    res: dict = {"a": a, "b": b, "diff": None if a is None or b is None else a - b,
                 "ci": None, "n_boot": 0, "n_pairs": int(len(y)),
                 "n_positive": int(y.sum()), "n_students": n_students}
    if res["diff"] is None or n_boot <= 0:
        return res
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        mult = np.bincount(rng.integers(0, n_students, n_students), minlength=n_students)
        w = mult[codes].astype(float)
        da, db = weighted_auc(y, p_a, w), weighted_auc(y, p_b, w)
        if da is not None and db is not None:
            diffs.append(da - db)
    if diffs:
        tail = 100 * (1 - level) / 2
        res["ci"] = [float(v) for v in np.percentile(diffs, [tail, 100 - tail])]
        res["n_boot"] = len(diffs)
    return res


def horizon_labels(pairs: pd.DataFrame, horizon: int) -> np.ndarray:
    """Return the plain ``dropout_within_{horizon}`` labels of ``pairs`` (0/1 ints)."""
    return add_labels(pairs, [horizon])[label_column(horizon)].to_numpy().astype(int)
