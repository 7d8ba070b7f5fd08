"""The seed's labels: P = dropout pairs, P̃ recomputed at t̃ without leakage, balancing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from atrisk.errors import AtriskError
from atrisk.features.pairs import build_pairs, feature_columns, pair_keys
from atrisk.features.time_variant import class_table
from atrisk.ingest.logs import load_logs
from atrisk.training.labels import WEIGHTINGS, add_labels, oversample
from atrisk.training.seed_labels import (
    balance,
    dropout_pair_mask,
    evaluation_rows,
    lookup_builder,
    pseudo_keys,
    records_from_pairs,
    seed_anchors,
    seed_labels,
    step_ahead_labels,
)
from tests.features.logs_factory import random_logs, with_recorded_classes, write_logs

UTC = "UTC"


def day(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=UTC)


# ----------------------------------------------------------------------------- by hand
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """s2: classes Jan 3 and Jan 5 (11:00), dropout Jan 12 12:00, pairs Jan 4 … Jan 12."""
    logs = load_logs(write_logs(tmp_path_factory.mktemp("tiny") / "logs"))
    return logs, build_pairs(logs)


def test_the_dropout_pair_is_the_last_pair_before_the_dropout(tiny):
    _, pairs = tiny
    mask = dropout_pair_mask(pairs)
    got = pairs.loc[mask, ["student_id", "t"]].to_numpy().tolist()
    assert got == [["s2", day("2024-01-12")]]
    assert pairs.loc[pairs["student_id"] == "s2", "t"].max() == day("2024-01-12")


@pytest.mark.parametrize(("lookback", "weighting", "days", "weights"), [
    # max(Jan 5 11:00, Jan 12 − 7 d) = Jan 5 11:00 < t̃ < Jan 12: Jan 6 … Jan 11
    (7, "convex", ["2024-01-06", "2024-01-07", "2024-01-08", "2024-01-09", "2024-01-10",
                   "2024-01-11"], [(1 - k / 7) ** 2 for k in (6, 5, 4, 3, 2, 1)]),
    # max(Jan 5 11:00, Jan 9) = Jan 9 < t̃ < Jan 12: Jan 10, Jan 11
    (3, "linear", ["2024-01-10", "2024-01-11"], [1 - 2 / 3, 1 - 1 / 3]),
    (3, "concave", ["2024-01-10", "2024-01-11"], [1 - (2 / 3) ** 2, 1 - (1 / 3) ** 2]),
    (1, "constant", [], []),  # no whole day strictly inside (Jan 11, Jan 12)
    (0, "convex", [], []),
])
def test_pseudo_pairs_by_hand(tiny, lookback, weighting, days, weights):
    logs, pairs = tiny
    anchors = seed_anchors(pairs, class_table(logs))
    assert anchors["t_n"].tolist() == [day("2024-01-12")]
    assert anchors["t_prev"].tolist() == [day("2024-01-05 11:00")]
    got = pseudo_keys(anchors, lookback, weighting)
    assert got["t"].tolist() == [day(d) for d in days]
    np.testing.assert_allclose(got["weight"], weights)
    assert (got["student_id"] == "s2").all()


def test_previous_pair_as_t_n_minus_1_leaves_no_pseudo_day_on_a_daily_grid(tiny):
    _, pairs = tiny
    anchors = seed_anchors(pairs, records=None)
    assert anchors["t_prev"].tolist() == [day("2024-01-11")]
    assert pseudo_keys(anchors, 7).empty


def test_seed_labels_by_hand(tiny):
    logs, pairs = tiny
    rows = seed_labels(pairs, lambda k: build_pairs(logs, keys=k), lookback=3,
                       weighting="linear", records=class_table(logs))
    base = rows[~rows["is_pseudo"]]
    assert len(base) == len(pairs) and len(rows) == len(pairs) + 2
    assert base["label"].sum() == 1  # one dropout, one dropout pair
    pseudo = rows[rows["is_pseudo"]]
    assert pseudo["t"].tolist() == [day("2024-01-10"), day("2024-01-11")]
    assert pseudo["label"].tolist() == [1, 1]
    np.testing.assert_allclose(pseudo["weight"], [1 / 3, 2 / 3])
    np.testing.assert_allclose(pseudo["days_before"], [2, 1])
    assert (pseudo["dropout_time"] == day("2024-01-12 12:00")).all()
    # on a daily grid the pseudo days are also N pairs, with the same features
    cols = feature_columns(pairs)
    twin = base.set_index(["student_id", "t"]).loc[list(zip(pseudo["student_id"],
                                                            pseudo["t"], strict=True))]
    np.testing.assert_array_equal(twin[cols].to_numpy(), pseudo[cols].to_numpy())
    assert (twin["label"] == 0).all()


def test_step_ahead_labels(tiny):
    _, pairs = tiny
    s2 = pairs[pairs["student_id"] == "s2"]
    exact = step_ahead_labels(s2, [1, 3], rule="exactly")
    on_day = dict(zip(exact["t"].dt.day, zip(exact["dropout_on_day_1"],
                                               exact["dropout_on_day_3"], strict=True),
                      strict=True))
    assert on_day[12] == (1, 0) and on_day[10] == (0, 1) and on_day[11] == (0, 0)
    within = step_ahead_labels(s2, [3])
    pd.testing.assert_frame_equal(within, add_labels(s2, [3]))
    assert within["dropout_within_3"].sum() == 3
    with pytest.raises(AtriskError, match="unknown rule"):
        step_ahead_labels(s2, [1], rule="soon")


# ----------------------------------------------------------------------------- random logs
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Random logs with sessions and in-class rows (as in tests/features/test_leakage.py)."""
    logs = load_logs(random_logs(tmp_path_factory.mktemp("seed") / "logs", n_students=30,
                                 n_teachers=3, days=45, seed=5))
    logs, sessions, in_class = with_recorded_classes(logs)
    pairs = build_pairs(logs, in_class=in_class, sessions=sessions)

    def build(keys, logs=logs, sessions=sessions, in_class=in_class):
        return build_pairs(logs, in_class=in_class, sessions=sessions, keys=keys)

    records = class_table(logs, sessions)
    rows = seed_labels(pairs, build, lookback=7, weighting="convex", records=records)
    return logs, sessions, in_class, pairs, records, rows


def test_original_pairs_stay_as_they_are(world):
    logs, sessions, _, pairs, _, rows = world
    base = evaluation_rows(rows)
    assert len(base) == len(pairs)
    pd.testing.assert_frame_equal(base[list(pairs.columns)], pairs)
    # the evaluation rows are exactly the observation grid: nothing added or dropped
    keys = pair_keys(logs, sessions)
    np.testing.assert_array_equal(base["student_id"].to_numpy(), keys["student_id"].to_numpy())
    np.testing.assert_array_equal(base["t"].to_numpy(), keys["t"].to_numpy())


def test_one_dropout_pair_per_dropout_and_nothing_else_positive(world):
    logs, _, _, pairs, _, rows = world
    base = evaluation_rows(rows)
    oc = logs.outcomes.set_index("student_id")
    dropouts = set(oc.index[oc["status"] == "dropout"]) & set(pairs["student_id"])
    positives = base[base["label"] == 1]
    assert set(positives["student_id"]) == dropouts
    assert positives["student_id"].is_unique
    delta = (positives["dropout_time"] - positives["t"]) / pd.Timedelta(days=1)
    assert ((delta > 0) & (delta <= 1)).all()
    last = pairs.groupby("student_id")["t"].max()
    assert (positives.set_index("student_id")["t"] == last.loc[positives["student_id"]]).all()


def test_pseudo_pairs_follow_the_window_and_weights(world):
    _, _, _, _, records, rows = world
    pseudo = rows[rows["is_pseudo"]]
    assert len(pseudo) >= 5  # the check below compares something
    p_rows = rows[rows["is_dropout_pair"]].set_index("student_id")
    for sid, grp in pseudo.groupby("student_id"):
        t_n = p_rows.loc[sid, "t"]
        rec = records[(records["student_id"] == sid) & (records["time"] < t_n)]["time"]
        lower = max(rec.max(), t_n - pd.Timedelta(days=7))
        assert (grp["t"] > lower).all() and (grp["t"] < t_n).all()
        # every whole day in the window is there
        expected = [t_n - pd.Timedelta(days=k) for k in range(1, 7)
                    if t_n - pd.Timedelta(days=k) > lower]
        assert sorted(grp["t"]) == sorted(expected)
        x = ((t_n - grp["t"]) / pd.Timedelta(days=1)).to_numpy() / 7
        np.testing.assert_allclose(grp["weight"], WEIGHTINGS["convex"](x))
    assert (pseudo["label"] == 1).all()


def _truncate(logs, sessions, t):
    """The logs as they were known just before ``t``: every row at or after ``t`` removed."""
    return (replace(logs, orders=logs.orders[logs.orders["ordered_at"] < t],
                    events=logs.events[logs.events["time"] < t],
                    outcomes=logs.outcomes[logs.outcomes["status_time"] < t]),
            sessions[sessions["start_time"] < t])


def _scramble_future(logs, sessions, in_class, t):
    """Rows at or after ``t`` changed: other kinds, teachers, outcomes, in-class values."""
    events = logs.events.copy()
    future = events["time"] >= t
    events.loc[future, "kind"] = events.loc[future, "kind"].map(
        {"class": "follow_up", "follow_up": "class", "reschedule": "class",
         "satisfaction": "reschedule", "homework": "class"})
    events.loc[future, "teacher_id"] = "T_future"
    outcomes = logs.outcomes.copy()
    outcomes.loc[outcomes["status_time"] >= t, "status"] = "dropout"
    ic = in_class.copy()
    start = pd.to_datetime(sessions.set_index("session_id")["start_time"], utc=True)
    ic.loc[(start.reindex(ic.index) >= t).to_numpy()] += 100.0
    return replace(logs, events=events, outcomes=outcomes), sessions, ic


def test_pseudo_features_use_only_data_before_t_tilde(world):
    logs, sessions, in_class, pairs, _, rows = world
    pseudo = rows[rows["is_pseudo"]].reset_index(drop=True)
    cols = feature_columns(pairs)
    assert any(c.startswith("in_") for c in cols)
    checked = 0
    days = sorted(pseudo["t"].unique())
    scramble_days = {days[len(days) // 2]}  # each build_pairs call costs ~0.3-1 s
    for t, grp in pseudo.groupby("t"):
        keys = grp[["student_id", "t"]]
        l2, s2 = _truncate(logs, sessions, t)
        got = build_pairs(l2, in_class=in_class, sessions=s2, keys=keys)
        np.testing.assert_allclose(got[cols].to_numpy(dtype=float),
                                   grp[cols].to_numpy(dtype=float), rtol=1e-12, equal_nan=True)
        checked += len(grp)
        if t in scramble_days:
            l3, s3, ic3 = _scramble_future(logs, sessions, in_class, t)
            got = build_pairs(l3, in_class=ic3, sessions=s3, keys=keys)
            np.testing.assert_allclose(got[cols].to_numpy(dtype=float),
                                       grp[cols].to_numpy(dtype=float), rtol=1e-12,
                                       equal_nan=True)
    assert checked == len(pseudo)


def test_a_leaky_builder_would_be_caught(world):
    # the comparison above can fail: features built a day later differ
    logs, sessions, in_class, _, _, rows = world
    pseudo = rows[rows["is_pseudo"]].reset_index(drop=True)
    later = pseudo[["student_id", "t"]].assign(t=pseudo["t"] + pd.Timedelta(days=1))
    leaky = build_pairs(logs, in_class=in_class, sessions=sessions, keys=later)
    assert not np.allclose(leaky["time_days_since_last_class"],
                           pseudo["time_days_since_last_class"])


def test_pseudo_pairs_do_not_depend_on_what_happens_after_the_dropout_pair(world):
    logs, sessions, in_class, pairs, records, rows = world
    pseudo = rows[rows["is_pseudo"]]
    cut = pairs.loc[dropout_pair_mask(pairs), ["student_id", "t"]].set_index("student_id")["t"]
    # drop every record of each dropout at or after its dropout pair's time
    later = records["time"] >= records["student_id"].map(cut)
    again = seed_labels(pairs, lookup_builder(pairs), lookback=7, weighting="convex",
                        records=records[~later.fillna(False)])
    pd.testing.assert_frame_equal(again[again["is_pseudo"]].reset_index(drop=True),
                                  pseudo.reset_index(drop=True))


def test_lookup_builder_equals_recomputing_on_a_daily_grid(world):
    _, _, _, pairs, records, rows = world
    looked_up = seed_labels(pairs, lookup_builder(pairs), lookback=7, weighting="convex",
                            records=records)
    pd.testing.assert_frame_equal(looked_up, rows)
    with pytest.raises(AtriskError, match="not in the pairs table"):
        lookup_builder(pairs.iloc[::2])(pairs[["student_id", "t"]].iloc[1:2])


def test_last_class_recovered_from_the_pairs_gives_the_same_rows(world):
    # RiskModel.fit has only pairs: t_{n-1} from time_days_since_last_class
    _, _, _, pairs, _, rows = world
    from_pairs = seed_labels(pairs, lookup_builder(pairs), lookback=7, weighting="convex",
                             records=records_from_pairs(pairs))
    pd.testing.assert_frame_equal(from_pairs, rows)


def test_builder_must_return_the_keys_in_order(world):
    _, _, _, pairs, records, _ = world

    def shuffled(keys):
        return lookup_builder(pairs)(keys).iloc[::-1].reset_index(drop=True)

    with pytest.raises(AtriskError, match="in key order"):
        seed_labels(pairs, shuffled, lookback=7, records=records)


# ----------------------------------------------------------------------------- balancing
def _toy_rows(n_neg=1000):
    return pd.DataFrame({
        "x": np.arange(n_neg + 2, dtype=float),
        "label": np.r_[np.zeros(n_neg, dtype=np.int8), [1, 1]].astype("int8"),
        "weight": np.r_[np.ones(n_neg), [1.0, 0.25]],  # a P row and a P̃ row (G = 0.25)
        "is_pseudo": np.r_[np.zeros(n_neg, bool), [False, True]],
    })


def test_oversampling_draws_copies_in_proportion_to_weight():
    rows = _toy_rows()
    out = balance(rows, "oversample", target_share=0.5, seed=0)
    assert out["label"].mean() == pytest.approx(0.5, abs=1 / len(out))
    assert (out["weight"] == 1).all()
    copies = out[out["is_copy"]]
    assert (copies["label"] == 1).all() and len(copies) == 998
    n_p = int((copies["x"] == 1000).sum())
    n_pseudo = int((copies["x"] == 1001).sum())
    # probability ∝ weight: 1 : 0.25, i.e. 4 : 1 (measured 801 : 197)
    assert 3.2 < n_p / n_pseudo < 5.0
    pd.testing.assert_frame_equal(out.iloc[:len(rows)].drop(columns="is_copy"),
                                  rows.assign(weight=1.0))
    again = balance(rows, "oversample", target_share=0.5, seed=0)
    pd.testing.assert_frame_equal(again, out)
    other = balance(rows, "oversample", target_share=0.5, seed=1)
    assert not other["x"].equals(out["x"])


def test_reweighting_is_the_importance_weighting_of_labels_py():
    rows = _toy_rows()
    out = balance(rows, "reweight", target_share=0.3)
    assert len(out) == len(rows) and not out["is_copy"].any()
    np.testing.assert_allclose(out["weight"], oversample(rows, 0.3)["weight"])
    pos = out["label"] == 1
    assert out.loc[pos, "weight"].sum() / out["weight"].sum() == pytest.approx(0.3)


def test_balance_leaves_balanced_or_one_class_data_alone_and_checks_inputs():
    rows = _toy_rows(n_neg=2)
    out = balance(rows, "oversample", target_share=0.3)
    assert len(out) == len(rows)  # already 50 % positive
    neg_only = rows[rows["label"] == 0]
    assert len(balance(neg_only, "oversample", 0.3)) == len(neg_only)
    with pytest.raises(AtriskError, match="unknown balance method"):
        balance(rows, "smote")
    with pytest.raises(AtriskError, match="target_share"):
        balance(rows, "oversample", 1.0)
    with pytest.raises(AtriskError, match="label"):
        balance(rows.drop(columns="label"))


def test_seed_rows_train_end_to_end(world):
    # P ∪ N ∪ P̃, over-sampled, fits a classifier whose dropout pairs score above the rest
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, _, _, pairs, _, rows = world
    cols = [c for c in feature_columns(pairs) if not c.startswith("in_")]
    train = balance(rows, "oversample", target_share=0.3, seed=0)
    clf = make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(),
                        LogisticRegression(max_iter=2000))
    clf.fit(train[cols], train["label"])
    base = evaluation_rows(rows)
    p = clf.predict_proba(base[cols])[:, 1]
    is_p = base["label"].to_numpy() == 1
    assert p[is_p].mean() > p[~is_p].mean()
