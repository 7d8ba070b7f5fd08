"""The service's clock: recordings purged N days after extraction (features kept), daily runs."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import soundfile as sf

from atrisk.extract.plan import part_path
from atrisk.serve.jobs import JobRunner, Scheduler, parse_hhmm
from atrisk.serve.paths import DataRoot
from atrisk.serve.store import Store
from atrisk.workspace import Workspace
from tests.conftest import SR, voiced

ORG = "north"


def _session(st: Store, root: DataRoot, sid: str, student: str, day: int) -> None:
    folder = root.uploads(ORG, sid)
    folder.mkdir(parents=True, exist_ok=True)
    for track, f0 in (("teacher", 110 + day), ("student", 220 + day)):
        sf.write(folder / f"{track}.wav", voiced(f0, seconds=2, seed=day), SR)
    st.upsert_session({"session_id": sid, "student_id": student, "teacher_id": "T1",
                       "start_time": f"2024-03-{day:02d}T10:00:00Z",
                       "teacher_path": f"uploads/{sid}/teacher.wav",
                       "student_path": f"uploads/{sid}/student.wav"}, org=ORG)


def _extract(st: Store, runner: JobRunner) -> dict:
    job = st.create_job("extract", {}, org=ORG)
    runner.run_one(job)
    got = st.job(job)
    assert got["state"] == "done", got["error"]
    return got["result"]


def test_purged_recordings_keep_their_features_in_later_extracts(tmp_path):
    root = DataRoot(tmp_path / "root")
    ws = root.org_dir(ORG) / "workspace"
    with Store(tmp_path / "s.duckdb") as st:
        st.upsert_students([{"student_id": s} for s in ("A", "B", "C")], org=ORG)
        _session(st, root, "a1", "A", 1)
        _session(st, root, "b1", "B", 2)
        runner = JobRunner(st, root)
        first = _extract(st, runner)
        assert (first["n_sessions"], first["n_ok"]) == (2, 2)
        before = Workspace(ws).read("in_class").sort_index()
        clock = Scheduler(runner, retain_days=7)
        now = datetime.now(UTC)
        assert clock.tick(now)["purged"] == {"sessions": 0, "files": 0}  # extracted today
        clock = Scheduler(runner, retain_days=7)
        st.cursor().execute("UPDATE sessions SET extracted_at = ?",
                            [(now - timedelta(days=8)).replace(tzinfo=None)])
        assert clock.tick(now)["purged"] == {"sessions": 2, "files": 6}  # 4 tracks, 2 parts
        assert not list(root.uploads(ORG).rglob("*.wav"))
        assert not part_path(ws, "a1", "x").parent.exists()
        row = st.session("a1", org=ORG)
        assert row["purged_at"] is not None and row["teacher_path"] is None
        assert clock.tick(now + timedelta(minutes=5))["purged"] is None  # once an hour
        # a new class: extracted; the purged ones keep their rows
        _session(st, root, "c1", "C", 3)
        second = _extract(st, runner)
        assert (second["n_sessions"], second["n_ok"], second["n_carried"]) == (1, 1, 2)
        after = Workspace(ws).read("in_class").sort_index()
        assert list(after.index) == ["a1", "b1", "c1"]
        assert after.loc[["a1", "b1"]].equals(before.loc[["a1", "b1"]])
        sessions = Workspace(ws).read("sessions")
        assert sorted(sessions["session_id"]) == ["a1", "b1", "c1"]
        assert set(sessions["status"]) == {"ok"}


def test_the_daily_run_is_submitted_once_a_day_after_its_time(tmp_path):
    root = DataRoot(tmp_path / "root")
    with Store(tmp_path / "s.duckdb") as st:
        st.upsert_students([{"student_id": "A"}], org="north")
        st.upsert_students([{"student_id": "B"}], org="south")
        st.upsert_session({"session_id": "s1", "student_id": "A", "teacher_id": "T",
                           "start_time": "2024-03-01T10:00:00Z"}, org="north")
        clock = Scheduler(JobRunner(st, root), predict_at=parse_hhmm("06:30"))
        day = datetime(2024, 3, 5, tzinfo=UTC)
        assert clock.tick(day.replace(hour=6, minute=29))["submitted"] == []
        ids = clock.tick(day.replace(hour=6, minute=31))["submitted"]
        jobs = [st.job(i) for i in ids]
        assert [(j["org_id"], j["kind"], j["params"]) for j in jobs] == [
            ("north", "extract", {}), ("north", "predict", {"date": "2024-03-05"}),
            ("south", "predict", {"date": "2024-03-05"})]
        assert clock.tick(day.replace(hour=23))["submitted"] == []
        # a restarted service does not run the day again
        again = Scheduler(JobRunner(st, root), predict_at=time(6, 30))
        assert again.tick(day.replace(hour=7))["submitted"] == []
        assert len(again.tick(day + timedelta(days=1, hours=7))["submitted"]) == 3
