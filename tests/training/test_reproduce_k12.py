"""scripts/recipes/reproduce_k12.py --test-data: train on one folder, evaluate on another."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.mooc.daily_pairs import load_kddcup_pairs
from atrisk.mooc.kddcup import COURSE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["gbdt_aug", "gbdt_none", "lr", "dt", "rf"]


def _kdd_folder(folder: Path, course: str, ids: range, seed: int) -> Path:
    """Write a KDD Cup-layout folder: dropouts stop early, the others stay active."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    days = pd.date_range("2014-06-01", periods=30, freq="D")
    lines, labels = [",".join(COURSE_COLUMNS)], []
    for eid in ids:
        drop = int(rng.random() < 0.5)
        last = int(rng.integers(3, 25)) if drop else 29
        rate = 0.25 if drop else 0.6
        for i, d in enumerate(days):
            n = int(rng.random() < rate) * int(rng.integers(1, 9)) if i <= last else 0
            if i == last:
                n = max(n, 1)
            lines.append(f"{eid},{d.date()},{n},0,{n // 2},0,{n % 3},{n},0")
        labels.append((eid, drop))
    with gzip.open(folder / f"trainCourse{course}.csv.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    pd.DataFrame(labels, columns=["enrollment_id", "label"]).to_csv(folder / "truth.csv",
                                                                    index=False)
    return folder


def test_test_data_is_a_never_seen_folder(tmp_path):
    train_dir = _kdd_folder(tmp_path / "train", "A", range(1, 61), seed=1)
    test_dir = _kdd_folder(tmp_path / "other", "B", range(1001, 1031), seed=2)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "recipes" / "reproduce_k12.py"), "--dataset", "kddcup",
         "--data", str(train_dir), "--test-data", str(test_dir), "--out", str(out),
         "--no-tune", "--max-delta", "2", "--jobs", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    train_pairs, _ = load_kddcup_pairs(train_dir)
    test_pairs, test_info = load_kddcup_pairs(test_dir)
    # trained on every pair of --data, evaluated on every pair of --test-data
    assert res["n_pairs"] == res["n_train_pairs"] == len(train_pairs)
    assert res["n_test_pairs"] == len(test_pairs) > 0
    assert res["info"]["test"]["n_enrollments"] == test_info["n_enrollments"] == 30
    assert res["evaluated_on"] == f"every pair of {test_dir}"
    # no enrollment id is shared with --data (that would add a note), no in-class group
    assert res["notes"] == ["feature groups absent in this data set: in"]
    assert set(res["auc"]) == set(MODELS)
    for model in MODELS:
        assert list(res["auc"][model]) == ["1", "2"]  # --max-delta 2 keeps it quick
    assert set(res["lookback"]) == {"none", "3", "7", "14"}
    assert all(list(v) == ["1"] for v in res["lookback"].values())
    assert set(res["weighting"]) == {"linear", "convex", "concave", "constant"}
    # no in-class group in KDD Cup; groups scored at Δ = 2 (the largest asked for)
    assert set(res["feature_groups"]) == {"out", "time", "out+time"}
    assert all(list(v) == ["2"] for v in res["feature_groups"].values())
    auc1 = res["auc"]["gbdt_aug"]["1"]
    assert auc1 is not None and 0.5 < auc1 <= 1.0  # dropouts really stop: learnable
    assert 0 <= res["recall_at_top30"]["1"] <= 1
    assert res["seconds"] > 0
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and str(test_dir) in page


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_k12",
                                                  ROOT / "scripts" / "recipes" / "reproduce_k12.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_merge_joins_parts_of_one_grid(tmp_path):
    base = {"dataset": "kddcup", "n_students": 10, "n_pairs": 100, "n_train_pairs": 80,
            "n_test_pairs": 20, "positive_ratio": {"before": 0.04, "after": 0.2},
            "info": {}, "evaluated_on": "held-out", "lookback": {}, "weighting": {},
            "feature_groups": {}, "notes": ["a"]}
    part1 = {**base, "command": "python r.py --deltas 1,2", "seconds": 5.0,
             "auc": {"gbdt_aug": {"2": 0.7, "1": 0.8}}, "recall_at_top30": {"1": 0.5, "2": 0.4}}
    part2 = {**base, "command": "python r.py --deltas 10 --stages auc,lookback",
             "seconds": 7.0, "auc": {"gbdt_aug": {"10": 0.6}}, "recall_at_top30": {"10": 0.3},
             "lookback": {"7": {"1": 0.81}}, "notes": ["b", "a"]}
    for name, part in (("p1", part1), ("p2", part2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(part))
    res = _script().merge([str(tmp_path / "p1"), str(tmp_path / "p2")], tmp_path / "out")
    assert res["auc"] == {"gbdt_aug": {"1": 0.8, "2": 0.7, "10": 0.6}}
    assert list(res["recall_at_top30"]) == ["1", "2", "10"]
    assert res["lookback"] == {"7": {"1": 0.81}}
    assert res["notes"][:2] == ["a", "b"] and res["notes"][2].endswith(
        "did not finish): 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14")
    assert res["seconds"] == 12.0 and " && " in res["command"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["auc"] == res["auc"]
