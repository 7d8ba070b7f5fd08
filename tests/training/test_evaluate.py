from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atrisk.training.evaluate import evaluate, recall_at_top, write_report


def test_recall_at_top_exact():
    t = pd.to_datetime(["2024-01-01"] * 4 + ["2024-01-02"] * 4, utc=True)
    pairs = pd.DataFrame({"t": t, "y": [1, 0, 1, 0, 0, 1, 0, 0]})
    proba = np.array([0.9, 0.8, 0.1, 0.2, 0.9, 0.5, 0.1, 0.3])
    # flag 2 per day: day 1 catches the 0.9 positive, misses the 0.1 one; day 2 catches 0.5
    assert recall_at_top(pairs, proba, "y", 0.5) == pytest.approx(2 / 3)
    # 0.3 of 4 -> ceil(1.2) = 2 flagged per day, same result
    assert recall_at_top(pairs, proba, "y", 0.3) == pytest.approx(2 / 3)
    assert recall_at_top(pairs, proba, "y", 0.25) == pytest.approx(1 / 3)
    assert recall_at_top(pairs.assign(y=0), proba, "y", 0.5) is None


def test_evaluate_with_baselines_and_nearest_horizon(fitted, synth_pairs):
    result = evaluate(fitted, synth_pairs, horizons=[1, 2, 3]).metrics
    assert result["model_horizon"] == {"1": 1, "2": 1, "3": 3}
    assert any("Δ=2" in n and "Δ=1 model" in n for n in result["notes"])
    assert set(result["auc"]) == {"gbdt", "lr", "dt", "rf", "gbdt_none"}
    for name, per in result["auc"].items():
        assert set(per) == {"1", "2", "3"}
        assert per["3"] > 0.7, name
    test = synth_pairs[synth_pairs["student_id"].isin(fitted.test_students_)]
    assert result["n_pairs"] == len(test)
    assert 0 < result["positive_ratio"]["1"] < result["positive_ratio"]["3"] < 0.5
    assert 0.5 < result["recall_at_top30"]["3"] <= 1.0


def test_fresh_dataset_is_evaluated_whole(fitted, synth_pairs):
    fresh = synth_pairs.assign(student_id="new_" + synth_pairs["student_id"])
    result = evaluate(fitted, fresh, horizons=[3], baselines=True).metrics
    assert result["evaluated_on"].startswith("all given pairs")
    assert result["n_pairs"] == len(fresh)
    assert result["auc"]["lr"]["3"] is None
    assert any("baselines skipped" in n for n in result["notes"])


def test_one_class_gives_null_auc_and_report(fitted, synth_pairs, tmp_path: Path):
    quiet = synth_pairs[synth_pairs["dropout_time"].isna()]
    result = evaluate(fitted, quiet, horizons=[1, 3], baselines=False).metrics
    assert result["auc"]["gbdt"]["1"] is None
    assert any("only one class" in n for n in result["notes"])
    html = write_report(result, tmp_path / "rep")
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["auc"]["gbdt"]["3"] is None
    text = html.read_text()
    assert "<table" in text and "data:image/png;base64," in text and "only one class" in text


def test_report_table_values(fitted, synth_pairs, tmp_path: Path):
    result = evaluate(fitted, synth_pairs, horizons=[3], baselines=False).metrics
    write_report(result, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["auc"]["gbdt"]["3"] == pytest.approx(result["auc"]["gbdt"]["3"])
    assert f"{result['auc']['gbdt']['3']:.3f}" in (tmp_path / "report.html").read_text()
