import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.config import TextConfig
from atrisk.extractors.interaction import INTERACTION_COLUMNS
from atrisk.extractors.linguistic import LINGUISTIC_COLUMNS, POS_TAGS
from atrisk.extractors.text import (
    TEXT_FEATURE_COLUMNS,
    TextFeaturizer,
    featurizer,
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
    first = featurizer()
    assert featurizer(TextConfig()) is first  # an equal config shares one featurizer
    other = featurizer(TextConfig(qa_window_s=0.5))
    assert other is not first and featurizer(TextConfig(qa_window_s=0.5)) is other


def test_featurizer_shares_one_spacy_pipeline():
    f = TextFeaturizer()
    assert f.interaction.linguistic is f.linguistic
    f.transform(DIALOGUE)
    assert f.linguistic._nlp is not None
    nlp = f.linguistic.nlp
    f.transform(DIALOGUE)
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


def _amber_rows(files: list[Path], prefix: str = "", keep_unknown: bool = False) -> pd.DataFrame:
    """AMBER JSON sessions as an utterance table (Tutor → teacher, Student → student)."""
    parts = []
    for f in files:
        part = pd.DataFrame(json.loads(f.read_text(encoding="utf-8")))
        if not keep_unknown:
            part = part[part["speaker"].isin(["Tutor", "Student"])]
        parts.append(pd.DataFrame({
            "session_id": prefix + f.stem,
            "speaker": part["speaker"].map(lambda s: {"Tutor": "teacher", "Student": "student"}
                                           .get(s, str(s))),
            "start_s": part["start"].map(_amber_time), "end_s": part["stop"].map(_amber_time),
            "text": part["dialogue"]}))
    return pd.concat(parts, ignore_index=True)


def _cli_features(src: Path, out: Path) -> tuple[int, str, pd.DataFrame]:
    from typer.testing import CliRunner

    from atrisk.cli import app

    res = CliRunner().invoke(app, ["features", "text", "--utterances", str(src), "--out", str(out)])
    return res.exit_code, res.output, pd.read_parquet(out)


@pytest.mark.realdata
def test_cli_on_all_amber_sessions_csv_and_parquet(tmp_path):
    """All 35 real one-on-one online tutoring transcripts (Tutor/Student, timed) through
    ``atrisk features text``, from CSV and from Parquet; the outputs are plausible."""
    if not AMBER.is_dir():
        pytest.skip(f"real data not found at {AMBER}")
    rows = _amber_rows(sorted(AMBER.glob("*.json")), keep_unknown=True)
    rows.to_csv(tmp_path / "amber.csv", index=False)
    code, output, out = _cli_features(tmp_path / "amber.csv", tmp_path / "f_csv.parquet")
    # The 13 "None"-speaker rows are reported and dropped (exit 1); nothing else is wrong.
    assert code == 1 and output.count("'None'") == 13, output
    utts, problems = load_utterances(tmp_path / "amber.csv")
    assert len(problems) == 13 and all("'None'" in p.reason for p in problems)
    rows.astype({"session_id": str}).to_parquet(tmp_path / "amber.parquet")
    code_pq, _, out_pq = _cli_features(tmp_path / "amber.parquet", tmp_path / "f_pq.parquet")
    assert code_pq == 1
    pd.testing.assert_frame_equal(out, out_pq)

    assert len(out) == 35
    assert (out["teacher_n_utterances"] > 0).all()
    assert (out["inter_untimed_utterances"] == 0).all()
    # Session 4276: the student never speaks (a real "only teacher speech" case).
    assert (out["student_n_utterances"] == 0).sum() == 1
    only_teacher = out.loc["4276"]
    assert only_teacher["inter_talk_ratio"] == 0.0 and only_teacher["inter_qa_rounds"] == 0
    assert math.isnan(only_teacher["student_chars_per_s"])
    # Speeds 5-30 chars/s, except three sessions whose times are at fault, not the
    # counting: 4275 and 4280 are 42-s excerpts whose last tutor utterance ("If you want
    # to change", "The 3rd...") is stamped 25-30 s long; in 4246 the student's turns are
    # fragments ("Itct.", "A.") stamped with long spans, 2.5 chars/s.
    for spk, outside in (("teacher", {"4275", "4280"}), ("student", {"4246"})):
        cps = out[f"{spk}_chars_per_s"].dropna()
        assert set(cps.index[~cps.between(5, 30)]) == outside
        assert cps.median() == pytest.approx(11.6 if spk == "teacher" else 7.7, abs=0.5)
    ratio_cols = [c for c in out.columns if c.endswith(("_ratio", "_share")) or "_pos_" in c]
    vals = out[ratio_cols].to_numpy(dtype=float)
    assert ((vals[np.isfinite(vals)] >= 0) & (vals[np.isfinite(vals)] <= 1)).all()
    assert (out["inter_qa_rounds"] <= out["inter_teacher_questions"]).all()
    assert (out["inter_student_initiated_questions"] <= out["inter_student_questions"]).all()
    assert (out["inter_response_latency_s"].dropna() <= out["inter_response_latency_max_s"]
            .dropna()).all()
    # Tutors talk more than students and ask more questions; most sessions have Q&A rounds.
    assert out["inter_talk_ratio"].median() < 0.5
    assert (out["inter_teacher_questions"] > out["inter_student_questions"]).mean() > 0.8
    assert (out["inter_qa_rounds"] > 0).mean() > 0.9
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


def test_german_config_through_the_cli(tmp_path):
    """The command written at the top of docs/examples/text_de.toml, on a German CSV."""
    from typer.testing import CliRunner

    from atrisk.cli import app

    src = tmp_path / "utts.csv"
    src.write_text(
        "session_id,speaker,start_s,end_s,text\n"
        "de1,teacher,0,2,\"Ähm, warum ist das so?\"\n"
        "de1,student,2.5,4,hm weil zwei mal zwei vier ist\n"
        "de1,teacher,5,7,Notiert euch das bitte.\n",
        encoding="utf-8",
    )
    out = tmp_path / "feats.parquet"
    res = CliRunner().invoke(app, ["features", "text", "--utterances", str(src), "--out",
                                   str(out), "--config", str(EXAMPLE_DE)])
    assert res.exit_code == 0, res.output
    row = pd.read_parquet(out).loc["de1"]
    assert row["teacher_n_filler"] == 1 and row["student_n_filler"] == 1  # "Ähm", "hm"
    assert row["student_n_words"] == 7 and row["teacher_n_sentences"] == 2
    assert row["inter_teacher_questions"] == 1 and row["inter_qa_rounds"] == 1
    assert row["inter_response_latency_s"] == pytest.approx(0.5)
    assert row["inter_note_reminders"] == 1  # "Notiert euch das"
    assert math.isnan(row["teacher_pos_NOUN"])  # blank:de sets no POS


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
    # Each problem names the file (and line) and the reason.
    assert "2 problem(s)" in res.output
    assert f"{src}: file is not valid UTF-8 (line(s) 9)" in " ".join(res.output.split())
    assert f"{src}:4: end_s=4.0 is before start_s=5.0; row dropped" in res.output
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


def test_cli_on_empty_transcript_file(tmp_path):
    """A header-only CSV and an empty Parquet: exit 0, an empty table with every column."""
    src = tmp_path / "empty.csv"
    src.write_text("session_id,speaker,start_s,end_s,text\n", encoding="utf-8")
    code, output, feats = _cli_features(src, tmp_path / "f.parquet")
    assert code == 0, output
    assert len(feats) == 0 and list(feats.columns) == TEXT_FEATURE_COLUMNS
    DIALOGUE.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    code, output, feats = _cli_features(tmp_path / "empty.parquet", tmp_path / "g.parquet")
    assert code == 0 and len(feats) == 0, output


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
    amber = _amber_rows(sorted((shared_data / "amber").glob("*.json"))[-4:], prefix="amber_")
    rows = pd.concat([rows, amber])
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


#: A hand-written lesson; every expected value below is counted by hand.
LESSON = pd.DataFrame(
    [
        ("g", "teacher", 0.0, 4.0, "Um, today we add fractions. What is one half plus one half?"),
        ("g", "student", 4.5, 5.5, "Uh, one."),
        ("g", "teacher", 6.0, 9.0, "Right. Please write this down in your notes."),
        ("g", "student", 8.5, 10.0, "Sorry, can you say that again?"),
        ("g", "teacher", 12.0, 14.0, "Why is that?"),
        ("g", "student", 26.0, 27.0, "hmm I do not know"),
    ],
    columns=["session_id", "speaker", "start_s", "end_s", "text"],
)


def test_every_counter_on_a_hand_written_lesson():
    """Each non-POS column checked against a count made by hand.

    Teacher sentences (words): 5, 7 | 1, 7 | 3 → 23 words, lengths [1, 3, 5, 7, 7];
    questions 2 of 5 sentences; fillers "Um"; 95 characters in 4 + 3 + 2 = 9 s;
    20 distinct words (is, one, half twice).  Student: 2 | 6 | 5 → 13 words, all
    distinct, lengths [2, 5, 6]; fillers "Uh", "hmm"; 7 + 25 + 13 = 45 characters in
    1 + 1.5 + 1 = 3.5 s; 1 question sentence of 3.  Q&A (window 10 s): the question
    ending at 4.0 is answered at 4.5; the one ending at 14.0 gets its next student
    utterance at 26.0 > 24.0, so it is unanswered.  The student's "can you say that
    again?" comes after the answered question: a student-initiated question and a
    repeat request; it overlaps the teacher from 8.5 to 9.0.  Student silence: the
    longest uncovered stretch of [0, 27] is 10.0-26.0.
    """
    row = text_features(LESSON).loc["g"]
    lengths_t, lengths_s = np.array([5, 7, 1, 7, 3.0]), np.array([2, 6, 5.0])
    expected = {
        "teacher_n_utterances": 3, "teacher_n_sentences": 5, "teacher_n_words": 23,
        "teacher_n_filler": 1, "teacher_filler_ratio": 1 / 23,
        "teacher_sentence_len_mean": 23 / 5, "teacher_sentence_len_std": lengths_t.std(),
        "teacher_sentence_len_p50": 5.0, "teacher_sentence_len_p90": 7.0,
        "teacher_chars_per_s": 95 / 9, "teacher_words_per_s": 23 / 9, "teacher_speech_s": 9.0,
        "teacher_question_share": 2 / 5, "teacher_type_token_ratio": 20 / 23,
        "student_n_utterances": 3, "student_n_sentences": 3, "student_n_words": 13,
        "student_n_filler": 2, "student_filler_ratio": 2 / 13,
        "student_sentence_len_mean": 13 / 3, "student_sentence_len_std": lengths_s.std(),
        "student_sentence_len_p50": 5.0, "student_sentence_len_p90": 5.8,
        "student_chars_per_s": 45 / 3.5, "student_words_per_s": 13 / 3.5,
        "student_speech_s": 3.5, "student_question_share": 1 / 3,
        "student_type_token_ratio": 1.0,
        "inter_qa_rounds": 1, "inter_response_latency_s": 0.5,
        "inter_response_latency_max_s": 0.5, "inter_teacher_questions": 2,
        "inter_student_questions": 1, "inter_student_initiated_questions": 1,
        "inter_note_reminders": 1, "inter_repeat_requests": 1,
        "inter_teacher_repeat_requests": 0, "inter_student_repeat_requests": 1,
        "inter_turns": 6, "inter_talk_ratio": 3.5 / 12.5,
        "inter_longest_student_silence_s": 16.0, "inter_overlaps": 1, "inter_overlap_s": 0.5,
        "inter_untimed_utterances": 0,
    }
    assert set(expected) == {c for c in TEXT_FEATURE_COLUMNS if "_pos_" not in c}
    for col, value in expected.items():
        assert row[col] == pytest.approx(value), col
    # POS shares: tokens 15 + 10 + 4 = 29 (teacher), 4 + 8 + 5 = 17 (student) with
    # 6 and 4 punctuation marks; the other tags come from the statistical tagger.
    for spk, punct in (("teacher", 6 / 29), ("student", 4 / 17)):
        shares = row[[f"{spk}_pos_{t}" for t in POS_TAGS]].to_numpy(dtype=float)
        assert shares.sum() == pytest.approx(1.0)
        assert row[f"{spk}_pos_PUNCT"] == pytest.approx(punct)
    # Without times the same lesson keeps its word counts; time counters become NaN.
    untimed = text_features(LESSON.assign(start_s=np.nan, end_s=np.nan)).loc["g"]
    assert untimed["inter_untimed_utterances"] == 6
    assert untimed["teacher_n_words"] == 23 and untimed["inter_teacher_questions"] == 2
    for col in ("inter_qa_rounds", "inter_turns", "inter_talk_ratio", "inter_overlaps",
                "teacher_chars_per_s", "student_words_per_s", "teacher_speech_s"):
        assert math.isnan(untimed[col]), col


@pytest.mark.slow  # openSMILE on four tracks + the extract pipeline: ~50 s on a loaded machine
def test_extract_uses_the_same_text_features(tmp_path):
    """`atrisk extract` (transcripts backend) puts exactly the `features text` columns
    into in_class: one code path."""
    import soundfile as sf

    from atrisk import workflows
    from atrisk.config import Config
    from tests.conftest import SR, voiced

    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "sessions.csv").write_text(
        "session_id,student_id,teacher_id,start_time\n"
        "g,stu_1,tea_1,2024-03-01T10:00:00Z\ns1,stu_2,tea_1,2024-03-02T10:00:00Z\n"
    )
    for i, sid in enumerate(("g", "s1")):
        (rec / sid).mkdir()
        sf.write(rec / sid / "teacher.wav", voiced(120, seed=2 * i), SR)
        sf.write(rec / sid / "student.wav", voiced(240, seed=2 * i + 1), SR)
    transcripts = tmp_path / "utterances.csv"
    pd.concat([LESSON, DIALOGUE[DIALOGUE["session_id"] == "s1"]]).to_csv(transcripts, index=False)
    cfg = Config().override({"asr.backend": "transcripts"})
    res = workflows.extract_folder(rec, tmp_path / "ws", cfg, workers=1, progress=False,
                           transcripts=transcripts)
    assert res.exit_code == 0
    in_class = pd.read_parquet(tmp_path / "ws" / "in_class.parquet")
    code, output, direct = _cli_features(transcripts, tmp_path / "f.parquet")
    assert code == 0, output
    pd.testing.assert_frame_equal(
        in_class.loc[["g", "s1"], TEXT_FEATURE_COLUMNS], direct.loc[["g", "s1"]],
        check_names=False, check_dtype=False,  # in_class stores every feature as float64
    )
    assert in_class.loc["g", "inter_qa_rounds"] == 1 and in_class.loc["g", "inter_turns"] == 6
