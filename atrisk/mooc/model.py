"""Train, save, load and evaluate the MOOC models together (what ``atrisk mooc`` calls).

One :class:`MoocModel` holds the five tuned baselines (on the activity features X),
CFIN (on the context-smoothed groups and the context features Z) and CFIN-en
(LightGBM on CFIN's last hidden layer + X + Z).  Inputs are built the same way for
training and prediction by :func:`prepare_inputs`; course-context statistics always
come from the data being processed (no labels), so a model applies to courses it
never saw.

Context features Z: the shared KDD Cup copy has no user or course attributes, so by
default Z is empty and CFIN's attention is off (as the seed did on KDD Cup).
``MoocConfig.course_onehot`` switches on Z = one-hot course id (useful only when the
evaluated courses were seen in training; unseen courses get an all-zero row).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import joblib
import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from atrisk.errors import LogValidationError, ModelLoadError
from atrisk.integrity import verify_checksum, write_checksums
from atrisk.mooc.baselines import BASELINES, baseline_scores, fit_baselines
from atrisk.mooc.config import CFINConfig
from atrisk.mooc.kddcup import MoocData, activity_features, context_groups, load_kddcup, signed_log
from atrisk.version import __version__

#: Every model, in report order.
MODELS = (*BASELINES, "cfin", "cfin_en")
#: SHA-256 of the saved parts, written at save and checked before a part is unpickled.
CHECKSUM_FILE = "checksums.sha256"


@dataclass
class MoocConfig:
    """What the MOOC models are trained with (saved beside the model).

    Attributes:
        models: Models to train (subset of :data:`MODELS`; ``cfin_en`` needs ``cfin``).
        folds: CV folds of the baselines' grid search.
        seed: Seed of folds, models and CFIN.
        use_user_context: Add user-context statistics when the data has user ids.
        course_onehot: Use the one-hot course id as CFIN's context Z (attention on).
        cfin: CFIN hyper-parameters.
        cfin_en: Extra LightGBM parameters of CFIN-en.
    """

    models: list[str] = field(default_factory=lambda: list(MODELS))
    folds: int = 5
    seed: int = 0
    use_user_context: bool = True
    course_onehot: bool = False
    cfin: CFINConfig = field(default_factory=CFINConfig)
    cfin_en: dict = field(default_factory=dict)


@dataclass
class MoocInputs:
    """Model inputs of a set of enrollments.

    Attributes:
        X: ``(n, p)`` signed-log activity features (the baselines' input).
        G: ``(n, p, K)`` context-smoothed feature groups (CFIN's input).
        Z: ``(n, z)`` context features (``z`` may be 0).
        feature_names: Names of the ``p`` activity features.
    """

    X: np.ndarray
    G: np.ndarray
    Z: np.ndarray
    feature_names: list[str]


def prepare_inputs(data: MoocData, use_user_context: bool = True,
                   course_vocab: list[str] | None = None) -> MoocInputs:
    """Build X, G and Z for a set of enrollments (no labels used).

    Args:
        data: The enrollments; context statistics are computed over all of them.
        use_user_context: Add user context when ``data.user_id`` exists.
        course_vocab: Courses of the one-hot Z (``None``: Z is empty).

    Returns:
        The :class:`MoocInputs`.
    """
    feats = activity_features(data)
    X = signed_log(feats.to_numpy())
    G = context_groups(data, feats, use_user=use_user_context)
    if course_vocab:
        pos = {c: i for i, c in enumerate(course_vocab)}
        Z = np.zeros((len(data), len(course_vocab)), np.float32)
        idx = np.array([pos.get(str(c), -1) for c in data.course_id])
        Z[np.flatnonzero(idx >= 0), idx[idx >= 0]] = 1.0
    else:
        Z = np.zeros((len(data), 0), np.float32)
    return MoocInputs(X, G, Z, list(feats.columns))


def metrics(y: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Return ``{"auc", "f1"}`` (AUC of the scores, F1 of the 0/1 predictions).

    Args:
        y: 0/1 labels.
        scores: Dropout scores.
        predicted: 0/1 predictions (probability ≥ 0.5, or the SVM's sign).

    Returns:
        The two metrics (AUC is NaN when only one class is present).
    """
    auc = float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan")
    return {"auc": auc, "f1": float(f1_score(y, predicted, zero_division=0))}


def as_mooc_data(data: MoocData | Path | str) -> MoocData:
    """Return ``data``, loading a KDD Cup 2015 folder when a path is given (unlabelled kept)."""
    if isinstance(data, (str, Path)):
        return load_kddcup(data, drop_unlabelled=False)
    return data


class MoocModel:
    """The MOOC models trained together.

    ``fit``, ``predict`` and ``evaluate`` take the enrollments as
    :class:`~atrisk.mooc.kddcup.MoocData` or as a folder in the KDD Cup 2015 layout.

    Args:
        config: Training configuration.
        device: CFIN device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Example:
        >>> model = MoocModel().fit("kddcup_train/")                  # doctest: +SKIP
        >>> model.evaluate("other_courses/")["models"]["cfin"]        # doctest: +SKIP
    """

    def __init__(self, config: MoocConfig | None = None, device: str = "auto"):
        self.config = config or MoocConfig()
        self.device = device

    def fit(self, data: MoocData | Path | str,
            on_step: Callable[[str], None] | None = None) -> MoocModel:
        """Fit every configured model on the labelled enrollments of ``data``.

        Context statistics use all enrollments of ``data`` (labelled or not).

        Args:
            data: Training enrollments.
            on_step: Called with each model's name when it is done.

        Returns:
            ``self``.

        Raises:
            LogValidationError: When fewer than two classes are labelled.
        """
        data = as_mooc_data(data)
        cfg = self.config
        known = ~np.isnan(data.labels)
        y = data.labels[known].astype(int)
        if len(np.unique(y)) < 2:
            raise LogValidationError("training data needs both dropouts and non-dropouts")
        self.course_vocab_ = sorted({str(c) for c in data.course_id}) if cfg.course_onehot \
            else []
        self.uses_users_ = bool(cfg.use_user_context and data.user_id is not None)
        inp = prepare_inputs(data, cfg.use_user_context, self.course_vocab_)
        self.feature_names_ = inp.feature_names
        X, G, Z = inp.X[known], inp.G[known], inp.Z[known]
        self.timings_: dict[str, float] = {}
        self.baselines_, self.cv_ = {}, {}
        names = tuple(m for m in cfg.models if m in BASELINES)
        t0 = time.perf_counter()

        def done(name: str, _info: dict) -> None:
            nonlocal t0
            self.timings_[name] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if on_step:
                on_step(name)

        if names:
            self.baselines_, self.cv_ = fit_baselines(
                X, y, names, folds=cfg.folds, seed=cfg.seed, on_done=done)
        self.cfin_ = self.cfin_en_ = None
        if "cfin" in cfg.models or "cfin_en" in cfg.models:
            t0 = time.perf_counter()
            from atrisk.mooc.cfin import CFINClassifier, CFINEnsemble  # torch: on use

            self.cfin_ = CFINClassifier(cfg.cfin, self.device).fit(G, Z, y)
            done("cfin", {})
            if "cfin_en" in cfg.models:
                self.cfin_en_ = CFINEnsemble(cfg.cfin_en).fit(
                    self.cfin_, G, Z, np.hstack([X, Z]), y)
                done("cfin_en", {})
        self.n_train_ = int(known.sum())
        return self

    def predict(self, data: MoocData | Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Score every enrollment of ``data`` with every fitted model.

        Args:
            data: Enrollments (any courses; their context statistics come from ``data``).

        Returns:
            ``{model: (scores, 0/1 predictions)}``.

        Raises:
            LogValidationError: When the data's user ids do not match the model's
                (trained with user context but the data has none, or the reverse).
        """
        data = as_mooc_data(data)
        has_users = bool(self.config.use_user_context and data.user_id is not None)
        if has_users != self.uses_users_:
            raise LogValidationError(
                "the model was trained " + ("with" if self.uses_users_ else "without")
                + " user context (user_id column) but the data has "
                + ("it" if has_users else "none") + "; use data with the same columns")
        inp = prepare_inputs(data, self.config.use_user_context, self.course_vocab_)
        out = {}
        for name, model in self.baselines_.items():
            out[name] = (baseline_scores(model, inp.X), model.predict(inp.X).astype(int))
        if self.cfin_ is not None:
            p = self.cfin_.predict_proba(inp.G, inp.Z)
            out["cfin"] = (p, (p >= 0.5).astype(int))
        if self.cfin_en_ is not None:
            p = self.cfin_en_.predict_proba(self.cfin_, inp.G, inp.Z, np.hstack([inp.X, inp.Z]))
            out["cfin_en"] = (p, (p >= 0.5).astype(int))
        return {m: out[m] for m in MODELS if m in out}

    def evaluate(self, data: MoocData | Path | str) -> dict:
        """Return AUC and F1 of every model on the labelled enrollments of ``data``.

        Args:
            data: Enrollments with labels (unlabelled ones add to the context only).

        Returns:
            ``{"n_enrollments", "dropout_rate", "models": {name: {"auc", "f1"}}}``.
        """
        data = as_mooc_data(data)
        known = ~np.isnan(data.labels)
        y = data.labels[known].astype(int)
        res = {name: metrics(y, s[known], p[known]) for name, (s, p) in self.predict(data).items()}
        return {"n_enrollments": int(known.sum()), "dropout_rate": float(y.mean()),
                "models": res}

    def save(self, folder: Path | str) -> Path:
        """Write the model folder (``baselines.joblib``, ``cfin.pt``, ``cfin_en.joblib``, meta).

        Args:
            folder: Output folder (created).

        Returns:
            The folder.
        """
        import lightgbm
        import sklearn
        import torch

        from atrisk.workspace import atomic_path, git_commit, write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # Each file is written atomically and meta.json last, like the K-12 model: a
        # crash mid-save never leaves a half-written file that load() would read.
        with atomic_path(folder / "baselines.joblib") as tmp:
            joblib.dump(self.baselines_, tmp)
        parts = {"cfin.pt": self.cfin_, "cfin_en.joblib": self.cfin_en_}
        for name, part in parts.items():
            if part is None:  # a part of an older model saved here must not be loaded
                (folder / name).unlink(missing_ok=True)
        if self.cfin_ is not None:
            self.cfin_.save(folder)
        if self.cfin_en_ is not None:
            with atomic_path(folder / "cfin_en.joblib") as tmp:
                joblib.dump(self.cfin_en_, tmp)
        # the pickled parts are loaded only when they match these digests
        write_checksums(folder, ["baselines.joblib", "cfin_en.joblib", "cfin.pt"],
                        CHECKSUM_FILE)
        meta = {"kind": "atrisk.mooc", "config": asdict(self.config),
                "course_vocab": self.course_vocab_, "uses_users": self.uses_users_,
                "feature_names": self.feature_names_, "n_train": self.n_train_,
                "cv": self.cv_, "train_seconds": self.timings_,
                "atrisk_version": __version__, "git_commit": git_commit(),
                "versions": {"torch": torch.__version__, "scikit-learn": sklearn.__version__,
                             "lightgbm": lightgbm.__version__}}
        write_text(json.dumps(meta, indent=2, default=str), folder / "meta.json")
        return folder

    @classmethod
    def load(cls, folder: Path | str, device: str = "auto") -> MoocModel:
        """Load a folder written by :meth:`save`.

        Args:
            folder: Model folder.
            device: CFIN device.

        Returns:
            The model.

        Raises:
            ModelLoadError: When the folder is not a MOOC model, a part is unreadable, or
                a pickled part does not match its checksum (``checksums.sha256``, written
                at save): it is then not unpickled.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("kind") != "atrisk.mooc":
                raise ValueError("meta.json is not an atrisk.mooc model")
            raw = dict(meta["config"])
            raw["cfin"] = CFINConfig(**raw["cfin"])
            self = cls(MoocConfig(**raw), device)
            self.baselines_ = joblib.load(
                verify_checksum(folder, "baselines.joblib", CHECKSUM_FILE))
            from atrisk.mooc.cfin import CFINClassifier  # torch: on use

            self.cfin_ = (CFINClassifier.load(folder, device)
                          if (folder / "cfin.pt").is_file() else None)
            self.cfin_en_ = (
                joblib.load(verify_checksum(folder, "cfin_en.joblib", CHECKSUM_FILE))
                if (folder / "cfin_en.joblib").is_file() else None)
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise ModelLoadError(f"{folder}: not a MOOC model folder ({exc}); train one "
                                 "with `atrisk mooc train`") from exc
        self.course_vocab_ = meta["course_vocab"]
        self.uses_users_ = meta["uses_users"]
        self.feature_names_ = meta["feature_names"]
        self.n_train_ = meta["n_train"]
        self.cv_ = meta["cv"]
        self.timings_ = meta["train_seconds"]
        return self


def train_mooc(data_dir: Path | str, out: Path | str, config: MoocConfig | None = None,
               device: str = "auto", on_step: Callable[[str], None] | None = None) -> dict:
    """Load a KDD Cup folder, train every model and save them (``atrisk mooc train``).

    Args:
        data_dir: Folder in the KDD Cup 2015 layout with ``truth.csv``.
        out: Model folder to write.
        config: Training configuration.
        device: CFIN device.
        on_step: Called with each model's name when it is trained.

    Returns:
        ``{"n_enrollments", "dropout_rate", "n_missing_truth", "cv", "train_seconds",
        "problems"}`` (``problems``: rows/files dropped, as records).

    Raises:
        LogValidationError: When the folder cannot be used at all.
    """
    data = load_kddcup(data_dir, drop_unlabelled=False)
    model = MoocModel(config, device).fit(data, on_step)
    model.save(out)
    y = data.labels[~np.isnan(data.labels)]
    return {"n_enrollments": int(len(y)), "dropout_rate": float(y.mean()),
            "n_missing_truth": data.n_missing_truth, "cv": model.cv_,
            "train_seconds": model.timings_, "problems": data.problems}


def evaluate_mooc(model_dir: Path | str, data_dir: Path | str, device: str = "auto") -> dict:
    """Evaluate a saved model on a KDD Cup folder (``atrisk mooc evaluate``).

    The folder may hold courses never seen in training: their context statistics
    are computed from the folder's own enrollments (labels are used only to score).

    Args:
        model_dir: Folder written by ``atrisk mooc train``.
        data_dir: Folder in the KDD Cup 2015 layout with ``truth.csv``.
        device: CFIN device.

    Returns:
        ``{"n_enrollments", "dropout_rate", "models": {name: {"auc", "f1"}},
        "n_missing_truth", "problems"}``.

    Raises:
        ModelLoadError: When the model folder cannot be loaded.
        LogValidationError: When the data folder cannot be used at all.
    """
    model = MoocModel.load(model_dir, device)
    data = load_kddcup(data_dir, drop_unlabelled=False)
    res = model.evaluate(data)
    res["n_missing_truth"] = data.n_missing_truth
    res["problems"] = data.problems
    return res
