from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from atrisk.errors import AtriskError
from atrisk.training.model import HorizonError
from atrisk.training.predict import predict_risk
from atrisk.training.reasons import explain, feature_contributions, in_class_group, phrase


def _day(pairs: pd.DataFrame) -> pd.Timestamp:
    return pd.Timestamp("2024-01-12", tz="UTC")


def test_risk_list(fitted, synth_pairs):
    day = _day(synth_pairs)
    at = synth_pairs[synth_pairs["t"] == day]
    risk = predict_risk(fitted, synth_pairs, 3, "2024-01-12")
    n = len(at)
    assert list(risk.columns) == ["date", "student_id", "probability", "rank", "flagged",
                                  "top_reasons"]
    assert len(risk) == n and set(risk["student_id"]) == set(at["student_id"])
    assert str(risk["date"].iloc[0]) == "2024-01-12"
    assert risk["probability"].between(0, 1).all()
    assert risk["rank"].tolist() == list(range(1, n + 1))
    # ranked by the raw score; the calibrated probability keeps that order
    raw = fitted.predict_score(at, 3)
    by_id = dict(zip(at["student_id"], raw, strict=True))
    ranked = [by_id[s] for s in risk["student_id"]]
    assert ranked == sorted(ranked, reverse=True)
    assert risk["probability"].is_monotonic_decreasing
    assert risk["flagged"].sum() == math.ceil(0.3 * n)
    assert risk["flagged"].iloc[: math.ceil(0.3 * n)].all()
    assert all(isinstance(r, str) and r for r in risk["top_reasons"])
    np.testing.assert_allclose(
        risk.set_index("student_id")["probability"].loc[at["student_id"]].to_numpy(),
        fitted.predict_proba(at, 3))
    # the signal feature explains the highest risk, in plain words with the usual value
    assert risk["top_reasons"].iloc[0].startswith("no class for ")
    assert "(usually " in risk["top_reasons"].iloc[0]


def test_at_least_one_flagged(fitted, synth_pairs):
    one = synth_pairs[synth_pairs["t"] == _day(synth_pairs)].iloc[:2]
    risk = predict_risk(fitted, one, 1, "2024-01-12")
    assert risk["flagged"].tolist() == [True, False]


def test_errors(fitted, synth_pairs):
    with pytest.raises(HorizonError, match=r"\[1, 3\]"):
        predict_risk(fitted, synth_pairs, 14, "2024-01-12")
    with pytest.raises(AtriskError, match="no pairs on 2030-01-01"):
        predict_risk(fitted, synth_pairs, 1, "2030-01-01")


def test_reason_words():
    assert phrase("time_days_since_last_class", 9, 2) == "no class for 9 days (usually 2)"
    assert phrase("time_days_since_last_class", 1) == "no class for 1 day"
    assert phrase("time_days_since_last_class", 0.3, 1) == "a class within the past day (usually 1)"
    assert phrase("time_days_since_last_active", 0) == "active within the past day"
    assert phrase("time_classes_7d", 0, 2) == "0 classes in the past 7 days (usually 2)"
    assert phrase("time_reschedules_21d", 1, 0) == \
        "rescheduled 1 time in the past 21 days (usually 0)"
    assert phrase("out_follow_up_ratio", 0.25, 0.8) == \
        "follow-up reports after 25 % of classes (usually 80 %)"
    assert phrase("time_teacher_dropout_rate", 0.4) == \
        "40 % of the teacher's past students dropped out"
    assert phrase("out_satisfaction", float("nan"), 4) == "satisfaction: not known yet"
    assert phrase("time_days_since_last_active", 5, 1) == "no activity for 5 days (usually 1)"
    assert phrase("something_else", 3) == "something else: 3"
    assert in_class_group("in_inter_response_latency_s")[0] == "latency"
    assert in_class_group("in_student_utt_MeanUnvoicedSegmentLength")[1] == -1
    assert in_class_group("in_student_n_words")[2] == "says little in class"
    assert in_class_group("in_teacher_loudness_sma3_amean")[0] == "teacher"
    assert in_class_group("in_whatever")[0] == "interaction"


def test_contributions_add_up_to_the_score(fitted, synth_pairs):
    """Handing the PCA components back to their features keeps every pair's total."""
    at = synth_pairs.iloc[:200]
    contrib, z = feature_contributions(fitted, at, 3)
    assert list(contrib.columns) == fitted.feature_columns_
    pipe = fitted.pipeline(3)
    xt = pipe.named_steps["features"].transform(fitted.design_matrix(at))
    phi = np.asarray(pipe.named_steps["model"].predict(xt, pred_contrib=True))
    np.testing.assert_allclose(contrib.sum(axis=1), phi[:, :-1].sum(axis=1), atol=1e-9)
    raw = pipe.named_steps["model"].predict(xt, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1) + phi[:, -1], raw, atol=1e-9)
    assert z is not None and list(z.columns) == fitted.in_class_columns_
    # the in-class features get their components' shares, no PCA component is left
    assert contrib[fitted.in_class_columns_].abs().to_numpy().sum() > 0


def test_in_class_reason_is_named_and_directed(small_config):
    """A slow answer before dropout is said as such, not as a PCA component."""
    from atrisk.training.model import RiskModel

    rng = np.random.default_rng(3)
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for i in range(60):
        drop = i % 2 == 0
        d = start + pd.Timedelta(days=int(rng.integers(10, 25)), hours=12)
        n_days = (d - start).days + 1 if drop else 25
        for k in range(n_days):
            t = start + pd.Timedelta(days=k)
            near = drop and (d - t) / pd.Timedelta(days=1) <= 3
            rows.append({
                "student_id": f"s{i:03d}", "t": t,
                "in_inter_response_latency_s": rng.normal(3.0 if near else 1.0, 0.3),
                "in_student_n_words": rng.normal(20, 3),
                "in_teacher_loudness_sma3_amean": rng.normal(),
                "time_classes_7d": float(rng.integers(0, 4)),
                "dropout_time": d if drop else pd.NaT,
            })
    pairs = pd.DataFrame(rows)
    pairs["dropout_time"] = pairs["dropout_time"].astype("datetime64[ns, UTC]")
    model = RiskModel(small_config.model_copy(update={"lookback": 0})).fit_pairs(pairs)
    slow = pairs[pairs["in_inter_response_latency_s"] > 2.8].iloc[:5]
    texts = explain(model, slow, 1)
    assert all(t.startswith("in recent classes: takes long to answer the teacher")
               for t in texts), texts
    assert not any("component" in t for t in texts)
