"""Small hand-made and random logs for the features tests (helpers, no fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

STUDENTS = """student_id,enrolled_at,grade
s1,2024-01-01T00:00:00,5
s2,2024-01-02T00:00:00,
s3,2024-01-01T12:00:00,8
"""
ORDERS = """order_id,student_id,ordered_at,n_courses,discount_ratio,n_sales_conversations
o1,s1,2024-01-01T10:00:00,10,0.2,3
o2,s1,2024-01-20T12:00:00,5,0.1,1
o3,s2,2024-01-02T08:00:00,4,0.0,2
o4,s3,2024-01-01T13:00:00,8,0.5,0
"""
# s1: classes Jan 2, 4, 6, 9, 15, 18 (T1); follow-ups Jan 3 (120 words), Jan 10 (80 words);
#     reschedule Jan 8; satisfaction Jan 5 (4) and Jan 16 (2)
# s2: classes Jan 3, 5 (T1); dropout Jan 12 12:00
# s3: classes Jan 2, 6 (T1), Jan 10 (T2); completion Jan 14 00:00
EVENTS = """event_id,student_id,time,kind,teacher_id,session_id,words,value
e1,s1,2024-01-02T10:00:00,class,T1,,,
e2,s1,2024-01-04T10:00:00,class,T1,,,
e3,s1,2024-01-06T10:00:00,class,T1,,,
e4,s1,2024-01-09T10:00:00,class,T1,,,
e5,s1,2024-01-15T10:00:00,class,T1,,,
e6,s1,2024-01-18T10:00:00,class,T1,,,
e7,s1,2024-01-03T09:00:00,follow_up,,,120,
e8,s1,2024-01-10T09:00:00,follow_up,,,80,
e9,s1,2024-01-08T09:00:00,reschedule,,,,
e10,s1,2024-01-05T20:00:00,satisfaction,,,,4
e11,s1,2024-01-16T20:00:00,satisfaction,,,,2
e12,s2,2024-01-03T11:00:00,class,T1,,,
e13,s2,2024-01-05T11:00:00,class,T1,,,
e14,s3,2024-01-02T15:00:00,class,T1,,,
e15,s3,2024-01-06T15:00:00,class,T1,,,
e16,s3,2024-01-10T15:00:00,class,T2,,,
e17,s1,2024-01-11T09:00:00,homework,,,,
"""
OUTCOMES = """student_id,status,status_time
s1,ongoing,2024-01-31T00:00:00
s2,dropout,2024-01-12T12:00:00
s3,completion,2024-01-14T00:00:00
"""


def write_logs(folder: Path, students=STUDENTS, orders=ORDERS, events=EVENTS,
               outcomes=OUTCOMES) -> Path:
    """Write the four CSV files into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "students.csv").write_text(students)
    (folder / "orders.csv").write_text(orders)
    (folder / "events.csv").write_text(events)
    (folder / "outcomes.csv").write_text(outcomes)
    return folder


def random_logs(folder: Path, n_students: int = 30, n_teachers: int = 4, days: int = 60,
                seed: int = 0) -> Path:
    """Write random but valid logs (several teachers, dropouts, completions) to ``folder``."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    students, orders, events, outcomes = [], [], [], []
    eid = 0
    for i in range(n_students):
        sid = f"s{i:03d}"
        enrolled = start + pd.Timedelta(hours=int(rng.integers(0, 24 * 10)))
        students.append((sid, enrolled.isoformat(), int(rng.integers(1, 13))))
        for j in range(int(rng.integers(1, 4))):
            t = enrolled + pd.Timedelta(hours=int(rng.integers(0, 24 * days)))
            orders.append((f"o{i}_{j}", sid, t.isoformat(), int(rng.integers(1, 20)),
                           round(float(rng.uniform(0, 1)), 3), int(rng.integers(0, 5))))
        status = rng.choice(["dropout", "completion", "ongoing"], p=[0.4, 0.3, 0.3])
        end = enrolled + pd.Timedelta(hours=int(rng.integers(24 * 10, 24 * days)))
        if status == "ongoing":
            end = start + pd.Timedelta(days=days)
        outcomes.append((sid, status, end.isoformat()))
        t = enrolled + pd.Timedelta(hours=int(rng.integers(1, 48)))
        teacher = f"T{int(rng.integers(0, n_teachers))}"
        while t < end:
            if rng.uniform() < 0.1:
                teacher = f"T{int(rng.integers(0, n_teachers))}"
            events.append((f"e{eid}", sid, t.isoformat(), "class", teacher, "", "", ""))
            eid += 1
            for kind in ("follow_up", "reschedule", "satisfaction", "homework"):
                if rng.uniform() < 0.4:
                    te = t + pd.Timedelta(hours=int(rng.integers(1, 40)))
                    words = int(rng.integers(0, 300)) if kind == "follow_up" else ""
                    value = int(rng.integers(1, 6)) if kind == "satisfaction" else ""
                    events.append((f"e{eid}", sid, te.isoformat(), kind, "", "", words, value))
                    eid += 1
            t = t + pd.Timedelta(hours=int(rng.integers(20, 24 * 5)))
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(students, columns=["student_id", "enrolled_at", "grade"]).to_csv(
        folder / "students.csv", index=False)
    pd.DataFrame(orders, columns=["order_id", "student_id", "ordered_at", "n_courses",
                                  "discount_ratio", "n_sales_conversations"]).to_csv(
        folder / "orders.csv", index=False)
    pd.DataFrame(events, columns=["event_id", "student_id", "time", "kind", "teacher_id",
                                  "session_id", "words", "value"]).to_csv(
        folder / "events.csv", index=False)
    pd.DataFrame(outcomes, columns=["student_id", "status", "status_time"]).to_csv(
        folder / "outcomes.csv", index=False)
    return folder


def with_recorded_classes(logs, seed: int = 0):
    """Give every class event of ``logs`` a recorded session with random in-class values.

    Returns ``(logs, sessions, in_class)``: the logs with ``session_id`` set on the class
    events, a sessions table (one per class, random durations of 10 min–4 h) and three
    Gaussian in-class columns indexed by ``session_id``.
    """
    from dataclasses import replace

    ev = logs.events.copy()
    is_class = ev["kind"] == "class"
    ev.loc[is_class, "session_id"] = "x" + ev.loc[is_class, "event_id"]
    logs = replace(logs, events=ev)
    cls = ev[is_class]
    rng = np.random.default_rng(seed)
    sessions = pd.DataFrame({
        "session_id": cls["session_id"].to_numpy(), "student_id": cls["student_id"].to_numpy(),
        "teacher_id": cls["teacher_id"].to_numpy(), "start_time": cls["time"].to_numpy(),
        "duration_s": rng.uniform(600, 4 * 3600, len(cls)),
    })
    in_class = pd.DataFrame(
        rng.normal(size=(len(sessions), 3)), columns=["teacher_f0", "student_f0", "inter_f0"],
        index=pd.Index(sessions["session_id"], name="session_id"))
    return logs, sessions, in_class
