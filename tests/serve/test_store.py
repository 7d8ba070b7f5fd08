"""The DuckDB store: keys, events, daily risk replacement, locks, job recovery."""

from __future__ import annotations

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
