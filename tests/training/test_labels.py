from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atrisk.training.labels import add_labels, augment, oversample


@pytest.fixture
def pairs() -> pd.DataFrame:
    t = pd.date_range("2024-01-01", "2024-01-06", freq="D", tz="UTC")
    return pd.DataFrame({
        "student_id": ["a"] * 6 + ["b"] * 6,
        "t": list(t) * 2,
        "dropout_time": [pd.Timestamp("2024-01-05T12:00", tz="UTC")] * 6 + [pd.NaT] * 6,
    }).astype({"dropout_time": "datetime64[ns, UTC]"})


def test_dropout_within(pairs):
    out = add_labels(pairs, [1, 2, 3])
    a = out[out["student_id"] == "a"]
    # days to dropout for Jan 1..6: 4.5, 3.5, 2.5, 1.5, 0.5, -0.5
    assert a["dropout_within_1"].tolist() == [0, 0, 0, 0, 1, 0]
    assert a["dropout_within_2"].tolist() == [0, 0, 0, 1, 1, 0]
    assert a["dropout_within_3"].tolist() == [0, 0, 1, 1, 1, 0]
    assert out.loc[out["student_id"] == "b", "dropout_within_3"].sum() == 0
    assert "dropout_within_1" not in pairs  # input unchanged


def test_boundary_is_inclusive():
    p = pd.DataFrame({"t": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
                      "dropout_time": pd.to_datetime(["2024-01-02", "2024-01-02"], utc=True)})
    assert add_labels(p, [1])["dropout_within_1"].tolist() == [1, 0]


@pytest.mark.parametrize("weighting, expected", [
    ("linear", [0.25, 0.5, 0.75]),
    ("convex", [0.0625, 0.25, 0.5625]),
    ("concave", [0.4375, 0.75, 0.9375]),
    ("constant", [1.0, 1.0, 1.0]),
])
def test_pseudo_positive_weights(pairs, weighting, expected):
    out = augment(pairs, horizon=1, lookback=3, weighting=weighting)
    a = out[out["student_id"] == "a"]
    # Jan 2 (3.5 d: k=3), Jan 3 (2.5 d: k=2), Jan 4 (1.5 d: k=1); x = k/4
    assert a["is_pseudo"].tolist() == [False, True, True, True, False, False]
    assert a["label"].tolist() == [0, 1, 1, 1, 1, 0]
    np.testing.assert_allclose(a["weight"].to_numpy()[1:4], expected)
    assert a["weight"].iloc[0] == 1.0 and a["weight"].iloc[4] == 1.0
    b = out[out["student_id"] == "b"]
    assert b["label"].sum() == 0 and (b["weight"] == 1.0).all()


def test_no_lookback_means_no_pseudo_positives(pairs):
    out = augment(pairs, horizon=1, lookback=0)
    assert not out["is_pseudo"].any() and out["label"].sum() == 1


def _rows(n=100, n_pos=10):
    df = pd.DataFrame({"x": np.arange(n), "label": [1] * n_pos + [0] * (n - n_pos),
                       "weight": [0.0] + [1.0] * (n_pos - 2) + [50.0] + [1.0] * (n - n_pos)})
    return df


def test_oversample_reaches_weight_share_and_keeps_relative_weights():
    df = _rows()
    out = oversample(df, 0.6)  # positives carry 58 of 148 weight units (39 %)
    assert len(out) == 100  # no copies: the weights carry the over-sampling
    pos = out["label"] == 1
    share = out.loc[pos, "weight"].sum() / out["weight"].sum()
    assert share == pytest.approx(0.6)
    # one factor for every positive: relative pseudo weights G are kept
    f = 0.6 * 90 / (0.4 * 58)
    np.testing.assert_allclose(out.loc[pos, "weight"], df.loc[pos, "weight"] * f)
    np.testing.assert_array_equal(out.loc[~pos, "weight"], 1.0)
    pd.testing.assert_frame_equal(out, oversample(df, 0.6))
    pd.testing.assert_frame_equal(df, _rows())  # input unchanged


def test_oversample_no_op():
    df = _rows()
    pd.testing.assert_frame_equal(oversample(df, 0.0), df)
    # 58 of 148 weight units are positive already (39 % > 30 %): nothing to do
    pd.testing.assert_frame_equal(oversample(df, 0.3), df)
    pd.testing.assert_frame_equal(oversample(df.assign(label=0), 0.3), df.assign(label=0))
