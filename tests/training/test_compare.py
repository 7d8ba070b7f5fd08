"""atrisk.training.compare: weighted AUC, paired bootstrap over students, out-of-fold fits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from atrisk.config import TrainingConfig
from atrisk.training.compare import (
    auc_difference,
    horizon_labels,
    oof_predictions,
    student_folds,
    weighted_auc,
)


def test_weighted_auc_hand_values():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    # positive 0.35 beats 0.1 only, 0.8 beats both: 3 of 4 (pos, neg) pairs
    assert weighted_auc(y, s) == 0.75
    # negative 0.4 weighted 3: 0.35 beats weight 1 of 4, 0.8 beats 4 of 4 -> 5 / 8
    assert weighted_auc(y, s, np.array([1, 3, 1, 1])) == pytest.approx(0.625)
    assert weighted_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie counts 1/2
    assert weighted_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    assert weighted_auc(y, s, np.array([0, 0, 1, 1])) is None  # no weighted negative


def test_weighted_auc_equals_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # rounding makes ties
    w = rng.integers(0, 4, 500).astype(float)
    assert weighted_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w),
                                                  abs=1e-12)


def test_auc_difference_is_a_minus_b_and_drops_nan_rows():
    y = np.array([0, 0, 1, 1, 1])
    p_a = np.array([0.1, 0.4, 0.35, 0.8, np.nan])
    p_b = np.array([0.3, 0.4, 0.35, 0.2, 0.5])
    r = auc_difference(y, p_a, p_b, np.array(list("abcde")), n_boot=0)
    # the NaN row is dropped from both: a = 0.75; b on the same 4 rows: only 0.35 > 0.3
    assert (r["a"], r["b"], r["n_pairs"], r["n_positive"]) == (0.75, 0.25, 4, 2)
    assert r["diff"] == r["a"] - r["b"] == 0.5
    assert r["ci"] is None and r["n_students"] == 4


def test_bootstrap_resamples_students_and_skips_one_class_resamples():
    # two students: s1 has only negatives, s2 only positives.  A resample is usable only
    # when it holds each student once (weights 1, 1), so every usable resample gives
    # the full-sample difference and the interval collapses onto it.
    y = np.array([0, 0, 1, 1])
    p_a = np.array([0.1, 0.6, 0.5, 0.9])     # a = 3/4
    p_b = np.array([0.1, 0.2, 0.3, 0.4])     # b = 1
    r = auc_difference(y, p_a, p_b, np.array(["s1", "s1", "s2", "s2"]), n_boot=400, seed=0)
    assert r["diff"] == -0.25
    assert r["ci"] == [-0.25, -0.25]
    assert 140 < r["n_boot"] < 260  # about half of the 400 resamples hold both students


def test_identical_scores_give_zero_difference_and_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    r = auc_difference(y, p, p.copy(), np.repeat(np.arange(20), 10), n_boot=50)
    assert r["diff"] == 0.0 and r["ci"] == [0.0, 0.0] and r["n_boot"] == 50


def test_student_folds(synth_pairs, fitted):
    cfg = TrainingConfig()
    students = synth_pairs["student_id"]
    folds = student_folds(students, 4, cfg)
    held = np.concatenate([te for _, te in folds])
    assert sorted(held.tolist()) == list(range(len(synth_pairs)))  # every row once
    for tr, te in folds:
        assert not set(students.iloc[tr]) & set(students.iloc[te])
    # folds=1 is the split of atrisk train (RiskModel.fit) for the same seed and share
    (tr, te), = student_folds(students, 1, fitted.config)
    assert sorted(set(students.iloc[te])) == fitted.test_students_
    with pytest.raises(ValueError):
        student_folds(students.iloc[:30], 80, cfg)


def test_oof_predictions_tell_signal_from_noise(synth_pairs, small_config):
    folds = student_folds(synth_pairs["student_id"], 4, small_config)
    y = horizon_labels(synth_pairs, 3)
    signal = oof_predictions(synth_pairs, 3, ["time_days_since_last_class"], small_config,
                             folds)
    noise = oof_predictions(synth_pairs, 3, ["in_student_loudness_sma3_amean"], small_config,
                            folds)
    assert not np.isnan(signal).any() and not np.isnan(noise).any()
    r = auc_difference(y, signal, noise, synth_pairs["student_id"].to_numpy(), n_boot=200)
    assert r["a"] > 0.9 and 0.35 < r["b"] < 0.65
    assert r["ci"][0] > 0.2  # the difference is clear over students
    # a single split scores only its held-out rows
    one = student_folds(synth_pairs["student_id"], 1, small_config)
    p = oof_predictions(synth_pairs, 3, ["time_days_since_last_class"], small_config, one)
    assert np.isnan(p).sum() == len(one[0][0]) and not np.isnan(p[one[0][1]]).any()


def test_oof_predictions_skip_in_class_columns_empty_in_training(synth_pairs, small_config):
    pairs = synth_pairs.assign(in_student_F0_amean=np.nan)
    folds = student_folds(pairs["student_id"], 2, small_config)
    cols = ["in_student_F0_amean", "time_days_since_last_class"]
    with_empty = oof_predictions(pairs, 1, cols, small_config, folds)
    without = oof_predictions(pairs, 1, cols[1:], small_config, folds)
    np.testing.assert_array_equal(with_empty, without)
