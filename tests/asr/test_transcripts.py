"""The transcripts backend and segments -> utterances."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from atrisk.asr.base import Segment, segments_to_utterances
from atrisk.asr.transcripts import find_transcripts, load_transcripts, utterances_for_session
from atrisk.errors import TranscriptError
from atrisk.records import Utterance, Word

CSV = """session_id,speaker,start_s,end_s,text,confidence
s1,teacher,5.0,7.5,what is two plus two,0.9
s1,Student,8.0,8.6,four,
s2,teacher,1.0,2.0,hello,0.5
s1,teacher,0.5,2.0,good morning,0.8
"""


def test_find_transcripts(tmp_path):
    assert find_transcripts(tmp_path) is None
    (tmp_path / "utterances.csv").write_text(CSV)
    assert find_transcripts(tmp_path) == tmp_path / "utterances.csv"
    (tmp_path / "utterances.parquet").write_bytes(b"")
    with pytest.raises(TranscriptError, match="several utterance files"):
        find_transcripts(tmp_path)
    (tmp_path / "utterances.csv").unlink()
    assert find_transcripts(tmp_path) == tmp_path / "utterances.parquet"


def test_utterances_for_session_from_loaded_file(tmp_path):
    (tmp_path / "utterances.csv").write_text(CSV)
    df, problems = load_transcripts(find_transcripts(tmp_path))
    assert problems == []
    before = df.copy()
    utts = utterances_for_session(df, "s1")
    pd.testing.assert_frame_equal(df, before)  # not changed in place
    assert [u.text for u in utts] == ["good morning", "what is two plus two", "four"]
    assert [u.speaker for u in utts] == ["teacher", "teacher", "student"]
    assert utts[0] == Utterance("s1", "teacher", 0.5, 2.0, "good morning", 0.8)
    assert math.isnan(utts[2].confidence)
    assert utterances_for_session(df, "s2")[0].start_s == 1.0
    assert utterances_for_session(df, "nope") == []


def test_utterances_without_confidence_and_with_nan_times():
    df = pd.DataFrame({
        "session_id": ["a", "a", "a"], "speaker": ["student", "teacher", "teacher"],
        "start_s": [float("nan"), 3.0, 1.0], "end_s": [float("nan"), 4.0, 2.0],
        "text": ["x", "y", "z"],
    })
    utts = utterances_for_session(df, "a")
    assert [u.text for u in utts] == ["z", "y", "x"]  # missing times last
    assert all(math.isnan(u.confidence) for u in utts)
    with pytest.raises(TranscriptError, match="text"):
        utterances_for_session(df.drop(columns="text"), "a")


def test_segments_to_utterances():
    w = (Word("hi", 3.0, 3.2),)
    segs = [Segment(3.0, 3.5, "hi", 0.7, w), Segment(1.0, 2.0, "hello there", 0.9)]
    utts = segments_to_utterances("s9", "student", segs)
    assert [u.start_s for u in utts] == [1.0, 3.0]
    assert utts[1] == Utterance("s9", "student", 3.0, 3.5, "hi", 0.7, w)
    assert segments_to_utterances("s9", "teacher", []) == []
    with pytest.raises(ValueError, match="speaker"):
        segments_to_utterances("s9", "parent", segs)
