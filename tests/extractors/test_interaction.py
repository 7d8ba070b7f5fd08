import math

import numpy as np
import pandas as pd
import pytest

from atrisk.config import TextConfig
from atrisk.errors import ConfigError
from atrisk.extractors.interaction import INTERACTION_COLUMNS, InteractionExtractor
from atrisk.extractors.linguistic import LinguisticExtractor


@pytest.fixture(scope="module")
def ling():
    return LinguisticExtractor()


@pytest.fixture(scope="module")
def inter(ling):
    return InteractionExtractor(linguistic=ling)


def utts(*rows, session="s"):
    """rows: (speaker, start_s, end_s, text)."""
    return pd.DataFrame(
        [(session, *r) for r in rows],
        columns=["session_id", "speaker", "start_s", "end_s", "text"],
    )


def test_three_questions_answered_within_window(inter):
    df = utts(
        ("teacher", 0.0, 2.0, "What is two plus two?"),
        ("student", 3.0, 4.0, "Four."),
        ("teacher", 5.0, 7.0, "Good. And three plus three?"),
        ("student", 9.0, 10.0, "Six."),
        ("teacher", 11.0, 12.0, "Why is that?"),
        ("student", 12.5, 14.0, "Because three and three make six."),
    )
    row = inter.transform(df).loc["s"]
    assert row["qa_rounds"] == 3
    assert row["response_latency_s"] == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    assert row["teacher_questions"] == 3
    assert row["student_questions"] == 0
    assert row["turns"] == 6


def test_unanswered_late_and_superseded_questions(inter):
    df = utts(
        ("teacher", 0.0, 2.0, "Any questions?"),  # no student reply before the next question
        ("teacher", 3.0, 4.0, "What is the capital of France?"),  # reply 20 s later: too late
        ("student", 24.0, 25.0, "Paris."),
        ("teacher", 30.0, 31.0, "Is that right?"),  # answered twice: counts once
        ("student", 32.0, 33.0, "Yes."),
        ("student", 34.0, 35.0, "I think so."),
        ("teacher", 40.0, 41.0, "Okay."),  # not a question
        ("student", 41.5, 42.0, "Okay."),
    )
    row = inter.transform(df).loc["s"]
    assert row["teacher_questions"] == 3
    assert row["qa_rounds"] == 1
    assert row["response_latency_s"] == pytest.approx(1.0)


def test_qa_window_comes_from_config(ling):
    df = utts(("teacher", 0.0, 2.0, "Where is Paris?"), ("student", 22.0, 23.0, "France."))
    assert InteractionExtractor(linguistic=ling).transform(df).loc["s", "qa_rounds"] == 0
    wide = InteractionExtractor(TextConfig(qa_window_s=30), linguistic=ling)
    assert wide.transform(df).loc["s", "qa_rounds"] == 1


def test_reply_overlapping_question_end_counts(inter):
    df = utts(("teacher", 0.0, 3.0, "Do you know it?"), ("student", 2.8, 4.0, "Yes I do."))
    row = inter.transform(df).loc["s"]
    assert row["qa_rounds"] == 1
    assert row["response_latency_s"] == pytest.approx(-0.2)


def test_asr_question_answered(inter):
    df = utts(("teacher", 0.0, 2.0, "what is two plus two"), ("student", 2.5, 3.0, "four"))
    assert inter.transform(df).loc["s", "qa_rounds"] == 1


def test_note_reminders_teacher_only(inter):
    df = utts(
        ("teacher", 0, 1, "Please take notes on this."),
        ("teacher", 1, 2, "Let me summarize what we learned."),
        ("student", 2, 3, "I will take notes."),
        ("teacher", 3, 4, "Notebooks are nice."),
    )
    assert inter.transform(df).loc["s", "note_reminders"] == 2


def test_repeat_requests_per_speaker(inter):
    df = utts(
        ("teacher", 0, 1, "The answer is seven."),
        ("student", 1, 2, "Can you say that again?"),
        ("teacher", 2, 3, "Seven."),
    )
    row = inter.transform(df).loc["s"]
    assert row["student_repeat_requests"] == 1
    assert row["teacher_repeat_requests"] == 0
    assert row["repeat_requests"] == 1
    assert row["student_questions"] == 1


def test_turns_and_talk_ratio_exact(inter):
    df = utts(
        ("teacher", 0.0, 1.0, "Hello."),
        ("teacher", 1.0, 2.0, "Welcome."),
        ("student", 2.0, 2.5, "Hi."),
        ("teacher", 3.0, 4.0, "Ready."),
        ("student", 4.0, 4.25, "Yes."),
        ("student", 4.5, 4.75, "Go."),
    )
    row = inter.transform(df.sample(frac=1, random_state=0)).loc["s"]  # order-free
    assert row["turns"] == 4
    assert row["talk_ratio"] == pytest.approx(1.0 / 4.0)  # student 1.0 s of 4.0 s


def test_only_teacher_speech(inter):
    df = utts(("teacher", 0, 2, "Is anyone there?"), ("teacher", 5, 6, "Hello?"))
    row = inter.transform(df).loc["s"]
    assert row["student_questions"] == 0
    assert row["student_repeat_requests"] == 0
    assert row["talk_ratio"] == 0.0
    assert row["qa_rounds"] == 0
    assert row["turns"] == 1
    assert math.isnan(row["response_latency_s"])


def test_missing_times_make_time_counters_nan(inter):
    df = utts(
        ("teacher", np.nan, np.nan, "What is this?"),
        ("student", 3.0, 4.0, "A pen."),
    )
    row = inter.transform(df).loc["s"]
    assert math.isnan(row["qa_rounds"])
    assert math.isnan(row["turns"])
    assert math.isnan(row["talk_ratio"])
    assert row["teacher_questions"] == 1


def test_empty_transcript_and_missing_sessions(inter):
    empty = utts()
    out = inter.transform(empty)
    assert len(out) == 0 and list(out.columns) == INTERACTION_COLUMNS
    out = inter.transform(
        utts(("teacher", 0, 1, "Hi?"), session="a"), session_ids=["none", "a"]
    )
    assert list(out.index) == ["none", "a"]
    none = out.loc["none"]
    assert none["qa_rounds"] == 0 and none["turns"] == 0 and none["teacher_questions"] == 0
    assert math.isnan(none["talk_ratio"])
    assert out["teacher_questions"].dtype == np.int64
    assert out.loc["a", "teacher_questions"] == 1


def test_sessions_are_independent(inter):
    df = pd.concat(
        [
            utts(("teacher", 0, 1, "Why?"), session="a"),
            utts(("student", 1.5, 2, "Because."), session="b"),
        ]
    )
    out = inter.transform(df)
    assert out.loc["a", "qa_rounds"] == 0 and out.loc["b", "qa_rounds"] == 0


def test_invalid_pattern_is_config_error(ling):
    with pytest.raises(ConfigError, match=r"text.note_patterns\[0\]"):
        InteractionExtractor(TextConfig(note_patterns=["(unclosed"]), linguistic=ling)


def test_latency_max_silence_overlaps_initiated_questions_exact(inter):
    # Hand-written dialogue, every count worked out by hand:
    # Q1 (0-2) answered at 2.5 (latency 0.5); Q2 (6-8) answered at 7.5 overlapping
    # (latency -0.5); Q3 (12-14) answered at 17 (latency 3.0); the student asks
    # "What about five?" at 20 on their own: one initiated question.
    df = utts(
        ("teacher", 0.0, 2.0, "What is two plus two?"),
        ("student", 2.5, 3.0, "Four."),
        ("teacher", 3.5, 8.0, "Good. And three plus three?"),
        ("student", 7.5, 9.0, "Six."),
        ("teacher", 12.0, 14.0, "Is six even?"),
        ("student", 17.0, 18.0, "Yes it is."),
        ("student", 20.0, 21.0, "What about five?"),
        ("teacher", 20.5, 23.0, "Five is odd."),
        ("teacher", 23.0, 30.0, "Now we move on to fractions."),
    )
    row = inter.transform(df).loc["s"]
    assert row["qa_rounds"] == 3
    assert row["response_latency_s"] == pytest.approx((0.5 - 0.5 + 3.0) / 3)
    assert row["response_latency_max_s"] == pytest.approx(3.0)
    assert row["student_questions"] == 1
    assert row["student_initiated_questions"] == 1
    # teacher [0,2] [3.5,8] [12,14] [20.5,30]; student [2.5,3] [7.5,9] [17,18] [20,21]
    assert row["overlaps"] == 2  # 7.5-8 and 20.5-21
    assert row["overlap_s"] == pytest.approx(1.0)
    # longest stretch of [0, 30] without student speech: 21 -> 30
    assert row["longest_student_silence_s"] == pytest.approx(9.0)
    assert row["untimed_utterances"] == 0


def test_student_question_as_reply_is_not_initiated(inter):
    df = utts(
        ("teacher", 0.0, 2.0, "Do you see it?"),
        ("student", 2.5, 3.0, "Which one?"),  # the reply of a Q&A round
        ("student", 30.0, 31.0, "Can we stop?"),  # on their own
    )
    row = inter.transform(df).loc["s"]
    assert row["qa_rounds"] == 1
    assert row["student_questions"] == 2
    assert row["student_initiated_questions"] == 1
    assert row["longest_student_silence_s"] == pytest.approx(27.0)  # 3 -> 30
    assert row["overlaps"] == 0 and row["overlap_s"] == 0


def test_overlapping_utterances_of_one_speaker_merge(inter):
    df = utts(
        ("teacher", 0.0, 4.0, "Let us start."),
        ("teacher", 2.0, 6.0, "Open the book."),  # overlaps the teacher's own utterance
        ("student", 3.0, 5.0, "Okay."),
        ("student", 4.5, 7.0, "Okay okay."),
    )
    row = inter.transform(df).loc["s"]
    assert row["overlaps"] == 1  # teacher [0,6] ∩ student [3,7] = [3,6]
    assert row["overlap_s"] == pytest.approx(3.0)
    assert row["longest_student_silence_s"] == pytest.approx(3.0)  # 0 -> 3


def test_only_teacher_speech_silence_is_whole_span(inter):
    df = utts(("teacher", 1.0, 2.0, "Hello?"), ("teacher", 5.0, 9.0, "Anyone?"))
    row = inter.transform(df).loc["s"]
    assert row["longest_student_silence_s"] == pytest.approx(8.0)
    assert row["student_initiated_questions"] == 0
    assert math.isnan(row["response_latency_max_s"])


def test_untimed_utterances_explain_nan_time_counters(inter):
    df = utts(
        ("teacher", 0.0, 1.0, "What is this?"),
        ("student", np.nan, 3.0, "A pen."),
        ("student", 5.0, 4.0, "Why?"),  # end before start: untimed
    )
    row = inter.transform(df).loc["s"]
    assert row["untimed_utterances"] == 2
    for col in ("overlaps", "overlap_s", "longest_student_silence_s",
                "student_initiated_questions", "response_latency_max_s"):
        assert math.isnan(row[col]), col
    assert row["student_questions"] == 1  # time-free counters still count
