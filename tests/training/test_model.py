from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.config import TrainingConfig
from atrisk.errors import ModelLoadError
from atrisk.training.evaluate import evaluate
from atrisk.training.fit import fit_baselines
from atrisk.training.labels import add_labels, augment, oversample
from atrisk.training.model import HorizonError, RiskModel

from .pairs_factory import make_pairs


def test_split_by_student(fitted, synth_pairs):
    train_s, test_s = set(fitted.train_students_), set(fitted.test_students_)
    assert not train_s & test_s
    assert train_s | test_s == set(synth_pairs["student_id"])
    assert len(test_s) == 16  # 20 % of 80 students
    assert fitted.horizons == [1, 3]


def test_auc_on_held_out_students(fitted, synth_pairs):
    result = evaluate(fitted, synth_pairs, baselines=False).metrics
    assert result["evaluated_on"] == "held-out students"
    assert result["n_students"] == 16
    assert result["auc"]["gbdt"]["1"] > 0.8
    assert result["auc"]["gbdt"]["3"] > 0.8


def test_pca_is_fitted_on_training_students_only(synth_pairs, small_config):
    pairs = synth_pairs.copy()
    model = RiskModel(small_config).fit_pairs(pairs)
    test = pairs["student_id"].isin(model.test_students_)
    shifted = pairs.copy()
    shifted.loc[test, "in_student_loudness_sma3_amean"] += 1000.0  # held-out rows only
    model2 = RiskModel(small_config).fit_pairs(shifted)
    assert model2.test_students_ == model.test_students_
    cols = model.in_class_columns_
    for m in (model, model2):
        block = m.pipelines_[3].named_steps["features"].named_transformers_["in_class"]
        scaler = block.named_steps["scale"]
        train_rows = add_labels(shifted[~test], [3])
        rows = oversample(augment(train_rows, 3, small_config.lookback, small_config.weighting),
                          small_config.oversample)
        imputed = rows[cols].fillna(rows[cols].median())
        assert scaler.n_samples_seen_ == len(rows) == m.metadata_["per_horizon"]["3"][
            "n_rows_fit"]
        np.testing.assert_allclose(scaler.mean_, imputed.mean().to_numpy(), rtol=1e-9)
        assert abs(scaler.mean_[0]) < 1.0  # the +1000 of held-out rows never reached it
        assert block.named_steps["pca"].n_components_ >= 1


def test_save_load_round_trip(fitted, synth_pairs, tmp_path: Path):
    fitted.save(tmp_path / "model")
    loaded = RiskModel.load(tmp_path / "model")
    for h in (1, 3):
        np.testing.assert_array_equal(loaded.predict_proba(synth_pairs, h),
                                      fitted.predict_proba(synth_pairs, h))
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["versions"]["lightgbm"] and meta["horizons_trained"] == [1, 3]
    assert meta["n_pairs"] == len(synth_pairs)
    assert 0 < meta["per_horizon"]["3"]["positive_ratio_before"] < 0.3
    after = meta["per_horizon"]["3"]["positive_ratio_after"]
    assert meta["per_horizon"]["3"]["positive_ratio_before"] < after < 0.3  # pseudo-positives
    assert meta["per_horizon"]["3"]["positive_weight_share"] == pytest.approx(0.3)
    assert any(n.startswith("in_class__pca") for n in meta["feature_names_out"]["3"])
    cfg = tomllib.loads((tmp_path / "model" / "config.toml").read_text())
    assert TrainingConfig(**cfg["training"]) == fitted.config


def test_load_errors(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        RiskModel.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="model.sha256 is missing"):
        RiskModel.load(tmp_path / "bad")  # never unpickled without its checksum


def test_a_changed_model_file_is_refused_before_unpickling(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    assert RiskModel.load(tmp_path / "m").horizons == fitted.horizons
    blob = tmp_path / "m" / "model.joblib"
    blob.write_bytes(blob.read_bytes() + b"\0")  # e.g. replaced by someone else
    with pytest.raises(ModelLoadError, match="does not match its checksum"):
        RiskModel.load(tmp_path / "m")


def test_untrained_horizon(fitted, synth_pairs):
    with pytest.raises(HorizonError, match=r"trained horizons: \[1, 3\]"):
        fitted.predict_proba(synth_pairs, 7)
    assert isinstance(HorizonError("x"), ValueError)


def test_probabilities_in_unit_interval(fitted, synth_pairs):
    p = fitted.predict_proba(synth_pairs, 3)
    assert p.shape == (len(synth_pairs),) and (p >= 0).all() and (p <= 1).all()


def test_horizon_without_positives_is_skipped(small_config):
    pairs = make_pairs(n_students=10, days=15, seed=1)
    pairs["dropout_time"] = pd.Series(pd.NaT, index=pairs.index, dtype="datetime64[ns, UTC]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = RiskModel(small_config).fit_pairs(pairs)
    assert model.horizons == []
    assert any("horizon 1 skipped: no positive" in w for w in model.metadata_["warnings"])
    assert any("horizon 3 skipped" in str(w.message) for w in caught)


def test_no_in_class_columns_skips_pca(synth_pairs, small_config):
    pairs = synth_pairs.drop(columns=[c for c in synth_pairs if c.startswith("in_")])
    model = RiskModel(small_config).fit_pairs(pairs)
    ct = model.pipelines_[3].named_steps["features"]
    assert [name for name, *_ in ct.transformers] == ["rest"]
    nan_in = synth_pairs.assign(in_student_loudness_sma3_amean=np.nan,
                                in_teacher_loudness_sma3_amean=np.nan, in_inter_qa_rounds=np.nan)
    model2 = RiskModel(small_config).fit_pairs(nan_in)
    assert model2.in_class_columns_ == []
    assert "in_class" not in model2.pipelines_[1].named_steps["features"].named_transformers_
    assert model2.predict_proba(nan_in, 1).shape == (len(nan_in),)


def test_baselines(fitted, synth_pairs, small_config):
    train_pairs = synth_pairs[synth_pairs["student_id"].isin(fitted.train_students_)]
    models = fit_baselines(train_pairs, 3, small_config)
    assert set(models) == {"lr", "dt", "rf", "gbdt_none"}
    test = add_labels(synth_pairs[synth_pairs["student_id"].isin(fitted.test_students_)], [3])
    from sklearn.metrics import roc_auc_score
    for name, pipe in models.items():
        p = pipe.predict_proba(test[list(pipe.feature_names_in_)])[:, 1]
        assert roc_auc_score(test["dropout_within_3"], p) > 0.7, name
    assert fit_baselines(train_pairs.assign(dropout_time=pd.NaT), 3, small_config) == {}
