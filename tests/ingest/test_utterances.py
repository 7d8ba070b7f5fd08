import math

import numpy as np
import pandas as pd
import pytest

from atrisk.errors import RowError, TranscriptError
from atrisk.ingest.utterances import load_utterances

HEADER = "session_id,speaker,start_s,end_s,text\n"


def _write(tmp_path, body: str | bytes, name: str = "utts.csv"):
    path = tmp_path / name
    if isinstance(body, str):
        path.write_text(body, encoding="utf-8")
    else:
        path.write_bytes(body)
    return path


def test_good_csv_is_cleaned_and_sorted(tmp_path):
    path = _write(
        tmp_path,
        HEADER
        + "s2,teacher,1.0,2.0,Hello\n"
        + "s1,Student,5.0,6.5,Later\n"
        + "s1,TEACHER,0.5,1.5,Earlier\n",
    )
    df, problems = load_utterances(path)
    assert problems == []
    assert list(df.columns) == ["session_id", "speaker", "start_s", "end_s", "text"]
    assert df["session_id"].tolist() == ["s1", "s1", "s2"]
    assert df["speaker"].tolist() == ["teacher", "student", "teacher"]
    assert df["start_s"].tolist() == [0.5, 5.0, 1.0]
    assert df["end_s"].dtype == np.float64
    assert df.index.tolist() == [0, 1, 2]


def test_optional_columns_kept_in_record_order(tmp_path):
    path = _write(
        tmp_path,
        "text,confidence,end_s,extra,start_s,speaker,session_id\nhi there,0.75,2,x,1,teacher,s1\n",
    )
    df, problems = load_utterances(path)
    assert problems == []
    assert list(df.columns) == ["session_id", "speaker", "start_s", "end_s", "text", "confidence"]
    assert df.loc[0, "confidence"] == pytest.approx(0.75)


def test_parquet(tmp_path):
    path = tmp_path / "u.parquet"
    pd.DataFrame(
        {
            "session_id": ["a", "a"],
            "speaker": ["student", "robot"],
            "start_s": [0.0, 1.0],
            "end_s": [1.0, 2.0],
            "text": ["yes", "beep"],
        }
    ).to_parquet(path)
    df, problems = load_utterances(path)
    assert df["text"].tolist() == ["yes"]
    assert len(problems) == 1 and problems[0].row == 2  # 1-based record number
    assert "robot" in problems[0].reason


def test_missing_file_names_file_and_columns(tmp_path):
    with pytest.raises(TranscriptError, match="nope.csv.*session_id, speaker"):
        load_utterances(tmp_path / "nope.csv")


def test_missing_columns_named(tmp_path):
    path = _write(tmp_path, "session_id,speaker,text\ns1,teacher,hi\n")
    with pytest.raises(TranscriptError) as exc:
        load_utterances(path)
    msg = str(exc.value)
    assert str(path) in msg and "start_s, end_s" in msg


def test_unsupported_suffix(tmp_path):
    path = _write(tmp_path, HEADER, name="u.xlsx")
    with pytest.raises(TranscriptError, match="unsupported suffix"):
        load_utterances(path)


def test_empty_file_is_an_error_but_header_only_is_empty_table(tmp_path):
    with pytest.raises(TranscriptError, match="empty"):
        load_utterances(_write(tmp_path, ""))
    df, problems = load_utterances(_write(tmp_path, HEADER, name="h.csv"))
    assert len(df) == 0 and problems == []
    assert list(df.columns) == ["session_id", "speaker", "start_s", "end_s", "text"]


def test_bad_speaker_is_row_error_with_line(tmp_path):
    path = _write(tmp_path, HEADER + "s1,teacher,0,1,ok\ns1,T,1,2,short name\n")
    df, problems = load_utterances(path)
    assert len(df) == 1
    assert len(problems) == 1
    p = problems[0]
    assert isinstance(p, RowError)
    assert (p.row, p.key, p.source) == (3, "s1", str(path))
    assert "'T'" in p.reason


def test_end_before_start_dropped_with_row_error_naming_line(tmp_path):
    path = _write(tmp_path, HEADER + "s1,teacher,0,1,ok\ns1,student,5,4,backwards\n")
    df, problems = load_utterances(path)
    assert df["text"].tolist() == ["ok"]
    assert [p.row for p in problems] == [3]
    assert "end_s=4.0 is before start_s=5.0" in problems[0].reason
    assert str(problems[0]).startswith(f"{path}:3:")


def test_non_numeric_times_kept_as_nan(tmp_path):
    path = _write(tmp_path, HEADER + "s1,teacher,abc,1,kept\ns1,student,,,no times\n")
    df, problems = load_utterances(path)
    assert df["text"].tolist() == ["kept", "no times"]
    assert math.isnan(df.loc[0, "start_s"]) and df.loc[0, "end_s"] == 1.0
    # Empty cells are silently missing; garbage is reported (row kept).
    assert [p.row for p in problems] == [2]
    assert "start_s='abc'" in problems[0].reason and "kept" in problems[0].reason


def test_empty_text_dropped_silently(tmp_path):
    path = _write(tmp_path, HEADER + 's1,teacher,0,1,"   "\ns1,teacher,1,2,\ns1,student,2,3,hi\n')
    df, problems = load_utterances(path)
    assert df["text"].tolist() == ["hi"]
    assert problems == []


def test_non_utf8_file_loads_with_reported_problem(tmp_path):
    body = (HEADER + "s1,teacher,0,1,caf").encode() + b"\xe9 au lait\n" + b"s1,student,1,2,ok\n"
    path = _write(tmp_path, body)
    df, problems = load_utterances(path)
    assert len(df) == 2
    assert df.loc[0, "text"] == "caf\ufffd au lait"
    assert len(problems) == 1
    assert problems[0].row is None
    assert "UTF-8" in problems[0].reason and "line(s) 2" in problems[0].reason


def test_wrong_field_count_and_multiline_field_line_numbers(tmp_path):
    path = _write(
        tmp_path,
        HEADER
        + 's1,teacher,0,1,"two\nlines"\n'  # lines 2-3
        + "s1,student,1,2\n"  # line 4: one field short
        + "s1,student,3,2,bad times\n",  # line 5
    )
    df, problems = load_utterances(path)
    assert df["text"].tolist() == ["two\nlines"]
    assert [p.row for p in problems] == [4, 5]
    assert "4 field(s)" in problems[0].reason


def test_negative_start_dropped(tmp_path):
    df, problems = load_utterances(_write(tmp_path, HEADER + "s1,teacher,-1,1,hmm\n"))
    assert len(df) == 0
    assert problems[0].row == 2 and "negative" in problems[0].reason


def test_utf8_bom_and_tsv(tmp_path):
    body = "\ufeffsession_id\tspeaker\tstart_s\tend_s\ttext\ns1\tstudent\t0\t1\thi, there\n"
    df, problems = load_utterances(_write(tmp_path, body, name="u.tsv"))
    assert problems == []
    assert df.loc[0, "session_id"] == "s1" and df.loc[0, "text"] == "hi, there"


def test_a_huge_utterance_or_a_nul_byte_drops_that_row_only(tmp_path):
    path = _write(tmp_path, HEADER + "s1,teacher,0,1,hello\n"
                  f"s1,student,1,2,{'a' * 1_000_000}\n"
                  "s1,student,2,3,ok\x00no\n"
                  "s1,student,3,4,fine\n")
    df, problems = load_utterances(path)
    assert df["text"].tolist() == ["hello", "fine"]
    assert [(p.row, p.reason) for p in problems] == [
        (3, "text has 1000000 characters (at most 100000); row dropped"),
        (4, "text contains a NUL byte; row dropped")]
