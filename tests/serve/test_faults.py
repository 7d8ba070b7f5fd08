"""Service faults: audio that vanished under a job, a store locked by another process."""

from __future__ import annotations

import subprocess
import sys

import soundfile as sf
from typer.testing import CliRunner

from atrisk.serve.jobs import JobRunner
from atrisk.serve.store import Store
from tests.conftest import SR, voiced
from tests.serve.test_store import HOLD


def test_job_whose_audio_vanished_fails_that_track_names_it_and_finishes(tmp_path):
    rec = tmp_path / "uploads"
    rec.mkdir()
    sf.write(rec / "a_teacher.wav", voiced(120, seed=1), SR)
    sf.write(rec / "a_student.wav", voiced(240, seed=2), SR)
    sf.write(rec / "b_student.wav", voiced(230, seed=3), SR)
    with Store(tmp_path / "s.duckdb") as st:
        st.upsert_students([{"student_id": "S1"}, {"student_id": "S2"}])
        for sid, student, t in (("a", "S1", "10"), ("b", "S2", "11")):
            st.upsert_session({"session_id": sid, "student_id": student, "teacher_id": "T1",
                               "start_time": f"2024-03-01T{t}:00:00Z",
                               "teacher_path": str(rec / f"{sid}_teacher.wav"),
                               "student_path": str(rec / f"{sid}_student.wav")})
        # b's teacher track was never written / was deleted after the session was posted
        job = st.create_job("extract", {"workspace": str(tmp_path / "ws"),
                                        "asr_backend": "pocketsphinx", "workers": 1})
        JobRunner(st).run_one(job)
        got = st.job(job)
    assert got["state"] == "done", got["error"]
    res = got["result"]
    assert (res["n_sessions"], res["n_ok"], res["n_partial"], res["n_failed"]) == (2, 1, 1, 0)
    gone = str(rec / "b_teacher.wav")
    assert res["n_failures"] == 1 and res["failures"][0]["source"] == gone
    assert res["failures"][0]["key"] == "b" and "not found" in res["failures"][0]["reason"]


def _hold(db) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_keys_create_on_a_locked_store_exits_2_naming_the_holder(tmp_path):
    db = tmp_path / "s.duckdb"
    holder = _hold(db)
    try:
        r = subprocess.run([sys.executable, "-m", "atrisk", "keys", "create", "--db",
                            str(db), "--scope", "read"], capture_output=True, text=True,
                           timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "X-API-Key" not in r.stdout
    assert str(db) in r.stderr and f"process {holder.pid}" in r.stderr


def test_predict_into_a_locked_store_exits_2_and_keeps_the_csv(tmp_path, tiny_model):
    from atrisk.cli import app

    db = tmp_path / "s.duckdb"
    holder = _hold(db)
    try:
        r = CliRunner().invoke(app, [
            "predict", "--model", str(tiny_model["model"]), "--workspace",
            str(tiny_model["workspace"]), "--logs", str(tiny_model["logs"]), "--date",
            str(tiny_model["day"].date()), "--out", str(tmp_path / "risk.csv"), "--db", str(db)])
    finally:
        holder.kill()
        holder.wait()
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "locked" in r.output and f"process {holder.pid}" in r.output
    assert len((tmp_path / "risk.csv").read_text().splitlines()) == len(tiny_model["risk"]) + 1
    with Store(db) as st:  # nothing half-written: the lock refused the whole write
        assert st.risk_page(tiny_model["day"], 1)[0] == 0
