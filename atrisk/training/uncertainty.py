"""Evaluation a user can act on: cluster-bootstrap intervals, calibration data, groups.

Every rate or AUC comes with a percentile bootstrap interval **resampled by student**
(a cluster bootstrap): a resample draws ``n_students`` students with replacement and
keeps all pairs of each drawn student, as often as the student was drawn.  Pairs of one
student are correlated (same person, consecutive days), so resampling pairs would make
intervals too narrow.

The resamples are vectorised: a resample is a row of per-student multiplicities
``c_g`` (drawn as ``n_students`` uniform student indices), and each metric is a
weighted statistic of the pairs with weight ``c_{g(i)}``.  The AUC is the weighted
Mann–Whitney statistic, computed for a block of resamples at once with sparse
``students × score-bins`` count matrices; recall at the top share uses a weighted
cumulative count per day.  The same ``(seed, number of students, n_boot)`` always
gives the same resamples, so every metric of one call (and two models compared with
:func:`paired_auc_difference`) sees the same students.

Example:
    >>> res = bootstrap_auc(y, p, groups=student_ids)               # doctest: +SKIP
    >>> res.value, res.ci, res.n_pos, res.n_students                 # doctest: +SKIP
    (0.81, (0.77, 0.85), 412, 780)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from atrisk.errors import AtriskError

#: Default share of students flagged per day (the seed's "top 30 %").
DEFAULT_SHARE = 0.3
#: Below this many positive pairs an interval is wide and a caveat is attached.
MIN_POSITIVES = 20
#: An interval is only reported when at least this share of resamples had both classes.
MIN_USABLE_SHARE = 0.5
#: Upper bound on the entries of one block of resamples (memory ≈ 8 bytes each).
_BLOCK_ENTRIES = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile cluster-bootstrap interval and denominators.

    Attributes:
        metric: Name (``auc``, ``brier``, ``recall_at_top``, ...).
        value: The estimate on the given data; ``None`` when undefined (one class).
        ci: ``(low, high)`` percentile interval; ``None`` when fewer than
            :data:`MIN_USABLE_SHARE` of the resamples could be scored.
        level: Coverage of ``ci`` (e.g. 0.95).
        n_boot: Resamples drawn.
        n_usable: Resamples in which the metric was defined (e.g. both classes present).
        n_pairs: Pairs behind ``value``.
        n_pos: Positive pairs.
        n_neg: Negative pairs.
        n_students: Students (clusters) behind ``value``.
        note: Why a value or interval is missing, or a caveat (few positives).
    """

    metric: str
    value: float | None
    ci: tuple[float, float] | None
    level: float
    n_boot: int
    n_usable: int
    n_pairs: int
    n_pos: int
    n_neg: int
    n_students: int
    note: str | None = None

    @property
    def n_skipped(self) -> int:
        """Resamples that could not be scored (one class only)."""
        return self.n_boot - self.n_usable

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (``ci`` as a list, ``n_skipped`` added)."""
        out = asdict(self)
        out["ci"] = None if self.ci is None else [float(self.ci[0]), float(self.ci[1])]
        out["n_skipped"] = self.n_skipped
        return out


# --------------------------------------------------------------------------- inputs
def _as_labels(y, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise AtriskError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if pd.isna(arr).any():
        raise AtriskError(f"{name} has missing values; drop those pairs first")
    uniq = np.unique(arr)
    if not np.isin(uniq, [0, 1, True, False]).all():
        raise AtriskError(f"{name} must hold 0/1 labels, found {uniq[:5].tolist()}")
    return arr.astype(bool)


def _as_scores(p, n: int, name: str = "p", unit: bool = False) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.shape != (n,):
        raise AtriskError(f"{name} must have one value per pair ({n}), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise AtriskError(f"{name} has missing or infinite values; score every pair first")
    if unit and ((arr < 0) | (arr > 1)).any():
        raise AtriskError(f"{name} must be probabilities in [0, 1]")
    return arr


def group_codes(groups, n: int) -> tuple[np.ndarray, int]:
    """Return integer codes ``0..G-1`` of ``groups`` (one per pair) and ``G``.

    Code ``k`` is the ``k``-th of the sorted distinct group ids.

    Args:
        groups: One student id per pair, or ``None`` (each pair its own group: a
            pair-level bootstrap).
        n: Number of pairs.

    Returns:
        ``(codes, n_groups)``.

    Raises:
        AtriskError: When the length differs from ``n`` or a group is missing.
    """
    if groups is None:
        return np.arange(n), n
    g = pd.Series(np.asarray(groups, dtype=object))
    if len(g) != n:
        raise AtriskError(f"groups must have one student id per pair ({n}), got {len(g)}")
    codes, uniques = pd.factorize(g, sort=True)
    if (codes < 0).any():
        raise AtriskError("groups has missing student ids; every pair needs its student")
    return codes.astype(np.int64), len(uniques)


def _weighted_inputs(y, p, groups, weights):
    """Check labels, scores, groups and per-group weights; return them as arrays.

    Returns ``(labels, scores, group codes, number of groups, weights as (B, groups))``;
    raises ``AtriskError`` when the weights do not have one column per group.
    """
    yb = _as_labels(y)
    pf = _as_scores(p, len(yb))
    codes, n_groups = group_codes(groups, len(yb))
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if w.shape[1] != n_groups:
        raise AtriskError(f"weights need one column per group ({n_groups}), got {w.shape[1]}")
    return yb, pf, codes, n_groups, w


def resample_counts(n_groups: int, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield blocks of per-student multiplicities, ``(b, n_groups)`` float arrays.

    Resample ``r`` draws ``n_groups`` student indices uniformly with replacement; its
    row holds how often each student was drawn.  Blocks have a size fixed by
    ``n_groups`` only, so a given ``(n_groups, n_boot, seed)`` always yields the same
    resamples whatever metric consumes them.

    Args:
        n_groups: Number of students (clusters).
        n_boot: Number of resamples in total.
        seed: Seed of :func:`numpy.random.default_rng`.

    Yields:
        Arrays of shape ``(b, n_groups)`` (the ``b`` add up to ``n_boot``).
    """
    rng = np.random.default_rng(seed)
    block = max(1, min(256, _BLOCK_ENTRIES // max(n_groups, 1)))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        idx = rng.integers(0, n_groups, size=(b, n_groups))
        flat = idx + (np.arange(b)[:, None] * n_groups)
        counts = np.bincount(flat.ravel(), minlength=b * n_groups).reshape(b, n_groups)
        done += b
        yield counts.astype(float)


def _interval(draws: np.ndarray, level: float) -> tuple[tuple[float, float] | None, int]:
    ok = draws[np.isfinite(draws)]
    if len(ok) < max(2, math.ceil(MIN_USABLE_SHARE * len(draws))):
        return None, int(len(ok))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    return (float(lo), float(hi)), int(len(ok))


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise AtriskError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise AtriskError(f"n_boot must be >= 1, got {n_boot}")


# --------------------------------------------------------------------------- AUC kernel
class _AucDesign:
    """Sparse count matrices that turn per-student weights into weighted AUCs.

    With ``v_1 < … < v_m`` the distinct scores of the minority class ("positives"
    after an optional swap), a weighted AUC is
    ``Σ_k P[k] · (F[k] + ½ T[k]) / (ΣP · ΣN)`` where ``P[k]`` is the positive weight at
    ``v_k``, ``F[k]`` the negative weight strictly below ``v_k`` and ``T[k]`` the
    negative weight tied with it.  ``P``, ``F``, ``T`` are linear in the per-student
    weights, so a block of resamples is three sparse-dense products.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, codes: np.ndarray, n_groups: int):
        if y.sum() > (~y).sum():  # AUC(y, p) = AUC(1 - y, -p): bin on the smaller class
            y, p = ~y, -p
        v = np.unique(p[y])
        m = len(v)
        self.m = m
        gp, gn = codes[y], codes[~y]
        pn = p[~y]
        right = np.searchsorted(v, pn, side="right")
        left = np.searchsorted(v, pn, side="left")
        tie = right > left
        kp = np.searchsorted(v, p[y])

        def mat(rows, cols, shape):
            return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape).T.tocsr()

        self.pos = mat(gp, kp, (n_groups, max(m, 1)))
        self.below = mat(gn, right, (n_groups, m + 1))
        self.tie = mat(gn[tie], left[tie], (n_groups, max(m, 1)))

    def aucs(self, counts: np.ndarray) -> np.ndarray:
        """Weighted AUC of each row of ``counts`` (NaN where a class has no weight)."""
        ct = counts.T
        pos = (self.pos @ ct).T[:, : self.m]
        below = (self.below @ ct).T
        tie = (self.tie @ ct).T[:, : self.m]
        n_pos = pos.sum(axis=1)
        n_neg = below.sum(axis=1)
        lower = np.cumsum(below, axis=1)[:, : self.m]
        num = (pos * (lower + 0.5 * tie)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = num / (n_pos * n_neg)
        out[(n_pos <= 0) | (n_neg <= 0)] = np.nan
        return out


def weighted_auc(y, p, weights, groups=None) -> np.ndarray:
    """AUC (Mann–Whitney, ties count ½) under each row of integer-like weights.

    Args:
        y: 0/1 labels, one per pair.
        p: Scores, one per pair.
        weights: ``(B, G)`` non-negative weights per group (or ``(G,)`` for one row),
            columns in the order of the sorted distinct group ids; with
            ``groups=None`` the groups are the pairs themselves.
        groups: One group id per pair, or ``None``.

    Returns:
        ``(B,)`` AUCs; NaN where one class has zero weight.  Equals
        ``sklearn.metrics.roc_auc_score(y, p, sample_weight=w[group])`` row by row.

    Raises:
        AtriskError: On bad shapes or values.
    """
    yb, pf, codes, n_groups, w = _weighted_inputs(y, p, groups, weights)
    return _AucDesign(yb, pf, codes, n_groups).aucs(w)


def _counts_summary(y: np.ndarray, n_groups: int) -> dict:
    return {"n_pairs": int(len(y)), "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
            "n_students": int(n_groups)}


def _few_positives_note(n_pos: int) -> str | None:
    if n_pos < MIN_POSITIVES:
        return (f"only {n_pos} positive pair(s) (< {MIN_POSITIVES}): the interval is wide "
                "and the estimate unstable")
    return None


def _join(*notes: str | None) -> str | None:
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None


def bootstrap_auc(y, p, groups, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> Interval:
    """AUC with a percentile bootstrap interval resampled by student.

    Args:
        y: 0/1 labels, one per pair.
        p: Scores (any real values; only their order matters), one per pair.
        groups: Student id per pair (the cluster); ``None`` resamples pairs instead
            (only for comparison: it ignores the correlation within a student).
        n_boot: Resamples.
        seed: Seed of the resamples.
        level: Coverage of the interval.

    Returns:
        An :class:`Interval`; resamples with one class only are skipped and counted
        (``n_boot - n_usable``); ``value`` is ``None`` when the data have one class.

    Raises:
        AtriskError: On bad shapes, missing values or non-0/1 labels.
    """
    _check_level(level, n_boot)
    yb = _as_labels(y)
    pf = _as_scores(p, len(yb))
    codes, n_groups = group_codes(groups, len(yb))
    info = _counts_summary(yb, n_groups)
    if info["n_pos"] == 0 or info["n_neg"] == 0:
        why = "no pairs" if len(yb) == 0 else \
            f"only one class ({'all positive' if info['n_neg'] == 0 else 'no positives'})"
        return Interval("auc", None, None, level, n_boot, 0, note=f"AUC undefined: {why}",
                        **info)
    design = _AucDesign(yb, pf, codes, n_groups)
    value = float(design.aucs(np.ones((1, n_groups)))[0])
    draws = np.concatenate([design.aucs(c) for c in resample_counts(n_groups, n_boot, seed)])
    ci, usable = _interval(draws, level)
    note = _join(_few_positives_note(info["n_pos"]),
                 f"{n_boot - usable} of {n_boot} resamples had one class and were skipped"
                 if usable < n_boot else None,
                 "too few usable resamples for an interval" if ci is None else None)
    return Interval("auc", value, ci, level, n_boot, usable, note=note, **info)


def paired_auc_difference(y, p_a, p_b, groups, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> Interval:
    """AUC(p_a) − AUC(p_b) on the same pairs, with a paired cluster-bootstrap interval.

    Both models are scored on the same resampled students in every resample, so the
    interval of the difference is much narrower than the two separate intervals
    suggest when the models rank alike.  An interval that excludes 0 says which model
    ranks better on this population.

    Args:
        y: 0/1 labels, one per pair.
        p_a: Scores of model A.
        p_b: Scores of model B.
        groups: Student id per pair.
        n_boot: Resamples.
        seed: Seed of the resamples.
        level: Coverage of the interval.

    Returns:
        An :class:`Interval` with ``metric = "auc_difference"``.

    Raises:
        AtriskError: On bad inputs.
    """
    _check_level(level, n_boot)
    yb = _as_labels(y)
    pa = _as_scores(p_a, len(yb), "p_a")
    pb = _as_scores(p_b, len(yb), "p_b")
    codes, n_groups = group_codes(groups, len(yb))
    info = _counts_summary(yb, n_groups)
    if info["n_pos"] == 0 or info["n_neg"] == 0:
        return Interval("auc_difference", None, None, level, n_boot, 0,
                        note="AUC undefined: one class only", **info)
    da = _AucDesign(yb, pa, codes, n_groups)
    db = _AucDesign(yb, pb, codes, n_groups)
    one = np.ones((1, n_groups))
    value = float(da.aucs(one)[0] - db.aucs(one)[0])
    draws = np.concatenate([da.aucs(c) - db.aucs(c)
                            for c in resample_counts(n_groups, n_boot, seed)])
    ci, usable = _interval(draws, level)
    return Interval("auc_difference", value, ci, level, n_boot, usable,
                    note=_few_positives_note(info["n_pos"]), **info)


# --------------------------------------------------------------------------- Brier
def _group_sums(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=n_groups)


def _ratio_draws(codes, n_groups, num, den, n_boot, seed) -> np.ndarray:
    """Draws of Σ c·num / Σ c·den (group sums), NaN where the denominator is 0."""
    gnum = _group_sums(codes, n_groups, num)
    gden = _group_sums(codes, n_groups, den)
    out = []
    for c in resample_counts(n_groups, n_boot, seed):
        top, bottom = c @ gnum, c @ gden
        with np.errstate(invalid="ignore", divide="ignore"):
            r = top / bottom
        r[bottom <= 0] = np.nan
        out.append(r)
    return np.concatenate(out) if out else np.zeros(0)


def ratio_interval(metric: str, num, den, groups, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95, y=None) -> Interval:
    """Return a ratio ``Σ num / Σ den`` over pairs with a cluster-bootstrap interval.

    Rates such as "share of positive pairs flagged" (``num`` = flagged & positive,
    ``den`` = positive) or a mean (``den`` = 1) are ratios of pair sums; resampling
    students re-weights both sums alike.

    Args:
        metric: Name stored in the result.
        num: Numerator per pair.
        den: Denominator per pair (non-negative).
        groups: Student id per pair.
        n_boot: Resamples.
        seed: Seed of the resamples.
        level: Coverage.
        y: Optional 0/1 labels, only to fill ``n_pos``/``n_neg``.

    Returns:
        An :class:`Interval`; ``value`` is ``None`` when ``Σ den = 0``.

    Raises:
        AtriskError: On bad inputs.
    """
    _check_level(level, n_boot)
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise AtriskError("num and den must be one-dimensional and of the same length")
    codes, n_groups = group_codes(groups, len(num))
    yb = _as_labels(y) if y is not None else np.zeros(len(num), dtype=bool)
    info = _counts_summary(yb, n_groups)
    if y is None:
        info["n_pos"] = info["n_neg"] = 0
    if den.sum() <= 0:
        return Interval(metric, None, None, level, n_boot, 0,
                        note=f"{metric} undefined: empty denominator", **info)
    value = float(num.sum() / den.sum())
    ci, usable = _interval(_ratio_draws(codes, n_groups, num, den, n_boot, seed), level)
    return Interval(metric, value, ci, level, n_boot, usable, **info)


def brier_score(y, p, groups, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> Interval:
    """Brier score ``mean((p − y)²)`` with a cluster-bootstrap interval.

    Lower is better; a model that always predicts the base rate ``r`` scores
    ``r (1 − r)``.

    Args:
        y: 0/1 labels, one per pair.
        p: Probabilities in [0, 1].
        groups: Student id per pair.
        n_boot: Resamples.
        seed: Seed of the resamples.
        level: Coverage.

    Returns:
        An :class:`Interval` with ``metric = "brier"``.

    Raises:
        AtriskError: On bad inputs (e.g. probabilities outside [0, 1]).
    """
    yb = _as_labels(y)
    pf = _as_scores(p, len(yb), unit=True)
    res = ratio_interval("brier", (pf - yb) ** 2, np.ones(len(yb)), groups, n_boot, seed,
                         level, y=yb)
    return res


# --------------------------------------------------------------------------- recall@top
def _day_codes(t, n: int) -> np.ndarray:
    tt = pd.Series(np.asarray(t))
    if len(tt) != n:
        raise AtriskError(f"t must have one value per pair ({n}), got {len(tt)}")
    codes, _ = pd.factorize(tt, sort=True)
    if (codes < 0).any():
        raise AtriskError("t has missing values; every pair needs its day")
    return codes


def daily_flags(t, p, share: float = DEFAULT_SHARE) -> np.ndarray:
    """Flag, on each day ``t``, the ``max(1, ceil(share · n_t))`` highest-scored pairs.

    The same rule as ``atrisk.training.evaluate.recall_at_top`` and the risk list:
    ranks by descending score within a day, ties broken by row order.

    Args:
        t: Day (or any key) of each pair.
        p: Scores.
        share: Share of students flagged per day, in (0, 1].

    Returns:
        Boolean array, ``True`` for flagged pairs.

    Raises:
        AtriskError: On a share outside (0, 1] or bad inputs.
    """
    pf = np.asarray(p, dtype=float)
    pf = _as_scores(pf, len(pf))
    day = _day_codes(t, len(pf))
    _check_share(share)
    n = len(pf)
    order = np.lexsort((np.arange(n), -pf, day))
    d = day[order]
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]]) if n else np.zeros(0, dtype=int)
    rank = np.arange(n) - starts[d] if n else np.zeros(0, dtype=int)  # 0-based in day
    n_t = np.diff(np.r_[starts, n]) if n else np.zeros(0)
    k_t = np.maximum(1, np.ceil(np.round(share * n_t, 9)))
    out = np.zeros(n, dtype=bool)
    out[order] = rank < k_t[d]
    return out


def _check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise AtriskError(f"share must be in (0, 1], got {share}")


class _RecallDesign:
    """Sparse matrices that give, per resample, how many copies of each positive are flagged.

    Sort pairs by (day, descending score, row).  A positive pair ``i`` on day ``d`` is
    flagged in ``clip(k_d − A_i, 0, w_i)`` of its ``w_i`` copies, where ``A_i`` is the
    weight ranked above it on day ``d`` and ``k_d = max(1, ceil(share · N_d))`` with
    ``N_d`` the day's total weight.  ``A`` and ``N`` are linear in the per-student
    weights: ``A = c · M`` with ``M[g, i]`` = pairs of student ``g`` above ``i`` on its day.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, day: np.ndarray, codes: np.ndarray,
                 n_groups: int, share: float):
        _check_share(share)
        n = len(p)
        self.share = share
        order = np.lexsort((np.arange(n), -p, day))
        d = day[order]
        g = codes[order]
        pos_sorted = np.flatnonzero(y[order])
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]]) if n else np.zeros(0, int)
        self.n_days = len(starts)
        self.pos_day = d[pos_sorted]
        self.pos_group = g[pos_sorted]
        lengths = pos_sorted - starts[self.pos_day]  # pairs above each positive
        total = int(lengths.sum())
        cols = np.repeat(np.arange(len(pos_sorted)), lengths)
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = g[np.repeat(starts[self.pos_day], lengths) + offsets]
        self.above = sparse.csr_matrix((np.ones(total), (rows, cols)),
                                       shape=(n_groups, len(pos_sorted))).T.tocsr()
        self.per_day = sparse.csr_matrix((np.ones(n), (g, d)),
                                         shape=(n_groups, max(self.n_days, 1))).T.tocsr()

    def recalls(self, counts: np.ndarray) -> np.ndarray:
        """Recall under each row of per-student weights (NaN without positive weight)."""
        ct = counts.T
        above = (self.above @ ct).T
        n_day = (self.per_day @ ct).T
        k = np.maximum(1.0, np.ceil(np.round(self.share * n_day, 9)))
        w = counts[:, self.pos_group]
        caught = np.clip(k[:, self.pos_day] - above, 0.0, w).sum(axis=1)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = caught / total
        out[total <= 0] = np.nan
        return out


def weighted_recall_at_top(y, p, t, weights, groups=None,
                           share: float = DEFAULT_SHARE) -> np.ndarray:
    """Recall at the daily top ``share`` when pairs are repeated by per-group weights.

    Row ``r`` gives the recall on the table in which every pair of group ``g`` appears
    ``weights[r, g]`` times (copies adjacent, in row order), with the rule of
    :func:`daily_flags`.

    Args:
        y: 0/1 labels, one per pair.
        p: Scores.
        t: Day per pair.
        weights: ``(B, G)`` non-negative integer-like weights, columns in the order of
            the sorted distinct group ids (``(G,)`` for one row).
        groups: Group id per pair; ``None``: every pair its own group.
        share: Share flagged per day.

    Returns:
        ``(B,)`` recalls, NaN where no positive pair has weight.

    Raises:
        AtriskError: On bad inputs.
    """
    yb, pf, codes, n_groups, w = _weighted_inputs(y, p, groups, weights)
    design = _RecallDesign(yb, pf, _day_codes(t, len(yb)), codes, n_groups, share)
    return design.recalls(w)


def recall_at_top(y, p, t, groups, share: float = DEFAULT_SHARE, n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95) -> Interval:
    """Share of positive pairs caught when each day's top ``share`` is flagged, with CI.

    The point value equals ``atrisk.training.evaluate.recall_at_top``.  In a resample a
    student drawn ``c`` times appears ``c`` times in each of its days' lists, so both
    the number flagged per day (``max(1, ceil(share · n_t))`` of the resampled list)
    and who is flagged are recomputed.

    Args:
        y: 0/1 labels, one per pair.
        p: Scores.
        t: Day of each pair (flagging is per day).
        groups: Student id per pair.
        share: Share flagged per day.
        n_boot: Resamples.
        seed: Seed of the resamples.
        level: Coverage.

    Returns:
        An :class:`Interval` with ``metric = "recall_at_top"``; ``value`` is ``None``
        without positive pairs.

    Raises:
        AtriskError: On bad inputs.
    """
    _check_level(level, n_boot)
    yb = _as_labels(y)
    pf = _as_scores(p, len(yb))
    day = _day_codes(t, len(yb))
    codes, n_groups = group_codes(groups, len(yb))
    info = _counts_summary(yb, n_groups)
    _check_share(share)
    if info["n_pos"] == 0:
        return Interval("recall_at_top", None, None, level, n_boot, 0,
                        note="recall undefined: no positive pairs", **info)
    design = _RecallDesign(yb, pf, day, codes, n_groups, share)
    value = float(design.recalls(np.ones((1, n_groups)))[0])
    draws = np.concatenate([design.recalls(c)
                            for c in resample_counts(n_groups, n_boot, seed)])
    ci, usable = _interval(draws, level)
    note = _join(_few_positives_note(info["n_pos"]),
                 f"{n_boot - usable} of {n_boot} resamples had no positive pair"
                 if usable < n_boot else None)
    return Interval("recall_at_top", value, ci, level, n_boot, usable, note=note, **info)


# --------------------------------------------------------------------------- calibration
def reliability_curve(y, p, n_bins: int = 10, strategy: str = "quantile") -> dict:
    """Return reliability-plot data: per bin, mean predicted probability vs observed rate.

    Uses :func:`sklearn.calibration.calibration_curve` and adds the pair count of
    each non-empty bin (same binning), so a plot can size its points or draw
    binomial error bars.

    Args:
        y: 0/1 labels.
        p: Probabilities in [0, 1].
        n_bins: Number of bins.
        strategy: ``quantile`` (equal counts; the default, since risks are skewed)
            or ``uniform`` (equal widths).

    Returns:
        ``{"mean_predicted": [...], "observed_rate": [...], "count": [...],
        "n_bins": n_bins, "strategy": strategy}`` over the non-empty bins, in
        increasing predicted probability.

    Raises:
        AtriskError: On bad inputs or strategy.
    """
    from sklearn.calibration import calibration_curve

    yb = _as_labels(y)
    pf = _as_scores(p, len(yb), unit=True)
    if strategy not in ("quantile", "uniform"):
        raise AtriskError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    if len(yb) == 0:
        return {"mean_predicted": [], "observed_rate": [], "count": [], "n_bins": n_bins,
                "strategy": strategy}
    prob_true, prob_pred = calibration_curve(yb.astype(int), pf, n_bins=n_bins,
                                             strategy=strategy)
    if strategy == "quantile":
        edges = np.percentile(pf, np.linspace(0, 100, n_bins + 1))
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], pf)
    counts = np.bincount(ids, minlength=n_bins)
    return {"mean_predicted": [float(v) for v in prob_pred],
            "observed_rate": [float(v) for v in prob_true],
            "count": [int(c) for c in counts[counts > 0]],
            "n_bins": n_bins, "strategy": strategy}


def calibration_error(curve: dict) -> float | None:
    """Count-weighted mean ``|observed − predicted|`` over the bins of a reliability curve.

    Args:
        curve: The dict of :func:`reliability_curve`.

    Returns:
        The expected calibration error (0 = on the diagonal), ``None`` without bins.
    """
    c = np.asarray(curve["count"], dtype=float)
    if c.sum() == 0:
        return None
    gap = np.abs(np.asarray(curve["observed_rate"]) - np.asarray(curve["mean_predicted"]))
    return float((c * gap).sum() / c.sum())


# --------------------------------------------------------------------------- summaries
def evaluation_summary(y, p, groups, t=None, share: float = DEFAULT_SHARE,
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                       probabilities: bool = True) -> dict:
    """Return the per-Δ numbers of an evaluation table (JSON-ready, shared resamples).

    Args:
        y: 0/1 labels (e.g. ``dropout_within_Δ`` of the held-out pairs).
        p: Model output per pair.
        groups: Student id per pair.
        t: Day per pair; without it no recall is computed.
        share: Share flagged per day for the recall.
        n_boot: Resamples.
        seed: Seed of the resamples (shared by every metric).
        level: Coverage.
        probabilities: ``p`` are probabilities (adds Brier, mean p, observed rate).

    Returns:
        ``auc``, ``auc_ci``, ``n_pos``, ``n_neg``, ``n_pairs``, ``n_students``,
        ``n_boot``, ``n_boot_usable``, and when available ``brier``, ``brier_ci``,
        ``mean_p``, ``observed_rate``, ``recall_at_top``, ``recall_at_top_ci``;
        ``notes`` lists caveats (fewer than :data:`MIN_POSITIVES` positives, skipped
        resamples).
    """
    auc = bootstrap_auc(y, p, groups, n_boot, seed, level)
    out = {"auc": auc.value, "auc_ci": auc.to_dict()["ci"], "n_pos": auc.n_pos,
           "n_neg": auc.n_neg, "n_pairs": auc.n_pairs, "n_students": auc.n_students,
           "n_boot": n_boot, "n_boot_usable": auc.n_usable, "level": level, "notes": []}
    if auc.note:
        out["notes"].append(auc.note)
    if probabilities and auc.n_pairs:
        br = brier_score(y, p, groups, n_boot, seed, level)
        out["brier"], out["brier_ci"] = br.value, br.to_dict()["ci"]
        out["mean_p"] = float(np.mean(p))
        out["observed_rate"] = float(np.mean(np.asarray(y, dtype=float)))
    if t is not None:
        rec = recall_at_top(y, p, t, groups, share, n_boot, seed, level)
        out["recall_at_top"], out["recall_at_top_ci"] = rec.value, rec.to_dict()["ci"]
        out["flag_share"] = share
    return out


def _group_label(value) -> str:
    """Group name: whole floats without ``.0`` (a grade column with NaN is float)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _natural(label: str) -> tuple:
    """Sort key: numbers by value (grade 2 before grade 10), then other labels by text."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def group_report(frame: pd.DataFrame, group_col: str, y_col: str = "y", p_col: str = "p",
                 student_col: str = "student_id", t_col: str = "t",
                 share: float = DEFAULT_SHARE, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> list[dict]:
    """Per group of a student attribute: flag rates, AUC, calibration, recall — with n.

    Flags come from the whole population: each day the top ``share`` of all students
    is flagged (:func:`daily_flags`), as on the real risk list; then each group's
    rates are read off those flags.  Intervals resample the group's students, holding
    the flags fixed.

    Args:
        frame: One row per pair: ``group_col``, ``y_col`` (0/1), ``p_col``
            (probability), ``student_col`` and ``t_col``.
        group_col: The attribute (e.g. ``grade``); missing values form the group
            ``"(missing)"``.
        y_col: Label column.
        p_col: Probability column.
        student_col: Student id column (the cluster).
        t_col: Day column (flagging is per day).
        share: Share flagged per day.
        n_boot: Resamples per group.
        seed: Seed of the resamples.
        level: Coverage.

    Returns:
        One dict per group (sorted by group), JSON-ready: ``group``, ``n_pairs``,
        ``n_students``, ``n_pos``, ``flag_rate`` (+``_ci``; share of the group's pairs
        flagged), ``recall_at_top`` (+``_ci``; share of its positive pairs flagged),
        ``false_flag_rate`` (+``_ci``; share of its negative pairs flagged), ``auc``
        (+``_ci``), ``brier`` (+``_ci``), ``mean_p``, ``observed_rate``,
        ``calibration_gap`` (+``_ci``; mean p − observed rate, 0 = calibrated in the
        large) and ``notes``.

    Raises:
        AtriskError: When a column is missing or values are invalid.
    """
    missing = [c for c in (group_col, y_col, p_col, student_col, t_col) if c not in frame]
    if missing:
        raise AtriskError(f"group_report needs columns {missing} in the pairs frame")
    y = _as_labels(frame[y_col].to_numpy(), y_col)
    p = _as_scores(frame[p_col].to_numpy(), len(y), p_col, unit=True)
    flags = daily_flags(frame[t_col].to_numpy(), p, share)
    attr = frame[group_col].astype(object).where(frame[group_col].notna(), "(missing)")
    attr = attr.map(_group_label).to_numpy()
    students = frame[student_col].astype(str).to_numpy()
    rows = []
    for g in sorted(set(attr), key=_natural):
        m = attr == g
        yg, pg, fg, sg = y[m], p[m], flags[m].astype(float), students[m]
        ones = np.ones(len(yg))
        auc = bootstrap_auc(yg, pg, sg, n_boot, seed, level)
        brier = brier_score(yg, pg, sg, n_boot, seed, level)
        flag_rate = ratio_interval("flag_rate", fg, ones, sg, n_boot, seed, level, y=yg)
        recall = ratio_interval("recall_at_top", fg * yg, yg.astype(float), sg, n_boot,
                                seed, level, y=yg)
        false_flag = ratio_interval("false_flag_rate", fg * ~yg, (~yg).astype(float), sg,
                                    n_boot, seed, level, y=yg)
        gap = ratio_interval("calibration_gap", pg - yg, ones, sg, n_boot, seed, level,
                             y=yg)
        rows.append({
            "group": g, "n_pairs": int(m.sum()), "n_students": auc.n_students,
            "n_pos": auc.n_pos,
            "flag_rate": flag_rate.value, "flag_rate_ci": flag_rate.to_dict()["ci"],
            "recall_at_top": recall.value, "recall_at_top_ci": recall.to_dict()["ci"],
            "false_flag_rate": false_flag.value,
            "false_flag_rate_ci": false_flag.to_dict()["ci"],
            "auc": auc.value, "auc_ci": auc.to_dict()["ci"],
            "brier": brier.value, "brier_ci": brier.to_dict()["ci"],
            "mean_p": float(pg.mean()), "observed_rate": float(yg.mean()),
            "calibration_gap": gap.value, "calibration_gap_ci": gap.to_dict()["ci"],
            "notes": [n for n in (auc.note,) if n],
        })
    return rows
