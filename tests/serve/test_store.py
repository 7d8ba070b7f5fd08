"""The DuckDB store: keys, events, daily risk replacement, locks, job recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from atrisk.errors import ConfigError
from atrisk.serve.jobs import JobRunner
from atrisk.serve.keys import KeyStore, Principal, hash_key, keystore_path
from atrisk.serve.paths import DataRoot
from atrisk.serve.store import Store, StoreLockedError, write_risk

ORG = "default"


def test_keys_are_stored_hashed_checked_revoked_and_expire(tmp_path):
    keys = KeyStore(keystore_path(tmp_path / "s.duckdb"))
    k = keys.create_key("write", "north", label="backend")
    rows = keys._con().execute("SELECT key_hash, scope, org_id FROM keys").fetchall()
    assert rows == [(hash_key(k.key), "write", "north")]
    assert k.key not in str(rows) and len(k.key) >= 40
    assert keys.lookup(k.key) == Principal(k.key_id, "north", "write")
    assert keys.lookup(k.key + "x") is None and keys.lookup("") is None
    assert keys.orgs() == ["north"]
    with pytest.raises(ConfigError, match="scope"):
        keys.create_key("root", "north")
    with pytest.raises(ConfigError, match="belongs to an organisation"):
        keys.create_key("read")
    with pytest.raises(ConfigError, match="not a valid id"):
        keys.create_key("read", "../x")
    with pytest.raises(ConfigError, match="in the past"):
        keys.create_key("read", "north", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    admin = keys.create_key("admin")  # the operator's key: no organisation
    assert keys.lookup(admin.key) == Principal(admin.key_id, None, "admin")
    short = keys.create_key("read", "south", expires_at=datetime.now(UTC) + timedelta(
        seconds=0.3))
    assert keys.lookup(short.key) is not None
    time.sleep(0.4)
    assert keys.lookup(short.key) is None
    assert keys.revoke(k.key_id, "south") is False  # another organisation's key
    assert keys.revoke(k.key_id) is True and keys.lookup(k.key) is None
    assert keys.revoke(k.key_id) is False
    states = {r["key_id"]: r["state"] for r in keys.list_keys()}
    assert states == {k.key_id: "revoked", admin.key_id: "active", short.key_id: "expired"}
    assert [r["key_id"] for r in keys.list_keys("south")] == [short.key_id]
    assert all("hash" not in c for r in keys.list_keys() for c in r)


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
        total, rows = st.risk_page(day, 1, limit=5, org=ORG)
        assert total == len(risk) - 1
        assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0]["probability"] == pytest.approx(risk["probability"].iloc[0] * 0.5)
        assert rows[0]["top_reasons"] == risk["top_reasons"].iloc[0]
        # the risk list's students become known students
        assert st.known_students(risk["student_id"], org=ORG) == set(risk["student_id"])
    # a bad list changes nothing (one transaction)
    bad = pd.concat([risk, risk.iloc[:1]])
    with pytest.raises(ConfigError, match="twice"):
        write_risk(db, bad, day, 1)
    with Store(db) as st:
        assert st.risk_page(day, 1, org=ORG)[0] == len(risk) - 1


def _list(n: int, scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"student_id": [f"s{i}" for i in range(n)],
                         "probability": [scale * (1 - i / n) for i in range(n)],
                         "rank": range(1, n + 1), "flagged": [i % 3 == 0 for i in range(n)],
                         "top_reasons": [f"r{i}" for i in range(n)]})


def test_risk_pages_come_from_memory_and_a_write_replaces_them(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.write_risk(_list(10), "2024-03-25", 1, org=ORG)
        day = st.risk_day("2024-03-25", 1, org=ORG)
        assert st.risk_day("2024-03-25", 1, org=ORG, cached_only=True) is day  # no second query
        # flagged: s0, s3, s6, s9 (i % 3 == 0) → ranks 1, 4, 7, 10
        assert day.page(2, 1, flagged_only=True) == (4, [3, 6])
        assert day.page(5, 8) == (10, [8, 9]) and day.page(5, 20) == (10, [])
        assert json.loads(day.encoded[3]) == {"student_id": "s3", "probability": 0.7,
                                              "rank": 4, "flagged": True, "top_reasons": "r3"}
        total, rows = st.risk_page("2024-03-25", 1, limit=2, offset=1, flagged_only=True, org=ORG)
        assert total == 4 and [r["student_id"] for r in rows] == ["s3", "s6"]
        # replacing drops the memory copy
        st.write_risk(_list(4, scale=0.5), "2024-03-25", 1, org=ORG)
        assert st.risk_day("2024-03-25", 1, org=ORG, cached_only=True) is None
        assert st.risk_page("2024-03-25", 1, limit=1, org=ORG) == (4, [
            {"student_id": "s0", "probability": 0.5, "rank": 1, "flagged": True,
             "top_reasons": "r0"}])
        # an unknown day is an empty list; at most RISK_CACHE_DAYS lists are kept
        assert st.risk_day("2024-01-01", 1, org=ORG).rows == []
        for d in range(1, st.RISK_CACHE_DAYS + 2):
            st.risk_day(f"2023-01-{d:02d}", 1, org=ORG)
        assert len(st._risk_cache) == st.RISK_CACHE_DAYS


def test_a_list_loaded_while_the_day_is_rewritten_is_not_cached(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.write_risk(_list(3), "2024-03-25", 1, org=ORG)
        real_cursor = st.cursor

        class WriteDuringLoad:  # the day is replaced between the load's start and its end
            def execute(self, *args):
                self.rows = real_cursor().execute(*args).fetchall()
                st.cursor = real_cursor  # once
                st.write_risk(_list(2), "2024-03-25", 1, org=ORG)
                return self

            def fetchall(self):
                return self.rows

        st.cursor = WriteDuringLoad
        assert len(st.risk_day("2024-03-25", 1, org=ORG).rows) == 3  # what it read
        assert st.risk_day("2024-03-25", 1, org=ORG, cached_only=True) is None  # … but not kept
        assert len(st.risk_day("2024-03-25", 1, org=ORG).rows) == 2


def test_student_history_in_one_lookup(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.write_risk(_list(3), "2024-03-25", 1, org=ORG)
        st.write_risk(_list(3, scale=0.5).iloc[::-1].assign(rank=[1, 2, 3]), "2024-03-24", 2,
                      org=ORG)
        st.add_events([{"event_id": "b", "student_id": "s1", "time": "2024-03-02", "kind": "class"},
                       {"event_id": "a", "student_id": "s1", "time": "2024-03-01",
                        "kind": "follow_up", "words": 4},
                       {"event_id": "c", "student_id": "s2", "time": "2024-03-01",
                        "kind": "class"}], org=ORG)
        st.upsert_session({"session_id": "c1", "student_id": "s1", "teacher_id": "t",
                           "start_time": "2024-03-01T10:00:00Z"}, org=ORG)
        got = st.student("s1", org=ORG)
        assert [(str(r["date"]), r["horizon"], r["rank"]) for r in got["risk"]] == [
            ("2024-03-24", 2, 2), ("2024-03-25", 1, 2)]
        assert got["risk"][1]["probability"] == pytest.approx(2 / 3)
        assert [e["event_id"] for e in got["events"]] == ["a", "b"]
        assert got["events"][0]["words"] == 4 and got["events_by_kind"] == {
            "follow_up": 1, "class": 1}
        assert (got["n_events"], got["n_sessions"]) == (2, 1)
        assert st.student("s0", org=ORG)["events"] == []
        assert st.student("nobody", org=ORG) is None
        assert st.student("s1", org="other") is None  # another organisation's student
        page = st.student("s1", org=ORG, events_limit=1, events_offset=1)
        assert [e["event_id"] for e in page["events"]] == ["b"] and page["n_events"] == 2


def test_events_idempotent_by_id(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        ev = {"event_id": "e1", "student_id": "s1", "time": "2024-03-01T12:00:00+02:00",
              "kind": "class"}
        assert st.add_events([ev, ev], org=ORG) == ["stored", "duplicate"]
        assert st.add_events([{**ev, "kind": "follow_up"}], org=ORG) == ["conflict"]
        assert st.add_events([ev], org="other") == ["stored"]  # ids are per organisation
        rows = st.cursor().execute(
            "SELECT event_id, time, kind FROM events WHERE org_id = 'default'").fetchall()
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
        a = st.create_job("extract", {"workspace": "w", "recordings": "gone"}, org=ORG)
        b = st.create_job("extract", {"workspace": "w"}, org=ORG)
        st.update_job(a, "running", attempt=True)
        for _ in range(3):
            st.update_job(b, "running", attempt=True)
        runner = JobRunner(st, DataRoot(tmp_path / "root"), max_attempts=3)
        assert runner.recover() == [a]
        assert st.job(a)["state"] == "queued"
        job_b = st.job(b)
        assert job_b["state"] == "failed" and "stopped during this job 3 times" in job_b["error"]
        runner.run_one(a)  # its recordings folder vanished: failed with the reason
        job_a = st.job(a)
        assert job_a["state"] == "failed" and "'gone' is not a folder" in job_a["error"]
        assert str(tmp_path) not in job_a["error"] and job_a["attempts"] == 2


def test_organisations_see_only_their_rows(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.upsert_students([{"student_id": "s1"}], org="north")
        st.upsert_students([{"student_id": "s1", "grade": 3}], org="south")
        st.write_risk(_list(2), "2024-03-25", 1, org="north")
        assert st.risk_page("2024-03-25", 1, org="south") == (0, [])
        assert st.risk_page("2024-03-25", 1, org="north")[0] == 2
        assert st.student("s1", org="south")["grade"] == 3
        assert st.student("s1", org="north")["grade"] is None
        assert st.known_students(["s0", "s1"], org="south") == {"s1"}
        job = st.create_job("predict", {"date": "2024-03-25"}, org="north")
        assert st.job(job, org="south") is None and st.job(job, org="north")["kind"] == "predict"
        with pytest.raises(ConfigError, match="unknown student 's0'"):
            st.write_risk(_list(2), "2024-03-25", 1, org="south", create_students=False)
        assert st.risk_page("2024-03-25", 1, org="south") == (0, [])


def test_bulk_writes_are_fast_and_a_student_is_erased_from_every_table(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        t = time.perf_counter()
        assert st.upsert_students([{"student_id": f"s{i}", "enrolled_at": "2024-01-01"}
                                   for i in range(10_000)], org=ORG) == 10_000
        events = [{"event_id": f"e{i}", "student_id": f"s{i % 100}", "time": "2024-03-01",
                   "kind": "class"} for i in range(10_000)]
        assert st.add_events(events, org=ORG).count("stored") == 10_000
        assert time.perf_counter() - t < 10  # row by row this took minutes
        assert st.add_events(events[:3], org=ORG) == ["duplicate"] * 3
        st.upsert_orders([{"order_id": "o1", "student_id": "s1", "ordered_at": "2024-01-02",
                           "n_courses": 2, "discount_ratio": 0.1,
                           "n_sales_conversations": 1}], org=ORG)
        st.upsert_outcomes([{"student_id": "s1", "status": "dropout",
                             "status_time": "2024-04-01"}], org=ORG)
        st.upsert_session({"session_id": "c1", "student_id": "s1", "teacher_id": "t",
                           "start_time": "2024-03-01T10:00:00Z",
                           "teacher_path": "uploads/c1/teacher.wav"}, org=ORG)
        st.write_risk(_list(3), "2024-03-25", 1, org=ORG)
        frames = st.logs_frames(org=ORG)
        assert [len(frames[k]) for k in ("students", "orders", "events", "outcomes")] == [
            10_000, 1, 10_000, 1]
        gone = st.delete_student("s1", org=ORG)
        assert gone["rows"] == {"events": 100, "orders": 1, "outcomes": 1, "sessions": 1,
                                "risk": 1, "students": 1}
        assert gone["sessions"] == [{"session_id": "c1", "teacher_path": "uploads/c1/teacher.wav",
                                     "student_path": None}]
        assert st.student("s1", org=ORG) is None and st.delete_student("s1", org=ORG) is None
        assert [r["student_id"] for r in st.risk_page("2024-03-25", 1, org=ORG)[1]] == [
            "s0", "s2"]


def test_access_log_rows_are_filtered_by_org_student_and_key(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        now = datetime.now(UTC).replace(tzinfo=None)
        st.append_access([(now, "k_a", "north", "GET", "/v1/risk", 200, "s1,s2"),
                          (now, "k_b", "south", "GET", "/v1/students/{student_id}", 404, "s1"),
                          (now, "k_a", "north", "POST", "/v1/events", 200, "")])
        assert st.access_log()[0] == 3
        total, rows = st.access_log(org="north", student_id="s1")
        assert total == 1 and rows[0]["student_ids"] == ["s1", "s2"]
        assert st.access_log(key_id="k_b")[1][0]["status"] == 404
        assert st.access_log(student_id="s")[0] == 0  # whole ids only
        assert st.access_log(since=now + timedelta(seconds=1))[0] == 0


V1 = textwrap.dedent("""
    CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
    INSERT INTO meta VALUES ('schema_version', '1');
    CREATE TABLE api_keys (key_id VARCHAR PRIMARY KEY, key_hash VARCHAR NOT NULL UNIQUE,
        scope VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
    CREATE TABLE students (student_id VARCHAR PRIMARY KEY, enrolled_at TIMESTAMP,
        grade INTEGER, created_at TIMESTAMP NOT NULL);
    CREATE TABLE sessions (session_id VARCHAR PRIMARY KEY, student_id VARCHAR NOT NULL,
        teacher_id VARCHAR NOT NULL, start_time TIMESTAMP NOT NULL, teacher_path VARCHAR,
        student_path VARCHAR, created_at TIMESTAMP NOT NULL);
    CREATE TABLE events (event_id VARCHAR PRIMARY KEY, student_id VARCHAR NOT NULL,
        time TIMESTAMP NOT NULL, kind VARCHAR NOT NULL, teacher_id VARCHAR, session_id VARCHAR,
        words INTEGER, value DOUBLE, received_at TIMESTAMP NOT NULL);
    CREATE INDEX events_student ON events (student_id);
    CREATE TABLE risk (date DATE NOT NULL, horizon INTEGER NOT NULL, student_id VARCHAR NOT NULL,
        probability DOUBLE NOT NULL, rank INTEGER NOT NULL, flagged BOOLEAN NOT NULL,
        top_reasons VARCHAR, written_at TIMESTAMP NOT NULL,
        PRIMARY KEY (date, horizon, student_id));
    CREATE INDEX risk_student ON risk (student_id);
    CREATE TABLE jobs (job_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, state VARCHAR NOT NULL,
        params VARCHAR NOT NULL, result VARCHAR, error VARCHAR, attempts INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
    INSERT INTO api_keys VALUES ('k_old', '{hash}', 'read', now());
    INSERT INTO students VALUES ('s1', NULL, 4, now());
    INSERT INTO events VALUES ('e1', 's1', '2024-03-01', 'class', NULL, NULL, NULL, NULL, now());
    INSERT INTO risk VALUES ('2024-03-25', 1, 's1', 0.5, 1, true, 'r', now());
    INSERT INTO jobs VALUES ('j1', 'extract', 'done', '{{}}', NULL, NULL, 1, now(), now());
""")


def test_a_store_of_schema_1_is_migrated_into_the_default_organisation(tmp_path):
    import duckdb

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(V1.format(hash=hash_key("the-old-key")))
    con.close()
    with Store(db) as st:
        assert st.student("s1", org=ORG)["grade"] == 4
        assert st.student("s1", org=ORG)["n_events"] == 1
        assert st.risk_page("2024-03-25", 1, org=ORG)[0] == 1
        assert st.job("j1", org=ORG)["state"] == "done"
        assert st.get_meta("schema_version") == "2"
    keys = KeyStore(keystore_path(db))
    assert keys.lookup("the-old-key") == Principal("k_old", ORG, "read")
    with Store(db) as st:  # opening again changes nothing
        assert st.student("s1", org=ORG)["grade"] == 4
