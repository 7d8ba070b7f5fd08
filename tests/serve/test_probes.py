"""The security probes of issue 17, each against the real service on 127.0.0.1.

One service (uvicorn, small limits: 1 MB bodies, 2 MB uploads, 50 requests/s per key)
for the module; two organisations, north and south.  Every request is bounded (a
timeout) and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest

from tests.serve.conftest import Server, make_key, wait_job

T = 30  # seconds: every request is bounded


@pytest.fixture(scope="module")
def svc(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("probes")
    db = base / "s.duckdb"
    keys = {
        "admin": make_key(db, "admin", None),
        "n_admin": make_key(db, "admin", "north"),
        "n_write": make_key(db, "write", "north"),
        "n_read": make_key(db, "read", "north"),
        "s_write": make_key(db, "write", "south"),
        "s_read": make_key(db, "read", "south"),
    }
    srv = Server(tiny_model["model"], db, ("--max-body-mb", "1", "--max-upload-mb", "2",
                                           "--rate-limit", "50")).wait_ready()
    c = httpx.Client(base_url=srv.url, timeout=T)
    for org, ids in (("north", ["N1", "N2"]), ("south", ["S1"])):
        r = c.post("/v1/students", headers=keys[org[0] + "_write"].h,
                   json=[{"student_id": i, "enrolled_at": "2024-01-01"} for i in ids])
        assert r.status_code == 200, r.text
    r = c.post("/v1/sessions", headers=keys["n_write"].h,
               json={"session_id": "c1", "student_id": "N1", "teacher_id": "T1",
                     "start_time": "2024-03-01T10:00:00Z"})
    assert r.status_code == 201, r.text
    yield {"srv": srv, "c": c, "k": keys, "root": srv.root, "db": db, "url": srv.url,
           "org": srv.root / "orgs"}
    c.close()
    srv.stop()


def _loc(r: httpx.Response) -> list[list]:
    assert r.status_code == 422, (r.status_code, r.text)
    return [d["loc"] for d in r.json()["detail"]]


def _no_server_path(svc, r: httpx.Response) -> None:
    assert str(svc["root"]) not in r.text and str(svc["db"]) not in r.text
    assert "/tmp" not in r.text


# ---------------------------------------------------------------- what held before


def test_keys_scopes_injection_and_cors_still_hold(svc):
    c, k = svc["c"], svc["k"]
    q = {"date": "2024-03-01"}
    for bad in ({}, {"X-API-Key": ""}, {"X-API-Key": "x" * 10_000},
                {"X-API-Key": k["n_read"].key + "x"}, {"X-API-Key": "' OR 1=1 --"}):
        assert c.get("/v1/risk", params=q, headers=bad).status_code == 401
    writes = [("POST", "/v1/students", []), ("POST", "/v1/orders", []),
              ("POST", "/v1/outcomes", []), ("POST", "/v1/events", {}),
              ("POST", "/v1/events/batch", {}), ("POST", "/v1/sessions", {}),
              ("PUT", "/v1/sessions/c1/tracks/teacher", None), ("POST", "/v1/jobs/extract", {}),
              ("POST", "/v1/jobs/predict", {}), ("PUT", "/v1/risk", {}),
              ("DELETE", "/v1/students/N1", None), ("POST", "/v1/keys", {}),
              ("GET", "/v1/keys", None), ("GET", "/v1/access-log", None)]
    for method, path, body in writes:
        r = c.request(method, path, headers=k["n_read"].h,
                      **({"json": body} if body is not None else {"content": b"x"}))
        assert r.status_code == 403, (method, path, r.status_code)
    for sid in ("N1' OR '1'='1", "N1; DROP TABLE students", "N1%27--"):
        assert c.get(f"/v1/students/{sid}", headers=k["n_read"].h).status_code in (404, 422)
        r = c.post("/v1/students", headers=k["n_write"].h, json=[{"student_id": sid}])
        assert ["body", 0, "student_id"] in _loc(r)
    assert ["query", "date"] in _loc(c.get("/v1/risk", headers=k["n_read"].h,
                                           params={"date": "2024-13-01' OR 1=1"}))
    assert c.get("/v1/students/N1", headers=k["n_read"].h).status_code == 200
    pre = c.options("/v1/risk", headers={"Origin": "https://evil.example",
                                         "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers
    r = c.get("/v1/risk", params=q, headers={**k["n_read"].h, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_concurrent_writes_of_one_day_leave_one_whole_list(svc):
    url, h = svc["url"], svc["k"]["n_write"].h
    lists = {p: {"date": "2024-02-02", "horizon": 1, "students": [
        {"student_id": "N1", "probability": p, "rank": 1, "flagged": True},
        {"student_id": "N2", "probability": p / 2, "rank": 2, "flagged": False}]}
        for p in (0.2, 0.4, 0.6, 0.8)}
    codes = []

    def put(body):
        codes.append(httpx.put(url + "/v1/risk", headers=h, json=body, timeout=T).status_code)

    threads = [threading.Thread(target=put, args=(b,)) for b in lists.values() for _ in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert codes == [200] * 8
    got = svc["c"].get("/v1/risk", headers=h, params={"date": "2024-02-02"}).json()["students"]
    p = got[0]["probability"]
    assert len(got) == 2 and p in lists and got[1]["probability"] == p / 2


# ---------------------------------------------------------------- 1. server paths


def test_track_paths_must_stay_in_the_organisations_folder(svc):
    c, h = svc["c"], svc["k"]["n_write"].h
    (svc["org"] / "north").mkdir(mode=0o700, exist_ok=True)  # as the service makes it
    (svc["org"] / "north" / "evil").symlink_to("/etc")
    (svc["org"] / "north" / "to_south").symlink_to(svc["org"] / "south")
    sess = {"session_id": "p1", "student_id": "N1", "teacher_id": "T1",
            "start_time": "2024-03-01T10:00:00Z"}
    for path in ("/etc/passwd", "../../etc/passwd", "a/../../b", "C:\\x.wav", "~/x.wav",
                 "a\x00b.wav", "evil/passwd", "evil/shadow", "to_south/x.wav", "", "x" * 600):
        r = c.post("/v1/sessions", headers=h, json={**sess, "teacher_path": path})
        assert ["body", "teacher_path"] in _loc(r), path
        _no_server_path(svc, r)
    assert c.get("/v1/students/N1", headers=h).json()["n_sessions"] == 1  # nothing stored
    ok = c.post("/v1/sessions", headers=h, json={**sess, "student_path": "rec/p1/s.wav"})
    assert ok.status_code == 201 and ok.json()["student_path"] == "rec/p1/s.wav"
    health = c.get("/v1/health").json()
    assert set(health) == {"status", "version", "model_horizons"}


def test_job_folders_must_stay_in_the_organisations_folder(svc):
    c, h = svc["c"], svc["k"]["n_write"].h
    for body, field in (({"workspace": "/tmp/x"}, "workspace"),
                        ({"workspace": "../south/workspace"}, "workspace"),
                        ({"recordings": "/etc"}, "recordings"),
                        ({"recordings": "../../"}, "recordings"),
                        ({"recordings": "evil"}, "recordings"),
                        ({"recordings": "no-such-folder"}, "recordings")):
        r = c.post("/v1/jobs/extract", headers=h, json=body)
        assert ["body", field] in _loc(r), body
        _no_server_path(svc, r)
    r = c.post("/v1/jobs/predict", headers=h, json={"date": "2024-03-01",
                                                   "workspace": "../../x"})
    assert ["body", "workspace"] in _loc(r)


def test_a_manifest_naming_tracks_outside_is_refused_before_any_file_is_read(svc):
    c, h = svc["c"], svc["k"]["n_write"].h
    rec = svc["org"] / "north" / "rec"
    rec.mkdir(exist_ok=True)
    (rec / "sessions.csv").write_text("session_id,student_id,teacher_id,start_time,"
                                      "teacher_path\nz1,N1,T1,2024-03-01T10:00:00Z,"
                                      "/etc/shadow\n")
    r = c.post("/v1/jobs/extract", headers=h, json={"recordings": "rec", "workspace": "wz"})
    assert r.status_code == 202
    job = wait_job(c, h, r.json()["job_id"])
    assert job["state"] == "failed" and "session 'z1'" in job["error"]
    assert "outside the organisation's folder" in job["error"]
    assert str(svc["root"]) not in job["error"]
    assert not (svc["org"] / "north" / "wz" / "sessions.parquet").exists()


# ---------------------------------------------------------------- 3. uploads


def _raw(svc, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", svc["srv"].port, timeout=T)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _files(svc) -> set[str]:
    return {str(p.relative_to(svc["root"])) for p in svc["root"].rglob("*") if p.is_file()}


def test_upload_ids_with_dot_dot_never_leave_the_upload_folder(svc):
    h = svc["k"]["n_write"].h
    before = _files(svc)
    for path in ("/v1/sessions/../tracks/teacher", "/v1/sessions/%2E%2E/tracks/teacher",
                 "/v1/sessions/..%2F..%2Fx/tracks/teacher", "/v1/sessions/c1%00/tracks/teacher",
                 "/v1/sessions/c.1/tracks/teacher"):
        status, _ = _raw(svc, "PUT", path, b"RIFF0000", h)
        assert status in (404, 422), path
    assert _files(svc) == before


def test_uploads_allow_audio_extensions_and_a_size_limit(svc):
    c, h = svc["c"], svc["k"]["n_write"].h
    up = svc["org"] / "north" / "uploads" / "c1"
    for ext in ("exe", "pkl", "py", "wav/../x", "WAV.part"):
        r = c.put("/v1/sessions/c1/tracks/teacher", params={"ext": ext}, headers=h,
                  content=b"RIFF0000")
        assert ["query", "ext"] in _loc(r), ext
    assert c.put("/v1/sessions/c1/tracks/teacher", headers=h, content=b"").status_code == 422
    big = b"\0" * (3 * 2**20)
    r = c.put("/v1/sessions/c1/tracks/teacher", params={"ext": "flac"}, headers=h, content=big)
    assert r.status_code == 413 and len(r.content) < 500

    def chunks():
        for _ in range(48):
            yield b"\0" * 2**16

    # without a length (chunked): counted as it arrives, refused past the limit
    try:
        r = c.put("/v1/sessions/c1/tracks/teacher", headers=h, content=chunks())
        assert r.status_code == 413
    except httpx.TransportError:  # the service closed the connection while we still sent
        pass
    ok = c.put("/v1/sessions/c1/tracks/teacher", params={"ext": "MP3"}, headers=h,
               content=b"ID3" + b"\1" * 1000)
    assert ok.status_code == 200 and ok.json()["path"] == "uploads/c1/teacher.mp3"
    assert sorted(p.name for p in up.iterdir()) == ["teacher.mp3"]  # no .part left


def test_a_client_that_disconnects_mid_upload_leaves_no_part_file(svc):
    h = svc["k"]["n_write"].h
    with socket.create_connection(("127.0.0.1", svc["srv"].port), timeout=T) as s:
        s.sendall(b"PUT /v1/sessions/c1/tracks/student?ext=wav HTTP/1.1\r\nHost: x\r\n"
                  b"X-API-Key: " + h["X-API-Key"].encode() + b"\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + b"\1" * 300_000)
        time.sleep(0.3)
    up = svc["org"] / "north" / "uploads" / "c1"
    end = time.monotonic() + 10
    while time.monotonic() < end and any(p.name.startswith(".") for p in up.iterdir()):
        time.sleep(0.1)
    assert not [p.name for p in up.iterdir() if p.name.startswith(".")]
    assert not (up / "student.wav").exists()


def test_two_concurrent_uploads_of_one_track_never_mix(svc):
    url, h = svc["url"], svc["k"]["n_write"].h
    bodies = {b"A": b"A" * 600_000, b"B": b"B" * 600_000}
    out: dict = {}

    def slow(data: bytes):
        for i in range(0, len(data), 50_000):
            yield data[i:i + 50_000]
            time.sleep(0.01)  # the two uploads interleave on the server

    def put(tag: bytes):
        r = httpx.put(url + "/v1/sessions/c1/tracks/student", headers=h,
                      content=slow(bodies[tag]), timeout=T)
        out[tag] = (r.status_code, r.json())

    threads = [threading.Thread(target=put, args=(t,)) for t in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert {k: v[0] for k, v in out.items()} == {b"A": 200, b"B": 200}
    assert all(v[1]["bytes"] == 600_000 for v in out.values())
    got = (svc["org"] / "north" / "uploads" / "c1" / "student.wav").read_bytes()
    assert got in bodies.values()  # one whole upload, never a mix
    assert not [p for p in (svc["org"] / "north" / "uploads" / "c1").iterdir()
                if p.name.startswith(".")]


# ---------------------------------------------------------------- 4. tenancy, access log


def test_an_organisation_sees_none_of_anothers_data(svc):
    c, k = svc["c"], svc["k"]
    assert c.get("/v1/students/N1", headers=k["n_read"].h).status_code == 200
    assert c.get("/v1/students/N1", headers=k["s_read"].h).status_code == 404
    assert c.get("/v1/students/S1", headers=k["n_read"].h).status_code == 404
    day = {"date": "2024-03-01", "horizon": 1, "students": [
        {"student_id": "N1", "probability": 0.9, "rank": 1, "flagged": True},
        {"student_id": "N2", "probability": 0.1, "rank": 2, "flagged": False}]}
    assert c.put("/v1/risk", headers=k["n_write"].h, json=day).json() == {"written": 2}
    q = {"date": "2024-03-01"}
    assert c.get("/v1/risk", params=q, headers=k["n_read"].h).json()["total"] == 2
    assert c.get("/v1/risk", params=q, headers=k["s_read"].h).json()["total"] == 0
    # writing another organisation's student: as unknown as a student that does not exist
    r = c.put("/v1/risk", headers=k["s_write"].h, json={**day, "students": day["students"][:1]})
    assert ["body", "students", 0, "student_id"] in _loc(r)
    ev = {"event_id": "x1", "student_id": "N1", "time": "2024-03-01T10:00:00Z",
          "kind": "class"}
    assert ["body", "student_id"] in _loc(c.post("/v1/events", headers=k["s_write"].h, json=ev))
    r = c.post("/v1/jobs/predict", headers=k["n_write"].h, json={"date": "2024-03-01"})
    job = r.json()["job_id"]
    assert c.get(f"/v1/jobs/{job}", headers=k["s_read"].h).status_code == 404
    assert c.get(f"/v1/jobs/{job}", headers=k["n_read"].h).status_code == 200
    # the operator's admin key has no organisation: no student data through it
    assert c.get("/v1/students/N1", headers=k["admin"].h).status_code == 403


def test_every_read_of_a_student_is_in_the_access_log_with_the_key_id(svc):
    c, k = svc["c"], svc["k"]
    reader = k["n_read"]
    assert c.get("/v1/students/N2", headers=reader.h).status_code == 200
    c.get("/v1/risk", params={"date": "2024-03-01"}, headers=reader.h)
    r = c.get("/v1/access-log", params={"student_id": "N2"}, headers=k["admin"].h)
    assert r.status_code == 200
    entries = r.json()["entries"]
    mine = [e for e in entries if e["key_id"] == reader.id]
    assert {e["endpoint"] for e in mine} >= {"/v1/students/{student_id}", "/v1/risk"}
    assert all(e["org_id"] == "north" and "N2" in e["student_ids"] for e in mine)
    assert reader.key not in r.text and all(datetime.fromisoformat(e["time"]) for e in mine)
    # an organisation's admin reads its own organisation's log only; others may not read it
    r = c.get("/v1/access-log", headers=k["n_admin"].h, params={"limit": 10_000})
    assert r.status_code == 200 and {e["org_id"] for e in r.json()["entries"]} == {"north"}
    assert c.get("/v1/access-log", headers=k["n_admin"].h,
                 params={"org_id": "south"}).status_code == 403
    assert c.get("/v1/access-log", headers=k["n_write"].h).status_code == 403
    assert c.get("/v1/access-log", headers=reader.h).status_code == 403


# ---------------------------------------------------------------- 5. keys


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atrisk", "keys", *args],
                          capture_output=True, text=True, timeout=120)


def test_keys_made_listed_and_revoked_by_the_cli_take_effect_without_a_restart(svc):
    c, db = svc["c"], str(svc["db"])
    r = _cli("create", "--db", db, "--scope", "read", "--org", "south", "--label", "probe")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1].split()[-1]
    assert c.get("/v1/students/S1", headers={"X-API-Key": key}).status_code == 200
    listed = json.loads(_cli("list", "--db", db, "--org", "south", "--json").stdout)
    mine = [k for k in listed if k["label"] == "probe"]
    assert len(mine) == 1 and mine[0]["state"] == "active" and "key" not in mine[0]
    assert _cli("revoke", "--db", db, mine[0]["key_id"]).returncode == 0
    t0 = time.monotonic()  # the service notices a change of the key file within 50 ms
    while c.get("/v1/students/S1", headers={"X-API-Key": key}).status_code != 401:
        assert time.monotonic() - t0 < 1, "the revoked key still works"
        time.sleep(0.01)
    r = _cli("create", "--db", db, "--scope", "read", "--org", "south", "--expires", "nope")
    assert r.returncode == 2 and "--expires" in r.stderr


def test_admin_keys_make_keys_that_expire(svc):
    c, k = svc["c"], svc["k"]
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    r = c.post("/v1/keys", headers=k["admin"].h,
               json={"org_id": "south", "scope": "read", "expires_at": soon})
    assert r.status_code == 201 and r.json()["org_id"] == "south"
    new = {"X-API-Key": r.json()["key"]}
    assert c.get("/v1/students/S1", headers=new).status_code == 200
    time.sleep(2.5)
    assert c.get("/v1/students/S1", headers=new).status_code == 401
    # an organisation's admin: its own organisation only
    assert c.post("/v1/keys", headers=k["n_admin"].h,
                  json={"org_id": "south", "scope": "read"}).status_code == 403
    r = c.post("/v1/keys", headers=k["n_admin"].h, json={"scope": "read"})
    assert r.status_code == 201 and r.json()["org_id"] == "north"
    assert {x["org_id"] for x in c.get("/v1/keys", headers=k["n_admin"].h).json()["keys"]} == {
        "north"}
    assert c.delete(f"/v1/keys/{k['s_read'].id}", headers=k["n_admin"].h).status_code == 404
    assert c.post("/v1/keys", headers=k["n_write"].h, json={"scope": "read"}).status_code == 403
    r = c.post("/v1/keys", headers=k["admin"].h, json={"scope": "write"})
    assert ["body", "org_id"] in _loc(r)  # a write key needs an organisation
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = c.post("/v1/keys", headers=k["admin"].h,
               json={"org_id": "south", "scope": "read", "expires_at": past})
    assert ["body", "expires_at"] in _loc(r)


# ---------------------------------------------------------------- 6. limits


def test_batches_are_bounded_and_bulk_writes_fast(svc):
    c, h = svc["c"], svc["k"]["s_write"].h
    too_many = [{"student_id": f"B{i}"} for i in range(10_001)]
    t = time.perf_counter()
    r = c.post("/v1/students", headers=h, json=too_many)
    assert ["body"] in _loc(r) and "at most 10000" in r.text
    assert time.perf_counter() - t < 10
    t = time.perf_counter()
    r = c.post("/v1/students", headers=h, json=too_many[:10_000])
    assert r.json() == {"written": 10_000} and time.perf_counter() - t < 10
    r = c.post("/v1/students", headers=h, json=[{"student_id": "D1"}, {"student_id": "D1"}])
    assert ["body", 1, "student_id"] in _loc(r)


def test_big_bodies_get_413_and_nothing_is_echoed(svc):
    c, h = svc["c"], svc["k"]["s_write"].h
    big = json.dumps([{"student_id": "S1", "pad": "x" * 3_000_000}])
    r = c.post("/v1/students", headers={**h, "content-type": "application/json"},
               content=big)
    assert r.status_code == 413 and len(r.content) < 500
    # under the limit but invalid: the 422 names the field, without the input
    r = c.post("/v1/events", headers=h, json={"event_id": "e", "student_id": "S1",
                                              "time": "2024-03-01", "kind": "k" * 500_000})
    assert ["body", "kind"] in _loc(r) and len(r.content) < 1000
    r = c.post("/v1/events", headers={**h, "content-type": "application/json"},
               content=b'{"event_id": ')
    assert r.status_code == 422 and len(r.content) < 1000


def test_workers_are_at_most_the_usable_cpus(svc):
    from atrisk.extract.resources import usable_cpus

    c, h = svc["c"], svc["k"]["n_write"].h
    r = c.post("/v1/jobs/extract", headers=h, json={"workers": 64})
    assert ["body", "workers"] in _loc(r) and f"at most {usable_cpus()}" in r.text
    assert ["body", "workers"] in _loc(c.post("/v1/jobs/extract", headers=h,
                                              json={"workers": 0}))


def test_a_students_events_come_in_pages(svc):
    c, h = svc["c"], svc["k"]["n_write"].h
    events = [{"event_id": f"pg{i:03d}", "student_id": "N2", "kind": "class",
               "time": (datetime(2024, 1, 1) + timedelta(hours=i)).isoformat()}
              for i in range(250)]
    assert c.post("/v1/events/batch", headers=h, json={"events": events}).json()["stored"] == 250
    first = c.get("/v1/students/N2", headers=h).json()
    assert first["n_events"] == 250 and len(first["events"]) == 100
    last = c.get("/v1/students/N2", headers=h, params={"events_limit": 100,
                                                       "events_offset": 200}).json()
    assert [e["event_id"] for e in last["events"]] == [f"pg{i:03d}" for i in range(200, 250)]
    assert ["query", "events_limit"] in _loc(c.get("/v1/students/N2", headers=h,
                                                   params={"events_limit": 100_000}))


def test_a_key_past_its_rate_limit_gets_429_with_retry_after(svc):
    """50 requests a second, bursts of 100: 8 clients at once outrun it even on a busy
    machine (one client alone may be slower than the refill)."""
    key = make_key(svc["db"], "read", "south")
    codes, retry, seen = [], set(), threading.Event()

    def hammer():
        with httpx.Client(base_url=svc["url"], timeout=T) as c:
            end = time.monotonic() + 20
            while not seen.is_set() and time.monotonic() < end:
                r = c.get("/v1/jobs/j_none", headers=key.h)
                codes.append(r.status_code)
                if r.status_code == 429:
                    retry.add(r.headers["Retry-After"])
                    seen.set()

    t0 = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    elapsed = time.monotonic() - t0
    assert codes.count(429) > 0 and set(codes) == {404, 429}, codes
    # the burst passed, then no more than the refill (and the requests in flight)
    assert 100 <= codes.count(404) <= 100 + 50 * elapsed + 8, (codes.count(404), elapsed)
    assert all(v.isdigit() and int(v) >= 1 for v in retry)
    time.sleep(1.1)
    with httpx.Client(base_url=svc["url"], timeout=T) as c:
        assert c.get("/v1/jobs/j_none", headers=key.h).status_code == 404
        # the limit is per key: another key is not slowed
        assert c.get("/v1/jobs/j_none", headers=svc["k"]["s_read"].h).status_code == 404


# ---------------------------------------------------------------- 8. 500s and bad data


def test_the_old_500s_are_422s_naming_the_field(svc):
    c, h = svc["c"], svc["k"]["n_write"].h
    ev = {"event_id": "big", "student_id": "N1", "time": "2024-03-01T10:00:00Z",
          "kind": "follow_up"}
    assert ["body", "words"] in _loc(c.post("/v1/events", headers=h,
                                            json={**ev, "words": 2**40}))
    assert ["query", "horizon"] in _loc(c.get("/v1/risk", headers=h, params={
        "date": "2024-03-01", "horizon": 2**40}))
    assert ["query", "offset"] in _loc(c.get("/v1/risk", headers=h, params={
        "date": "2024-03-01", "offset": 2**40}))
    nan = json.dumps({**ev, "event_id": "nan"})[:-1] + ', "value": NaN}'
    for _ in range(2):  # a retried identical event with NaN: 422 both times, never 409
        r = c.post("/v1/events", headers={**h, "content-type": "application/json"},
                   content=nan)
        assert ["body", "value"] in _loc(r)
    risk = '{"date": "2024-03-01", "horizon": 1, "students": [{"student_id": "N1", ' \
           '"probability": NaN, "rank": 1, "flagged": true}]}'
    r = c.put("/v1/risk", headers={**h, "content-type": "application/json"}, content=risk)
    assert ["body", "students", 0, "probability"] in _loc(r)
    bad = {"date": "2024-03-02", "horizon": 1, "students": [
        {"student_id": "../../etc/passwd", "probability": 0.5, "rank": 1, "flagged": True},
        {"student_id": '=HYPERLINK("http://x")', "probability": 0.5, "rank": 2,
         "flagged": True},
        {"student_id": "N1", "probability": 7.5, "rank": 3, "flagged": True},
        {"student_id": "N2", "probability": 0.5, "rank": 2**40, "flagged": True}]}
    locs = _loc(c.put("/v1/risk", headers=h, json=bad))
    assert ["body", "students", 0, "student_id"] in locs
    assert ["body", "students", 1, "student_id"] in locs
    assert ["body", "students", 2, "probability"] in locs
    assert ["body", "students", 3, "rank"] in locs
    assert c.get("/v1/risk", headers=h, params={"date": "2024-03-02"}).json()["total"] == 0
    assert c.get("/v1/students/=HYPERLINK", headers=h).status_code in (404, 422)
    for bad_kind in ("a\x00b", "=cmd"):
        assert ["body", "kind"] in _loc(c.post("/v1/events", headers=h,
                                               json={**ev, "kind": bad_kind}))
    assert ["body", "horizons", 0] in _loc(c.post("/v1/jobs/predict", headers=h,
                                                  json={"date": "2024-03-01",
                                                        "horizons": [2**40]}))
    assert ["body", "horizons", 0] in _loc(c.post("/v1/jobs/predict", headers=h,
                                                  json={"date": "2024-03-01",
                                                        "horizons": [99]}))


def test_a_nul_byte_or_a_huge_utterance_in_a_jobs_recordings_are_row_errors(svc):
    """Before: a NUL byte in sessions.csv was a traceback, a 1,000,000-character utterance
    made the csv module reject the whole transcript file."""
    import soundfile as sf

    from tests.conftest import SR, voiced

    c, h = svc["c"], svc["k"]["n_write"].h
    rec = svc["org"] / "north" / "rec_rows"
    for i, sid in enumerate(("g1", "g2")):
        (rec / sid).mkdir(parents=True)
        for track, f0 in (("teacher", 120 + 9 * i), ("student", 230 + 9 * i)):
            sf.write(rec / sid / f"{track}.wav", voiced(f0, seconds=2, seed=i), SR)
    (rec / "sessions.csv").write_text(
        "session_id,student_id,teacher_id,start_time\n"
        "g1,N1,T1,2024-03-01T10:00:00Z\n"
        "g3,N2,T\x001,2024-03-01T11:00:00Z\n"
        "g2,N2,T1,2024-03-02T10:00:00Z\n")
    (rec / "utterances.csv").write_text(
        "session_id,speaker,start_s,end_s,text\n"
        "g1,teacher,0.1,0.9,what is seven times two?\n"
        f"g1,student,1.0,1.8,{'a' * 1_000_000}\n"
        "g2,teacher,0.1,0.9,what is seven times three?\n"
        "g2,student,1.0,1.8,um it is twenty one\n")
    r = c.post("/v1/jobs/extract", headers=h, json={
        "recordings": "rec_rows", "workspace": "ws_rows", "asr_backend": "transcripts"})
    assert r.status_code == 202, r.text
    job = wait_job(c, h, r.json()["job_id"])
    assert job["state"] == "done", job["error"]
    res = job["result"]
    # both good sessions extracted; the NUL row is the one failed manifest row
    assert (res["n_sessions"], res["n_ok"], res["n_failed"]) == (2, 2, 1)
    assert res["n_utterances"] == 3  # the huge one dropped, the other three used
    reasons = {(f["source"], f.get("row")): f["reason"] for f in res["failures"]}
    nul = reasons[("rec_rows/sessions.csv", 3)]
    assert "teacher_id contains a NUL byte" in nul
    huge = reasons[("rec_rows/utterances.csv", 3)]
    assert "1000000 characters" in huge
    assert str(svc["root"]) not in json.dumps(res) and len(json.dumps(res)) < 10_000


# ---------------------------------------------------------------- 9. a failed extract


def _recordings(folder, texts: dict[str, list[str]]) -> None:
    import soundfile as sf

    from tests.conftest import SR, voiced

    rows = ["session_id,student_id,teacher_id,start_time"]
    utts = ["session_id,speaker,start_s,end_s,text"]
    for i, (sid, lines) in enumerate(texts.items()):
        (folder / sid).mkdir(parents=True, exist_ok=True)
        for track, f0 in (("teacher", 120 + 9 * i), ("student", 230 + 9 * i)):
            sf.write(folder / sid / f"{track}.wav", voiced(f0, seconds=2, seed=i), SR)
        rows.append(f"{sid},N{i % 2 + 1},T1,2024-03-0{i + 1}T10:00:00Z")
        utts += [f"{sid},{('teacher', 'student')[j % 2]},{0.1 * j:.1f},{0.1 * j + 0.08:.2f},"
                 f"{text}" for j, text in enumerate(lines)]
    (folder / "sessions.csv").write_text("\n".join(rows) + "\n")
    (folder / "utterances.csv").write_text("\n".join(utts) + "\n")


def test_an_extract_job_failing_on_a_full_disk_leaves_the_previous_tables(svc):
    """Before: with a file-size limit (a full disk) three tables came from the new run and
    two from the old, and run.json described the old run.  The job's tables now go to a
    staging folder and are switched in together."""
    import resource
    import secrets

    c, h = svc["c"], svc["k"]["n_write"].h
    rec, ws = svc["org"] / "north" / "rec_full", svc["org"] / "north" / "ws_full"
    body = {"recordings": "rec_full", "workspace": "ws_full", "asr_backend": "transcripts"}
    _recordings(rec, {"f1": ["what is seven times two?", "fourteen"],
                      "f2": ["and three times three?", "nine"]})
    job = wait_job(c, h, c.post("/v1/jobs/extract", headers=h, json=body).json()["job_id"])
    assert job["state"] == "done", job["error"]
    outputs = sorted(p.name for p in ws.iterdir() if p.is_file())
    assert {"sessions.parquet", "prosody.parquet", "utterances.parquet", "in_class.parquet",
            "run.json"} <= set(outputs)
    before = {name: (ws / name).read_bytes() for name in outputs}
    # the next run: a third class (new sessions, prosody and in_class tables) and long
    # transcripts, about 1.2 MB of utterances.parquet (incompressible text) and 0.6 MB of
    # part file per class; the service may then write files of up to 1 MB only
    big = [secrets.token_urlsafe(72_000) for _ in range(12)]
    assert all(len(t) < 100_000 for t in big)
    _recordings(rec, {"f1": big[:6], "f2": big[6:], "f3": ["four plus four?", "eight"]})
    pid = svc["srv"].proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (2**20, hard))
    try:
        job = wait_job(c, h, c.post("/v1/jobs/extract", headers=h, json=body).json()["job_id"])
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert job["state"] == "failed" and "too large" in job["error"], job
    after = {name: (ws / name).read_bytes() for name in outputs}
    assert after == before  # every table, failures.jsonl and run.json as they were
    assert not [p.name for p in ws.iterdir() if p.name.startswith(".")]
    assert len(list((ws / "parts").rglob("*.json"))) >= 3  # the new run's parts, to resume
    # with room again the same job resumes from its parts and switches all tables in
    job = wait_job(c, h, c.post("/v1/jobs/extract", headers=h, json=body).json()["job_id"])
    res = job["result"]
    assert job["state"] == "done" and (res["n_resumed"], res["n_failures"]) == (3, 0), res
    assert (ws / "utterances.parquet").stat().st_size > 2**20
    assert len(pd.read_parquet(ws / "sessions.parquet")) == 3
    assert (ws / "run.json").read_bytes() != before["run.json"]


# ---------------------------------------------------------------- 7. privacy at rest


def test_every_file_is_0600_and_every_folder_0700(svc):
    svc["c"].get("/v1/access-log", headers=svc["k"]["admin"].h)  # written out
    paths = [svc["db"], *svc["db"].parent.glob("s.keys.sqlite*")]
    for folder, dirs, files in os.walk(svc["root"]):
        paths += [os.path.join(folder, d) for d in dirs if not os.path.islink(
            os.path.join(folder, d))]
        paths += [os.path.join(folder, f) for f in files]
    paths.append(svc["root"])
    north = svc["org"] / "north"

    def made_by_test(p) -> bool:  # the symlinks and the recordings folders rec*/
        rel = os.path.relpath(p, north).split(os.sep)
        return rel[0] in ("evil", "to_south") or rel[0].startswith("rec")

    bad = {str(p): oct(stat.S_IMODE(os.stat(p).st_mode)) for p in paths
           if not made_by_test(p) and stat.S_IMODE(os.stat(p).st_mode)
           != (0o700 if os.path.isdir(p) else 0o600)}
    assert not bad
    assert len(paths) > 10
