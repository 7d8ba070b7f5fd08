"""The service over a real HTTP socket: auth, validation, events, risk, students, jobs."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from atrisk.serve.store import write_risk
from tests.serve.conftest import Server, make_key


@pytest.fixture(scope="module")
def service(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    db = root / "s.duckdb"
    write_risk(db, tiny_model["risk"], tiny_model["day"], 1)  # organisation "default"
    read, write = make_key(db, "read").h, make_key(db, "write").h
    srv = Server(tiny_model["model"], db, ("--logs", str(tiny_model["logs"]))).wait_ready()
    yield {"url": srv.url, "read": read, "write": write, "root": root, "server": srv,
           **tiny_model}
    srv.stop()


def test_docs_and_auth(service):
    u = service["url"]
    assert httpx.get(u + "/docs").status_code == 200
    spec = httpx.get(u + "/openapi.json").json()
    assert {"/v1/events", "/v1/risk", "/v1/jobs/extract", "/v1/students/{student_id}"} <= set(
        spec["paths"])
    params = {p["name"]: p for p in spec["paths"]["/v1/risk"]["get"]["parameters"]}
    assert params["limit"]["schema"]["default"] == 100 and params["offset"]["schema"][
        "default"] == 0
    assert {"total", "offset", "limit", "students"} <= set(
        spec["components"]["schemas"]["RiskList"]["properties"])
    assert httpx.get(u + "/v1/risk", params={"date": "2024-01-01"}).status_code == 401
    r = httpx.get(u + "/v1/risk", params={"date": "2024-01-01"}, headers={"X-API-Key": "nope"})
    assert r.status_code == 401
    r = httpx.get(u + "/v1/risk", params={"date": "2024-01-01"}, headers=service["read"])
    assert r.status_code == 200 and r.json()["students"] == [] and r.json()["total"] == 0
    ev = {"event_id": "a1", "student_id": "S0001", "time": "2024-03-01T10:00:00Z",
          "kind": "class"}
    assert httpx.post(u + "/v1/events", json=ev).status_code == 401
    assert httpx.post(u + "/v1/events", json=ev, headers=service["read"]).status_code == 403
    r = httpx.post(u + "/v1/jobs/extract", json={"workspace": "/tmp/x"}, headers=service["read"])
    assert r.status_code == 403
    assert set(httpx.get(u + "/v1/health").json()) == {"status", "version", "model_horizons"}


def _loc(r: httpx.Response) -> list[list]:
    assert r.status_code == 422, r.text
    return [d["loc"] for d in r.json()["detail"]]


def test_validation_names_the_field(service):
    u, w = service["url"], service["write"]
    good = {"event_id": "v1", "student_id": "S0001", "time": "2024-03-01T10:00:00Z",
            "kind": "class"}
    assert ["body", "time"] in _loc(httpx.post(u + "/v1/events", headers=w,
                                               json={**good, "time": "not a time"}))
    assert ["body", "words"] in _loc(httpx.post(u + "/v1/events", headers=w,
                                                json={**good, "words": -3}))
    assert ["body", "event_id"] in _loc(httpx.post(u + "/v1/events", headers=w,
                                                   json={k: v for k, v in good.items()
                                                         if k != "event_id"}))
    assert ["body", "student_id"] in _loc(httpx.post(u + "/v1/events", headers=w,
                                                     json={**good, "student_id": "ghost"}))
    assert ["query", "date"] in _loc(httpx.get(u + "/v1/risk", headers=w,
                                               params={"date": "2024-13-01"}))
    assert ["query", "horizon"] in _loc(httpx.get(u + "/v1/risk", headers=w,
                                                  params={"date": "2024-01-01", "horizon": 99}))
    assert ["query", "limit"] in _loc(httpx.get(u + "/v1/risk", headers=w,
                                                params={"date": "2024-01-01", "limit": 0}))
    r = httpx.post(u + "/v1/events/batch", headers=w,
                   json={"events": [good, {**good, "event_id": "v2", "student_id": "ghost"}]})
    assert ["body", "events", 1, "student_id"] in _loc(r)
    r = httpx.post(u + "/v1/sessions", headers=w,
                   json={"session_id": "x", "student_id": "S0001", "teacher_id": "T1",
                         "start_time": "2024-03-01T10:00:00Z", "teacher_path": "/abs.wav"})
    assert ["body", "teacher_path"] in _loc(r)
    # nothing of the rejected requests was stored
    assert httpx.get(u + "/v1/students/S0001", headers=w).json()["n_events"] == 0


def test_events_idempotent_and_out_of_order(service):
    u, w = service["url"], service["write"]
    ev = {"event_id": "e-10", "student_id": "S0002", "time": "2024-03-05T10:00:00+02:00",
          "kind": "Follow_Up", "words": 12}
    r1 = httpx.post(u + "/v1/events", headers=w, json=ev)
    assert r1.status_code == 200 and r1.json() == {"event_id": "e-10", "stored": True,
                                                   "duplicate": False}
    r2 = httpx.post(u + "/v1/events", headers=w, json=ev)
    assert r2.status_code == 200 and r2.json()["duplicate"] is True and not r2.json()["stored"]
    assert httpx.post(u + "/v1/events", headers=w, json={**ev, "words": 13}).status_code == 409
    earlier = [{"event_id": f"e-{i}", "student_id": "S0002", "kind": "class",
                "time": f"2024-03-0{i}T09:00:00Z"} for i in (4, 1, 3)]
    r = httpx.post(u + "/v1/events/batch", headers=w, json={"events": [*earlier, ev]})
    assert r.json() == {"stored": 3, "duplicate": 1, "conflict": []}
    s = httpx.get(u + "/v1/students/S0002", headers=service["read"]).json()
    assert s["n_events"] == 4
    assert [e["event_id"] for e in s["events"]] == ["e-1", "e-3", "e-4", "e-10"]
    assert s["events_by_kind"] == {"class": 3, "follow_up": 1}
    assert s["events"][-1]["time"].startswith("2024-03-05T08:00:00")


def test_risk_list_and_student_history(service):
    u, rd, risk = service["url"], service["read"], service["risk"]
    day = str(service["day"].date())
    r = httpx.get(u + "/v1/risk", headers=rd, params={"date": day, "limit": 5}).json()
    assert r["total"] == len(risk) and len(r["students"]) == 5
    assert (r["offset"], r["limit"], r["horizon"], r["date"]) == (0, 5, 1, day)
    top = r["students"][0]
    assert top["student_id"] == risk["student_id"].iloc[0] and top["rank"] == 1
    assert top["probability"] == pytest.approx(risk["probability"].iloc[0])
    assert top["flagged"] is True and top["top_reasons"]
    page2 = httpx.get(u + "/v1/risk", headers=rd, params={"date": day, "limit": 5,
                                                          "offset": 5}).json()
    assert [s["rank"] for s in page2["students"]] == [6, 7, 8, 9, 10]
    flagged = httpx.get(u + "/v1/risk", headers=rd, params={"date": day, "flagged": True,
                                                            "limit": 10000}).json()
    assert flagged["total"] == int(risk["flagged"].sum())
    s = httpx.get(u + f"/v1/students/{top['student_id']}", headers=rd).json()
    assert s["risk"][0]["date"] == day and s["risk"][0]["rank"] == 1
    assert httpx.get(u + "/v1/students/nobody", headers=rd).status_code == 404
    # the daily list can be replaced through the API while the service holds the store
    body = {"date": day, "horizon": 1, "students": page2["students"]}
    assert httpx.put(u + "/v1/risk", headers=service["write"], json=body).json() == {
        "written": 5}
    r = httpx.get(u + "/v1/risk", headers=rd, params={"date": day}).json()
    assert r["total"] == 5


def test_sessions_upload_and_a_job_whose_recordings_lack_a_manifest(service):
    u, w = service["url"], service["write"]
    sess = {"session_id": "c1", "student_id": "S0003", "teacher_id": "T1",
            "start_time": "2024-03-01T10:00:00Z"}
    r = httpx.post(u + "/v1/sessions", headers=w, json=sess)
    assert r.status_code == 201 and r.json()["teacher_path"] is None
    r = httpx.put(u + "/v1/sessions/c1/tracks/teacher", headers=w, content=b"RIFF1234")
    assert r.status_code == 200 and r.json() == {"session_id": "c1", "track": "teacher",
                                                 "path": "uploads/c1/teacher.wav", "bytes": 8}
    org = service["root"] / "s.data" / "orgs" / "default"
    assert (org / "uploads" / "c1" / "teacher.wav").read_bytes() == b"RIFF1234"
    assert httpx.put(u + "/v1/sessions/zz/tracks/teacher", headers=w,
                     content=b"x").status_code == 404
    r = httpx.post(u + "/v1/jobs/extract", headers=w, json={"recordings": "gone"})
    assert ["body", "recordings"] in _loc(r) and str(service["root"]) not in r.text
    (org / "rec").mkdir()
    r = httpx.post(u + "/v1/jobs/extract", headers=w, json={"recordings": "rec"})
    assert r.status_code == 202 and r.json()["state"] == "queued"
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(u + f"/v1/jobs/{job_id}", headers=service["read"]).json()
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["state"] == "failed" and "'rec' has no sessions.csv" in job["error"]
    assert str(service["root"]) not in job["error"]
    assert httpx.get(u + "/v1/jobs/j_nope", headers=service["read"]).status_code == 404


def test_second_service_on_a_locked_store_exits_2(service):
    r = subprocess.run(
        [sys.executable, "-m", "atrisk", "serve", "--model", str(service["model"]),
         "--db", str(service["root"] / "s.duckdb"), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2
    assert "locked" in r.stderr and f"process {service['server'].proc.pid}" in r.stderr
