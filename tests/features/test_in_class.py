from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atrisk.features.in_class import build_in_class, in_class_at


@pytest.fixture
def sessions() -> pd.DataFrame:
    return pd.DataFrame({
        "session_id": ["a1", "a2", "a3", "a4", "b1", "bad"],
        "student_id": ["s1", "s1", "s1", "s1", "s2", "s2"],
        "teacher_id": ["T1"] * 6,
        "start_time": ["2024-01-01T10:00:00Z", "2024-01-02T10:00:00Z", "2024-01-03T10:00:00Z",
                       "2024-01-04T23:30:00Z", "2024-01-02T10:00:00Z", "2024-01-03T10:00:00Z"],
        "duration_s": [3600, 3600, np.nan, 3600, 3600, np.nan],
        "status": ["ok", "ok", "ok", "ok", "ok", "failed"],
    })


def test_build_in_class_one_row_per_session(sessions):
    prosody = pd.DataFrame(
        {"loudness_sma3_amean": [1.0, 2.0, 3.0, 4.0], "F0semitoneFrom27.5Hz_sma3nz_amean":
         [10.0, 20.0, 30.0, 40.0], "backend": ["opensmile"] * 4},
        index=pd.MultiIndex.from_tuples(
            [("a1", "teacher"), ("a1", "student"), ("a2", "teacher"), ("a2", "student")],
            names=["session_id", "track"]))
    text = pd.DataFrame({"teacher_n_questions": [3, 5], "inter_qa_rounds": [1, 2]},
                        index=pd.Index(["a1", "b1"], name="session_id"))
    table = build_in_class(sessions, prosody, text)
    assert list(table.index) == ["a1", "a2", "a3", "a4", "b1", "bad"]
    assert table.index.name == "session_id"
    assert set(table.columns) == {
        "teacher_loudness_sma3_amean", "student_loudness_sma3_amean",
        "teacher_F0semitoneFrom27.5Hz_sma3nz_amean", "student_F0semitoneFrom27.5Hz_sma3nz_amean",
        "teacher_n_questions", "inter_qa_rounds"}
    assert table.at["a1", "student_loudness_sma3_amean"] == 2.0
    assert table.at["a2", "teacher_F0semitoneFrom27.5Hz_sma3nz_amean"] == 30.0
    assert table.at["b1", "inter_qa_rounds"] == 2
    assert table.loc["bad"].isna().all()  # failed session still has a row
    assert np.isnan(table.at["a2", "teacher_n_questions"])


def test_build_in_class_utterance_prosody_means(sessions):
    """<speaker>_utt_<name> = mean over that speaker's utterances of the session, NaN skipped."""
    f0, loud = "F0semitoneFrom27.5Hz_sma3nz_amean", "loudness_sma3_amean"
    up = pd.DataFrame(
        {f0: [30.0, 34.0, np.nan, 20.0, 22.0], loud: [0.2, 0.4, np.nan, 1.0, np.nan],
         "prosody_backend": ["opensmile"] * 5},
        index=pd.MultiIndex.from_tuples(
            [("a1", "student", 1.0, 2.0), ("a1", "student", 3.0, 4.0),
             ("a1", "student", 5.0, 5.05), ("a1", "teacher", 0.0, 1.0),
             ("b1", "teacher", 0.0, 1.0)],
            names=["session_id", "speaker", "start_s", "end_s"]))
    table = build_in_class(sessions, None, None, utterance_prosody=up)
    assert list(table.columns) == [f"teacher_utt_{f0}", f"teacher_utt_{loud}",
                                   f"student_utt_{f0}", f"student_utt_{loud}"]
    assert table.at["a1", f"student_utt_{f0}"] == 32.0  # (30 + 34) / 2, the NaN row skipped
    assert table.at["a1", f"student_utt_{loud}"] == pytest.approx(0.3)
    assert table.at["a1", f"teacher_utt_{f0}"] == 20.0
    assert table.at["b1", f"teacher_utt_{f0}"] == 22.0
    assert np.isnan(table.at["b1", f"teacher_utt_{loud}"])  # its only value is NaN
    assert np.isnan(table.at["b1", f"student_utt_{f0}"])  # no student utterance
    assert table.loc[["a2", "bad"]].isna().all().all()
    # the same from the Parquet form (key columns instead of an index); no rows: NaN columns
    flat = build_in_class(sessions, None, None, utterance_prosody=up.reset_index())
    pd.testing.assert_frame_equal(flat, table)
    empty = build_in_class(sessions, None, None, utterance_prosody=up.iloc[:0])
    assert list(empty.columns) == list(table.columns) and empty.isna().all().all()


def test_build_in_class_without_tables(sessions):
    table = build_in_class(sessions, None, None)
    assert len(table) == 6 and table.shape[1] == 0


def test_in_class_at_mean_of_latest_sessions_before_t(sessions):
    table = pd.DataFrame({"student_x": [1.0, 2.0, 3.0, 4.0, 7.0, np.nan]},
                         index=pd.Index(sessions["session_id"], name="session_id"))
    keys = pd.DataFrame({
        "student_id": ["s1", "s1", "s1", "s1", "s2", "s2", "s3"],
        "t": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-05", "2024-01-06",
                             "2024-01-03", "2024-01-04", "2024-01-04"], utc=True),
    })
    out = in_class_at(table, sessions, keys, n_latest=3)
    assert list(out.columns) == ["in_student_x"]
    got = out["in_student_x"].tolist()
    assert np.isnan(got[0])  # no session yet
    assert got[1] == pytest.approx(1.5)  # a1, a2 ended before Jan 3
    # a4 starts Jan 4 23:30 and ends Jan 5 00:30: not before Jan 5 -> a1, a2, a3
    assert got[2] == pytest.approx(2.0)
    assert got[3] == pytest.approx(3.0)  # latest three: a2, a3, a4
    assert got[4] == pytest.approx(7.0)
    assert got[5] == pytest.approx(7.0)  # the failed session's NaN is skipped
    assert np.isnan(got[6])  # student without sessions
    one = in_class_at(table, sessions, keys, n_latest=1)["in_student_x"].tolist()
    assert one[2] == 3.0 and one[3] == 4.0
