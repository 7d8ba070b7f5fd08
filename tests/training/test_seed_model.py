"""RiskModel with the seed's labels, both balances, calibration and the temporal fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atrisk.training.labels import add_labels
from atrisk.training.model import RiskModel
from atrisk.training.temporal import censor, known_by, resolve_cut


@pytest.fixture(scope="module")
def seed_model(synth_pairs, small_config):
    cfg = small_config.model_copy(update={"labels": "seed", "balance": "oversample",
                                          "lookback": 7})
    return RiskModel(cfg).fit_pairs(synth_pairs)


def test_one_model_serves_every_horizon(seed_model, synth_pairs):
    assert seed_model.horizons == [1, 3]
    assert seed_model.pipeline(1) is seed_model.pipeline(3)
    info = seed_model.metadata_["per_horizon"]["all"]
    # P = one dropout pair per training dropout, P̃ added, copies drawn to 30 % of rows
    train = synth_pairs[synth_pairs["student_id"].isin(seed_model.train_students_)]
    dropouts = train.loc[train["dropout_time"].notna(), "student_id"].nunique()
    assert info["n_dropout_pairs"] == info["n_positive"] == dropouts
    assert info["n_pseudo"] > 0 and info["n_copies"] > 0
    assert info["positive_ratio_after"] == pytest.approx(0.3, abs=0.01)
    # same raw score for every Δ, one calibrator per Δ: P(within 3) ≥ P(within 1)
    at = synth_pairs.iloc[:300]
    np.testing.assert_array_equal(seed_model.predict_score(at, 1),
                                  seed_model.predict_score(at, 3))
    assert set(seed_model.calibrators_) == {1, 3}
    p1, p3 = seed_model.predict_proba(at, 1), seed_model.predict_proba(at, 3)
    assert (p3 >= p1 - 1e-12).all() and p3.mean() > p1.mean()


def test_calibration_makes_probabilities_match_rates(synth_pairs, small_config):
    """Re-weighting to 30 % positives inflates raw scores; calibration brings them back."""
    for method in ("platt", "isotonic"):
        cfg = small_config.model_copy(update={"calibration": method, "lookback": 0})
        model = RiskModel(cfg).fit_pairs(synth_pairs)
        test = add_labels(synth_pairs[synth_pairs["student_id"].isin(model.test_students_)],
                          [3])
        y = test["dropout_within_3"].to_numpy()
        raw, cal = model.predict_score(test, 3), model.predict_proba(test, 3)
        assert abs(cal.mean() - y.mean()) < abs(raw.mean() - y.mean()) / 2, method
        assert np.mean((cal - y) ** 2) < np.mean((raw - y) ** 2), method
        state = model.calibrators_[3].to_dict()
        assert state["method"] == method and state["n_fit"] > 0
    none = RiskModel(small_config.model_copy(update={"calibration": "none"})).fit_pairs(
        synth_pairs)
    at = synth_pairs.iloc[:50]
    assert none.calibrators_ == {}
    np.testing.assert_array_equal(none.predict_proba(at, 1), none.predict_score(at, 1))


def test_reweight_and_oversample_both_fit(synth_pairs, small_config):
    for labels in ("seed", "horizon"):
        for balance in ("reweight", "oversample"):
            cfg = small_config.model_copy(update={"labels": labels, "balance": balance})
            m = RiskModel(cfg).fit_pairs(synth_pairs)
            info = next(iter(m.metadata_["per_horizon"].values()))
            if balance == "reweight":
                assert info["n_copies"] == 0
                assert info["positive_weight_share"] == pytest.approx(0.3, abs=1e-6)
            else:
                assert info["n_copies"] > 0
            assert m.metadata_["labels"] == labels and m.metadata_["balance"] == balance


def test_temporal_fit_uses_only_what_was_known_at_the_cut(synth_pairs, small_config):
    cut = resolve_cut(synth_pairs, "auto")
    model = RiskModel(small_config).fit_pairs(synth_pairs, cut="auto")
    assert model.cut_ == cut and model.metadata_["temporal_cut"] == str(cut.date())
    # trained on t < cut, labels known by then: the Δ=3 model saw t + 3 ≤ cut only
    known = known_by(add_labels(censor(synth_pairs, cut), [3]), cut, 3)
    assert model.metadata_["per_horizon"]["3"]["n_pairs"] == len(known)
    assert known["t"].max() + pd.Timedelta(days=3) <= cut
    # a dropout after the cut is not known: its pairs before the cut are negatives
    late = synth_pairs["dropout_time"] > cut
    assert censor(synth_pairs, cut).loc[lambda d: d.index.isin(
        synth_pairs.index[late]), "dropout_time"].isna().all()
    # every student with a pair at or after the cut is a test student
    after_ids = set(synth_pairs.loc[synth_pairs["t"] >= cut, "student_id"])
    assert set(model.test_students_) == after_ids


def test_training_config_round_trips_through_toml(tmp_path):
    from atrisk.config import Config

    cfg = Config().override({"training.temporal_cut": "off", "training.labels": "seed",
                             "training.balance": "oversample",
                             "training.group_columns": ["grade", "school"]})
    assert cfg.training.temporal_cut == "none"
    cfg.save(tmp_path / "c.toml")
    assert Config.load(tmp_path / "c.toml") == cfg
    with pytest.raises(Exception, match="temporal_cut"):
        Config().override({"training.temporal_cut": "next tuesday"})
    assert Config().override({"training.temporal_cut": "2024-03-20"}).training.temporal_cut \
        == "2024-03-20"
