"""Fitting the per-horizon pipelines: the fusion pipeline, tuning, and the baselines.

The building blocks of :class:`~atrisk.training.model.RiskModel` and of the
reproduction recipes: :func:`make_pipeline` (in-class PCA block + passthrough →
LightGBM), :func:`fit_horizon` (augmentation, over-sampling, fit), :func:`tune_params`
(grouped cross-validation) and :func:`fit_baselines` (LR / DT / RF / LightGBM without
augmentation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from atrisk.config import TrainingConfig
from atrisk.features.pairs import feature_columns
from atrisk.training.labels import add_labels, augment, label_column, oversample

#: Prefix of the in-class feature columns (the PCA block).
IN_CLASS_PREFIX = "in_"
#: Threads of LightGBM and the random forest (not part of the config: it does not change
#: outputs).
N_JOBS = 2


#: Default LightGBM grid of the internal cross-validation (``tune``): 6 combinations.
TUNE_GRID: list[dict] = [
    {"num_leaves": nl, "min_child_samples": mc}
    for nl in (7, 15, 31) for mc in (20, 100)
]
#: Folds of the internal cross-validation (grouped by student).
TUNE_FOLDS = 3
#: Horizon whose labels the internal cross-validation scores (the grid's winner is
#: used for every horizon: one search instead of one per Δ).
TUNE_HORIZON = 7


def make_pipeline(in_class_cols: list[str], other_cols: list[str],
                  config: TrainingConfig) -> Pipeline:
    """Return the unfitted fusion pipeline (in-class PCA block + passthrough → LightGBM).

    Args:
        in_class_cols: In-class columns (imputed, scaled, PCA); empty skips the block.
        other_cols: Columns passed through unchanged.
        config: LightGBM parameters, PCA variance and seed.

    Returns:
        An unfitted :class:`~sklearn.pipeline.Pipeline` with steps ``features`` and ``model``.
    """
    blocks = []
    if in_class_cols:
        blocks.append(("in_class", Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("pca", PCA(n_components=config.pca_variance, svd_solver="full",
                        random_state=config.seed)),
        ]), list(in_class_cols)))
    if other_cols:
        blocks.append(("rest", "passthrough", list(other_cols)))
    return Pipeline([
        ("features", ColumnTransformer(blocks)),
        ("model", LGBMClassifier(
            n_estimators=config.n_estimators, learning_rate=config.learning_rate,
            num_leaves=config.num_leaves, min_child_samples=config.min_child_samples,
            random_state=config.seed, verbose=-1, n_jobs=N_JOBS,
        )),
    ])


def split_columns(pairs: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """Return (usable in-class columns, other feature columns, all-NaN in-class columns)."""
    feats = feature_columns(pairs)
    in_all = [c for c in feats if c.startswith(IN_CLASS_PREFIX)]
    in_cols = [c for c in in_all if pairs[c].notna().any()]
    other = [c for c in feats if not c.startswith(IN_CLASS_PREFIX)]
    return in_cols, other, [c for c in in_all if c not in in_cols]


def fit_horizon(train_pairs: pd.DataFrame, horizon: int, in_cols: list[str],
                other_cols: list[str], config: TrainingConfig,
                lookback: int) -> tuple[Pipeline | None, dict]:
    """Fit the pipeline of one horizon on training pairs, as :meth:`RiskModel.fit` does.

    Args:
        train_pairs: The training students' labelled pairs.
        horizon: Δ in days.
        in_cols: In-class columns (the PCA block).
        other_cols: Other feature columns.
        config: Training settings (G, over-sampling, LightGBM, seed).
        lookback: Λ in days (0: no pseudo-positives).

    Returns:
        ``(pipeline or None when one class only, info dict)``.
    """
    aug = augment(train_pairs, horizon, lookback, config.weighting)
    info = {
        "positive_ratio_before": float(train_pairs[label_column(horizon)].mean())
        if len(train_pairs) else float("nan"),
        "n_positive": int(train_pairs[label_column(horizon)].sum()),
        "n_pseudo": int(aug["is_pseudo"].sum()),
    }
    if aug["label"].nunique() < 2:
        info["skipped"] = ("no positive pairs in training" if aug["label"].sum() == 0
                           else "no negative pairs in training")
        return None, info
    rows = oversample(aug, config.oversample)
    info["positive_ratio_after"] = float(aug["label"].mean())  # rows, after augmentation
    info["positive_weight_share"] = float(
        rows.loc[rows["label"] == 1, "weight"].sum() / rows["weight"].sum()
    )
    info["n_rows_fit"] = int(len(rows))
    pipe = make_pipeline(in_cols, other_cols, config)
    pipe.fit(rows[in_cols + other_cols], rows["label"].to_numpy(),
             model__sample_weight=rows["weight"].to_numpy(dtype=float))
    return pipe, info


def tune_params(train_pairs: pd.DataFrame, config: TrainingConfig,
                grid: list[dict] | None = None, folds: int = TUNE_FOLDS,
                horizon: int | None = None) -> dict:
    """Choose LightGBM parameters by cross-validation grouped by student.

    Each fold holds out whole students (:class:`~sklearn.model_selection.GroupKFold`,
    so no student is in two folds); the model of each grid point is fitted exactly as
    in training (augmentation with the config's Λ and G, weighted over-sampling) and
    scored by the AUC of the plain ``dropout_within_h`` labels of the held-out fold.

    Args:
        train_pairs: The training students' pairs (features, ``t``, ``dropout_time``).
        config: The base configuration (grid values replace its fields).
        grid: Parameter dicts (keys of :class:`TrainingConfig`); default
            :data:`TUNE_GRID`.
        folds: Number of folds (reduced to the number of students when fewer).
        horizon: Δ whose labels are scored; default :data:`TUNE_HORIZON` when trained,
            else the config's first horizon.

    Returns:
        ``{"best": params, "horizon": h, "folds": k, "scores": [{**params, "auc": mean}]}``
        (``best`` is ``{}`` when no fold could be scored).
    """
    grid = grid or TUNE_GRID
    if horizon is None:
        horizon = TUNE_HORIZON if TUNE_HORIZON in config.horizons else config.horizons[0]
    labelled = add_labels(train_pairs, [horizon])
    groups = labelled["student_id"].astype(str).to_numpy()
    k = min(folds, len(np.unique(groups)))
    result: dict = {"best": {}, "horizon": horizon, "folds": k, "scores": []}
    if k < 2:
        return result
    in_cols, other, _ = split_columns(labelled)
    splits = list(GroupKFold(n_splits=k).split(labelled, groups=groups))
    y_all = labelled[label_column(horizon)].to_numpy()
    best_auc = -np.inf
    for params in grid:
        cfg = config.model_copy(update=params)
        aucs = []
        for tr, va in splits:
            if len(np.unique(y_all[va])) < 2:
                continue
            pipe, _ = fit_horizon(labelled.iloc[tr], horizon, in_cols, other, cfg,
                                   cfg.lookback)
            if pipe is None:
                continue
            p = pipe.predict_proba(labelled.iloc[va][in_cols + other].astype(float))[:, 1]
            aucs.append(roc_auc_score(y_all[va], p))
        mean = float(np.mean(aucs)) if aucs else float("nan")
        result["scores"].append({**params, "auc": mean})
        if aucs and mean > best_auc:
            best_auc, result["best"] = mean, dict(params)
    return result


def fit_baselines(pairs_train: pd.DataFrame, horizon: int,
                  config: TrainingConfig | None = None) -> dict[str, Pipeline]:
    """Fit the baselines on the training pairs for one horizon (plain P/N labels).

    ``lr``: imputer + scaler + logistic regression; ``dt``: imputer + decision tree
    (depth 6); ``rf``: imputer + random forest (200 trees); ``gbdt_none``: the LightGBM
    fusion pipeline without pseudo-positives (Λ = 0, same over-sampling).

    Args:
        pairs_train: The training students' pairs (features, ``t``, ``dropout_time``).
        horizon: Δ in days.
        config: Seeds, LightGBM and PCA parameters.

    Returns:
        ``{name: fitted Pipeline}``; empty when the training labels have one class only.
    """
    cfg = config or TrainingConfig()
    train = add_labels(pairs_train, [horizon])
    in_cols, other, _ = split_columns(train)
    cols = in_cols + other
    y = train[label_column(horizon)].to_numpy()
    if len(np.unique(y)) < 2:
        return {}
    x = train[cols].astype(float)
    models = {
        "lr": Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                        ("model", LogisticRegression(max_iter=1000))]),
        "dt": Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("model", DecisionTreeClassifier(max_depth=6,
                                                         random_state=cfg.seed))]),
        "rf": Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("model", RandomForestClassifier(200, n_jobs=N_JOBS,
                                                         random_state=cfg.seed))]),
    }
    out: dict[str, Pipeline] = {}
    for name, pipe in models.items():
        out[name] = pipe.fit(x, y)
    gbdt, _ = fit_horizon(train, horizon, in_cols, other, cfg, lookback=0)
    if gbdt is not None:
        out["gbdt_none"] = gbdt
    return out
