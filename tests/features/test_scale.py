"""Import without torch, and the loader/features at the scale of a real cohort."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def test_light_modules_import_without_torch():
    code = (
        "import sys\n"
        "import atrisk.features.logs, atrisk.features.pairs, atrisk.features.in_class\n"
        "import atrisk.features.time_variant, atrisk.training.labels, atrisk.training.model\n"
        "import atrisk.training.evaluate, atrisk.training.predict\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_million_events(tmp_path: Path):
    from atrisk.features.pairs import build_pairs
    from atrisk.ingest.logs import load_logs

    rng = np.random.default_rng(0)
    ns, ne = 2000, 10**6
    start = pd.Timestamp("2024-01-01")
    sid = np.array([f"s{i}" for i in range(ns)])
    pd.DataFrame({"student_id": sid, "enrolled_at": start.isoformat(),
                  "grade": rng.integers(1, 13, ns)}).to_csv(tmp_path / "students.csv",
                                                              index=False)
    no = 5000
    pd.DataFrame({
        "order_id": [f"o{i}" for i in range(no)], "student_id": rng.choice(sid, no),
        "ordered_at": (start + pd.to_timedelta(rng.integers(0, 35 * 86400, no), unit="s"))
        .strftime("%Y-%m-%dT%H:%M:%S"),
        "n_courses": rng.integers(1, 20, no), "discount_ratio": rng.uniform(0, 1, no).round(3),
        "n_sales_conversations": rng.integers(0, 5, no),
    }).to_csv(tmp_path / "orders.csv", index=False)
    kinds = rng.choice(["class", "follow_up", "reschedule", "satisfaction", "other"], ne)
    times = start + pd.to_timedelta(rng.integers(0, 36 * 86400, ne), unit="s")
    pd.DataFrame({
        "event_id": [f"e{i}" for i in range(ne)], "student_id": rng.choice(sid, ne),
        "time": times.strftime("%Y-%m-%dT%H:%M:%S"), "kind": kinds,
        "teacher_id": np.where(kinds == "class", rng.choice([f"T{i}" for i in range(100)], ne),
                               ""),
        "session_id": "",
        "words": np.where(kinds == "follow_up", rng.integers(0, 300, ne).astype(str), ""),
        "value": np.where(kinds == "satisfaction", rng.integers(1, 6, ne).astype(str), ""),
    }).to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame({"student_id": sid,
                  "status": rng.choice(["dropout", "completion", "ongoing"], ns),
                  "status_time": (start + pd.Timedelta(days=36)).isoformat()}).to_csv(
        tmp_path / "outcomes.csv", index=False)
    t0 = time.perf_counter()
    logs = load_logs(tmp_path)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = build_pairs(logs)
    t_pairs = time.perf_counter() - t0
    assert len(logs.events) == ne and logs.errors == []
    assert len(pairs) > 60_000
    assert t_load < 30 and t_pairs < 60, (t_load, t_pairs)
