import math

import numpy as np
import pandas as pd
import pytest

from atrisk.config import TextConfig
from atrisk.errors import ModelLoadError, TranscriptError
from atrisk.extractors.linguistic import (
    LINGUISTIC_COLUMNS,
    POS_TAGS,
    LinguisticExtractor,
    prepare_utterances,
)


@pytest.fixture(scope="module")
def ext():
    return LinguisticExtractor()


def utts(*rows):
    """rows: (session_id, speaker, start_s, end_s, text)."""
    return pd.DataFrame(rows, columns=["session_id", "speaker", "start_s", "end_s", "text"])


def test_fillers_whole_word_case_insensitive(ext):
    out = ext.transform(utts(("s", "student", 0, 2, "um so uh I think")))
    row = out.loc[("s", "student")]
    assert row["n_filler"] == 2
    assert row["n_words"] == 5
    assert row["filler_ratio"] == pytest.approx(0.4)
    # "Umbrella" is no filler; "UH-huh" is one filler (multi-token entry), "hmm," one.
    out = ext.transform(utts(("s", "teacher", 0, 2, "Umbrella hmm, UH-huh.")))
    assert out.loc[("s", "teacher"), "n_filler"] == 2


def test_chars_and_words_per_second_exact(ext):
    out = ext.transform(utts(("s", "teacher", 1.0, 3.0, "Hello  world.")))
    row = out.loc[("s", "teacher")]
    assert row["speech_s"] == pytest.approx(2.0)
    assert row["chars_per_s"] == pytest.approx(11 / 2)  # "Helloworld." = 11 characters
    assert row["words_per_s"] == pytest.approx(2 / 2)


def test_rates_over_all_utterances_of_a_speaker(ext):
    out = ext.transform(
        utts(("s", "student", 0.0, 1.0, "abc"), ("s", "student", 5.0, 8.0, "de fg"))
    )
    row = out.loc[("s", "student")]
    assert row["speech_s"] == pytest.approx(4.0)
    assert row["chars_per_s"] == pytest.approx(7 / 4)
    assert row["words_per_s"] == pytest.approx(3 / 4)
    assert row["n_utterances"] == 2


def test_sentence_statistics_exact(ext):
    text = "One two three. Four five. Six seven eight nine ten eleven?"
    row = ext.transform(utts(("s", "teacher", 0, 10, text))).loc[("s", "teacher")]
    lengths = np.array([3, 2, 6], dtype=float)
    assert row["n_sentences"] == 3
    assert row["n_words"] == 11
    assert row["sentence_len_mean"] == pytest.approx(11 / 3)
    assert row["sentence_len_std"] == pytest.approx(lengths.std())
    assert row["sentence_len_p50"] == pytest.approx(3.0)
    assert row["sentence_len_p90"] == pytest.approx(5.4)  # 3 + 0.8 * (6 - 3)
    assert row["question_share"] == pytest.approx(1 / 3)


def test_pos_shares_sum_to_one_and_punct_share(ext):
    out = ext.transform(
        utts(("s", "teacher", 0, 2, "Hello world."), ("s", "student", 0, 2, "I like red apples!"))
    )
    pos_cols = [f"pos_{t}" for t in POS_TAGS]
    assert len(pos_cols) == 17
    sums = out[pos_cols].sum(axis=1)
    assert np.allclose(sums.to_numpy(), 1.0)
    assert out.loc[("s", "teacher"), "pos_PUNCT"] == pytest.approx(1 / 3)
    assert out.loc[("s", "student"), "pos_PUNCT"] == pytest.approx(1 / 5)
    assert out.loc[("s", "student"), "pos_PRON"] == pytest.approx(1 / 5)  # "I"


def test_unpunctuated_asr_question_detected(ext):
    out = ext.transform(
        utts(
            ("a", "teacher", 0, 2, "what is two plus two"),
            ("b", "teacher", 0, 2, "two plus two is four"),
            ("c", "teacher", 0, 2, "What is two plus two."),  # punctuated, not a question
        )
    )
    assert out.loc[("a", "teacher"), "question_share"] == 1.0
    assert out.loc[("a", "teacher"), "n_sentences"] == 1
    assert out.loc[("b", "teacher"), "question_share"] == 0.0
    assert out.loc[("c", "teacher"), "question_share"] == 0.0


def test_question_with_trailing_quote_or_interrobang(ext):
    out = ext.transform(utts(("s", "teacher", 0, 2, 'Really?! He said "why?"')))
    assert out.loc[("s", "teacher"), "question_share"] == 1.0


def test_missing_times_give_nan_rates_but_counts(ext):
    out = ext.transform(
        utts(("s", "teacher", np.nan, np.nan, "Hello world."), ("s", "teacher", 0, 1, "Again."))
    )
    row = out.loc[("s", "teacher")]
    assert math.isnan(row["chars_per_s"])
    assert math.isnan(row["words_per_s"])
    assert math.isnan(row["speech_s"])
    assert row["n_words"] == 3


def test_only_teacher_speech_student_row_zero(ext):
    out = ext.transform(utts(("s", "teacher", 0, 1, "Hello.")))
    assert list(out.index) == [("s", "teacher"), ("s", "student")]
    student = out.loc[("s", "student")]
    assert student[["n_utterances", "n_sentences", "n_words", "n_filler"]].tolist() == [0, 0, 0, 0]
    assert student["speech_s"] == 0.0
    assert math.isnan(student["filler_ratio"])
    assert math.isnan(student["chars_per_s"])
    assert math.isnan(student["pos_NOUN"])


def test_type_token_ratio(ext):
    out = ext.transform(
        utts(("s", "student", 0, 1, "The cat and"), ("s", "student", 1, 2, "the dog."))
    )
    assert out.loc[("s", "student"), "type_token_ratio"] == pytest.approx(4 / 5)


def test_columns_dtypes_and_session_ids(ext):
    out = ext.transform(
        utts(("b", "teacher", 0, 1, "Hi."), ("x", "student", 0, 1, "ignored")),
        session_ids=["b", "empty"],
    )
    assert list(out.columns) == LINGUISTIC_COLUMNS
    assert out.index.names == ["session_id", "speaker"]
    assert list(out.index) == [
        ("b", "teacher"),
        ("b", "student"),
        ("empty", "teacher"),
        ("empty", "student"),
    ]
    assert out["n_words"].dtype == np.int64 and out["speech_s"].dtype == np.float64
    assert out.loc[("empty", "teacher"), "n_utterances"] == 0


def test_empty_transcript(ext):
    empty = utts()
    assert len(ext.transform(empty)) == 0
    out = ext.transform(empty, session_ids=["s"])
    assert out["n_utterances"].tolist() == [0, 0]


def test_caller_frame_unchanged_and_bad_rows_ignored(ext):
    df = utts(
        ("s", " Teacher ", 0, 1, "Hello."),
        ("s", "robot", 0, 1, "beep beep"),
        ("s", "student", 0, 1, "   "),
    )
    before = df.copy()
    out = ext.transform(df)
    pd.testing.assert_frame_equal(df, before)
    assert out.loc[("s", "teacher"), "n_words"] == 1
    assert out.loc[("s", "student"), "n_utterances"] == 0


def test_missing_columns_raise():
    with pytest.raises(TranscriptError, match="start_s, end_s"):
        prepare_utterances(
            pd.DataFrame({"session_id": ["s"], "speaker": ["teacher"], "text": [""]})
        )


def test_missing_spacy_model_raises_model_load_error():
    bad = LinguisticExtractor(TextConfig(spacy_model="no_such_pipeline_xyz"))
    with pytest.raises(ModelLoadError, match="no_such_pipeline_xyz.*text.spacy_model"):
        bad.transform(utts(("s", "teacher", 0, 1, "Hello.")))


def test_lexicons_come_from_config():
    cfg = TextConfig(filler_words=["like", "you know"], question_words=["so"])
    ext = LinguisticExtractor(cfg)
    out = ext.transform(utts(("s", "student", 0, 1, "so um it was like you know big")))
    row = out.loc[("s", "student")]
    assert row["n_filler"] == 2
    assert row["question_share"] == 1.0


def test_model_loaded_once(ext):
    ext.transform(utts(("s", "teacher", 0, 1, "Hello.")))
    nlp = ext.nlp
    ext.transform(utts(("s", "teacher", 0, 1, "Hello again.")))
    assert ext.nlp is nlp
    assert "parser" not in nlp.pipe_names and "ner" not in nlp.pipe_names
    assert "sentencizer" in nlp.pipe_names


def test_ten_thousand_word_utterance(ext):
    # Speed is measured in scripts/benchmarks/bench_text.py; here: it runs and counts right.
    text = " ".join(["the cat sat on the mat and um I think"] * 1000)
    out = ext.transform(utts(("s", "teacher", 0, 3600, text)))
    assert out.loc[("s", "teacher"), "n_words"] == 10_000
    assert out.loc[("s", "teacher"), "n_filler"] == 1000
    assert out.loc[("s", "teacher"), "words_per_s"] == pytest.approx(10_000 / 3600)


def test_blank_pipeline_counts_without_pos():
    ext = LinguisticExtractor(TextConfig(spacy_model="blank:en"))
    out = ext.transform(utts(("s", "student", 0, 2, "Um, is it four? Yes it is.")))
    row = out.loc[("s", "student")]
    assert "tagger" not in ext.nlp.pipe_names and "sentencizer" in ext.nlp.pipe_names
    assert row["n_sentences"] == 2 and row["n_words"] == 7 and row["n_filler"] == 1
    assert row["question_share"] == pytest.approx(0.5)
    assert all(math.isnan(row[f"pos_{t}"]) for t in POS_TAGS)
