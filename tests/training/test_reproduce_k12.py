"""scripts/recipes/reproduce_k12.py: the grid with intervals, in pieces that resume."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.mooc.daily_pairs import holdout_mask
from atrisk.mooc.kddcup import COURSE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "recipes" / "reproduce_k12.py"


def _kdd_folder(folder: Path, ids: range, seed: int) -> Path:
    """A KDD Cup-layout folder: dropouts stop early and idle more before."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    days = pd.date_range("2014-06-01", periods=30, freq="D")
    lines, labels = [",".join(COURSE_COLUMNS)], []
    for eid in ids:
        drop = int(rng.random() < 0.5)
        last = int(rng.integers(6, 25)) if drop else 29
        for i, d in enumerate(days):
            rate = 0.2 if drop and i > last - 4 else 0.6
            n = int(rng.random() < rate) * int(rng.integers(1, 9)) if i <= last else 0
            if i in (0, last):
                n = max(n, 1)
            lines.append(f"{eid},{d.date()},{n},0,{n // 2},0,{n % 3},{n},0")
        labels.append((eid, drop))
    with gzip.open(folder / "trainCourseA.csv.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    pd.DataFrame(labels, columns=["enrollment_id", "label"]).to_csv(folder / "truth.csv",
                                                                    index=False)
    return folder


def _run(data: Path, work: Path, out: Path, stages: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", "kddcup", "--data", str(data),
         "--work", str(work), "--out", str(out), "--stages", stages, "--deltas", "1,3",
         "--lookbacks", "0,3", "--weightings", "convex", "--balances", "reweight",
         "--n-boot", "100", "--jobs", "1", "--max-train", "200", "--max-test", "200"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow  # two runs of the recipe: about 2 min on 2 busy cores
def test_grid_with_intervals_resumes(tmp_path):
    data = _kdd_folder(tmp_path / "kdd", range(1, 241), seed=1)
    work, out = tmp_path / "work", tmp_path / "out"
    proc = _run(data, work, out, "grid")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    keys = [c["key"] for c in res["cells"]]
    assert sorted(keys) == sorted(["grid/seed/L0/-/reweight/", "grid/seed/L3/convex/reweight/",
                                   "grid/horizon/L0/-/reweight/",
                                   "grid/horizon/L3/convex/reweight/"])
    # the test enrollments are those of the id-hash split, none of them in training
    test_ids = {str(e) for e in range(1, 241) if holdout_mask([e])[0]}
    assert res["data"]["test"]["n_enrollments"] == len(test_ids)
    assert res["data"]["shared_ids"] == 0
    for c in res["cells"]:
        for d in ("1", "3"):
            m = c["metrics"][d]
            assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
            assert m["n_pos"] > 0 and m["n_students"] == res["n_test_students"]
            assert m["recall_at_top30_ci"] is not None and m["brier_base_rate"] > 0
    # augmented cells carry their paired difference to Λ = none
    diff = res["paired"]["grid/horizon/L3/convex/reweight/"]
    assert diff["vs"] == "grid/horizon/L0/-/reweight/"
    assert diff["diff"]["1"]["ci"][0] <= diff["diff"]["1"]["value"] <= diff["diff"]["1"]["ci"][1]
    assert "| grid | seed | 3 | convex | reweight |" in (out / "results.md").read_text()
    # a rerun with one more stage keeps the finished cells and adds the new ones
    before = (out / "cells.jsonl").read_text()
    proc = _run(data, work, out, "grid,baselines")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = (out / "cells.jsonl").read_text()
    assert after.startswith(before) and after.count("\n") == before.count("\n") + 4
    res = json.loads((out / "results.json").read_text())
    assert {"gbdt_none-rf", "rf-lr", "lr-dt"} <= set(res["paired"])
