"""KDD Cup 2015 daily mapping: pairs, dropout time, no look-ahead, bad rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.errors import LogValidationError
from atrisk.mooc.daily_pairs import EPOCH, holdout_mask, load_kddcup_pairs
from atrisk.mooc.kddcup import COURSE_COLUMNS

DAYS = pd.date_range("2014-06-01", periods=10, freq="D")


def _write(folder: Path, activity: dict[int, list[int]], labels: dict[int, int],
           extra_lines: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COURSE_COLUMNS)]
    for eid, act in activity.items():
        for d, n in zip(DAYS, act, strict=True):
            lines.append(f"{eid},{d.date()},{n},0,{n},0,0,{2 * n},0")
    with gzip.open(folder / "trainCourse1.csv.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n" + extra_lines)
    pd.DataFrame({"enrollment_id": list(labels), "label": list(labels.values())}).to_csv(
        folder / "truth.csv", index=False)
    return folder


ACT = {
    1: [0, 3, 0, 2, 1, 0, 0, 0, 0, 0],   # dropout: last active day index 4
    2: [1, 0, 0, 0, 0, 0, 0, 0, 2, 0],   # stays
    3: [0, 0, 5, 0, 0, 0, 0, 0, 0, 0],   # dropout active one day: no pair
    4: [0] * 10,                          # never active: no pair
}
LABELS = {1: 1, 2: 0, 3: 1, 4: 0}


def test_mapping(tmp_path):
    pairs, info = load_kddcup_pairs(_write(tmp_path / "d", ACT, LABELS))
    assert info["n_enrollments"] == 4 and info["n_enrollments_with_pairs"] == 2
    p1 = pairs[pairs["student_id"] == "1"]
    # from the day after the first activity (index 2) to the last active day (index 4)
    assert list(p1["t"].dt.day) == [3, 4, 5]
    # t is EPOCH + course day (day 0 = June 1 here): the dropout is the day after index 4
    assert (p1["dropout_time"] == EPOCH + pd.Timedelta(days=5)).all()
    p2 = pairs[pairs["student_id"] == "2"]
    # one rule for every label: a non-dropout too is observed up to its last active day
    assert list(p2["t"].dt.day) == list(range(2, 10)) and p2["dropout_time"].isna().all()
    # features use days strictly before t: at t = June 5 (index 4), days 1..3 are seen
    row = p1[p1["t"].dt.day == 5].iloc[0]
    assert row["out_access_total"] == 5 and row["out_video_total"] == 10
    assert row["out_active_days_total"] == 2 and row["time_days_since_last_active"] == 1
    assert row["time_mean_active_gap_30d"] == 2.0
    idle = p2[p2["t"].dt.day == 9].iloc[0]  # window [June 2, June 9): no activity
    assert idle["time_active_days_7d"] == 0 and idle["time_days_since_last_active"] == 8
    assert idle["time_active_days_14d"] == 1 and idle["out_active_days_total"] == 1
    # Δ = 1 positive is the last active day (dropout the next midnight)
    d = (p1["dropout_time"] - p1["t"]) / pd.Timedelta(days=1)
    assert list(d) == [3.0, 2.0, 1.0]


def test_pairs_do_not_depend_on_the_label(tmp_path):
    """Flipping every label changes the dropout times only, never which pairs exist."""
    for rule in ("last_active", "window_end"):
        a, _ = load_kddcup_pairs(_write(tmp_path / f"a{rule}", ACT, LABELS), dropout_day=rule)
        flipped = {e: 1 - y for e, y in LABELS.items()}
        b, _ = load_kddcup_pairs(_write(tmp_path / f"b{rule}", ACT, flipped), dropout_day=rule)
        feats = [c for c in a.columns if c != "dropout_time"]
        pd.testing.assert_frame_equal(a[feats], b[feats])
        assert a["dropout_time"].notna().sum() + b["dropout_time"].notna().sum() == len(a)


def test_window_end_rule(tmp_path):
    pairs, _ = load_kddcup_pairs(_write(tmp_path / "d", ACT, LABELS), dropout_day="window_end")
    p1 = pairs[pairs["student_id"] == "1"]
    # observed to the last day of MoocData's 30-day window (index 29), like everyone;
    # MoocData keeps no window length per course (this file has only 10 days)
    assert list(p1["t"].dt.day) == list(range(3, 31))
    assert (p1["dropout_time"] == EPOCH + pd.Timedelta(days=30)).all()
    assert pairs["student_id"].nunique() == 3  # the one-day dropout has pairs now
    with pytest.raises(ValueError, match="dropout_day"):
        load_kddcup_pairs(_write(tmp_path / "e", ACT, LABELS), dropout_day="whenever")


def test_holdout_split_is_by_id_only(tmp_path):
    ids = np.arange(1, 5001)
    mask = holdout_mask(ids)
    assert 0.18 < mask.mean() < 0.22
    # the same id is on the same side in any subset and any order
    sub = ids[::7][::-1]
    np.testing.assert_array_equal(holdout_mask(sub), mask[sub - 1])
    assert not np.array_equal(holdout_mask(ids, salt="other"), mask)
    folder = _write(tmp_path / "d", {e: ACT[1] for e in range(1, 41)},
                    {e: 1 for e in range(1, 41)})
    train, ti = load_kddcup_pairs(folder, part="train")
    test, si = load_kddcup_pairs(folder, part="test")
    assert set(train["student_id"]).isdisjoint(test["student_id"])
    assert ti["n_enrollments"] + si["n_enrollments"] == 40
    assert set(test["student_id"]) == {str(e) for e in range(1, 41) if holdout_mask([e])[0]}


def test_future_activity_does_not_change_features(tmp_path):
    base, _ = load_kddcup_pairs(_write(tmp_path / "a", ACT, LABELS))
    act = dict(ACT)
    act[2] = [1, 0, 0, 0, 0, 0, 7, 7, 7, 7]
    changed, _ = load_kddcup_pairs(_write(tmp_path / "b", act, LABELS))
    cut = EPOCH + pd.Timedelta(days=6)  # activity starts on day index 6
    feats = [c for c in base.columns if c.startswith(("out_", "time_"))]
    a = base[(base["student_id"] == "2") & (base["t"] <= cut)][feats].to_numpy()
    b = changed[(changed["student_id"] == "2") & (changed["t"] <= cut)][feats].to_numpy()
    np.testing.assert_array_equal(a, b)


def test_bad_rows_are_reported_not_fatal(tmp_path):
    # rows are validated by atrisk.mooc.kddcup.load_kddcup; the pairs of the good rows
    # are unchanged and the problems are listed with file and line
    good, _ = load_kddcup_pairs(_write(tmp_path / "g", ACT, LABELS))
    folder = _write(tmp_path / "d", ACT, LABELS,
                    extra_lines="1,not-a-date,1,0,0,0,0,0,0\n2,2014-06-03,-4,0,0,0,0,0,0\n")
    pairs, info = load_kddcup_pairs(folder)
    reasons = info["errors"]
    assert info["n_errors"] == 2
    assert any("time is not a date" in r and "trainCourse1.csv.gz:42" in r for r in reasons)
    assert any("negative" in r and ":43" in r for r in reasons)
    pd.testing.assert_frame_equal(pairs, good)


def test_missing_truth(tmp_path):
    folder = _write(tmp_path / "d", ACT, LABELS)
    (folder / "truth.csv").unlink()
    with pytest.raises(LogValidationError, match="truth.csv"):
        load_kddcup_pairs(folder)


@pytest.mark.realdata
def test_real_kddcup_mapping(shared_data):
    pairs, info = load_kddcup_pairs(shared_data / "kddcup2015", max_enrollments=2000)
    assert info["n_enrollments"] == 2000 and 0.75 < info["dropout_rate"] < 0.9
    assert len(pairs) > 5000
    d = (pairs["dropout_time"] - pairs["t"]) / pd.Timedelta(days=1)
    assert (d.dropna() >= 1).all()  # every dropout pair is before the dropout day
