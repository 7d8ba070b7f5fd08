"""The seed's MOOC baselines, each tuned by 5-fold CV grid search on the training rows.

LR (logistic regression), linear SVM, random forest, GBDT (LightGBM) and a 3-layer
DNN (scikit-learn ``MLPClassifier`` with three hidden layers).  Each is a scikit-learn
``Pipeline`` (scaler where the model needs one) searched by ``GridSearchCV`` with
ROC-AUC scoring over stratified folds; the grids are kept small so that the whole set
trains in minutes on two CPU cores (see ``docs/mooc.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

#: Baseline names, in report order.
BASELINES = ("lr", "svm", "rf", "gbdt", "dnn")


def baseline_search_space(name: str, seed: int = 0) -> tuple[Pipeline, dict[str, list]]:
    """Return the untuned pipeline of a baseline and its CV grid.

    Args:
        name: One of :data:`BASELINES`.
        seed: Random seed of the stochastic models.

    Returns:
        ``(pipeline, param_grid)`` for ``GridSearchCV``.

    Raises:
        ValueError: For an unknown name.
    """
    if name == "lr":
        return (Pipeline([("scale", StandardScaler()),
                          ("model", LogisticRegression(max_iter=2000))]),
                {"model__C": [0.01, 0.1, 1.0]})
    if name == "svm":
        return (Pipeline([("scale", StandardScaler()),
                          ("model", LinearSVC(dual=False, max_iter=5000))]),
                {"model__C": [0.01, 0.1, 1.0]})
    if name == "rf":
        return (Pipeline([("model", RandomForestClassifier(
                    n_estimators=150, max_samples=0.5, max_features="sqrt", n_jobs=1,
                    random_state=seed))]),
                {"model__min_samples_leaf": [3, 10]})
    if name == "gbdt":
        from lightgbm import LGBMClassifier

        return (Pipeline([("model", LGBMClassifier(
                    n_estimators=300, learning_rate=0.05, subsample=0.8, subsample_freq=1,
                    colsample_bytree=0.8, min_child_samples=40, n_jobs=1, verbose=-1,
                    random_state=seed))]),
                {"model__num_leaves": [15, 31]})
    if name == "dnn":
        return (Pipeline([("scale", StandardScaler()),
                          ("model", MLPClassifier(
                              hidden_layer_sizes=(128, 64, 32), batch_size=256,
                              learning_rate_init=1e-3, max_iter=40, early_stopping=True,
                              n_iter_no_change=4, random_state=seed))]),
                {"model__alpha": [1e-4, 1e-2]})
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def fit_baselines(X: np.ndarray, y: np.ndarray, names: tuple[str, ...] = BASELINES,
                  folds: int = 5, n_jobs: int = 2, seed: int = 0,
                  on_done: Callable[[str, dict], None] | None = None
                  ) -> tuple[dict[str, Pipeline], dict[str, dict]]:
    """Tune each baseline by stratified k-fold CV grid search (ROC-AUC) and refit it.

    Args:
        X: ``(n, p)`` training features.
        y: 0/1 labels.
        names: Baselines to fit.
        folds: CV folds (the seed: 5).
        n_jobs: Parallel fits (the folds × grid points run in this many processes).
        seed: Fold shuffling and model seed.
        on_done: Called with ``(name, cv_info)`` after each baseline.

    Returns:
        ``(models, cv_info)``: the refitted best pipelines, and per baseline its best
        parameters, best mean CV AUC and the whole grid's mean CV AUCs.
    """
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    models, info = {}, {}
    for name in names:
        pipe, grid = baseline_search_space(name, seed)
        search = GridSearchCV(pipe, grid, scoring="roc_auc", cv=cv, n_jobs=n_jobs, refit=True)
        search.fit(X, y)
        models[name] = search.best_estimator_
        info[name] = {
            "best_params": {k.removeprefix("model__"): v for k, v in search.best_params_.items()},
            "cv_auc": float(search.best_score_),
            "grid": [{"params": {k.removeprefix("model__"): v for k, v in p.items()},
                      "cv_auc": float(s)} for p, s in zip(
                          search.cv_results_["params"], search.cv_results_["mean_test_score"],
                          strict=True)],
        }
        if on_done:
            on_done(name, info[name])
    return models, info


def baseline_scores(model: Pipeline, X: np.ndarray) -> np.ndarray:
    """Return a dropout score per row: the probability, or the SVM's decision value.

    Args:
        model: A fitted baseline pipeline.
        X: ``(n, p)`` features.

    Returns:
        ``(n,)`` scores (higher = more likely dropout); rank-based metrics use them as is.
    """
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)[:, 1]
    return model.decision_function(X)
