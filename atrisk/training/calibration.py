"""Calibrated probabilities: isotonic or Platt, fitted on out-of-fold predictions.

A model trained on re-weighted or over-sampled rows (the positives carry 30 % of the
weight, while fewer than 1 % of the pairs are positive) outputs scores, not
probabilities.  :class:`Calibrator` maps a score ``p`` to the observed chance of the
event, learnt from predictions the model made on students it was *not* fitted on:
:func:`out_of_fold` refits the model on ``k − 1`` folds of students
(:class:`~sklearn.model_selection.GroupKFold`, grouped by student) and predicts the
held-out fold, as ``CalibratedClassifierCV`` does, but with whole students held out.

- ``isotonic``: a non-decreasing step-linear map (``IsotonicRegression``, clipped to
  [0, 1] and to the fitted range); flexible, needs a few hundred positives.
- ``platt``: ``sigmoid(a · logit(p) + b)`` with Platt's smoothed targets and ``a ≥ 0``;
  two numbers, stable with few positives, never reverses the ranking.

The state is plain numbers (:meth:`Calibrator.to_dict` / :meth:`Calibrator.from_dict`):
a saved model can store it as JSON and reload it without unpickling anything.

Example:
    >>> p_oof = out_of_fold(fit_predict, n_rows=len(y), groups=students)  # doctest: +SKIP
    >>> cal = Calibrator("isotonic").fit(p_oof, y)                          # doctest: +SKIP
    >>> cal.transform(model_scores)                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import GroupKFold

from atrisk.errors import AtriskError, ModelLoadError

#: Calibration methods.
METHODS = ("isotonic", "platt")
#: Version of the serialised state.
STATE_VERSION = 1
#: Scores are clipped to [EPS, 1 − EPS] before the logit of Platt scaling.
EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _platt(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Fit ``sigmoid(a x + b)`` by Newton's method on the weighted log-loss.

    Targets follow Platt (1999): ``(N₊ + 1) / (N₊ + 2)`` for positives and
    ``1 / (N₋ + 2)`` for negatives (``N`` = summed weights), which keeps the fit finite
    when the classes separate.  The slope is kept ≥ 0: a calibration map must not
    reverse the model's ranking; where the out-of-fold scores rank *worse* than
    chance, the best non-decreasing map is the constant ``sigmoid(b)`` at the targets'
    mean (as isotonic regression would give).
    """
    n_pos, n_neg = w[y].sum(), w[~y].sum()
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.column_stack([x, np.ones_like(x)])
    theta = np.array([0.0, np.log((n_pos + 1) / (n_neg + 1))])

    def loss(th):
        z = X @ th
        # log(1 + e^z) - t z, written stably
        return float(np.sum(w * (np.logaddexp(0.0, z) - target * z)))

    current = loss(theta)
    for _ in range(100):
        s = _sigmoid(X @ theta)
        grad = X.T @ (w * (s - target))
        hess = (X * (w * s * (1 - s))[:, None]).T @ X + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8:
            cand = theta - t * step
            new = loss(cand)
            if new <= current:
                break
            t /= 2
        else:
            break
        theta, improved = cand, current - new
        current = new
        if improved <= 1e-13 * max(1.0, abs(current)) or np.abs(t * step).max() < 1e-10:
            break
    if theta[0] < 0:
        mean = float(np.sum(w * target) / np.sum(w))
        return 0.0, float(np.log(mean) - np.log1p(-mean))
    return float(theta[0]), float(theta[1])


class Calibrator:
    """Map model scores to calibrated probabilities (isotonic or Platt).

    Args:
        method: ``isotonic`` or ``platt``.

    Attributes:
        thresholds_: Isotonic: the fitted x values (increasing).
        values_: Isotonic: the calibrated probability at each threshold.
        a_: Platt: slope on ``logit(p)``.
        b_: Platt: intercept.
        n_fit_: Rows the calibrator was fitted on.
        n_pos_fit_: Positive rows among them.
    """

    def __init__(self, method: str = "isotonic"):
        self.method = method

    def fit(self, p, y, sample_weight=None) -> Calibrator:
        """Fit on scores ``p`` the model gave to rows it was not trained on.

        Args:
            p: Scores in [0, 1] (out-of-fold predictions).
            y: 0/1 outcomes.
            sample_weight: Optional non-negative weights per row.

        Returns:
            ``self``.

        Raises:
            AtriskError: For an unknown method, bad values or a single class.
        """
        if self.method not in METHODS:
            raise AtriskError(f"unknown calibration method {self.method!r}; use one of "
                              f"{list(METHODS)}")
        p = np.asarray(p, dtype=float)
        y = np.asarray(y)
        if p.ndim != 1 or p.shape != y.shape:
            raise AtriskError(f"p and y must be 1-D of the same length; got {p.shape}, "
                              f"{y.shape}")
        if not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
            raise AtriskError("calibration needs probabilities in [0, 1] without NaN")
        if not np.isin(np.unique(y), [0, 1]).all():
            raise AtriskError("calibration needs 0/1 labels")
        yb = y.astype(bool)
        if yb.all() or (~yb).all():
            raise AtriskError("calibration needs both outcomes among the rows "
                              f"({int(yb.sum())} positive of {len(yb)})")
        w = np.ones(len(p)) if sample_weight is None else np.asarray(sample_weight, float)
        if w.shape != p.shape or (w < 0).any():
            raise AtriskError("sample_weight must be non-negative, one per row")
        if self.method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True,
                                     out_of_bounds="clip").fit(p, yb.astype(float), w)
            self.thresholds_ = np.asarray(iso.X_thresholds_, dtype=float)
            self.values_ = np.asarray(iso.y_thresholds_, dtype=float)
        else:
            self.a_, self.b_ = _platt(_logit(p), yb, w)
        self.n_fit_ = int(len(p))
        self.n_pos_fit_ = int(yb.sum())
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_fit_"):
            raise AtriskError("the calibrator is not fitted; call fit() first")

    def transform(self, p) -> np.ndarray:
        """Return calibrated probabilities of scores ``p``.

        Args:
            p: Scores in [0, 1].

        Returns:
            Probabilities in [0, 1], one per score.  Isotonic maps are flat below the
            smallest and above the largest fitted score.

        Raises:
            AtriskError: When not fitted or the scores are invalid.
        """
        self._check_fitted()
        p = np.asarray(p, dtype=float)
        if not np.isfinite(p).all():
            raise AtriskError("scores to calibrate have missing values")
        if self.method == "isotonic":
            return np.interp(p, self.thresholds_, self.values_)
        return _sigmoid(self.a_ * _logit(p) + self.b_)

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict:
        """Return the fitted state as plain JSON-ready numbers.

        Raises:
            AtriskError: When not fitted.
        """
        self._check_fitted()
        state = {"version": STATE_VERSION, "method": self.method, "n_fit": self.n_fit_,
                 "n_pos_fit": self.n_pos_fit_}
        if self.method == "isotonic":
            state["thresholds"] = [float(v) for v in self.thresholds_]
            state["values"] = [float(v) for v in self.values_]
        else:
            state["a"], state["b"], state["eps"] = self.a_, self.b_, EPS
        return state

    @classmethod
    def from_dict(cls, state: dict) -> Calibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output (no unpickling).

        Raises:
            ModelLoadError: When the state is malformed (names what is wrong).
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ModelLoadError(f"calibration state has no version {STATE_VERSION}; "
                                 "recalibrate the model")
        method = state.get("method")
        if method not in METHODS:
            raise ModelLoadError(f"calibration state has unknown method {method!r}")
        cal = cls(method)
        try:
            if method == "isotonic":
                x = np.asarray(state["thresholds"], dtype=float)
                v = np.asarray(state["values"], dtype=float)
                if x.ndim != 1 or x.shape != v.shape or len(x) == 0 \
                        or np.any(np.diff(x) < 0) or np.any(np.diff(v) < 0) \
                        or not (np.isfinite(x).all() and np.isfinite(v).all()) \
                        or v.min() < 0 or v.max() > 1:
                    raise ValueError("thresholds/values must be equal-length, "
                                     "non-decreasing, finite, values in [0, 1]")
                cal.thresholds_, cal.values_ = x, v
            else:
                if float(state.get("eps", EPS)) != EPS:
                    raise ValueError(f"eps {state.get('eps')} differs from {EPS}")
                cal.a_, cal.b_ = float(state["a"]), float(state["b"])
                if not (np.isfinite(cal.a_) and np.isfinite(cal.b_)):
                    raise ValueError("a and b must be finite")
            cal.n_fit_ = int(state["n_fit"])
            cal.n_pos_fit_ = int(state["n_pos_fit"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"calibration state is malformed ({exc}); recalibrate "
                                 "the model") from None
        return cal

    def to_json(self) -> str:
        """Return :meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        """Rebuild from :meth:`to_json` output.

        Raises:
            ModelLoadError: When the text is not valid JSON or not a valid state.
        """
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"calibration state is not JSON ({exc})") from None
        return cls.from_dict(state)


def out_of_fold(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], n_rows: int,
                groups, n_splits: int = 5) -> np.ndarray:
    """Out-of-fold predictions with whole students held out (``GroupKFold``).

    Args:
        fit_predict: ``fit_predict(train_idx, test_idx)`` fits a fresh model on the
            rows ``train_idx`` and returns its scores for the rows ``test_idx`` (the
            caller decides what a row is and how training augments it; only the
            returned scores of original rows are used).
        n_rows: Number of rows.
        groups: Student id per row.
        n_splits: Folds (reduced to the number of students when fewer; at least 2).

    Returns:
        ``(n_rows,)`` scores, each from a model that never saw that row's student.

    Raises:
        AtriskError: With fewer than 2 students, or when ``fit_predict`` returns the
            wrong number of scores.
    """
    groups = np.asarray(groups)
    if len(groups) != n_rows:
        raise AtriskError(f"groups must have one id per row ({n_rows}), got {len(groups)}")
    k = min(n_splits, len(np.unique(groups)))
    if k < 2:
        raise AtriskError("out-of-fold calibration needs at least 2 students")
    out = np.full(n_rows, np.nan)
    for tr, te in GroupKFold(n_splits=k).split(np.zeros(n_rows), groups=groups):
        got = np.asarray(fit_predict(tr, te), dtype=float)
        if got.shape != (len(te),):
            raise AtriskError(f"fit_predict returned {got.shape} scores for {len(te)} rows")
        out[te] = got
    return out


def fit_out_of_fold(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], y, groups,
                    method: str = "isotonic",
                    n_splits: int = 5) -> tuple[Calibrator, np.ndarray]:
    """Fit a :class:`Calibrator` on out-of-fold predictions grouped by student.

    Args:
        fit_predict: See :func:`out_of_fold`.
        y: 0/1 outcome per row (e.g. ``dropout_within_Δ`` of the original pairs).
        groups: Student id per row.
        method: ``isotonic`` or ``platt``.
        n_splits: Folds.

    Returns:
        ``(calibrator, p_oof)``.

    Raises:
        AtriskError: See :func:`out_of_fold` and :meth:`Calibrator.fit`.
    """
    y = np.asarray(y)
    p_oof = out_of_fold(fit_predict, len(y), groups, n_splits)
    return Calibrator(method).fit(p_oof, y), p_oof
