"""Fixtures of the service tests: a tiny trained model and a real uvicorn process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Key:
    """A key made for a test: ``h`` is the header dict to send, ``id`` its key id."""

    h: dict
    id: str
    key: str


def make_key(db: Path, scope: str, org: str | None = "default", **kw) -> Key:
    """Make a key in the store's key file (as ``atrisk keys create`` does)."""
    from atrisk.serve.keys import KeyStore, keystore_path

    keys = KeyStore(keystore_path(db))
    new = keys.create_key(scope, org, **kw)
    keys.close()
    return Key({"X-API-Key": new.key}, new.key_id, new.key)


def wait_job(client: httpx.Client, headers: dict, job_id: str, timeout: float = 300) -> dict:
    """Poll ``GET /v1/jobs/{job_id}`` until the job is done or failed; return it."""
    end = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished in {timeout} s: {job}")


class Server:
    """`python -m atrisk serve` on 127.0.0.1 in a subprocess (data root: DB.data/)."""

    def __init__(self, model: Path, db: Path, extra: tuple[str, ...] = ()):
        self.db = db
        self.root = db.with_suffix(".data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = db.with_suffix(".log")
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atrisk", "serve", "--model", str(model),
             "--db", str(db), "--port", str(self.port), "--log-level", "warning", *extra],
            stdout=self._fh, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> Server:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"service not ready: {self.log.read_text()[-2000:]}")

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if sig_kill else self.proc.terminate()
            self.proc.wait(20)
        self._fh.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict:
    """A model trained on 40 synthetic students without audio (≈ 3 s), and its risk list."""
    from atrisk import workflows
    from atrisk.demo import busiest_day
    from atrisk.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("tiny")
    generate_cohort(root / "cohort", n_students=40, audio=False)
    logs = root / "cohort" / "logs"
    workflows.train_folder(root / "ws", logs, root / "model")
    day = busiest_day(logs)
    risk, _ = workflows.predict_folder(root / "model", root / "ws", logs, day, root / "risk.csv")
    return {"model": root / "model", "logs": logs, "workspace": root / "ws", "day": day,
            "risk": risk}
