from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from atrisk.errors import AtriskError
from atrisk.training.model import HorizonError
from atrisk.training.predict import _names, predict_risk, reason_text


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
    assert risk["probability"].is_monotonic_decreasing
    assert risk["flagged"].sum() == math.ceil(0.3 * n)
    assert risk["flagged"].iloc[: math.ceil(0.3 * n)].all()
    assert all(isinstance(r, str) and r for r in risk["top_reasons"])
    np.testing.assert_allclose(
        risk.set_index("student_id")["probability"].loc[at["student_id"]].to_numpy(),
        fitted.predict_proba(at, 3))
    # the signal feature explains the highest risk
    assert "days since the last class" in risk["top_reasons"].iloc[0]


def test_at_least_one_flagged(fitted, synth_pairs):
    one = synth_pairs[synth_pairs["t"] == _day(synth_pairs)].iloc[:2]
    risk = predict_risk(fitted, one, 1, "2024-01-12")
    assert risk["flagged"].tolist() == [True, False]


def test_errors(fitted, synth_pairs):
    with pytest.raises(HorizonError, match=r"\[1, 3\]"):
        predict_risk(fitted, synth_pairs, 14, "2024-01-12")
    with pytest.raises(AtriskError, match="no pairs on 2030-01-01"):
        predict_risk(fitted, synth_pairs, 1, "2030-01-01")


def test_reason_words(fitted):
    assert reason_text("time_classes_7d") == "classes in the past 7 days"
    assert reason_text("time_reschedules_21d") == "reschedules in the past 21 days"
    assert reason_text("out_follow_up_ratio") == "follow-ups per class"
    assert reason_text("something_else") == "something_else"
    names = [words for words, _ in _names(fitted, 3)]
    assert names[0].startswith("in-class behaviour (component 1, mostly in-class ")
    assert "days since the last class" in names
