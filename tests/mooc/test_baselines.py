"""MOOC baselines: grids, 5-fold CV selection, scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from atrisk.mooc.baselines import BASELINES, baseline_scores, baseline_search_space, fit_baselines


def test_fit_baselines_selects_best_cv_point():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] - X[:, 1] + rng.normal(0, 0.7, 300) > 0).astype(int)
    seen = []
    models, info = fit_baselines(X[:200], y[:200], ("lr", "svm", "gbdt"), folds=5, n_jobs=1,
                                 on_done=lambda n, i: seen.append(n))
    assert seen == ["lr", "svm", "gbdt"]
    for name in ("lr", "svm", "gbdt"):
        grid = info[name]["grid"]
        assert len(grid) == len(next(iter(baseline_search_space(name)[1].values())))
        assert info[name]["cv_auc"] == max(g["cv_auc"] for g in grid)
        best = max(grid, key=lambda g: g["cv_auc"])["params"]
        assert info[name]["best_params"] == best
        s = baseline_scores(models[name], X[200:])
        assert roc_auc_score(y[200:], s) > 0.85
    # the linear SVM has no probabilities: its scores are decision values (any sign)
    assert (baseline_scores(models["svm"], X[200:]) < 0).any()


def test_every_baseline_has_a_small_grid():
    for name in BASELINES:
        pipe, grid = baseline_search_space(name)
        assert 2 <= np.prod([len(v) for v in grid.values()]) <= 3
        assert set(grid) <= set(pipe.get_params())
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_search_space("xgb")
