"""Fitting the risk pipelines: the fusion pipeline, both label constructions, tuning, baselines.

The building blocks of :class:`~atrisk.training.model.RiskModel` and of the
reproduction recipes: :func:`make_pipeline` (in-class PCA block + passthrough →
LightGBM), :func:`training_rows` (the labelled, balanced training rows of either label
construction: ``horizon`` per Δ, ``seed`` once for every Δ), :func:`fit_rows`,
:func:`fit_horizon` / :func:`fit_seed` (rows + fit), :func:`tune_params` (grouped
cross-validation) and :func:`fit_baselines` (LR / DT / RF / LightGBM without
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
from threadpoolctl import threadpool_limits

from atrisk.config import TrainingConfig
from atrisk.errors import AtriskError
from atrisk.features.pairs import feature_columns
from atrisk.training.labels import add_labels, augment, label_column
from atrisk.training.seed_labels import (
    FeatureBuilder,
    balance,
    lookup_builder,
    records_from_pairs,
    seed_labels,
)

#: Prefix of the in-class feature columns (the PCA block).
IN_CLASS_PREFIX = "in_"
#: Threads of LightGBM and the random forest (not part of the config: it does not change
#: outputs, up to LightGBM's summation order).
N_JOBS = 2
#: Below this many training rows LightGBM runs on one thread (threads cost more than
#: they save on small data, and far more on a busy machine).
SMALL_ROWS = 20_000


def lgbm_threads(n_rows: int) -> int:
    """Return LightGBM's thread count for ``n_rows`` training rows."""
    return 1 if n_rows < SMALL_ROWS else N_JOBS


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
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
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


#: Columns with the days since a student's latest record (class, or active day on KDD
#: Cup), from which ``t_{n−1}`` of the seed construction is recovered.
RECORD_COLUMNS = ("time_days_since_last_class", "time_days_since_last_active")


def seed_records(pairs: pd.DataFrame) -> pd.DataFrame | None:
    """Return each dropout's latest record before its dropout pair (``t_{n−1}``).

    From the first column of :data:`RECORD_COLUMNS` the pairs have
    (:func:`~atrisk.training.seed_labels.records_from_pairs`); ``None`` (the previous
    pair) when they have none.
    """
    for col in RECORD_COLUMNS:
        if col in pairs.columns:
            return records_from_pairs(pairs, col)
    return None


def training_rows(train_pairs: pd.DataFrame, config: TrainingConfig,
                  horizon: int | None = None, lookback: int | None = None,
                  build_features: FeatureBuilder | None = None) -> pd.DataFrame:
    """Return the labelled, balanced training rows of the configured label construction.

    - ``labels = "horizon"``: :func:`~atrisk.training.labels.augment` for ``horizon``
      (P = dropout within Δ, existing pairs Δ < δ ≤ Δ + Λ relabelled with weight G).
    - ``labels = "seed"``: :func:`~atrisk.training.seed_labels.seed_labels` (P = each
      dropout's last pair, P̃ added before it with features at ``t̃``; ``horizon`` is not
      used), ``t_{n−1}`` from the pairs (:func:`seed_records`).

    Then :func:`~atrisk.training.seed_labels.balance` with ``config.balance`` up to the
    ``config.oversample`` share.

    Args:
        train_pairs: The training students' pairs (features, ``student_id``, ``t``,
            ``dropout_time``).
        config: Labels, Λ, G, balance, share and seed.
        horizon: Δ of the horizon construction (required for it).
        lookback: Λ; default ``config.lookback``.
        build_features: Seed construction: the features of pseudo keys (default: looked
            up in ``train_pairs``, which is exact on a daily grid).

    Returns:
        Rows with ``label``, ``weight``, ``is_pseudo`` and ``is_copy``.

    Raises:
        AtriskError: When ``horizon`` is missing for the horizon construction, or from
            the label functions.
    """
    lam = config.lookback if lookback is None else int(lookback)
    if config.labels == "seed":
        builder = build_features or lookup_builder(train_pairs)
        rows = seed_labels(train_pairs, builder, lam, config.weighting,
                           seed_records(train_pairs))
    else:
        if horizon is None:
            raise AtriskError("the horizon label construction needs a horizon")
        rows = augment(train_pairs, horizon, lam, config.weighting)
    return balance(rows, config.balance, config.oversample, config.seed)


def fit_rows(rows: pd.DataFrame, in_cols: list[str], other_cols: list[str],
             config: TrainingConfig) -> Pipeline:
    """Fit the fusion pipeline on training rows with ``label`` and ``weight``.

    Args:
        rows: Rows from :func:`training_rows`.
        in_cols: In-class columns (the PCA block).
        other_cols: Other feature columns.
        config: LightGBM parameters, PCA variance and seed.

    Returns:
        The fitted pipeline.
    """
    pipe = make_pipeline(in_cols, other_cols, config)
    pipe.set_params(model__n_jobs=lgbm_threads(len(rows)))
    # one BLAS thread: the PCA's matrices are small, and threaded BLAS spins on a busy
    # machine
    with threadpool_limits(limits=1, user_api="blas"):
        pipe.fit(rows[in_cols + other_cols].astype(float), rows["label"].to_numpy(),
                 model__sample_weight=rows["weight"].to_numpy(dtype=float))
    return pipe


def _row_info(train_pairs: pd.DataFrame, rows: pd.DataFrame, positive: str | None) -> dict:
    original = rows[~rows["is_pseudo"].to_numpy(bool) & ~rows["is_copy"].to_numpy(bool)]
    info = {
        "n_pairs": int(len(train_pairs)),
        "n_positive": int(train_pairs[positive].sum()) if positive else
        int(original["label"].sum()),
        "n_pseudo": int((rows["is_pseudo"].to_numpy(bool)
                         & ~rows["is_copy"].to_numpy(bool)).sum()),
        "n_copies": int(rows["is_copy"].sum()),
        "n_rows_fit": int(len(rows)),
    }
    info["positive_ratio_before"] = (info["n_positive"] / len(train_pairs)
                                     if len(train_pairs) else float("nan"))
    info["positive_ratio_after"] = float(rows["label"].mean()) if len(rows) else float("nan")
    w = rows["weight"].to_numpy(dtype=float)
    info["positive_weight_share"] = (float(w[rows["label"].to_numpy() == 1].sum() / w.sum())
                                     if w.sum() > 0 else float("nan"))
    return info


def fit_horizon(train_pairs: pd.DataFrame, horizon: int, in_cols: list[str],
                other_cols: list[str], config: TrainingConfig,
                lookback: int | None = None) -> tuple[Pipeline | None, dict]:
    """Fit the pipeline of one horizon (horizon construction) on training pairs.

    Args:
        train_pairs: The training students' labelled pairs.
        horizon: Δ in days.
        in_cols: In-class columns (the PCA block).
        other_cols: Other feature columns.
        config: Training settings (G, balance, LightGBM, seed); its ``labels`` is
            ignored (always the horizon construction).
        lookback: Λ in days (0: no pseudo-positives); default ``config.lookback``.

    Returns:
        ``(pipeline or None when one class only, info dict)``.
    """
    cfg = config if config.labels == "horizon" else config.model_copy(
        update={"labels": "horizon"})
    labelled = (train_pairs if label_column(horizon) in train_pairs.columns
                else add_labels(train_pairs, [horizon]))
    rows = training_rows(labelled, cfg, horizon=horizon, lookback=lookback)
    info = _row_info(labelled, rows, label_column(horizon))
    if rows["label"].nunique() < 2:
        info["skipped"] = ("no positive pairs in training" if rows["label"].sum() == 0
                           else "no negative pairs in training")
        return None, info
    return fit_rows(rows, in_cols, other_cols, cfg), info


def fit_seed(train_pairs: pd.DataFrame, in_cols: list[str], other_cols: list[str],
             config: TrainingConfig, lookback: int | None = None,
             build_features: FeatureBuilder | None = None) -> tuple[Pipeline | None, dict]:
    """Fit the one pipeline of the seed construction (every Δ) on training pairs.

    Args:
        train_pairs: The training students' pairs.
        in_cols: In-class columns (the PCA block).
        other_cols: Other feature columns.
        config: Training settings; its ``labels`` is ignored (always seed).
        lookback: Λ (default ``config.lookback``).
        build_features: Features of pseudo keys (default: looked up in the pairs).

    Returns:
        ``(pipeline or None when one class only, info dict)``.
    """
    cfg = config if config.labels == "seed" else config.model_copy(update={"labels": "seed"})
    rows = training_rows(train_pairs, cfg, lookback=lookback, build_features=build_features)
    info = _row_info(train_pairs, rows, None)
    info["n_dropout_pairs"] = int((rows["is_dropout_pair"].to_numpy(bool)
                                   & ~rows["is_copy"].to_numpy(bool)).sum())
    if rows["label"].nunique() < 2:
        info["skipped"] = ("no dropout pair in training" if rows["label"].sum() == 0
                           else "no negative pairs in training")
        return None, info
    return fit_rows(rows, in_cols, other_cols, cfg), info


def fit_construction(train_pairs: pd.DataFrame, horizon: int, in_cols: list[str],
                     other_cols: list[str], config: TrainingConfig,
                     lookback: int | None = None) -> tuple[Pipeline | None, dict]:
    """Fit the model that scores ``horizon`` under the configured label construction.

    :func:`fit_seed` (the one model of every Δ) for ``labels = "seed"``, else
    :func:`fit_horizon`.

    Returns:
        ``(pipeline or None, info)``.
    """
    if config.labels == "seed":
        return fit_seed(train_pairs, in_cols, other_cols, config, lookback)
    return fit_horizon(train_pairs, horizon, in_cols, other_cols, config, lookback)


def tune_params(train_pairs: pd.DataFrame, config: TrainingConfig,
                grid: list[dict] | None = None, folds: int = TUNE_FOLDS,
                horizon: int | None = None) -> dict:
    """Choose LightGBM parameters by cross-validation grouped by student.

    Each fold holds out whole students (:class:`~sklearn.model_selection.GroupKFold`,
    so no student is in two folds); the model of each grid point is fitted exactly as
    in training (the configured label construction, Λ, G and balance) and
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
            pipe, _ = fit_construction(labelled.iloc[tr], horizon, in_cols, other, cfg)
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
    with threadpool_limits(limits=1, user_api="blas"):
        for name, pipe in models.items():
            out[name] = pipe.fit(x, y)
    gbdt, _ = fit_horizon(train, horizon, in_cols, other, cfg, lookback=0)
    if gbdt is not None:
        out["gbdt_none"] = gbdt
    return out
