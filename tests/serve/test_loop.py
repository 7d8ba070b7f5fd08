"""The whole loop against the real service: keys → data → extract → predict → risk → erase.

An operator's admin key makes an organisation's keys; the write key posts students,
orders, events, outcomes and sessions with uploaded tracks; an extract job and a
predict job run; the read key lists the day's risk (the same list as scoring the logs
folder in-process); another organisation's read key sees none of it; erasing a student
removes it everywhere.
"""

from __future__ import annotations

import io
import os
import pickle
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from atrisk import Logs, RiskModel
from atrisk.extract.plan import part_path
from atrisk.features.in_class import InClassData
from atrisk.workspace import Workspace
from tests.conftest import SR, voiced
from tests.serve.conftest import Server, make_key, wait_job

T = 30


def _wav(f0: float, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, voiced(f0, seconds=3, seed=seed), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _clean(value):
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value if value != "" else None


def _rows(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]


class Marker:
    """Unpickling this creates a folder: it must never happen."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture(scope="module")
def loop(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("loop")
    db = base / "s.duckdb"
    admin = make_key(db, "admin", None)  # `atrisk keys create --scope admin`
    srv = Server(tiny_model["model"], db).wait_ready()
    c = httpx.Client(base_url=srv.url, timeout=T)
    keys = {}
    for name, org, scope in (("write", "north", "write"), ("read", "north", "read"),
                             ("admin", "north", "admin"), ("other", "south", "read")):
        r = c.post("/v1/keys", headers=admin.h, json={"org_id": org, "scope": scope})
        assert r.status_code == 201, r.text
        keys[name] = {"X-API-Key": r.json()["key"]}
    yield {"c": c, "k": keys, "srv": srv, "ws": srv.root / "orgs" / "north" / "workspace",
           "admin": admin, "base": base, **tiny_model}
    c.close()
    srv.stop()


def test_data_in_extract_predict_risk_out(loop):
    c, w, rd = loop["c"], loop["k"]["write"], loop["k"]["read"]
    logs = Logs.read(loop["logs"])
    day = loop["day"]
    students = logs.students.assign(grade=logs.students["grade"].astype(object))
    assert c.post("/v1/students", headers=w, json=_rows(students)).json() == {
        "written": len(logs.students)}
    assert c.post("/v1/orders", headers=w, json=_rows(logs.orders)).json() == {
        "written": len(logs.orders)}
    assert c.post("/v1/outcomes", headers=w, json=_rows(logs.outcomes)).json() == {
        "written": len(logs.outcomes)}
    events = _rows(logs.events)
    for i in range(0, len(events), 300):
        r = c.post("/v1/events/batch", headers=w, json={"events": events[i:i + 300]})
        assert r.status_code == 200 and r.json()["conflict"] == [], r.text
    # two recorded classes of two active students, tracks uploaded
    risk0 = loop["risk"]
    recorded = list(risk0["student_id"].iloc[:2])
    for i, sid in enumerate(recorded):
        session = {"session_id": f"rec{i}", "student_id": sid, "teacher_id": "T001",
                   "start_time": (day - pd.Timedelta(days=2 + i)).isoformat()}
        assert c.post("/v1/sessions", headers=w, json=session).status_code == 201
        for track, f0 in (("teacher", 120 + 10 * i), ("student", 230 + 10 * i)):
            r = c.put(f"/v1/sessions/rec{i}/tracks/{track}", headers=w,
                      content=_wav(f0, seed=i))
            assert r.status_code == 200, r.text
    # a planted pickle in the workspace's part store must never be unpickled
    marker = loop["base"] / "pickle-ran"
    planted = part_path(loop["ws"], "rec0", "planted").with_suffix(".pkl")
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(pickle.dumps(Marker(str(marker))))

    r = c.post("/v1/jobs/extract", headers=w, json={})
    assert r.status_code == 202
    job = wait_job(c, w, r.json()["job_id"])
    assert job["state"] == "done", job["error"]
    res = job["result"]
    assert (res["n_sessions"], res["n_failed"], res["workspace"]) == (2, 0, "workspace")
    assert not marker.exists()
    in_class = InClassData.from_workspace(loop["ws"])
    assert sorted(in_class.table.index) == ["rec0", "rec1"]

    r = c.post("/v1/jobs/predict", headers=w, json={"date": str(day.date()),
                                                   "horizons": [1, 7]})
    assert r.status_code == 202
    job = wait_job(c, w, r.json()["job_id"])
    assert job["state"] == "done", job["error"]
    assert job["result"]["in_class"] is True and job["result"]["n_rejected_rows"] == 0

    # the read key lists the day's risk: the list of scoring the logs folder in-process
    model = RiskModel.load(loop["model"])
    for h in (1, 7):
        want = model.rank(logs, in_class, day, horizon=h)
        assert job["result"]["horizons"][str(h)]["written"] == len(want)
        got = c.get("/v1/risk", headers=rd, params={"date": str(day.date()), "horizon": h,
                                                    "limit": 10_000}).json()
        assert got["total"] == len(want)
        assert [s["student_id"] for s in got["students"]] == list(want["student_id"])
        np.testing.assert_allclose([s["probability"] for s in got["students"]],
                                   want["probability"].to_numpy(), rtol=0, atol=1e-12)

    # another organisation's read key sees none of it
    other = loop["k"]["other"]
    assert c.get("/v1/risk", headers=other, params={"date": str(day.date())}).json()[
        "total"] == 0
    assert c.get(f"/v1/students/{recorded[0]}", headers=other).status_code == 404
    assert c.get(f"/v1/jobs/{r.json()['job_id']}", headers=other).status_code == 404


def test_erasing_a_student_removes_it_everywhere_and_reports_it(loop):
    c, k, ws = loop["c"], loop["k"], loop["ws"]
    day = str(loop["day"].date())
    sid = loop["risk"]["student_id"].iloc[0]  # recorded in session rec0
    before = c.get("/v1/risk", headers=k["read"], params={"date": day}).json()["total"]
    n_events = c.get(f"/v1/students/{sid}", headers=k["read"]).json()["n_events"]
    uploads = loop["srv"].root / "orgs" / "north" / "uploads" / "rec0"
    assert len(list(uploads.iterdir())) == 2
    assert c.delete(f"/v1/students/{sid}", headers=k["write"]).status_code == 403
    r = c.delete(f"/v1/students/{sid}", headers=k["admin"])
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["store"]["students"] == 1 and rep["store"]["sessions"] == 1
    assert rep["store"]["events"] == n_events and rep["store"]["risk"] == 2  # Δ 1 and 7
    assert rep["sessions"] == ["rec0"] and rep["uploaded_files"] == 2
    removed = rep["workspaces"]["workspace"]
    assert removed["sessions"] == 1 and removed["in_class"] == 1 and removed["prosody"] == 2
    assert removed["part_files"] >= 1  # its result (and the planted file)
    # gone from the store, the uploads, the workspace tables and the part store
    assert c.get(f"/v1/students/{sid}", headers=k["read"]).status_code == 404
    assert c.get("/v1/risk", headers=k["read"], params={"date": day}).json()[
        "total"] == before - 1
    assert not uploads.exists()
    for name in ("sessions", "prosody", "utterances", "in_class"):
        df = Workspace(ws).read(name)
        ids = (df.index.get_level_values("session_id") if "session_id" in df.index.names
               else df["session_id"])
        assert "rec0" not in set(ids) and ("rec1" in set(ids) or name == "utterances")
    assert not part_path(ws, "rec0", "x").parent.exists()
    assert "rec0" not in (ws / "service_recordings" / "sessions.csv").read_text()
    assert c.delete(f"/v1/students/{sid}", headers=k["admin"]).status_code == 404
    # the erasure itself is in the access log
    log = c.get("/v1/access-log", headers=loop["admin"].h, params={"student_id": sid}).json()
    assert any(e["method"] == "DELETE" and e["status"] == 200 for e in log["entries"])


def test_retain_days_purges_uploaded_tracks_and_keeps_the_features(loop):
    """A service started with --retain-days 0 deletes what was extracted before it started."""
    w, srv, ws = loop["k"]["write"], loop["srv"], loop["ws"]
    uploads = srv.root / "orgs" / "north" / "uploads" / "rec1"
    assert len(list(uploads.iterdir())) == 2 and part_path(ws, "rec1", "x").parent.exists()
    before = InClassData.from_workspace(ws).table.loc[["rec1"]]
    srv.stop()
    again = Server(loop["model"], srv.db, ("--retain-days", "0")).wait_ready()
    try:
        end = time.monotonic() + 20  # the service's clock checks at start
        while uploads.exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert not uploads.exists()
        assert not part_path(ws, "rec1", "x").parent.exists()
        after = InClassData.from_workspace(ws).table.loc[["rec1"]]
        pd.testing.assert_frame_equal(after, before)  # the features stay
        # the day is still scored with the in-class features of the purged session
        with httpx.Client(base_url=again.url, timeout=T) as c2:
            r = c2.post("/v1/jobs/predict", headers=w,
                        json={"date": str(loop["day"].date()), "horizons": [1]})
            job = wait_job(c2, w, r.json()["job_id"])
        assert job["state"] == "done" and job["result"]["in_class"] is True, job
    finally:
        again.stop()


def test_a_model_file_that_does_not_match_its_checksum_is_never_unpickled(loop, tmp_path):
    """Before: ``joblib.load`` unpickled whatever lay in the model folder."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(loop["model"], model)
    marker = tmp_path / "pickle-ran"
    (model / "model.joblib").write_bytes(pickle.dumps(Marker(str(marker))))
    srv = Server(model, tmp_path / "s.duckdb")
    try:
        assert srv.proc.wait(120) == 2
    finally:
        srv.stop()
    assert not marker.exists()
    assert "does not match its checksum" in srv.log.read_text()
