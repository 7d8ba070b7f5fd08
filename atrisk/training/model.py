"""The risk model: fused scikit-learn Pipelines, calibrated per horizon.

A pipeline is::

    Pipeline([
        ("features", ColumnTransformer([
            ("in_class", Pipeline([SimpleImputer(median), StandardScaler(), PCA(var)]), in_cols),
            ("rest", "passthrough", other_cols)])),
        ("model", LGBMClassifier(...)),
    ])

fitted on the training students only (an 80/20 split by student) on the rows of the
configured label construction (:func:`~atrisk.training.fit.training_rows`:
``horizon`` → one pipeline per Δ; ``seed`` → one pipeline for every Δ), balanced by
over-sampling or re-weighting.  The PCA therefore never sees a held-out student.

Each Δ then gets a :class:`~atrisk.training.calibration.Calibrator` (isotonic or Platt)
fitted on out-of-fold scores of the training students (folds by student), so
:meth:`RiskModel.predict_proba` is the chance of dropping out within Δ days;
:meth:`RiskModel.predict_score` is the raw score, which ranks.

A :class:`RiskModel` carries the whole configuration it was fitted with (features and
training), so ranking and evaluating later build the same features, whatever the caller's
defaults.

Example:
    >>> model = RiskModel(Config()).fit(Logs.read("logs/"), "ws/")   # doctest: +SKIP
    >>> model.save("model/")                                          # doctest: +SKIP
    >>> RiskModel.load("model/").rank(logs, "ws/", "2024-05-01")      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import pandas as pd
import sklearn
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import Pipeline

from atrisk.config import Config, FeatureConfig, TrainingConfig
from atrisk.errors import AtriskError, ConfigError, ModelLoadError
from atrisk.features.in_class import as_in_class
from atrisk.features.pairs import build_pairs, feature_columns, pair_keys
from atrisk.ingest.logs import Logs, to_utc
from atrisk.training.calibration import Calibrator, out_of_fold
from atrisk.training.evaluate import EvaluationReport
from atrisk.training.evaluate import evaluate as run_eval
from atrisk.training.fit import (
    IN_CLASS_PREFIX,
    fit_horizon,
    fit_seed,
    split_columns,
    tune_params,
)
from atrisk.training.labels import add_labels, label_column
from atrisk.training.predict import predict_risk
from atrisk.training.temporal import censor, known_by, resolve_cut
from atrisk.version import __version__
from atrisk.workspace import atomic_path, write_text

#: Files of a saved model folder.
MODEL_FILE, META_FILE, CONFIG_FILE = "model.joblib", "meta.json", "config.toml"
#: SHA-256 of ``model.joblib``, written at save and checked before it is unpickled.
CHECKSUM_FILE = "model.sha256"


class HorizonError(AtriskError, ValueError):
    """A horizon was asked for that the model was not trained for."""


class RiskModel:
    """Per-horizon dropout-risk pipelines fitted on the training students.

    Args:
        config: The whole configuration (:class:`~atrisk.config.Config`: its ``features``
            decide how pairs are built, its ``training`` section the labels and models);
            a :class:`~atrisk.config.TrainingConfig` alone means default features.
            ``None``: defaults.
        tune: Choose ``num_leaves``/``min_child_samples`` by grouped cross-validation
            (:func:`tune_params`) before fitting.

    Attributes:
        config_: The configuration the model was fitted with (tuned values included);
            :meth:`pairs`, :meth:`rank` and :meth:`evaluate` build features with it.
        pipelines_: ``{horizon: fitted Pipeline}`` (with seed labels every horizon holds
            the same pipeline).
        calibrators_: ``{horizon: Calibrator}`` (empty with ``calibration = "none"``; a
            horizon whose calibration failed is missing and noted in ``metadata_``).
        reference_: Median of each feature column over the training pairs (what the
            reasons compare a student with).
        cut_: The cut day when fitted for a temporal hold-out, else ``None``.
        feature_columns_: Input columns, in order (in-class first).
        in_class_columns_: The in-class columns (PCA block).
        train_students_: Student ids the pipelines were fitted on.
        test_students_: Held-out student ids.
        metadata_: Versions, sizes, positive ratios, warnings, creation time.

    Example:
        >>> model = RiskModel(Config()).fit(logs, "ws/")               # doctest: +SKIP
        >>> model.rank(logs, "ws/", date="2024-05-01", horizon=1)      # doctest: +SKIP
    """

    def __init__(self, config: Config | TrainingConfig | None = None, tune: bool = False):
        self.config = config
        self.tune = tune

    # ------------------------------------------------------------------ configuration
    def _resolved(self) -> Config:
        if hasattr(self, "config_"):
            return self.config_
        if isinstance(self.config, TrainingConfig):
            return Config().model_copy(update={"training": self.config})
        return self.config or Config()

    @property
    def training(self) -> TrainingConfig:
        """The training settings in use (the fitted ones once fitted)."""
        return self._resolved().training

    @property
    def features(self) -> FeatureConfig:
        """The feature settings in use (the fitted ones once fitted)."""
        return self._resolved().features

    # ------------------------------------------------------------------ fitting
    def pairs(self, logs: Logs, in_class: Any = None,
              keys: pd.DataFrame | None = None) -> pd.DataFrame:
        """Build the labelled ``<student, t>`` pairs with this model's feature settings.

        Args:
            logs: The validated logs (:class:`~atrisk.ingest.logs.Logs`).
            in_class: In-class features: a workspace folder (or
                :class:`~atrisk.workspace.Workspace`) made by ``extract``, an
                :class:`~atrisk.features.in_class.InClassData`, or ``None`` for none.
            keys: The ``student_id``/``t`` keys to build (default: every day of the
                observation period, :func:`~atrisk.features.pairs.pair_keys`).

        Returns:
            Pairs with features, ``dropout_time`` and ``dropout_within_{Δ}`` labels.
        """
        data = as_in_class(in_class)
        pairs = build_pairs(logs, in_class=data.table, sessions=data.sessions,
                            config=self.features, keys=keys)
        return add_labels(pairs, self.training.horizons)

    def fit(self, logs: Logs, in_class: Any = None) -> RiskModel:
        """Build the pairs of ``logs`` (+ in-class features) and fit (:meth:`fit_pairs`).

        Args:
            logs: The validated logs.
            in_class: In-class features (see :meth:`pairs`).

        Returns:
            ``self``.

        Raises:
            AtriskError: When no pair can be built (no class events) or too few students.
        """
        pairs = self.pairs(logs, in_class)
        if pairs.empty:
            raise AtriskError("no <student, day> pairs could be built from the logs: "
                              "are there class events in events.csv?")
        return self.fit_pairs(pairs)

    def fit_pairs(self, pairs: pd.DataFrame, cut: Any = None) -> RiskModel:
        """Split, label, balance and fit; then calibrate every horizon.

        Args:
            pairs: Pairs table with feature columns, ``student_id``, ``t`` and
                ``dropout_time``.
            cut: ``None``: hold out ``test_size`` of the students (by student).  A day
                (or ``"auto"``): fit as on that day instead — on the pairs whose labels
                were known then (``t + Δ ≤ cut``; dropouts after it unknown), every
                student (:mod:`~atrisk.training.temporal`); the pairs with ``t ≥ cut``
                are the test set.

        Returns:
            ``self``.

        Raises:
            AtriskError: When there are no feature columns, fewer than two students, or
                no pair before the cut.
        """
        full = self._resolved()
        cfg = full.training
        if not feature_columns(pairs):
            raise AtriskError("pairs table has no feature columns (in_*, out_*, time_*)")
        students = pairs["student_id"].astype(str)
        if students.nunique() < 2:
            raise AtriskError(
                f"training needs at least 2 students to hold some out; got {students.nunique()}")
        self.cut_ = resolve_cut(pairs, cut) if isinstance(cut, str) or cut is None else \
            resolve_cut(pairs, str(pd.Timestamp(cut).date()))
        if self.cut_ is None:
            split = GroupShuffleSplit(n_splits=1, test_size=cfg.test_size,
                                      random_state=cfg.seed)
            train_idx, test_idx = next(split.split(pairs, groups=students))
            train = pairs.iloc[train_idx]
            test_ids = students.iloc[test_idx]
        else:
            train = censor(pairs, self.cut_)
            test_ids = students[(to_utc(pairs["t"]) >= self.cut_).to_numpy()]
            if train.empty:
                raise AtriskError(f"no pair lies before the temporal cut {self.cut_.date()}")
        self.train_students_ = sorted(set(train["student_id"].astype(str)))
        self.test_students_ = sorted(set(test_ids))
        train = add_labels(train, cfg.horizons)
        tuning = None
        if self.tune:
            tuning = tune_params(train, cfg)
            if tuning["best"]:
                cfg = cfg.model_copy(update=tuning["best"])
        self.config_ = full.model_copy(update={"training": cfg})
        in_cols, other, dropped = split_columns(train)
        self.in_class_columns_ = in_cols
        self.feature_columns_ = in_cols + other
        self.reference_ = {c: (float(v) if pd.notna(v) else None)
                           for c, v in train[self.feature_columns_].median().items()}
        self.pipelines_: dict[int, Pipeline] = {}
        notes: list[str] = []
        if dropped:
            notes.append(f"{len(dropped)} in-class column(s) are empty in training and unused")
        if not in_cols:
            notes.append("no in-class features: the PCA block is skipped")
        per_h: dict[str, dict] = {}
        if cfg.labels == "seed":
            pipe, info = fit_seed(self._known(train, 1), in_cols, other, cfg)
            per_h["all"] = info
            if pipe is None:
                msg = f"seed labels: no model ({info['skipped']})"
                notes.append(msg)
                warnings.warn(msg, stacklevel=2)
            else:
                self.pipelines_ = dict.fromkeys(cfg.horizons, pipe)
        else:
            for h in cfg.horizons:
                pipe, info = fit_horizon(self._known(train, h), h, in_cols, other, cfg)
                per_h[str(h)] = info
                if pipe is None:
                    msg = f"horizon {h} skipped: {info['skipped']}"
                    notes.append(msg)
                    warnings.warn(msg, stacklevel=2)
                else:
                    self.pipelines_[h] = pipe
        self.calibrators_ = self._calibrate(train, cfg, in_cols, other, notes)
        self.metadata_ = {
            "atrisk_version": __version__,
            "versions": {"scikit-learn": sklearn.__version__, "lightgbm": lightgbm.__version__,
                         "pandas": pd.__version__, "numpy": np.__version__},
            "created_at": datetime.now(UTC).isoformat(),
            "labels": cfg.labels,
            "balance": cfg.balance,
            "calibration": cfg.calibration,
            "temporal_cut": None if self.cut_ is None else str(self.cut_.date()),
            "n_pairs": int(len(pairs)),
            "n_train_pairs": int(len(train)),
            "n_test_pairs": int(len(test_ids)),
            "n_train_students": len(self.train_students_),
            "n_test_students": len(self.test_students_),
            "horizons_trained": sorted(self.pipelines_),
            "per_horizon": per_h,
            "positive_ratio": {str(h): float(train[label_column(h)].mean())
                               for h in cfg.horizons} if len(train) else {},
            "positive_ratio_after": {h: info.get("positive_ratio_after")
                                     for h, info in per_h.items()},
            "calibrated_horizons": sorted(self.calibrators_),
            "feature_columns": self.feature_columns_,
            "in_class_columns": in_cols,
            "dropped_in_class_columns": dropped,
            "warnings": notes,
            "tuning": tuning,
        }
        return self

    def _known(self, train: pd.DataFrame, days: int) -> pd.DataFrame:
        """Return the training pairs whose ``days``-day label is known (all without a cut)."""
        return train if self.cut_ is None else known_by(train, self.cut_, days)

    def _calibrate(self, train: pd.DataFrame, cfg: TrainingConfig, in_cols: list[str],
                   other: list[str], notes: list[str]) -> dict[int, Calibrator]:
        """Fit one calibrator per horizon on out-of-fold scores (folds by student)."""
        if cfg.calibration == "none" or not self.pipelines_:
            return {}
        cols = in_cols + other

        def oof(data: pd.DataFrame, fit) -> np.ndarray:
            def fit_predict(tr, te):
                pipe, _ = fit(data.iloc[tr])
                if pipe is None:
                    return np.full(len(te), np.nan)
                return pipe.predict_proba(data.iloc[te][cols].astype(float))[:, 1]
            return out_of_fold(fit_predict, len(data), data["student_id"].astype(str),
                               cfg.calibration_folds)

        out: dict[int, Calibrator] = {}
        scores: dict[int, tuple[pd.DataFrame, np.ndarray]] = {}
        try:
            if cfg.labels == "seed":
                data = self._known(train, 1)
                p = oof(data, lambda d: fit_seed(d, in_cols, other, cfg))
                scores = {h: (data, p) for h in self.pipelines_}
            else:
                for h in self.pipelines_:
                    data = self._known(train, h)
                    scores[h] = (data, oof(data, lambda d, h=h: fit_horizon(
                        d, h, in_cols, other, cfg)))
        except AtriskError as exc:
            notes.append(f"not calibrated: {exc}")
            return {}
        for h, (data, p) in scores.items():
            keep = np.ones(len(data), dtype=bool)
            if self.cut_ is not None:
                keep = (to_utc(data["t"]) + pd.Timedelta(days=h) <= self.cut_).to_numpy()
            y = data[label_column(h)].to_numpy()[keep]
            try:
                out[h] = Calibrator(cfg.calibration).fit(p[keep], y)
            except AtriskError as exc:
                notes.append(f"Δ={h}: not calibrated, probabilities are raw scores ({exc})")
        return out

    # ------------------------------------------------------------------ using
    @property
    def horizons(self) -> list[int]:
        """The horizons (days) with a trained pipeline."""
        return sorted(getattr(self, "pipelines_", {}))

    def pipeline(self, horizon: int) -> Pipeline:
        """Return the fitted pipeline of ``horizon``.

        Raises:
            AtriskError: When the model is not fitted.
            HorizonError: When the horizon was not trained (lists the trained ones).
        """
        if not hasattr(self, "pipelines_"):
            raise AtriskError("the model is not fitted; call fit() first")
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

    def predict_score(self, pairs: pd.DataFrame, horizon: int) -> np.ndarray:
        """Return the raw model score per pair (ranks; not a probability).

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

    def calibrate(self, scores: np.ndarray, horizon: int) -> np.ndarray:
        """Map raw scores of ``horizon`` to calibrated probabilities (identity without one).

        Args:
            scores: Output of :meth:`predict_score`.
            horizon: A trained horizon.

        Returns:
            Probabilities in [0, 1].
        """
        cal = getattr(self, "calibrators_", {}).get(int(horizon))
        scores = np.asarray(scores, dtype=float)
        return np.clip(cal.transform(scores) if cal is not None else scores, 0.0, 1.0)

    def is_calibrated(self, horizon: int) -> bool:
        """Whether ``horizon`` has a calibrator (else probabilities are raw scores)."""
        return int(horizon) in getattr(self, "calibrators_", {})

    def predict_proba(self, pairs: pd.DataFrame, horizon: int) -> np.ndarray:
        """Return the probability of dropping out within ``horizon`` days, per pair.

        The calibrated probability (:meth:`calibrate` of :meth:`predict_score`).

        Args:
            pairs: As for :meth:`predict_score`.
            horizon: Δ in days, one the model was trained for.

        Returns:
            The chance of dropping out within ``horizon`` days, one per row of ``pairs``.

        Raises:
            HorizonError: For an untrained horizon; AtriskError: for missing columns.
        """
        return self.calibrate(self.predict_score(pairs, horizon), horizon)

    def rank(self, logs: Logs, in_class: Any, date: Any, horizon: int = 1) -> pd.DataFrame:
        """Return the ranked risk list of ``date``: every student active on that day.

        A student is active on ``date`` when their first class is before it and no
        dropout or completion is known before it; features use only data before ``date``.

        Args:
            logs: The validated logs.
            in_class: In-class features (see :meth:`pairs`).
            date: The day (anything pandas parses; taken as a UTC day).
            horizon: Δ in days (a trained horizon).

        Returns:
            ``date``, ``student_id``, ``probability``, ``rank`` (1 = highest risk),
            ``flagged`` and ``top_reasons``, sorted by rank.

        Raises:
            ConfigError: When ``date`` is not a date.
            HorizonError: When ``horizon`` was not trained.
            AtriskError: When no student is active on ``date``.
        """
        self.pipeline(horizon)  # fails early on an untrained horizon
        day = to_utc(pd.Series([date])).iloc[0]
        if pd.isna(day):
            raise ConfigError(f"date {date!r} is not a date (use YYYY-MM-DD)")
        day = day.normalize()
        data = as_in_class(in_class)
        keys = pair_keys(logs, sessions=data.sessions, as_of=day + pd.Timedelta(days=1))
        keys = keys[keys["t"] == day]
        if keys.empty:
            raise AtriskError(f"no student is active on {day.date()} in the logs")
        return predict_risk(self, self.pairs(logs, data, keys=keys), horizon=horizon, date=day)

    def evaluate(self, logs: Logs, in_class: Any = None, horizons: list[int] | None = None,
                 baselines: bool = True, temporal: bool = True) -> EvaluationReport:
        """Score the model on the held-out students of ``logs`` (all students when new).

        Per Δ: AUC with its bootstrap interval (by student), the positive pairs and
        students behind it, recall at the flagged share, Brier score and reliability of
        the calibrated probabilities; the fairness table over ``training.group_columns``
        (``students.csv`` attributes); and the temporal hold-out
        (:func:`~atrisk.training.evaluate.evaluate`).

        Args:
            logs: The validated logs.
            in_class: In-class features (see :meth:`pairs`).
            horizons: Δ values (default: the model's horizons).
            baselines: Also fit and score LR / DT / RF / LightGBM without augmentation.
            temporal: Also run the temporal hold-out (``training.temporal_cut``).

        Returns:
            An :class:`~atrisk.training.evaluate.EvaluationReport`.
        """
        attributes = logs.students.set_index("student_id")
        return run_eval(self, self.pairs(logs, in_class), horizons=horizons,
                        baselines=baselines, attributes=attributes, temporal=temporal)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str) -> Path:
        """Save as ``model.joblib`` + its checksum + ``meta.json`` + ``config.toml`` (atomic).

        ``config.toml`` holds the whole configuration the model was fitted with; the
        model object carries it too.

        Args:
            directory: Output folder (created).

        Returns:
            The folder.

        Raises:
            AtriskError: When the model is not fitted.
        """
        if not hasattr(self, "pipelines_"):
            raise AtriskError("the model is not fitted; call fit() first")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MODEL_FILE) as tmp:
            joblib.dump(self, tmp)
            digest = _sha256(tmp)
        write_text(f"{digest}  {MODEL_FILE}\n", directory / CHECKSUM_FILE)
        meta = dict(self.metadata_)
        meta["feature_names_out"] = {
            str(h): [str(n) for n in p.named_steps["features"].get_feature_names_out()]
            for h, p in self.pipelines_.items()
        }
        meta["test_students"] = self.test_students_
        meta["calibrators"] = {str(h): c.to_dict()
                               for h, c in getattr(self, "calibrators_", {}).items()}
        write_text(json.dumps(meta, indent=2, sort_keys=True, default=str),
                   directory / META_FILE)
        write_text(self.config_.to_toml(), directory / CONFIG_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> RiskModel:
        """Load a model saved by :meth:`save` (only load models from folders you trust).

        ``model.joblib`` is unpickled only when its SHA-256 matches ``model.sha256``
        written at save.

        Raises:
            ModelLoadError: When the folder or a file is missing, the checksum does not
                match, or the file does not hold a fitted model.
        """
        directory = Path(directory)
        path = directory / MODEL_FILE
        if not path.is_file():
            raise ModelLoadError(
                f"{path} does not exist: train a model first (atrisk train ... --out {directory})")
        check = directory / CHECKSUM_FILE
        if not check.is_file():
            raise ModelLoadError(f"{check} is missing: the model folder is incomplete; "
                                 "retrain the model")
        want = check.read_text(encoding="utf-8").split()[0] if check.stat().st_size else ""
        if _sha256(path) != want:
            raise ModelLoadError(f"{path} does not match its checksum in {check}: the file "
                                 "was changed after it was saved; retrain the model")
        try:
            model = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means corrupt
            raise ModelLoadError(f"{path} cannot be loaded ({type(exc).__name__}: {exc}); "
                                 "retrain the model") from None
        if not isinstance(model, cls) or not hasattr(model, "pipelines_"):
            raise ModelLoadError(f"{path} does not hold a fitted RiskModel")
        return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
