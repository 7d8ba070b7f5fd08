from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from atrisk.errors import LogValidationError
from atrisk.ingest.logs import load_logs

from .logs_factory import EVENTS, ORDERS, OUTCOMES, STUDENTS, write_logs


def test_good_files_load_with_utc_times(tiny_logs_dir: Path):
    logs = load_logs(tiny_logs_dir)
    assert logs.errors == []
    assert len(logs.students) == 3 and len(logs.orders) == 4
    assert len(logs.events) == 17 and len(logs.outcomes) == 3
    assert str(logs.events["time"].dtype) == "datetime64[ns, UTC]"
    assert logs.events["time"].iloc[0] == pd.Timestamp("2024-01-02T10:00:00", tz="UTC")
    # unknown kind is kept, not an error
    assert (logs.events["kind"] == "homework").sum() == 1
    assert pd.isna(logs.students.set_index("student_id").at["s2", "grade"])
    assert logs.students.set_index("student_id").at["s1", "grade"] == 5
    assert logs.events.set_index("event_id").at["e7", "words"] == 120
    assert logs.latest_time() == pd.Timestamp("2024-01-31", tz="UTC")


def test_offsets_are_converted_to_utc(tmp_path: Path):
    events = EVENTS.replace("e1,s1,2024-01-02T10:00:00", "e1,s1,2024-01-02T12:00:00+02:00")
    logs = load_logs(write_logs(tmp_path / "logs", events=events))
    assert logs.events.set_index("event_id").at["e1", "time"] == pd.Timestamp(
        "2024-01-02T10:00:00", tz="UTC")


def test_bad_rows_are_reported_and_dropped(tmp_path: Path):
    events = EVENTS.replace("e3,s1,2024-01-06T10:00:00", "e3,s1,2024-13-45T10:00:00")  # line 4
    events = events.replace("e8,s1,2024-01-10T09:00:00,follow_up,,,80,",
                            "e8,s1,2024-01-10T09:00:00,follow_up,,,-80,")  # line 9
    events += "e18,s9,2024-01-05T10:00:00,class,T1,,,\n"  # line 19: unknown student
    events += "e1,s1,2024-01-05T10:00:00,class,T1,,,\n"  # line 20: duplicate id
    orders = ORDERS.replace("o2,s1,2024-01-20T12:00:00,5,0.1,1",
                            "o2,s1,2024-01-20T12:00:00,5,1.5,1")  # line 3
    orders = orders.replace("o3,s2,2024-01-02T08:00:00,4,0.0,2",
                            "o3,s2,2024-01-02T08:00:00,-4,0.0,2")  # line 4
    outcomes = OUTCOMES.replace("s3,completion", "s3,graduated")  # line 4
    students = STUDENTS + "s4,yesterday,3\n"  # line 5
    logs = load_logs(write_logs(tmp_path / "logs", students=students, orders=orders,
                                events=events, outcomes=outcomes))
    found = {(Path(e.source).name, e.row): e for e in logs.errors}
    assert set(found) == {("events.csv", 4), ("events.csv", 9), ("events.csv", 19),
                          ("events.csv", 20), ("orders.csv", 3), ("orders.csv", 4),
                          ("outcomes.csv", 4), ("students.csv", 5)}
    assert "bad timestamp" in found[("events.csv", 4)].reason
    assert found[("events.csv", 4)].key == "s1"
    assert "words is negative" in found[("events.csv", 9)].reason
    assert "unknown student 's9'" in found[("events.csv", 19)].reason
    assert "duplicate event_id 'e1' (first on line 2)" in found[("events.csv", 20)].reason
    assert "discount_ratio is above 1" in found[("orders.csv", 3)].reason
    assert "n_courses is negative" in found[("orders.csv", 4)].reason
    assert "bad status 'graduated'" in found[("outcomes.csv", 4)].reason
    assert "bad timestamp in enrolled_at" in found[("students.csv", 5)].reason
    d = found[("orders.csv", 3)].to_dict()
    assert d["row"] == 3 and d["key"] == "s1"
    # the other rows are kept
    assert len(logs.events) == 17 - 2
    assert set(logs.events["event_id"]) == {f"e{i}" for i in range(1, 18)} - {"e3", "e8"}
    assert len(logs.orders) == 2 and len(logs.outcomes) == 2 and len(logs.students) == 3


def test_missing_column_raises(tmp_path: Path):
    orders = "order_id,student_id,ordered_at,n_courses\no1,s1,2024-01-01T10:00:00,10\n"
    with pytest.raises(LogValidationError, match=r"orders\.csv.*discount_ratio, n_sales"):
        load_logs(write_logs(tmp_path / "logs", orders=orders))


def test_missing_file_raises(tiny_logs_dir: Path):
    (tiny_logs_dir / "outcomes.csv").unlink()
    with pytest.raises(LogValidationError, match=r"outcomes\.csv.*missing"):
        load_logs(tiny_logs_dir)


def test_optional_event_columns_may_be_absent(tmp_path: Path):
    events = "event_id,student_id,time,kind\ne1,s1,2024-01-02T10:00:00,class\n"
    logs = load_logs(write_logs(tmp_path / "logs", events=events))
    assert logs.errors == []
    assert logs.events["teacher_id"].iloc[0] == "" and pd.isna(logs.events["words"].iloc[0])
