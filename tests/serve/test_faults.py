"""Service faults: audio that vanished under a job, a store locked by another process."""

from __future__ import annotations

import json
import subprocess
import sys

import soundfile as sf
from typer.testing import CliRunner

from atrisk.serve.jobs import JobRunner
from atrisk.serve.keys import KeyStore, keystore_path
from atrisk.serve.paths import DataRoot
from atrisk.serve.store import Store
from tests.conftest import SR, voiced
from tests.serve.test_store import HOLD


def test_job_whose_audio_vanished_fails_that_track_names_it_and_finishes(tmp_path):
    root = DataRoot(tmp_path / "root")
    up = root.uploads("default")
    for sid, track, f0, seed in (("a", "teacher", 120, 1), ("a", "student", 240, 2),
                                 ("b", "student", 230, 3)):
        (up / sid).mkdir(parents=True, exist_ok=True)
        sf.write(up / sid / f"{track}.wav", voiced(f0, seed=seed), SR)
    with Store(tmp_path / "s.duckdb") as st:
        st.upsert_students([{"student_id": "S1"}, {"student_id": "S2"}], org="default")
        for sid, student, t in (("a", "S1", "10"), ("b", "S2", "11")):
            st.upsert_session({"session_id": sid, "student_id": student, "teacher_id": "T1",
                               "start_time": f"2024-03-01T{t}:00:00Z",
                               "teacher_path": f"uploads/{sid}/teacher.wav",
                               "student_path": f"uploads/{sid}/student.wav"}, org="default")
        # b's teacher track was never written / was deleted after the session was posted
        job = st.create_job("extract", {"asr_backend": "pocketsphinx", "workers": 1},
                            org="default")
        JobRunner(st, root).run_one(job)
        got = st.job(job)
        extracted = st.session("a", org="default")["extracted_at"]
    assert got["state"] == "done", got["error"]
    res = got["result"]
    assert (res["n_sessions"], res["n_ok"], res["n_partial"], res["n_failed"]) == (2, 1, 1, 0)
    assert res["workspace"] == "workspace" and extracted is not None
    assert res["n_failures"] == 1 and res["failures"][0]["source"] == "uploads/b/teacher.wav"
    assert res["failures"][0]["key"] == "b" and "not found" in res["failures"][0]["reason"]
    assert str(tmp_path) not in json.dumps(res)  # no server path in what clients see


def _hold(db) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_keys_are_made_while_the_store_is_held_by_the_service(tmp_path):
    db = tmp_path / "s.duckdb"
    holder = _hold(db)
    try:
        r = subprocess.run([sys.executable, "-m", "atrisk", "keys", "create", "--db",
                            str(db), "--scope", "read", "--org", "demo"], capture_output=True,
                           text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1].split()[-1]
    assert KeyStore(keystore_path(db)).lookup(key).org_id == "demo"


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
        assert st.risk_page(tiny_model["day"], 1, org="default")[0] == 0


def test_risk_csv_escapes_ids_a_spreadsheet_would_run(tmp_path, tiny_model):
    """Ids like =1+2 in the logs come out of risk.csv as text ('=1+2), not formulas."""
    from atrisk import workflows

    logs = tmp_path / "logs"
    logs.mkdir()
    risk = tiny_model["risk"]
    victim = str(risk["student_id"].iloc[0])
    for f in tiny_model["logs"].iterdir():  # one student renamed everywhere
        (logs / f.name).write_text(f.read_text().replace(victim + ",", "=1+2,"))
    out = tmp_path / "risk.csv"
    got, _ = workflows.predict_folder(tiny_model["model"], tmp_path / "no-ws", logs,
                                      tiny_model["day"], out)
    assert "=1+2" in set(got["student_id"])
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:2] == ["date", "student_id"]
    assert [line.split(",")[1] for line in lines].count("'=1+2") == 1
    assert not any(cell.startswith(("=", "+", "-", "@")) for line in lines
                   for cell in line.split(","))
