"""The service killed (SIGKILL) during an extract job: on restart the job resumes and finishes."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.extract.test_resume_kill import N, _parts, _recordings
from tests.serve.conftest import Server, make_key


def _job(url: str, headers: dict, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()


@pytest.mark.slow
def test_job_resumes_after_the_service_is_killed(tmp_path, tiny_model):
    db = tmp_path / "s.duckdb"
    org = db.with_suffix(".data") / "orgs" / "default"
    _recordings(org / "rec")
    ws = org / "workspace"
    headers = make_key(db, "write").h

    first = Server(tiny_model["model"], db).wait_ready()
    try:
        r = httpx.post(first.url + "/v1/students", headers=headers,
                       json=[{"student_id": f"stu{i}"} for i in range(N)])
        assert r.status_code == 200
        r = httpx.post(first.url + "/v1/jobs/extract", headers=headers,
                       json={"recordings": "rec"})
        assert r.status_code == 202
        job_id = r.json()["job_id"]
        end = time.monotonic() + 300
        while len(_parts(ws)) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        state = _job(first.url, headers, job_id)
        assert state["state"] == "running", (len(_parts(ws)), state)
    finally:
        first.stop(sig_kill=True)  # kill -9 in the middle of the job
    done_before = {p.parent.name for p in _parts(ws)}
    assert 2 <= len(done_before) < N

    second = Server(tiny_model["model"], db).wait_ready()
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            job = _job(second.url, headers, job_id)
            if job["state"] in ("done", "failed"):
                break
            time.sleep(0.2)
    finally:
        second.stop()
    assert job["state"] == "done", job.get("error")
    assert job["attempts"] == 2
    assert job["result"]["n_ok"] == N and job["result"]["n_resumed"] >= len(done_before)
