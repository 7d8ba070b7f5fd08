"""No feature of <student, t> may depend on any log row at or after t."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from atrisk.features.in_class import session_end
from atrisk.features.pairs import build_pairs, feature_columns
from atrisk.ingest.logs import Logs, load_logs

from .logs_factory import random_logs, with_recorded_classes

ROTATE = {"class": "follow_up", "follow_up": "reschedule", "reschedule": "satisfaction",
          "satisfaction": "class", "homework": "class"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = random_logs(tmp_path_factory.mktemp("leak") / "logs", n_students=25,
                         n_teachers=3, days=45, seed=3)
    logs = load_logs(folder)
    assert logs.errors == []
    logs, sessions, in_class = with_recorded_classes(logs)
    pairs = build_pairs(logs, in_class=in_class, sessions=sessions)
    return logs, sessions, in_class, pairs


def _future(logs: Logs, sessions: pd.DataFrame, t: pd.Timestamp):
    return (logs.orders["ordered_at"] >= t, logs.events["time"] >= t,
            logs.outcomes["status_time"] >= t, sessions["start_time"] >= t)


def deleted(logs, sessions, in_class, t):
    o, e, oc, s = _future(logs, sessions, t)
    return (replace(logs, orders=logs.orders[~o], events=logs.events[~e],
                    outcomes=logs.outcomes[~oc]), sessions[~s], in_class)


def altered(logs, sessions, in_class, t):
    o, e, oc, s = _future(logs, sessions, t)
    orders = logs.orders.copy()
    orders.loc[o, "n_courses"] += 7
    orders.loc[o, "discount_ratio"] = 1 - orders.loc[o, "discount_ratio"]
    orders.loc[o, "n_sales_conversations"] += 3
    events = logs.events.copy()
    events.loc[e, "kind"] = events.loc[e, "kind"].map(ROTATE)
    events.loc[e, "words"] = events.loc[e, "words"].fillna(5) * 3 + 1
    events.loc[e, "value"] = 6 - events.loc[e, "value"].fillna(0)
    events.loc[e, "teacher_id"] = "T_future"
    outcomes = logs.outcomes.copy()
    outcomes.loc[oc, "status"] = "dropout"  # a teacher's future dropouts
    ic = in_class.copy()
    ends = session_end(sessions).to_numpy()
    ic.loc[ends >= t] += 100.0
    return replace(logs, orders=orders, events=events, outcomes=outcomes), sessions, ic


@pytest.mark.parametrize("change", [deleted, altered])
def test_features_ignore_rows_at_or_after_t(world, change):
    logs, sessions, in_class, pairs = world
    days = np.sort(pairs["t"].unique())
    checked_rate = 0
    for t in days[[3, len(days) // 4, len(days) // 2, 3 * len(days) // 4, -3]]:
        t = pd.Timestamp(t)
        want = pairs[pairs["t"] == t].reset_index(drop=True)
        assert len(want) >= 2
        keys = want[["student_id", "t"]]
        l2, s2, ic2 = change(logs, sessions, in_class, t)
        got = build_pairs(l2, in_class=ic2, sessions=s2, keys=keys)
        cols = feature_columns(want)
        assert any(c.startswith("in_") for c in cols)
        pd.testing.assert_frame_equal(got[cols], want[cols], check_exact=False, rtol=1e-12)
        checked_rate += int(want["time_teacher_dropout_rate"].notna().sum())
    assert checked_rate > 0  # teacher history was really compared


def test_teacher_rate_changes_over_time(world):
    # the data has teachers whose dropout rate moves, so a leak would show up above
    _, _, _, pairs = world
    assert pairs.groupby("student_id")["time_teacher_dropout_rate"].nunique().max() >= 2


def test_changing_a_past_row_does_change_features(world):
    logs, sessions, in_class, pairs = world
    t = pd.Timestamp(np.sort(pairs["t"].unique())[len(pairs["t"].unique()) // 2])
    want = pairs[pairs["t"] == t].reset_index(drop=True)
    events = logs.events.copy()
    past = (events["time"] < t) & (events["kind"] == "class")
    events.loc[past, "kind"] = "follow_up"
    got = build_pairs(replace(logs, events=events), in_class=in_class, sessions=sessions,
                      keys=want[["student_id", "t"]])
    assert not np.allclose(got["out_follow_ups"], want["out_follow_ups"])


def test_teacher_future_dropouts_and_classes_do_not_change_today(tmp_path):
    """Teacher history on the hand-made logs: values by hand, and no look-ahead.

    T1 taught s1 (Jan 2, 4, 6, 9), s2 (Jan 3, 5) and s3 (Jan 2, 6) before Jan 13; s2
    dropped out Jan 12 12:00.  The future world adds, after Jan 13, a new T1 student s4
    (class Jan 14, dropout Jan 16) and turns s3's completion (Jan 14) into a dropout.
    """
    from .logs_factory import EVENTS, OUTCOMES, STUDENTS, write_logs

    def teacher_cols(folder, dates):
        p = build_pairs(load_logs(folder)).set_index(["student_id", "t"])
        rows = p.loc[[("s1", pd.Timestamp(d, tz="UTC")) for d in dates]]
        return rows[["time_teacher_students", "time_teacher_classes",
                     "time_teacher_dropout_rate"]].to_numpy()

    dates = ["2024-01-13", "2024-01-14", "2024-01-15"]
    base = teacher_cols(write_logs(tmp_path / "base"), dates)
    future = write_logs(
        tmp_path / "future",
        students=STUDENTS + "s4,2024-01-12T00:00:00,6\n",
        events=EVENTS + "e18,s4,2024-01-14T10:00:00,class,T1,,,\n",
        outcomes=OUTCOMES.replace("s3,completion", "s3,dropout")
        + "s4,dropout,2024-01-16T12:00:00\n")
    changed = teacher_cols(future, dates)
    # by hand: 3 students, 8 classes, 1 known outcome (s2, dropout) on Jan 13 and 14
    np.testing.assert_array_equal(base[0], [3, 8, 1.0])
    np.testing.assert_array_equal(changed[:2], base[:2])
    # Jan 15: s3's outcome (Jan 14 00:00) and s4's Jan 14 class are now in the past
    np.testing.assert_array_equal(base[2], [3, 8, 0.5])
    np.testing.assert_array_equal(changed[2], [4, 9, 1.0])
