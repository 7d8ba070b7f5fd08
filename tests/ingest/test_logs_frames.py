"""Logs.from_frames validates tables held in memory exactly as Logs.read validates files."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from atrisk import Logs
from atrisk.errors import LogValidationError
from tests.features.logs_factory import EVENTS, ORDERS, OUTCOMES, STUDENTS, write_logs


def _frames(**text: str) -> dict[str, pd.DataFrame]:
    src = {"students": STUDENTS, "orders": ORDERS, "events": EVENTS, "outcomes": OUTCOMES}
    src.update(text)
    return {k: pd.read_csv(io.StringIO(v), dtype=str, keep_default_na=False)
            for k, v in src.items()}


def _same(a: Logs, b: Logs) -> None:
    for name in ("students", "orders", "events", "outcomes"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_frames_of_strings_give_the_logs_of_the_files(tmp_path):
    _same(Logs.from_frames(**_frames()), Logs.read(write_logs(tmp_path / "logs")))


def test_typed_frames_give_the_same_logs(tmp_path):
    typed = {k: pd.read_csv(io.StringIO(v)) for k, v in
             {"students": STUDENTS, "orders": ORDERS, "events": EVENTS,
              "outcomes": OUTCOMES}.items()}
    for name, col in (("students", "enrolled_at"), ("orders", "ordered_at"),
                      ("events", "time"), ("outcomes", "status_time")):
        typed[name][col] = pd.to_datetime(typed[name][col], format="ISO8601")  # naive = UTC
    _same(Logs.from_frames(**typed), Logs.read(write_logs(tmp_path / "logs")))


def test_bad_rows_name_the_table_and_row_and_the_rest_is_kept(tmp_path):
    events = EVENTS.replace("e3,s1,2024-01-06T10:00:00", "e3,s1,2024-13-45T10:00:00")
    events += "e18,s9,2024-01-05T10:00:00,class,T1,,,\n"
    from_frames = Logs.from_frames(**_frames(events=events))
    from_files = Logs.read(write_logs(tmp_path / "logs", events=events))
    _same(from_frames, from_files)
    got = {(e.source, e.row, e.reason) for e in from_frames.errors}
    assert got == {
        ("events frame", 2, "bad timestamp in time: '2024-13-45T10:00:00'"),
        ("events frame", 17, "unknown student 's9' (not in students.csv)"),
    }
    # the file errors name the same rows by line (header = line 1, so position + 2)
    assert {(e.row - 2, e.reason) for e in from_files.errors} == {
        (row, reason) for _, row, reason in got}


def test_missing_tables_and_columns():
    logs = Logs.from_frames(students=_frames()["students"])  # no orders, events, outcomes
    assert len(logs.students) == 3 and logs.events.empty and logs.errors == []
    with pytest.raises(LogValidationError, match="events frame: missing column"):
        Logs.from_frames(**{**_frames(), "events": pd.DataFrame({"event_id": ["e1"]})})
    with pytest.raises(LogValidationError, match="expected a pandas DataFrame"):
        Logs.from_frames(students=[{"student_id": "s1"}])
