"""The DuckDB store: keys, events, daily risk replacement, locks, job recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from atrisk.errors import ConfigError
from atrisk.serve.jobs import JobRunner
from atrisk.serve.store import Store, StoreLockedError, hash_key, write_risk


def test_keys_are_stored_hashed_and_checked(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        k = st.create_key("write")
        rows = st.cursor().execute("SELECT key_hash, scope FROM api_keys").fetchall()
        assert rows == [(hash_key(k.key), "write")]
        assert k.key not in str(rows)
        assert len(k.key) >= 40
        assert st.check_key(k.key) == "write"
        assert st.check_key(k.key + "x") is None and st.check_key("") is None
        with pytest.raises(ConfigError, match="scope"):
            st.create_key("admin")


def test_rerunning_a_day_replaces_never_duplicates(tmp_path, tiny_model):
    risk, day = tiny_model["risk"], tiny_model["day"]
    db = tmp_path / "s.duckdb"
    assert write_risk(db, risk, day, 1) == len(risk)
    changed = risk.assign(probability=risk["probability"] * 0.5).iloc[:-1]
    assert write_risk(db, changed, day, 1) == len(risk) - 1
    assert write_risk(db, risk, day, 2) == len(risk)  # another horizon is kept apart
    with Store(db) as st:
        n = st.cursor().execute(
            "SELECT horizon, count(*) FROM risk GROUP BY horizon ORDER BY horizon").fetchall()
        assert n == [(1, len(risk) - 1), (2, len(risk))]
        total, rows = st.risk_page(day, 1, limit=5)
        assert total == len(risk) - 1
        assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0]["probability"] == pytest.approx(risk["probability"].iloc[0] * 0.5)
        assert rows[0]["top_reasons"] == risk["top_reasons"].iloc[0]
        # the risk list's students become known students
        assert st.known_students(risk["student_id"]) == set(risk["student_id"])
    # a bad list changes nothing (one transaction)
    bad = pd.concat([risk, risk.iloc[:1]])
    with pytest.raises(ConfigError, match="twice"):
        write_risk(db, bad, day, 1)
    with Store(db) as st:
        assert st.risk_page(day, 1)[0] == len(risk) - 1


def _list(n: int, scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"student_id": [f"s{i}" for i in range(n)],
                         "probability": [scale * (1 - i / n) for i in range(n)],
                         "rank": range(1, n + 1), "flagged": [i % 3 == 0 for i in range(n)],
                         "top_reasons": [f"r{i}" for i in range(n)]})


def test_risk_pages_come_from_memory_and_a_write_replaces_them(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.write_risk(_list(10), "2024-03-25", 1)
        day = st.risk_day("2024-03-25", 1)
        assert st.risk_day("2024-03-25", 1, cached_only=True) is day  # no second query
        # flagged: s0, s3, s6, s9 (i % 3 == 0) → ranks 1, 4, 7, 10
        assert day.page(2, 1, flagged_only=True) == (4, [3, 6])
        assert day.page(5, 8) == (10, [8, 9]) and day.page(5, 20) == (10, [])
        assert json.loads(day.encoded[3]) == {"student_id": "s3", "probability": 0.7,
                                              "rank": 4, "flagged": True, "top_reasons": "r3"}
        total, rows = st.risk_page("2024-03-25", 1, limit=2, offset=1, flagged_only=True)
        assert total == 4 and [r["student_id"] for r in rows] == ["s3", "s6"]
        st.write_risk(_list(4, scale=0.5), "2024-03-25", 1)  # replacing drops the memory copy
        assert st.risk_day("2024-03-25", 1, cached_only=True) is None
        assert st.risk_page("2024-03-25", 1, limit=1) == (4, [
            {"student_id": "s0", "probability": 0.5, "rank": 1, "flagged": True,
             "top_reasons": "r0"}])
        # an unknown day is an empty list; at most RISK_CACHE_DAYS lists are kept
        assert st.risk_day("2024-01-01", 1).rows == []
        for d in range(1, st.RISK_CACHE_DAYS + 2):
            st.risk_day(f"2023-01-{d:02d}", 1)
        assert len(st._risk_cache) == st.RISK_CACHE_DAYS


def test_a_list_loaded_while_the_day_is_rewritten_is_not_cached(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.write_risk(_list(3), "2024-03-25", 1)
        real_cursor = st.cursor

        class WriteDuringLoad:  # the day is replaced between the load's start and its end
            def execute(self, *args):
                self.rows = real_cursor().execute(*args).fetchall()
                st.cursor = real_cursor  # once
                st.write_risk(_list(2), "2024-03-25", 1)
                return self

            def fetchall(self):
                return self.rows

        st.cursor = WriteDuringLoad
        assert len(st.risk_day("2024-03-25", 1).rows) == 3  # what it read
        assert st.risk_day("2024-03-25", 1, cached_only=True) is None  # … but not kept
        assert len(st.risk_day("2024-03-25", 1).rows) == 2


def test_student_history_in_one_lookup(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.write_risk(_list(3), "2024-03-25", 1)
        st.write_risk(_list(3, scale=0.5).iloc[::-1].assign(rank=[1, 2, 3]), "2024-03-24", 2)
        st.add_events([{"event_id": "b", "student_id": "s1", "time": "2024-03-02", "kind": "class"},
                       {"event_id": "a", "student_id": "s1", "time": "2024-03-01",
                        "kind": "follow_up", "words": 4},
                       {"event_id": "c", "student_id": "s2", "time": "2024-03-01",
                        "kind": "class"}])
        st.upsert_session({"session_id": "c1", "student_id": "s1", "teacher_id": "t",
                           "start_time": "2024-03-01T10:00:00Z"})
        got = st.student("s1")
        assert [(str(r["date"]), r["horizon"], r["rank"]) for r in got["risk"]] == [
            ("2024-03-24", 2, 2), ("2024-03-25", 1, 2)]
        assert got["risk"][1]["probability"] == pytest.approx(2 / 3)
        assert [e["event_id"] for e in got["events"]] == ["a", "b"]
        assert got["events"][0]["words"] == 4 and got["events_by_kind"] == {
            "follow_up": 1, "class": 1}
        assert (got["n_events"], got["n_sessions"]) == (2, 1)
        assert st.student("s0")["events"] == [] and st.student("nobody") is None


def test_events_idempotent_by_id(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        ev = {"event_id": "e1", "student_id": "s1", "time": "2024-03-01T12:00:00+02:00",
              "kind": "class"}
        assert st.add_events([ev, ev]) == ["stored", "duplicate"]
        assert st.add_events([{**ev, "kind": "follow_up"}]) == ["conflict"]
        rows = st.cursor().execute("SELECT event_id, time, kind FROM events").fetchall()
        assert len(rows) == 1 and rows[0][1] == pd.Timestamp("2024-03-01 10:00").to_pydatetime()


HOLD = textwrap.dedent("""
    import sys, time
    from atrisk.serve.store import Store
    s = Store(sys.argv[1]); print("held", flush=True); time.sleep(60)
""")


def test_locked_file_gives_clear_error_naming_the_process(tmp_path):
    db = tmp_path / "s.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError) as err:
            Store(db)
        msg = str(err.value)
        assert str(db) in msg and f"process {holder.pid}" in msg
        with pytest.raises(StoreLockedError):
            write_risk(db, pd.DataFrame(), "2024-01-01", 1)
    finally:
        holder.kill()
        holder.wait()


def test_recovery_requeues_running_jobs_and_gives_up_after_max_attempts(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        a = st.create_job("extract", {"workspace": str(tmp_path / "w"),
                                      "recordings": str(tmp_path / "gone")})
        b = st.create_job("extract", {"workspace": str(tmp_path / "w")})
        st.update_job(a, "running", attempt=True)
        for _ in range(3):
            st.update_job(b, "running", attempt=True)
        runner = JobRunner(st, max_attempts=3)
        assert runner.recover() == [a]
        assert st.job(a)["state"] == "queued"
        job_b = st.job(b)
        assert job_b["state"] == "failed" and "stopped during this job 3 times" in job_b["error"]
        runner.run_one(a)  # its recordings folder vanished: failed with the reason
        job_a = st.job(a)
        assert job_a["state"] == "failed" and "gone" in job_a["error"]
        assert "does not exist" in job_a["error"] and job_a["attempts"] == 2
