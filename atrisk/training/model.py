"""The risk model: one fused scikit-learn Pipeline per horizon, and the baselines.

Each horizon ``h`` gets::

    Pipeline([
        ("features", ColumnTransformer([
            ("in_class", Pipeline([SimpleImputer(median), StandardScaler(), PCA(var)]), in_cols),
            ("rest", "passthrough", other_cols)])),
        ("model", LGBMClassifier(...)),
    ])

fitted on the training students only (an 80/20 split by student), on the augmented
(pseudo-positives, :func:`~atrisk.training.labels.augment`) and weighted over-sampled
rows, with ``sample_weight = weight``.  The PCA therefore never sees a held-out student.

Example:
    >>> model = train(pairs, TrainingConfig(horizons=[1, 7]))     # doctest: +SKIP
    >>> model.save(Path("model"))                                  # doctest: +SKIP
    >>> RiskModel.load(Path("model")).predict_proba(pairs, 7)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pandas as pd
import sklearn
import tomli_w
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, GroupShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import atrisk
from atrisk.config import TrainingConfig
from atrisk.errors import AtriskError, ModelLoadError
from atrisk.features.pairs import feature_columns
from atrisk.training.labels import add_labels, augment, label_column, oversample
from atrisk.workspace import atomic_path, write_text

#: Files of a saved model folder.
MODEL_FILE, META_FILE, CONFIG_FILE = "model.joblib", "meta.json", "config.toml"
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


class HorizonError(AtriskError, ValueError):
    """A horizon was asked for that the model was not trained for."""


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


def _split_columns(pairs: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """Return (usable in-class columns, other feature columns, all-NaN in-class columns)."""
    feats = feature_columns(pairs)
    in_all = [c for c in feats if c.startswith(IN_CLASS_PREFIX)]
    in_cols = [c for c in in_all if pairs[c].notna().any()]
    other = [c for c in feats if not c.startswith(IN_CLASS_PREFIX)]
    return in_cols, other, [c for c in in_all if c not in in_cols]


def _fit_horizon(train_pairs: pd.DataFrame, horizon: int, in_cols: list[str],
                 other_cols: list[str], config: TrainingConfig,
                 lookback: int) -> tuple[Pipeline | None, dict]:
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
    rows = oversample(aug, config.oversample, config.seed)
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
    in_cols, other, _ = _split_columns(labelled)
    splits = list(GroupKFold(n_splits=k).split(labelled, groups=groups))
    y_all = labelled[label_column(horizon)].to_numpy()
    best_auc = -np.inf
    for params in grid:
        cfg = config.model_copy(update=params)
        aucs = []
        for tr, va in splits:
            if len(np.unique(y_all[va])) < 2:
                continue
            pipe, _ = _fit_horizon(labelled.iloc[tr], horizon, in_cols, other, cfg,
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


class RiskModel:
    """Per-horizon dropout-risk pipelines fitted on the training students.

    Args:
        config: Training configuration (default :class:`TrainingConfig`).
        tune: Choose ``num_leaves``/``min_child_samples`` by grouped cross-validation
            (:func:`tune_params`) before fitting; ``None`` follows ``config.tune``
            (off when the config has no such field).

    Attributes:
        pipelines_: ``{horizon: fitted Pipeline}``.
        feature_columns_: Input columns, in order (in-class first).
        in_class_columns_: The in-class columns (PCA block).
        train_students_: Student ids the pipelines were fitted on.
        test_students_: Held-out student ids.
        metadata_: Versions, sizes, positive ratios, warnings, creation time.
    """

    def __init__(self, config: TrainingConfig | None = None, tune: bool | None = None):
        self.config = config
        self.tune = tune

    # ------------------------------------------------------------------ fitting
    def fit(self, pairs: pd.DataFrame) -> RiskModel:
        """Split by student, augment, over-sample and fit one pipeline per horizon.

        Args:
            pairs: Pairs table with feature columns, ``student_id``, ``t`` and
                ``dropout_time``.

        Returns:
            ``self``.

        Raises:
            AtriskError: When there are no feature columns or fewer than two students.
        """
        cfg = self.config or TrainingConfig()
        self.config = cfg
        if not feature_columns(pairs):
            raise AtriskError("pairs table has no feature columns (in_*, out_*, time_*)")
        students = pairs["student_id"].astype(str)
        if students.nunique() < 2:
            raise AtriskError(
                f"training needs at least 2 students to hold some out; got {students.nunique()}")
        split = GroupShuffleSplit(n_splits=1, test_size=cfg.test_size, random_state=cfg.seed)
        train_idx, test_idx = next(split.split(pairs, groups=students))
        self.train_students_ = sorted(set(students.iloc[train_idx]))
        self.test_students_ = sorted(set(students.iloc[test_idx]))
        train = add_labels(pairs.iloc[train_idx], cfg.horizons)
        tune = self.tune if self.tune is not None else bool(getattr(cfg, "tune", False))
        tuning = None
        if tune:
            tuning = tune_params(train, cfg)
            if tuning["best"]:
                cfg = cfg.model_copy(update=tuning["best"])
                self.config = cfg
        in_cols, other, dropped = _split_columns(train)
        self.in_class_columns_ = in_cols
        self.feature_columns_ = in_cols + other
        self.pipelines_: dict[int, Pipeline] = {}
        notes: list[str] = []
        if dropped:
            notes.append(f"{len(dropped)} in-class column(s) are empty in training and unused")
        if not in_cols:
            notes.append("no in-class features: the PCA block is skipped")
        per_h: dict[str, dict] = {}
        for h in cfg.horizons:
            pipe, info = _fit_horizon(train, h, in_cols, other, cfg, cfg.lookback)
            per_h[str(h)] = info
            if pipe is None:
                msg = f"horizon {h} skipped: {info['skipped']}"
                notes.append(msg)
                warnings.warn(msg, stacklevel=2)
            else:
                self.pipelines_[h] = pipe
        self.metadata_ = {
            "atrisk_version": atrisk.__version__,
            "versions": {"scikit-learn": sklearn.__version__, "lightgbm": lightgbm.__version__,
                         "pandas": pd.__version__, "numpy": np.__version__},
            "created_at": datetime.now(UTC).isoformat(),
            "n_pairs": int(len(pairs)),
            "n_train_pairs": int(len(train_idx)),
            "n_test_pairs": int(len(test_idx)),
            "n_train_students": len(self.train_students_),
            "n_test_students": len(self.test_students_),
            "horizons_trained": sorted(self.pipelines_),
            "per_horizon": per_h,
            "positive_ratio": {h: info.get("positive_ratio_before") for h, info in per_h.items()},
            "positive_ratio_after": {h: info.get("positive_ratio_after")
                                     for h, info in per_h.items()},
            "feature_columns": self.feature_columns_,
            "in_class_columns": in_cols,
            "dropped_in_class_columns": dropped,
            "warnings": notes,
            "tuning": tuning,
        }
        return self

    # ------------------------------------------------------------------ using
    @property
    def horizons(self) -> list[int]:
        """The horizons (days) with a trained pipeline."""
        return sorted(getattr(self, "pipelines_", {}))

    def pipeline(self, horizon: int) -> Pipeline:
        """Return the fitted pipeline of ``horizon``.

        Raises:
            HorizonError: When the horizon was not trained (lists the trained ones).
        """
        if not hasattr(self, "pipelines_"):
            raise AtriskError("the model is not fitted; call fit() or train() first")
        if int(horizon) not in self.pipelines_:
            raise HorizonError(
                f"no model for horizon {horizon} day(s); trained horizons: {self.horizons}")
        return self.pipelines_[int(horizon)]

    def design_matrix(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """Return the model's input columns of ``pairs`` (absent in-class columns → NaN).

        Raises:
            AtriskError: When an out-of-class or time feature column is missing.
        """
        missing = [c for c in self.feature_columns_ if c not in pairs.columns]
        hard = [c for c in missing if not c.startswith(IN_CLASS_PREFIX)]
        if hard:
            raise AtriskError(f"pairs lack feature column(s) the model needs: {hard}")
        return pairs.reindex(columns=self.feature_columns_).astype(float)

    def predict_proba(self, pairs: pd.DataFrame, horizon: int) -> np.ndarray:
        """Return the probability of dropping out within ``horizon`` days, per pair.

        Args:
            pairs: Pairs with the model's feature columns.
            horizon: A trained horizon (days).

        Returns:
            A float array in [0, 1], one value per row of ``pairs``.

        Raises:
            HorizonError: When the horizon was not trained.
            AtriskError: When feature columns are missing.
        """
        pipe = self.pipeline(horizon)
        if len(pairs) == 0:
            return np.zeros(0)
        return pipe.predict_proba(self.design_matrix(pairs))[:, 1]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str) -> Path:
        """Save as ``model.joblib`` + ``meta.json`` + ``config.toml`` (atomic writes).

        Args:
            directory: Output folder (created).

        Returns:
            The folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MODEL_FILE) as tmp:
            joblib.dump(self, tmp)
        meta = dict(self.metadata_)
        meta["feature_names_out"] = {
            str(h): [str(n) for n in p.named_steps["features"].get_feature_names_out()]
            for h, p in self.pipelines_.items()
        }
        meta["test_students"] = self.test_students_
        write_text(json.dumps(meta, indent=2, sort_keys=True, default=str),
                   directory / META_FILE)
        write_text(tomli_w.dumps({"training": self.config.model_dump(mode="json")}),
                   directory / CONFIG_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> RiskModel:
        """Load a model saved by :meth:`save`.

        Raises:
            ModelLoadError: When the folder or ``model.joblib`` is missing or corrupt.
        """
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ModelLoadError(
                f"{path} does not exist: train a model first (atrisk train ... --out {directory})")
        try:
            model = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means corrupt
            raise ModelLoadError(f"{path} cannot be loaded ({type(exc).__name__}: {exc}); "
                                 "retrain the model") from None
        if not isinstance(model, cls) or not hasattr(model, "pipelines_"):
            raise ModelLoadError(f"{path} does not hold a fitted RiskModel")
        return model


def train(pairs: pd.DataFrame, config: TrainingConfig | None = None) -> RiskModel:
    """Fit a :class:`RiskModel` on ``pairs`` (see :meth:`RiskModel.fit`).

    Args:
        pairs: Pairs table with features, ``student_id``, ``t``, ``dropout_time``.
        config: Training configuration.

    Returns:
        The fitted model.
    """
    return RiskModel(config or TrainingConfig()).fit(pairs)


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
    in_cols, other, _ = _split_columns(train)
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
    gbdt, _ = _fit_horizon(train, horizon, in_cols, other, cfg, lookback=0)
    if gbdt is not None:
        out["gbdt_none"] = gbdt
    return out
