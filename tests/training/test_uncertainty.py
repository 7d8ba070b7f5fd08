"""Cluster-bootstrap intervals, recall at the top share, Brier, reliability, groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from atrisk.errors import AtriskError
from atrisk.training.evaluate import recall_at_top as evaluate_recall
from atrisk.training.uncertainty import (
    MIN_POSITIVES,
    bootstrap_auc,
    brier_score,
    calibration_error,
    daily_flags,
    evaluation_summary,
    group_report,
    paired_auc_difference,
    recall_at_top,
    reliability_curve,
    resample_counts,
    weighted_auc,
    weighted_recall_at_top,
)

from .pairs_factory import make_pairs


def _independent(rng, n_students=80, per_student=8, mu=1.0, tau=1.0, rate=0.2):
    """Scores ``mu·y + u_student + e``; labels independent of the student.

    The population AUC (pairs of different students) is Φ(μ / √(2(1 + τ²))).
    """
    g = np.repeat(np.arange(n_students), per_student)
    u = rng.normal(0, tau, n_students)[g]
    y = rng.uniform(size=len(g)) < rate
    return y, mu * y + u + rng.normal(size=len(g)), g


def _clustered(rng, n_students=80, per_student=8):
    """A latent risk per student drives both its labels and its scores."""
    r = rng.normal(size=n_students)
    g = np.repeat(np.arange(n_students), per_student)
    y = rng.uniform(size=len(g)) < 1 / (1 + np.exp(-(-1.5 + 1.5 * r[g])))
    return y, r[g] + rng.normal(0, 0.5, len(g)), g


# ----------------------------------------------------------------------------- AUC
@pytest.mark.parametrize("flip", [False, True])
def test_weighted_auc_equals_sklearn_with_weights_and_ties(flip):
    rng = np.random.default_rng(1)
    n = 600
    y = rng.uniform(size=n) < 0.2
    if flip:  # positives the majority: the kernel swaps classes internally
        y = ~y
    p = np.round(rng.normal(size=n) + y, 1)  # many ties
    students = np.array([f"s{i:02d}" for i in rng.integers(0, 70, n)])
    w = rng.integers(0, 4, size=(6, 70))
    got = weighted_auc(y, p, w, students)
    codes = pd.factorize(pd.Series(students), sort=True)[0]
    want = [roc_auc_score(y, p, sample_weight=row[codes]) for row in w]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_point_auc_matches_sklearn_and_counts_are_reported():
    rng = np.random.default_rng(2)
    y, p, g = _independent(rng)
    res = bootstrap_auc(y, p, g, n_boot=200, seed=0)
    assert res.value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert (res.n_pos, res.n_neg, res.n_students, res.n_pairs) == (
        int(y.sum()), int((~y).sum()), 80, 640)
    assert res.n_usable == 200 and res.n_skipped == 0
    assert res.ci[0] < res.value < res.ci[1]
    d = res.to_dict()
    assert d["ci"] == [res.ci[0], res.ci[1]] and d["n_skipped"] == 0
    # same seed, same interval; another seed, another one
    assert bootstrap_auc(y, p, g, n_boot=200, seed=0).ci == res.ci
    assert bootstrap_auc(y, p, g, n_boot=200, seed=1).ci != res.ci


def test_ci_covers_the_true_auc_about_95_percent_of_the_time():
    true = norm.cdf(1.0 / np.sqrt(2 * (1 + 1.0)))  # μ = 1, τ = 1: 0.691
    hits = 0
    reps = 200
    for r in range(reps):
        y, p, g = _independent(np.random.default_rng(5000 + r))
        lo, hi = bootstrap_auc(y, p, g, n_boot=300, seed=r).ci
        hits += lo <= true <= hi
    # measured 0.95 (190/200); binomial sd at 95 % is 1.5 points
    assert 0.90 <= hits / reps <= 0.99


def test_cluster_interval_is_wider_than_pair_interval_when_students_are_correlated():
    rng = np.random.default_rng(0)
    y, p, _ = _clustered(rng, n_students=200_000)
    true = roc_auc_score(y, p)  # the population value, to ±0.001
    reps, hit_cluster, hit_pairs, ratio = 200, 0, 0, []
    for r in range(reps):
        y, p, g = _clustered(np.random.default_rng(1000 + r))
        by_student = bootstrap_auc(y, p, g, n_boot=300, seed=r)
        by_pair = bootstrap_auc(y, p, None, n_boot=300, seed=r)
        hit_cluster += by_student.ci[0] <= true <= by_student.ci[1]
        hit_pairs += by_pair.ci[0] <= true <= by_pair.ci[1]
        ratio.append((by_student.ci[1] - by_student.ci[0]) / (by_pair.ci[1] - by_pair.ci[0]))
    # measured: by student 0.93, by pair 0.835, median width ratio 1.37
    assert hit_cluster / reps >= 0.90
    assert hit_pairs / reps <= hit_cluster / reps - 0.05
    assert np.median(ratio) > 1.25


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noise_scores_have_an_interval_containing_one_half(seed):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(150), 10)
    y = rng.uniform(size=len(g)) < 0.1
    res = bootstrap_auc(y, rng.uniform(size=len(g)), g, n_boot=500, seed=seed)
    assert res.ci[0] < 0.5 < res.ci[1]
    assert res.ci[1] - res.ci[0] < 0.2


def test_resamples_with_one_class_are_skipped_and_counted():
    g = np.repeat(np.arange(40), 5)
    y = np.zeros(len(g), dtype=bool)
    y[[0, 5]] = True  # 2 positive pairs, in students 0 and 1
    p = np.linspace(0, 1, len(g))
    res = bootstrap_auc(y, p, g, n_boot=400, seed=0)
    # P(neither student drawn) = (38/40)^40 ≈ 0.129
    assert 0.08 < res.n_skipped / 400 < 0.18
    assert res.n_usable == 400 - res.n_skipped
    assert "were skipped" in res.note and f"< {MIN_POSITIVES}" in res.note
    none = bootstrap_auc(np.zeros(10, bool), np.arange(10.0), np.arange(10))
    assert none.value is None and none.ci is None and "no positives" in none.note


def test_an_interval_needs_half_of_the_resamples_usable():
    # two students, one with only positive pairs, one with only negative pairs: a
    # resample has both classes with probability 1/2
    g = np.repeat([0, 1], 3)
    y = g == 0
    seen = set()
    for seed in range(10):
        res = bootstrap_auc(y, np.arange(6.0), g, n_boot=400, seed=seed)
        assert 150 < res.n_usable < 250
        assert (res.ci is None) == (res.n_usable < 200)
        seen.add(res.ci is None)
    assert seen == {True, False}


def test_paired_difference_is_tighter_than_separate_intervals():
    rng = np.random.default_rng(3)
    y, p, g = _independent(rng, n_students=120)
    better = p + 0.6 * y
    diff = paired_auc_difference(y, better, p, g, n_boot=400, seed=0)
    a = bootstrap_auc(y, better, g, n_boot=400, seed=0)
    b = bootstrap_auc(y, p, g, n_boot=400, seed=0)
    assert diff.value == pytest.approx(a.value - b.value)
    assert diff.ci[0] > 0  # the better model is better on these students
    assert diff.ci[1] - diff.ci[0] < 0.6 * ((a.ci[1] - a.ci[0]) + (b.ci[1] - b.ci[0]))


def test_bad_inputs_raise_package_errors():
    with pytest.raises(AtriskError, match="0/1"):
        bootstrap_auc([0, 2], [0.1, 0.2], [1, 2])
    with pytest.raises(AtriskError, match="missing"):
        bootstrap_auc([0, 1], [0.1, np.nan], [1, 2])
    with pytest.raises(AtriskError, match="one student id per pair"):
        bootstrap_auc([0, 1], [0.1, 0.2], [1])
    with pytest.raises(AtriskError, match="level"):
        bootstrap_auc([0, 1], [0.1, 0.2], [1, 2], level=95)
    with pytest.raises(AtriskError, match=r"\[0, 1\]"):
        brier_score([0, 1], [0.1, 1.2], [1, 2])


def test_resample_counts_draw_each_student_set_with_replacement():
    blocks = list(resample_counts(50, 600, seed=4))
    counts = np.concatenate(blocks)
    assert counts.shape == (600, 50)
    assert (counts.sum(axis=1) == 50).all()
    # a student is left out of a resample with probability (49/50)^50 ≈ 0.364
    assert abs((counts == 0).mean() - (49 / 50) ** 50) < 0.02
    again = np.concatenate(list(resample_counts(50, 600, seed=4)))
    np.testing.assert_array_equal(counts, again)


# ----------------------------------------------------------------------------- recall
@pytest.fixture(scope="module")
def scored_pairs():
    pairs = make_pairs(n_students=60, days=25, seed=5)
    days = (pairs["dropout_time"] - pairs["t"]) / pd.Timedelta(days=1)
    pairs["y"] = ((days > 0) & (days <= 3)).astype(int)
    rng = np.random.default_rng(0)
    pairs["p"] = 1 / (1 + np.exp(-(pairs["time_days_since_last_class"] - 4
                                   + rng.normal(0, 1, len(pairs)))))
    return pairs


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5])
def test_recall_point_value_is_the_evaluate_definition(scored_pairs, share):
    df = scored_pairs
    want = evaluate_recall(df, df["p"].to_numpy(), "y", share)
    res = recall_at_top(df["y"], df["p"], df["t"], df["student_id"], share=share,
                        n_boot=200, seed=0)
    assert res.value == pytest.approx(want, abs=1e-12)
    flags = daily_flags(df["t"], df["p"], share)
    assert flags[df["y"].to_numpy() == 1].mean() == pytest.approx(want, abs=1e-12)
    assert res.ci[0] <= res.value <= res.ci[1]


def test_weighted_recall_equals_recall_on_the_repeated_table(scored_pairs):
    df = scored_pairs.reset_index(drop=True)
    codes, students = pd.factorize(df["student_id"], sort=True)
    rng = np.random.default_rng(7)
    w = rng.integers(0, 4, size=(5, len(students)))
    got = weighted_recall_at_top(df["y"], df["p"], df["t"], w, df["student_id"], share=0.3)
    for row, value in zip(w, got, strict=True):
        idx = np.repeat(np.arange(len(df)), row[codes])
        rep = df.iloc[idx]
        assert value == pytest.approx(evaluate_recall(rep, rep["p"].to_numpy(), "y", 0.3),
                                      abs=1e-12)


def test_flags_per_day_follow_the_ceiling_rule():
    t = np.repeat([0, 1], [7, 3])
    p = np.r_[np.linspace(0.9, 0.1, 7), [0.2, 0.2, 0.1]]
    flags = daily_flags(t, p, 0.3)
    # day 0: ceil(2.1) = 3 flagged; day 1: ceil(0.9) = 1, the tie goes to the first row
    np.testing.assert_array_equal(flags, [1, 1, 1, 0, 0, 0, 0, 1, 0, 0])


# ----------------------------------------------------------------------------- Brier
def test_brier_value_and_interval():
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(100), 6)
    q = rng.uniform(0, 0.4, len(g))
    y = rng.uniform(size=len(g)) < q
    res = brier_score(y, q, g, n_boot=300, seed=0)
    assert res.value == pytest.approx(np.mean((q - y) ** 2))
    assert res.ci[0] < res.value < res.ci[1]
    # calibrated q beats the constant base rate, whose Brier is r(1 - r)
    r = y.mean()
    assert res.value < r * (1 - r)


# ----------------------------------------------------------------------------- reliability
def test_reliability_curve_matches_sklearn_and_counts_every_pair():
    rng = np.random.default_rng(9)
    q = rng.beta(1, 6, 20_000)
    y = rng.uniform(size=len(q)) < q
    for strategy in ("quantile", "uniform"):
        curve = reliability_curve(y, q, n_bins=10, strategy=strategy)
        true, pred = calibration_curve(y, q, n_bins=10, strategy=strategy)
        np.testing.assert_allclose(curve["observed_rate"], true)
        np.testing.assert_allclose(curve["mean_predicted"], pred)
        assert sum(curve["count"]) == len(q)
        assert len(curve["count"]) == len(curve["mean_predicted"])
    calibrated = calibration_error(reliability_curve(y, q))
    inflated = calibration_error(reliability_curve(y, q ** 0.5))
    assert calibrated < 0.01
    assert inflated > 0.15


# ----------------------------------------------------------------------------- summaries
def test_evaluation_summary_has_the_table_columns(scored_pairs):
    df = scored_pairs
    out = evaluation_summary(df["y"], df["p"], df["student_id"], df["t"], n_boot=200)
    for key in ("auc", "auc_ci", "n_pos", "n_students", "brier", "brier_ci",
                "recall_at_top", "recall_at_top_ci", "mean_p", "observed_rate"):
        assert key in out
    assert out["n_pos"] == int(df["y"].sum()) and out["n_students"] == 60
    assert out["auc_ci"][0] < out["auc"] < out["auc_ci"][1]
    few = df[df["student_id"].isin(["s000", "s001", "s002", "s003", "s004", "s005"])]
    out_few = evaluation_summary(few["y"], few["p"], few["student_id"], few["t"], n_boot=200)
    assert out_few["n_pos"] < MIN_POSITIVES
    assert any("positive pair" in n for n in out_few["notes"])


def test_group_report_shows_a_group_flagged_more_at_the_same_risk():
    rng = np.random.default_rng(11)
    n_students, days = 400, 20
    sid = np.repeat([f"s{i:03d}" for i in range(n_students)], days)
    grade = np.repeat(np.where(np.arange(n_students) % 2 == 0, "5", "8"), days)
    t = np.tile(np.arange(days), n_students)
    q = np.repeat(rng.beta(1, 8, n_students), days)  # the same risk in both grades
    y = rng.uniform(size=len(q)) < q
    p = np.clip(q + np.where(grade == "8", 0.15, 0.0), 0, 1)  # grade 8 over-scored
    frame = pd.DataFrame({"student_id": sid, "t": t, "grade": grade, "y": y.astype(int),
                          "p": p})
    rows = {r["group"]: r for r in group_report(frame, "grade", n_boot=300)}
    g5, g8 = rows["5"], rows["8"]
    assert g5["n_students"] == g8["n_students"] == 200
    assert g5["n_pairs"] == g8["n_pairs"] == 200 * days
    assert g5["n_pos"] + g8["n_pos"] == int(y.sum())
    # the population's flags are 30 % of each day; grade 8 gets most of them
    total_flagged = g5["flag_rate"] * g5["n_pairs"] + g8["flag_rate"] * g8["n_pairs"]
    assert total_flagged == pytest.approx(0.3 * len(frame))
    assert g8["flag_rate_ci"][0] > g5["flag_rate_ci"][1]
    assert g8["false_flag_rate_ci"][0] > g5["false_flag_rate_ci"][1]
    assert g8["calibration_gap_ci"][0] > 0.1
    assert g5["calibration_gap_ci"][0] < 0 < g5["calibration_gap_ci"][1]
    # within a grade the ranking is the same (a shift changes no order): the intervals
    # of the two grades' AUCs overlap
    assert g8["auc_ci"][0] < g5["auc_ci"][1] and g5["auc_ci"][0] < g8["auc_ci"][1]


def test_group_report_keeps_missing_values_as_a_group():
    frame = pd.DataFrame({"student_id": ["a", "a", "b", "c"], "t": [0, 1, 0, 0],
                          "grade": [5, 5, None, 10], "y": [0, 1, 0, 1],
                          "p": [0.1, 0.8, 0.2, 0.6]})
    rows = group_report(frame, "grade", n_boot=50)
    # numbers by value (grade 5 before grade 10), then the rest
    assert [r["group"] for r in rows] == ["5", "10", "(missing)"]
    assert rows[2]["auc"] is None and rows[2]["n_pos"] == 0
    with pytest.raises(AtriskError, match="needs columns"):
        group_report(frame.drop(columns="p"), "grade")
