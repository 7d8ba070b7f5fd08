"""Exact feature values on the hand-made logs of logs_factory.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.config import FeatureConfig
from atrisk.features.pairs import build_pairs, feature_columns, pair_keys
from atrisk.ingest.logs import load_logs

from .logs_factory import OUTCOMES, write_logs


def day(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


@pytest.fixture
def pairs(tiny_logs_dir: Path) -> pd.DataFrame:
    return build_pairs(load_logs(tiny_logs_dir)).set_index(["student_id", "t"])


def test_pair_keys_span_first_class_to_end_of_observation(tiny_logs_dir: Path):
    keys = pair_keys(load_logs(tiny_logs_dir))
    span = keys.groupby("student_id")["t"].agg(["min", "max", "count"])
    assert span.loc["s1"].tolist() == [day("2024-01-03"), day("2024-01-31"), 29]  # ongoing
    assert span.loc["s2"].tolist() == [day("2024-01-04"), day("2024-01-12"), 9]  # dropout 12:00
    assert span.loc["s3"].tolist() == [day("2024-01-03"), day("2024-01-14"), 12]  # completion
    assert (keys["t"] == keys["t"].dt.floor("D")).all()


def test_pair_keys_as_of_and_dropout_at_midnight(tmp_path: Path):
    outcomes = OUTCOMES.replace("2024-01-12T12:00:00", "2024-01-12T00:00:00")
    logs = load_logs(write_logs(tmp_path / "logs", outcomes=outcomes))
    keys = pair_keys(logs, as_of="2024-01-20T08:00:00")
    span = keys.groupby("student_id")["t"].agg(["max", "count"])
    assert span.loc["s1"].tolist() == [day("2024-01-20"), 18]
    assert span.loc["s2"].tolist() == [day("2024-01-11"), 8]  # t < status_time
    assert span.loc["s3"].tolist() == [day("2024-01-14"), 12]


def test_dropout_time_is_a_label_not_a_feature(pairs: pd.DataFrame):
    assert pairs.loc[("s2", day("2024-01-05")), "dropout_time"] == pd.Timestamp(
        "2024-01-12T12:00:00", tz="UTC")
    assert pd.isna(pairs.loc[("s1", day("2024-01-05")), "dropout_time"])
    cols = feature_columns(pairs.reset_index())
    assert "dropout_time" not in cols and "student_id" not in cols
    assert all(c.startswith(("out_", "time_")) for c in cols)


def test_window_counts(pairs: pd.DataFrame):
    s1 = pairs.loc["s1"]
    # s1 classes: Jan 2, 4, 6, 9, 15, 18 (10:00)
    assert s1.loc[day("2024-01-08"), "time_classes_7d"] == 3
    assert s1.loc[day("2024-01-11"), "time_classes_7d"] == 3  # Jan 4, 6, 9
    assert s1.loc[day("2024-01-18"), "time_classes_7d"] == 1  # Jan 15 (Jan 18 is not < t)
    assert s1.loc[day("2024-01-19"), "time_classes_7d"] == 2
    assert s1.loc[day("2024-01-19"), "time_classes_14d"] == 4  # Jan 6, 9, 15, 18
    assert s1.loc[day("2024-01-19"), "time_classes_total"] == 6
    assert s1.loc[day("2024-01-11"), "time_follow_ups_7d"] == 1  # Jan 10 (Jan 3 is out)
    assert s1.loc[day("2024-01-09"), "time_reschedules_7d"] == 1
    assert s1.loc[day("2024-01-08"), "time_reschedules_7d"] == 0
    assert s1.loc[day("2024-01-08"), "time_mean_class_gap_30d"] == pytest.approx(2.0)
    assert s1.loc[day("2024-01-19"), "time_mean_class_gap_30d"] == pytest.approx(16 / 5)
    assert np.isnan(s1.loc[day("2024-01-03"), "time_mean_class_gap_30d"])
    assert s1.loc[day("2024-01-08"), "time_days_since_last_class"] == pytest.approx(1 + 14 / 24)


def test_order_and_post_class_features(pairs: pd.DataFrame):
    s1 = pairs.loc["s1"]
    r = s1.loc[day("2024-01-08")]
    assert r["out_days_since_order"] == pytest.approx(6 + 14 / 24)  # o1 Jan 1 10:00
    assert r["out_order_n_courses"] == 10 and r["out_order_discount_ratio"] == 0.2
    assert r["out_order_n_sales_conversations"] == 3
    assert r["out_days_since_enrolment"] == 7 and r["out_grade"] == 5
    r = s1.loc[day("2024-01-21")]
    assert r["out_days_since_order"] == pytest.approx(0.5)  # o2 Jan 20 12:00
    assert r["out_order_n_courses"] == 5 and r["out_courses_ordered"] == 15
    r = s1.loc[day("2024-01-11")]
    assert r["out_follow_ups"] == 2 and r["out_follow_up_ratio"] == pytest.approx(0.5)
    assert r["out_last_follow_up_words"] == 80 and r["out_reschedules"] == 1
    assert s1.loc[day("2024-01-10"), "out_last_follow_up_words"] == 120
    assert s1.loc[day("2024-01-08"), "out_follow_up_ratio"] == pytest.approx(1 / 3)
    assert s1.loc[day("2024-01-16"), "out_satisfaction"] == 4
    assert s1.loc[day("2024-01-17"), "out_satisfaction"] == 2
    assert np.isnan(pairs.loc[("s2", day("2024-01-05")), "out_grade"])


def test_teacher_history(pairs: pd.DataFrame):
    s1 = pairs.loc["s1"]
    # T1 taught s1 (Jan 2 10:00) and s3 (Jan 2 15:00) before Jan 3
    assert s1.loc[day("2024-01-03"), "time_teacher_students"] == 2
    assert s1.loc[day("2024-01-03"), "time_teacher_classes"] == 2
    assert s1.loc[day("2024-01-08"), "time_teacher_students"] == 3
    assert s1.loc[day("2024-01-08"), "time_teacher_classes"] == 7
    # s2 dropped out Jan 12 12:00, s3 completed Jan 14 00:00 (only outcomes before t count)
    assert np.isnan(s1.loc[day("2024-01-12"), "time_teacher_dropout_rate"])
    assert s1.loc[day("2024-01-13"), "time_teacher_dropout_rate"] == 1.0
    assert s1.loc[day("2024-01-14"), "time_teacher_dropout_rate"] == 1.0
    assert s1.loc[day("2024-01-15"), "time_teacher_dropout_rate"] == 0.5
    # s3's latest class (Jan 10) was with T2, who had no other student
    r = pairs.loc[("s3", day("2024-01-11"))]
    assert r["time_teacher_students"] == 1 and r["time_teacher_classes"] == 1
    assert np.isnan(r["time_teacher_dropout_rate"])


def test_windows_follow_config(tiny_logs_dir: Path):
    pairs = build_pairs(load_logs(tiny_logs_dir), config=FeatureConfig(windows_days=[3]))
    assert "time_classes_3d" in pairs and "time_classes_7d" not in pairs


def test_keys_of_one_date(tiny_logs_dir: Path):
    logs = load_logs(tiny_logs_dir)
    keys = pd.DataFrame({"student_id": ["s1", "s3"], "t": "2024-01-08"})
    out = build_pairs(logs, keys=keys)
    full = build_pairs(logs).set_index(["student_id", "t"])
    assert list(out["t"]) == [day("2024-01-08")] * 2
    cols = feature_columns(out)
    pd.testing.assert_frame_equal(
        out.set_index(["student_id", "t"])[cols],
        full.loc[[("s1", day("2024-01-08")), ("s3", day("2024-01-08"))], cols])
