import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.config import TextConfig
from atrisk.extractors.interaction import INTERACTION_COLUMNS
from atrisk.extractors.linguistic import LINGUISTIC_COLUMNS
from atrisk.extractors.text import (
    TEXT_FEATURE_COLUMNS,
    TextFeaturizer,
    _cached_featurizer,
    text_features,
)
from atrisk.ingest.utterances import load_utterances

DIALOGUE = pd.DataFrame(
    [
        ("s1", "teacher", 0.0, 2.0, "Um, what is two plus two?"),
        ("s1", "student", 3.0, 4.0, "uh four"),
        ("s1", "teacher", 5.0, 7.0, "Right. Please take notes on this."),
        ("s1", "student", 7.5, 8.5, "Can you say that again?"),
        ("s2", "teacher", 0.0, 1.0, "what is your name"),
    ],
    columns=["session_id", "speaker", "start_s", "end_s", "text"],
)


def test_one_row_per_session_with_prefixed_columns():
    before = DIALOGUE.copy()
    out = text_features(DIALOGUE, session_ids=["s2", "s1", "s3"])
    pd.testing.assert_frame_equal(DIALOGUE, before)
    assert list(out.index) == ["s2", "s1", "s3"]
    assert out.index.name == "session_id"
    assert list(out.columns) == TEXT_FEATURE_COLUMNS
    assert len(TEXT_FEATURE_COLUMNS) == 2 * len(LINGUISTIC_COLUMNS) + len(INTERACTION_COLUMNS)
    assert "teacher_pos_NOUN" in out.columns and "inter_qa_rounds" in out.columns

    s1 = out.loc["s1"]
    assert s1["teacher_n_filler"] == 1 and s1["student_n_filler"] == 1
    assert s1["teacher_n_sentences"] == 3
    assert s1["teacher_question_share"] == pytest.approx(1 / 3)
    assert s1["inter_qa_rounds"] == 1
    assert s1["inter_note_reminders"] == 1
    assert s1["inter_student_repeat_requests"] == 1
    assert s1["inter_turns"] == 4
    assert s1["inter_talk_ratio"] == pytest.approx(2.0 / 6.0)
    assert s1["student_speech_s"] == pytest.approx(2.0)

    s2 = out.loc["s2"]
    assert s2["inter_teacher_questions"] == 1
    assert s2["student_n_words"] == 0 and s2["inter_talk_ratio"] == 0.0

    s3 = out.loc["s3"]  # no utterances at all
    assert s3["teacher_n_utterances"] == 0 and s3["inter_turns"] == 0
    assert math.isnan(s3["inter_talk_ratio"]) and math.isnan(s3["student_chars_per_s"])


def test_featurizer_cached_per_config():
    _cached_featurizer.cache_clear()
    text_features(DIALOGUE)
    text_features(DIALOGUE.iloc[:2])
    info = _cached_featurizer.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    text_features(DIALOGUE, config=TextConfig(qa_window_s=0.5))
    assert _cached_featurizer.cache_info().misses == 2


def test_featurizer_shares_one_spacy_pipeline():
    f = TextFeaturizer()
    assert f.interaction.linguistic is f.linguistic
    f.process_utterances(DIALOGUE)
    assert f.linguistic._nlp is not None
    nlp = f.linguistic.nlp
    f.process_utterances(DIALOGUE)
    assert f.linguistic.nlp is nlp


def test_from_file_round_trip(tmp_path):
    path = tmp_path / "u.csv"
    DIALOGUE.to_csv(path, index=False)
    utts, problems = load_utterances(path)
    assert problems == []
    from_file = text_features(utts)
    direct = text_features(DIALOGUE)
    pd.testing.assert_frame_equal(from_file, direct)
    assert from_file.to_numpy(dtype=float).shape == (2, len(TEXT_FEATURE_COLUMNS))
    assert np.isfinite(from_file.loc["s1"].to_numpy(dtype=float)).sum() > 50


def test_empty_input_gives_empty_table_with_columns():
    empty = DIALOGUE.iloc[:0]
    out = text_features(empty)
    assert len(out) == 0 and list(out.columns) == TEXT_FEATURE_COLUMNS


AMBER = Path(__file__).resolve().parents[3] / "shared" / "data" / "amber"


def _amber_time(value: str) -> float:
    minutes, seconds = value.split(":")
    return 60 * int(minutes) + float(seconds)


@pytest.mark.realdata
@pytest.mark.slow
def test_amber_tutoring_sessions(tmp_path):
    """35 real one-on-one online tutoring transcripts (Tutor/Student, timed)."""
    if not AMBER.is_dir():
        pytest.skip(f"real data not found at {AMBER}")
    rows = []
    for f in sorted(AMBER.glob("*.json")):
        for u in json.loads(f.read_text(encoding="utf-8")):
            speaker = {"Tutor": "teacher", "Student": "student"}.get(u["speaker"], u["speaker"])
            rows.append(
                (f.stem, speaker, _amber_time(u["start"]), _amber_time(u["stop"]), u["dialogue"])
            )
    path = tmp_path / "amber.csv"
    pd.DataFrame(rows, columns=["session_id", "speaker", "start_s", "end_s", "text"]).to_csv(
        path, index=False
    )
    utts, problems = load_utterances(path)
    # The 13 "None"-speaker rows are reported and dropped; nothing else is wrong.
    assert all("'None'" in p.reason for p in problems) and len(problems) == 13
    out = text_features(utts)
    assert len(out) == 35
    assert (out["teacher_n_utterances"] > 0).all()
    # Session 4276: the student never speaks (a real "only teacher speech" case).
    assert (out["student_n_utterances"] == 0).sum() == 1
    only_teacher = out.loc["4276"]
    assert only_teacher["inter_talk_ratio"] == 0.0 and only_teacher["inter_qa_rounds"] == 0
    assert out["inter_talk_ratio"].between(0, 1).all()
    # Tutors talk more than students and ask more questions; most sessions have Q&A rounds.
    assert out["inter_talk_ratio"].median() < 0.5
    assert (out["inter_teacher_questions"] > out["inter_student_questions"]).mean() > 0.8
    assert (out["inter_qa_rounds"] > 0).mean() > 0.9
    assert (out["inter_qa_rounds"] <= out["inter_teacher_questions"]).all()
    pos = out[[c for c in out.columns if c.startswith("teacher_pos_")]]
    assert np.allclose(pos.sum(axis=1), 1.0)
    assert out["teacher_words_per_s"].between(0.5, 7.0).all()
    assert out["teacher_words_per_s"].median() == pytest.approx(2.9, abs=0.6)
