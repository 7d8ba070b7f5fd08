"""KDD Cup 2015 loader: row-level validation, activity features, context statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.errors import LogValidationError
from atrisk.mooc.kddcup import (
    COURSE_COLUMNS,
    activity_features,
    augment,
    context_groups,
    context_statistics,
    load_kddcup,
    weekly_visit_bits,
)

from .kdd_factory import make_kdd_folder

HEADER = ",".join(COURSE_COLUMNS)


def _course(folder: Path, cid: str, rows: list[str], header: str = HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"trainCourse{cid}.csv"
    path.write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))
    return path


def _truth(folder: Path, labels: dict[int, int]) -> None:
    pd.DataFrame({"enrollment_id": list(labels), "label": list(labels.values())}).to_csv(
        folder / "truth.csv", index=False)


def _reasons(data, needle: str) -> list[dict]:
    return [p for p in data.problems if needle in p["reason"]]


def test_loads_generated_folder(tmp_path):
    folder, labels = make_kdd_folder(tmp_path / "d", {"A": 12, "B": 8})
    data = load_kddcup(folder)
    assert len(data) == 20 and data.counts.shape == (20, 30, 7)
    assert sorted(set(data.course_id)) == ["A", "B"] and data.problems == []
    assert data.labels.tolist() == [labels[int(e)] for e in data.enrollment_id]
    assert data.user_id is None and data.n_missing_truth == 0


def test_missing_truth_excluded_and_counted(tmp_path):
    d = tmp_path / "d"
    _course(d, "1", ["1,2014-06-01,1,0,0,0,0,0,0", "2,2014-06-01,2,0,0,0,0,0,0",
                     "3,2014-06-02,3,0,0,0,0,0,0"])
    _truth(d, {1: 1, 3: 0})
    data = load_kddcup(d)
    assert data.enrollment_id.tolist() == [1, 3] and data.labels.tolist() == [1.0, 0.0]
    assert data.n_missing_truth == 1
    (p,) = _reasons(data, "no label")
    assert p["source"].endswith("truth.csv") and "1 enrollment(s)" in p["reason"]
    # without labels everything is kept
    assert len(load_kddcup(d, labels=False)) == 3


def test_duplicate_rows_negative_counts_unknown_columns(tmp_path):
    d = tmp_path / "d"
    _course(d, "7", [
        "1,2014-06-01,1,0,0,0,0,0,0,x",      # line 2
        "1,2014-06-02,4,0,0,0,0,0,0,x",      # line 3
        "1,2014-06-02,9,0,0,0,0,0,0,x",      # line 4: duplicate (1, day 1)
        "2,2014-06-01,-3,0,0,0,0,0,0,x",     # line 5: negative count
        "2,2014-06-03,2,0,1,0,0,0,0,x",      # line 6
        "abc,2014-06-03,2,0,1,0,0,0,0,x",    # line 7: bad id
        "2,2014-08-30,2,0,1,0,0,0,0,x",      # line 8: outside the 30-day window
    ], header=HEADER + ",mystery")
    _truth(d, {1: 0, 2: 1})
    data = load_kddcup(d)
    src = str(d / "trainCourse7.csv")
    (dup,) = _reasons(data, "duplicate (enrollment_id, day)")
    assert (dup["source"], dup["row"], dup["key"]) == (src, 4, "1")
    (neg,) = _reasons(data, "negative")
    assert (neg["row"], neg["key"]) == (5, "2")
    (unk,) = _reasons(data, "unknown column")
    assert "mystery" in unk["reason"] and unk["row"] == 1
    assert _reasons(data, "not an integer")[0]["row"] == 7
    assert _reasons(data, "outside")[0]["row"] == 8
    # nothing else lost: the first duplicate is kept, the other rows are read
    i1, i2 = (data.enrollment_id.tolist().index(k) for k in (1, 2))
    assert data.counts[i1, :3, 0].tolist() == [1, 4, 0]
    assert data.counts[i2, :3, 0].tolist() == [0, 0, 2] and data.counts[i2, 2, 2] == 1
    assert len(data.problems) == 5


def test_empty_course_file_skipped_rest_kept(tmp_path):
    folder, _ = make_kdd_folder(tmp_path / "d", {"A": 5})
    (folder / "trainCourseEMPTY.csv").write_text("")
    _course(folder, "HEAD", [])  # header only
    data = load_kddcup(folder)
    assert len(data) == 5
    reasons = {Path(p["source"]).name: p["reason"] for p in data.problems}
    assert "empty course file" in reasons["trainCourseEMPTY.csv"]
    assert "no rows" in reasons["trainCourseHEAD.csv"]


def test_missing_column_and_no_usable_file(tmp_path):
    d = tmp_path / "d"
    _course(d, "1", ["1,2014-06-01,1"], header="enrollment_id,time,event_access")
    _truth(d, {1: 0})
    with pytest.raises(LogValidationError, match="no usable course file"):
        load_kddcup(d)
    with pytest.raises(LogValidationError, match="no trainCourse"):
        load_kddcup(tmp_path)
    (tmp_path / "e").mkdir()
    _course(tmp_path / "e", "1", ["1,2014-06-01,1,0,0,0,0,0,0"])
    with pytest.raises(LogValidationError, match="truth.csv: missing"):
        load_kddcup(tmp_path / "e")


def test_day_indexes_and_user_ids(tmp_path):
    d = tmp_path / "d"
    _course(d, "1", ["1,0,1,0,0,0,0,0,0,u1", "1,29,1,0,0,0,0,0,0,u1",
                     "2,5,1,0,0,0,0,0,0,u2"], header=HEADER + ",user_id")
    _truth(d, {1: 0, 2: 1})
    data = load_kddcup(d)
    assert data.user_id.tolist() == ["u1", "u2"] and data.problems == []
    assert data.counts[0, [0, 29], 0].tolist() == [1, 1] and data.counts[1, 5, 0] == 1


def test_activity_features_hand_computed(tmp_path):
    d = tmp_path / "d"
    # enrollment 1: video 2 on days 0,1,2 and 3 on day 20; access 1 on day 29
    rows = [f"1,2014-06-{1 + k:02d},0,0,0,0,0,2,0" for k in range(3)]
    rows += ["1,2014-06-21,0,0,0,0,0,3,0", "1,2014-06-30,1,0,0,0,0,0,0",
             "2,2014-06-05,0,0,0,0,0,0,0"]
    _course(d, "1", rows)
    _truth(d, {1: 0, 2: 1})
    f = activity_features(load_kddcup(d)).loc[1]
    assert f["video__total"] == 9 and f["video__w1"] == 6 and f["video__w3"] == 3
    assert f["video__active_days"] == 4 and f["video__first_day"] == 0
    assert f["video__last_day"] == 20 and f["video__max_streak"] == 3
    assert f["video__end_streak"] == 0 and f["access__end_streak"] == 1
    assert f["video__late_ratio"] == pytest.approx(3 / 9) and f["access__late_ratio"] == 1.0
    assert f["all__total"] == 10 and f["all__w5"] == 1
    # least-squares slope of the daily video counts against the day index
    y = np.zeros(30)
    y[:3], y[20] = 2, 3
    assert f["video__trend"] == pytest.approx(np.polyfit(np.arange(30), y, 1)[0], rel=1e-5)
    f2 = activity_features(load_kddcup(d)).loc[2]
    assert f2["all__first_day"] == 30 and f2["all__last_day"] == -1


def test_context_statistics_numeric():
    feats = pd.DataFrame({"a": [1.0, 2.0, 3.0, 10.0, 4.0], "b": [0.0, 0.0, 4.0, 1.0, 1.0]})
    groups = np.array(["x", "x", "x", "x", "y"])
    st = context_statistics(feats, groups)
    assert st.loc["x", "a#mean"] == 4.0 and st.loc["x", "a#max"] == 10.0
    assert st.loc["x", "a#std"] == pytest.approx(np.sqrt(((np.array([1, 2, 3, 10]) - 4) ** 2)
                                                        .mean()))
    # linear-interpolated quantiles of [1, 2, 3, 10]: 1.75, 2.5, 4.75
    assert (st.loc["x", "a#q25"], st.loc["x", "a#q50"], st.loc["x", "a#q75"]) == (1.75, 2.5, 4.75)
    assert st.loc["y", "a#std"] == 0.0 and st.loc["y", "b#mean"] == 1.0
    with np.errstate(divide="ignore", invalid="ignore"):  # group y: std 0 with eps 0
        aug = augment(feats.to_numpy(np.float32), feats, groups, eps=0.0)
    # row 0, feature a: [x, x - mean, x / max, (x - mean) / std, (x - q50) / (q75 - q25)]
    sd = np.sqrt(12.5)
    np.testing.assert_allclose(aug[0, 0], [1, -3, 0.1, -3 / sd, -1.5 / 3.0], rtol=1e-5)


def test_context_groups_course_and_user(tmp_path):
    folder, _ = make_kdd_folder(tmp_path / "u", {"A": 10, "B": 10}, users=True)
    data = load_kddcup(folder)
    feats = activity_features(data)
    g5 = context_groups(data, feats, use_user=False)
    g7 = context_groups(data, feats)
    assert g5.shape == (20, feats.shape[1], 5) and g7.shape == (20, feats.shape[1], 7)
    np.testing.assert_array_equal(g7[:, :, :5], g5)
    # user context: x - mean over the same user's enrollments (signed-log scale)
    x = np.sign(feats.to_numpy()) * np.log1p(np.abs(feats.to_numpy()))
    users = np.asarray(data.user_id)
    j = 0
    same = users == users[0]
    assert g7[0, j, 5] == pytest.approx(x[0, j] - x[same, j].mean(), abs=1e-5)
    # course context: x - course mean
    course = data.course_id == data.course_id[0]
    assert g5[0, j, 1] == pytest.approx(x[0, j] - x[course, j].mean(), abs=1e-5)


def test_weekly_visit_bits():
    from atrisk.mooc.kddcup import MoocData

    counts = np.zeros((2, 30, 7), np.float32)
    counts[0, [0, 15, 29], 1] = 1
    data = MoocData(np.array([1, 2]), np.array(["A", "A"], object), counts, np.zeros(2))
    assert weekly_visit_bits(data).tolist() == [[1, 0, 1, 0, 1], [0, 0, 0, 0, 0]]
