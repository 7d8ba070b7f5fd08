"""Load test of `atrisk serve` over loopback: risk queries over 10,000 students.

Seeds a store with a risk list of N students (default 10,000) for one day, starts
the real service (uvicorn, one process) on 127.0.0.1 with a free port, runs C
concurrent clients (default 50) for D seconds (default 30) querying
``GET /v1/risk`` pages (random offset, 100 rows) and ``GET /v1/students/{id}``,
and prints JSON: requests, errors, rps, p50_ms, p99_ms, max_ms.  Goal: p99 ≤ 200 ms,
0 errors.  Only loopback traffic.

    .venv/bin/python scripts/load_service.py [--students 10000] [--clients 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(root: Path) -> Path:
    from atrisk import pipeline
    from atrisk.synthetic import generate_cohort

    generate_cohort(root / "cohort", n_students=40, audio=False)
    pipeline.train(root / "ws", root / "cohort" / "logs", root / "model")
    return root / "model"


def _seed(db: Path, n: int, day: str) -> tuple[str, list[str]]:
    from atrisk.serve.store import Store

    rng = np.random.default_rng(0)
    p = np.sort(rng.random(n))[::-1]
    ids = [f"S{i:06d}" for i in range(n)]
    risk = pd.DataFrame({"student_id": ids, "probability": p, "rank": np.arange(1, n + 1),
                         "flagged": np.arange(n) < int(0.3 * n),
                         "top_reasons": "days since the last class (9); reschedules so far (3)"})
    with Store(db) as st:
        st.write_risk(risk, day, 1)
        key = st.create_key("read").key
    return key, ids


async def _client(url, key, day, ids, n_students, stop_at, lat, errors, student_share):
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=10) as c:
        while time.perf_counter() < stop_at:
            if random.random() < student_share:
                req = c.get(f"/v1/students/{random.choice(ids)}")
            else:
                off = random.randrange(0, max(1, n_students - 100))
                req = c.get("/v1/risk", params={"date": day, "offset": off, "limit": 100})
            t0 = time.perf_counter()
            try:
                r = await req
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append((time.perf_counter() - t0) * 1000)
            if not ok:
                errors.append(1)


async def _load(url, key, day, ids, clients, seconds, student_share) -> dict:
    lat: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*(_client(url, key, day, ids, len(ids), stop_at, lat, errors,
                                   student_share) for _ in range(clients)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"requests": len(a), "errors": len(errors), "rps": round(len(a) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def main() -> None:
    """Run the load test and print its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--student-share", type=float, default=0.2,
                    help="Share of requests that are GET /v1/students/{id}.")
    ap.add_argument("--model", type=Path, help="Model folder (default: train a tiny one).")
    args = ap.parse_args()
    day = "2024-03-25"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or _tiny_model(root)
        key, ids = _seed(root / "s.duckdb", args.students, day)
        port = _port()
        url = f"http://127.0.0.1:{port}"
        log = open(root / "serve.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "atrisk.cli_serve", "serve", "--model", str(model), "--db",
             str(root / "s.duckdb"), "--port", str(port), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                sys.exit("service did not start: " + (root / "serve.log").read_text()[-2000:])
            out = asyncio.run(_load(url, key, day, ids, args.clients, args.seconds,
                                    args.student_share))
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()
    out.update({"students": args.students, "clients": args.clients, "seconds": args.seconds,
                "cpus": os.cpu_count(), "goal": "p99_ms <= 200 and errors == 0"})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
