"""sessions.csv reading: validation, row errors, track discovery."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atrisk.errors import ManifestError, RowError
from atrisk.ingest.manifest import (
    AUDIO_EXTENSIONS,
    describe_missing_track,
    find_track,
    iter_manifest,
    read_manifest,
)

HEADER = "session_id,student_id,teacher_id,start_time"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write(rec: Path, text: str) -> Path:
    rec.mkdir(parents=True, exist_ok=True)
    (rec / "sessions.csv").write_text(text, encoding="utf-8")
    return rec


def test_good_rows_and_times(tmp_path):
    rec = _write(tmp_path / "recordings", "\n".join([
        HEADER,
        "s1,u1,t1,2024-03-01T15:30:00+08:00",
        "s2,u2,t1,2024-03-02 10:00:00",
        " s3 , u3 , t2 ,2024-03-03T09:15:00Z",
    ]) + "\n")
    for sid in ("s1", "s2", "s3"):
        _touch(rec / sid / "teacher.wav")
        _touch(rec / sid / "student.flac")
    sessions, errors = read_manifest(rec)
    assert errors == []
    assert [s.session_id for s in sessions] == ["s1", "s2", "s3"]
    assert sessions[0].start_time == datetime(2024, 3, 1, 7, 30, tzinfo=UTC)
    assert sessions[1].start_time == datetime(2024, 3, 2, 10, 0, tzinfo=UTC)
    assert sessions[2].start_time == datetime(2024, 3, 3, 9, 15, tzinfo=UTC)
    assert all(s.start_time.utcoffset().total_seconds() == 0 for s in sessions)
    assert sessions[2].student_id == "u3" and sessions[2].teacher_id == "t2"
    assert sessions[0].teacher_path == rec / "s1" / "teacher.wav"
    assert sessions[0].student_path == rec / "s1" / "student.flac"


def test_bad_rows_are_reported_with_line_numbers_and_skipped(tmp_path):
    rec = _write(tmp_path / "rec", "\n".join([
        HEADER,                                 # line 1
        "s1,u1,t1,2024-03-01T10:00:00",         # 2 ok
        "s2,u1,t1,2024-13-45",                  # 3 bad date
        "s3,ghost,t1,2024-03-01T10:00:00",      # 4 unknown student
        "s1,u2,t1,2024-03-01T11:00:00",         # 5 duplicate id
        "s4,u2,t2,yesterday",                   # 6 bad date
        ",u2,t2,2024-03-01T11:00:00",           # 7 empty id
        "s5,u2,,2024-03-01T11:00:00",           # 8 empty teacher
        "",                                     # 9 blank line: ignored
        "s6,u2,t2,2024-03-04",                  # 10 ok (date only)
    ]) + "\n")
    sessions, errors = read_manifest(rec, known_students={"u1", "u2"})
    assert [s.session_id for s in sessions] == ["s1", "s6"]
    assert sessions[1].start_time == datetime(2024, 3, 4, tzinfo=UTC)
    assert all(isinstance(e, RowError) for e in errors)
    assert [e.row for e in errors] == [3, 4, 5, 6, 7, 8]
    assert [e.key for e in errors] == ["s2", "s3", "s1", "s4", None, "s5"]
    by_row = {e.row: e.reason for e in errors}
    assert "start_time '2024-13-45' is not an ISO 8601" in by_row[3]
    assert by_row[4] == "unknown student 'ghost' (not in logs/students.csv)"
    assert by_row[5] == "duplicate session_id 's1' (first on line 2)"
    assert "'yesterday'" in by_row[6]
    assert by_row[7] == "empty session_id"
    assert by_row[8] == "empty teacher_id"
    assert all(e.source == str(rec / "sessions.csv") for e in errors)
    assert str(errors[0]) == f"{rec / 'sessions.csv'}:3: {by_row[3]}"


def test_unknown_student_not_checked_without_known_set(tmp_path):
    rec = _write(tmp_path / "rec", HEADER + "\ns3,ghost,t1,2024-03-01T10:00:00\n")
    sessions, errors = read_manifest(rec)
    assert [s.student_id for s in sessions] == ["ghost"] and errors == []


def test_quoted_multiline_field_keeps_line_numbers(tmp_path):
    rec = _write(tmp_path / "rec", HEADER + ',note\n'
                 's1,u1,t1,2024-03-01T10:00:00,"two\nlines"\n'
                 's2,u1,t1,bad,x\n')
    sessions, errors = read_manifest(rec)
    assert [s.session_id for s in sessions] == ["s1"]
    assert [e.row for e in errors] == [4]


def test_path_like_session_id_is_rejected(tmp_path):
    rec = _write(tmp_path / "rec", HEADER + "\n../x,u1,t1,2024-03-01\n")
    sessions, errors = read_manifest(rec)
    assert sessions == [] and "cannot be used as a folder name" in errors[0].reason


def test_missing_track_is_none_not_an_error(tmp_path):
    rec = _write(tmp_path / "rec", HEADER + "\ns3,u1,t1,2024-03-01\ns4,u1,t1,2024-03-01\n")
    _touch(rec / "s3" / "teacher.mp3")
    sessions, errors = read_manifest(rec)
    assert errors == []
    assert sessions[0].teacher_path == rec / "s3" / "teacher.mp3"
    assert sessions[0].student_path is None
    assert sessions[1].teacher_path is None and sessions[1].student_path is None  # no folder
    msg = describe_missing_track(Path("recordings"), "s3", "student")
    assert msg.startswith("recordings/s3/student.*: no student track found (looked for .wav, .flac")
    assert all(ext in msg for ext in AUDIO_EXTENSIONS)


def test_discovery_order_case_and_non_audio(tmp_path):
    rec = tmp_path / "rec"
    _touch(rec / "s1" / "teacher.mp4")
    _touch(rec / "s1" / "teacher.flac")
    _touch(rec / "s1" / "Student.WAV")
    _touch(rec / "s1" / "student.txt")
    (rec / "s1" / "teacher.wav").mkdir()  # a folder is not a track
    assert find_track(rec, "s1", "teacher") == rec / "s1" / "teacher.flac"
    assert find_track(rec, "s1", "student") == rec / "s1" / "Student.WAV"
    assert find_track(rec, "nope", "student") is None


def test_explicit_paths_relative_and_absolute(tmp_path):
    other = _touch(tmp_path / "elsewhere" / "kid.ogg")
    rec = _write(tmp_path / "rec", HEADER + ",teacher_path,student_path\n"
                 f"s1,u1,t1,2024-03-01,audio/t1.m4a,{other}\n"
                 "s2,u1,t1,2024-03-01,,\n")
    _touch(rec / "audio" / "t1.m4a")
    _touch(rec / "s2" / "teacher.opus")
    _touch(rec / "s2" / "student.webm")
    sessions, errors = read_manifest(rec)
    assert errors == []
    assert sessions[0].teacher_path == rec / "audio" / "t1.m4a"
    assert sessions[0].student_path == other
    # empty explicit columns fall back to discovery
    assert sessions[1].teacher_path == rec / "s2" / "teacher.opus"
    assert sessions[1].student_path == rec / "s2" / "student.webm"


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="sessions.csv") as err:
        read_manifest(tmp_path)
    assert "not found" in str(err.value)


def test_missing_columns(tmp_path):
    rec = _write(tmp_path / "rec", "session_id,student_id\ns1,u1\n")
    with pytest.raises(ManifestError, match="teacher_id, start_time") as err:
        read_manifest(rec)
    assert str(rec / "sessions.csv") in str(err.value)


def test_unreadable_bytes_and_empty_file(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "sessions.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00\x9f" * 20)
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(rec)
    (rec / "sessions.csv").write_bytes(b"")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(rec)


def test_ten_thousand_rows_are_fast(tmp_path):
    rows = [HEADER] + [f"s{i},u{i % 97},t{i % 13},2024-03-01T10:{i % 60:02d}:00"
                       for i in range(10_000)]
    rec = _write(tmp_path / "rec", "\n".join(rows) + "\n")
    for i in range(0, 10_000, 1000):
        _touch(rec / f"s{i}" / "teacher.wav")
    start = time.perf_counter()
    sessions, errors = read_manifest(rec)
    elapsed = time.perf_counter() - start
    assert len(sessions) == 10_000 and errors == []
    assert sum(s.teacher_path is not None for s in sessions) == 10
    assert elapsed < 5.0, f"10,000 rows took {elapsed:.2f} s"
    # streaming: the first item comes without reading the whole file into Sessions
    first = next(iter_manifest(rec))
    assert first.session_id == "s0"


def test_row_with_too_many_fields(tmp_path):
    rec = _write(tmp_path / "rec", HEADER + "\ns1,u1,t1,2024-03-01,oops\ns2,u1,t1,2024-03-01\n")
    sessions, errors = read_manifest(rec)
    assert [s.session_id for s in sessions] == ["s2"]
    assert errors[0].row == 2 and errors[0].reason == "has 5 fields but the header has 4"


def test_a_nul_byte_or_a_huge_field_is_a_row_error_not_a_crash(tmp_path):
    rec = tmp_path / "rec"
    _write(rec, HEADER + ",teacher_path\n"
           "s\x001,S1,T1,2024-03-01T10:00:00Z,\n"
           "s2,S1,T1,2024-03-01T10:00:00Z,a\x00b.wav\n"
           f"s3,S1,T1,2024-03-01T10:00:00Z,{'x' * 200_000}.wav\n"
           "s4,S1,T1,2024-03-01T10:00:00Z,\n")
    sessions, errors = read_manifest(rec)
    assert [s.session_id for s in sessions] == ["s4"]
    assert [(e.row, e.key) for e in errors] == [(2, None), (3, "s2"), (4, "s3")]
    assert "session_id contains a NUL byte" in errors[0].reason
    assert "teacher_path contains a NUL byte" in errors[1].reason
    assert "teacher_path has 200004 characters (at most 4096)" in errors[2].reason


def test_extract_lists_a_nul_row_and_does_the_rest(tmp_path):
    import json
    import subprocess
    import sys

    from atrisk.testing import small_recordings

    rec = small_recordings(tmp_path / "rec", n=2)
    with open(rec / "sessions.csv", "a", encoding="utf-8") as fh:
        fh.write("bad\x00id,stu9,tea1,2024-03-09T10:00:00Z\n")
    r = subprocess.run([sys.executable, "-m", "atrisk", "extract", str(rec), "--out",
                        str(tmp_path / "ws"), "--asr-backend", "transcripts", "--workers", "1",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    res = json.loads(r.stdout)
    assert res["n_sessions"] == 2 and res["n_failed"] == 0
    assert any(f["row"] == 4 and "NUL" in f["reason"] for f in res["failures"])
