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


EXAMPLE_DE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "text_de.toml"


def test_german_config_file_works_without_code_changes():
    from atrisk.config import load_config

    cfg = load_config(EXAMPLE_DE)
    assert cfg.text.spacy_model == "blank:de"
    df = pd.DataFrame(
        [
            ("s", "teacher", 0.0, 2.0, "Ähm, was ist zwei plus zwei?"),
            ("s", "student", 2.5, 3.0, "Vier."),
            ("s", "teacher", 4.0, 6.0, "Gut. Schreib dir das auf."),
            ("s", "student", 6.5, 8.0, "wie bitte"),
            ("s", "teacher", 9.0, 11.0, "Bitte fasst das zusammen."),
        ],
        columns=["session_id", "speaker", "start_s", "end_s", "text"],
    )
    row = text_features(df, cfg.text).loc["s"]
    assert row["teacher_n_filler"] == 1  # "Ähm" from the German lexicon
    assert row["teacher_n_words"] == 15
    assert row["teacher_n_sentences"] == 4
    assert row["inter_teacher_questions"] == 1
    assert row["inter_qa_rounds"] == 1
    assert row["inter_note_reminders"] == 2  # "Schreib dir das auf", "fasst das zusammen"
    assert row["inter_student_repeat_requests"] == 1  # "wie bitte"
    assert row["student_question_share"] == pytest.approx(0.5)  # unpunctuated "wie ..."
    # A blank pipeline sets no POS tags: the shares are NaN, not zero.
    assert math.isnan(row["teacher_pos_NOUN"]) and math.isnan(row["student_pos_VERB"])
    # The English default does not see the German filler.
    assert text_features(df).loc["s", "teacher_n_filler"] == 0


def test_unknown_blank_language_is_model_load_error():
    from atrisk.errors import ModelLoadError

    df = DIALOGUE.iloc[:1]
    with pytest.raises(ModelLoadError, match="text.spacy_model"):
        text_features(df, TextConfig(spacy_model="blank:zz9"))


def test_cli_on_bad_input_file(tmp_path):
    """Non-UTF-8 bytes, end < start, overlaps, missing times, a 10,000-word utterance."""
    from typer.testing import CliRunner

    from atrisk.cli import app

    long_text = " ".join(["so we add the two numbers and"] * 1429)  # 10,003 words
    lines = [
        "session_id,speaker,start_s,end_s,text",
        "ok,teacher,0,2,What is two plus two?",
        "ok,student,1.5,3,Four.",  # overlaps the question
        "ok,student,5,4,backwards",  # end < start: dropped
        "untimed,teacher,,,Hello class?",
        "untimed,student,1,2,Hi.",
        "long,teacher,0,3600," + long_text,
        "solo,teacher,0,1,Only me.",
    ]
    data = ("\n".join(lines) + "\n").encode() + b"bytes,student,0,1,caf\xe9 ok\n"
    src = tmp_path / "u.csv"
    src.write_bytes(data)
    out = tmp_path / "f.parquet"
    res = CliRunner().invoke(
        app, ["features", "text", "--utterances", str(src), "--out", str(out)]
    )
    assert res.exit_code == 1, res.output  # some rows had problems, the rest is done
    feats = pd.read_parquet(out)
    assert sorted(feats.index) == ["bytes", "long", "ok", "solo", "untimed"]
    assert feats.loc["ok", "inter_overlaps"] == 1
    assert feats.loc["ok", "inter_overlap_s"] == pytest.approx(0.5)
    assert feats.loc["ok", "inter_qa_rounds"] == 1
    assert feats.loc["untimed", "inter_untimed_utterances"] == 1
    assert math.isnan(feats.loc["untimed", "inter_turns"])
    assert math.isnan(feats.loc["untimed", "teacher_chars_per_s"])
    assert feats.loc["untimed", "student_chars_per_s"] == pytest.approx(3.0)
    assert feats.loc["long", "teacher_n_words"] == len(long_text.split())
    assert feats.loc["solo", "inter_talk_ratio"] == 0.0
    assert feats.loc["bytes", "student_n_words"] == 2  # "caf\ufffd ok" decoded leniently


@pytest.mark.realdata
def test_cli_on_unseen_real_transcripts(shared_data, tmp_path):
    """Plausible outputs on transcripts the code was not tuned on: 4 TalkMoves
    classrooms (no times) and 4 AMBER tutoring sessions (timed)."""
    from typer.testing import CliRunner

    from atrisk.cli import app

    tm = pd.read_parquet(shared_data / "talkmoves" / "sentences.parquet")
    files = sorted(tm["file"].unique())[100:104]
    tm = tm[tm["file"].isin(files)]
    code = tm["Speaker"].fillna("").str.strip()
    teacher = tm["Teacher Tag"].notna() & tm["Student Tag"].isna()
    teacher |= code.str.match(r"^(T\d*|Teacher|M[rs]s?\.)", case=False) & tm["Student Tag"].isna()
    rows = pd.DataFrame({"session_id": "tm_" + pd.Series(pd.factorize(tm["file"])[0]).astype(str)
                         .to_numpy(), "speaker": np.where(teacher, "teacher", "student"),
                         "start_s": "", "end_s": "", "text": tm["Sentence"].to_numpy()})
    for f in sorted((shared_data / "amber").glob("*.json"))[-4:]:
        part = pd.DataFrame(json.loads(f.read_text(encoding="utf-8")))
        part = part[part["speaker"].isin(["Tutor", "Student"])]
        rows = pd.concat([rows, pd.DataFrame({
            "session_id": "amber_" + f.stem,
            "speaker": part["speaker"].map({"Tutor": "teacher", "Student": "student"}),
            "start_s": part["start"].map(_amber_time), "end_s": part["stop"].map(_amber_time),
            "text": part["dialogue"]})])
    src = tmp_path / "unseen.csv"
    rows.to_csv(src, index=False)
    out = tmp_path / "f.parquet"
    res = CliRunner().invoke(app, ["features", "text", "--utterances", str(src),
                                   "--out", str(out), "--quiet"])
    assert res.exit_code in (0, 1), res.output
    feats = pd.read_parquet(out)
    assert len(feats) == 8
    amber = feats[feats.index.str.startswith("amber_")]
    talk = feats[feats.index.str.startswith("tm_")]
    for spk in ("teacher", "student"):
        assert amber[f"{spk}_chars_per_s"].dropna().between(5, 30).all()
    ratio_cols = [c for c in feats.columns if c.endswith(("_ratio", "_share")) or "_pos_" in c]
    vals = feats[ratio_cols].to_numpy(dtype=float)
    assert ((vals[np.isfinite(vals)] >= 0) & (vals[np.isfinite(vals)] <= 1)).all()
    assert (amber["inter_qa_rounds"] <= amber["inter_teacher_questions"]).all()
    assert (amber["inter_qa_rounds"] > 0).all()
    assert (amber["inter_untimed_utterances"] == 0).all()
    # TalkMoves has no times: time-based counters are NaN and the row says why.
    assert (talk["inter_untimed_utterances"] == talk[["teacher_n_utterances",
                                                      "student_n_utterances"]].sum(axis=1)).all()
    assert talk["inter_qa_rounds"].isna().all() and talk["teacher_chars_per_s"].isna().all()
    # Punctuated human transcripts: the question share follows the transcribers' "?".
    is_t = rows["speaker"] == "teacher"
    qmark = (rows[is_t & rows["session_id"].str.startswith("tm_")].groupby("session_id")["text"]
             .apply(lambda s: s.str.contains("?", regex=False).mean()))
    assert np.allclose(talk["teacher_question_share"], qmark.reindex(talk.index), atol=0.1)
    assert (talk["teacher_n_words"] > 0).all() and (talk["student_n_words"] > 0).all()
