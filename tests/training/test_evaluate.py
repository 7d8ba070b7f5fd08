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


def test_every_horizon_has_its_interval_and_denominators(fitted, synth_pairs):
    from sklearn.metrics import roc_auc_score

    from atrisk.training.labels import add_labels

    result = evaluate(fitted, synth_pairs, horizons=[1, 3], baselines=False).metrics
    test = add_labels(synth_pairs[synth_pairs["student_id"].isin(fitted.test_students_)],
                      [1, 3])
    for d in (1, 3):
        m = result["per_horizon"][str(d)]
        y = test[f"dropout_within_{d}"].to_numpy()
        # AUC of the raw score (what ranks), its student-resampled interval around it
        assert m["auc"] == pytest.approx(roc_auc_score(y, fitted.predict_score(test, d)))
        lo, hi = m["auc_ci"]
        assert lo < m["auc"] < hi and hi - lo < 0.5
        assert m["n_pos"] == int(y.sum()) and m["n_neg"] == int(len(y) - y.sum())
        assert m["n_students"] == test["student_id"].nunique() == result["n_students"]
        # Brier of the calibrated probability, next to what the base rate scores
        p = fitted.predict_proba(test, d)
        assert m["calibrated"] and m["brier"] == pytest.approx(np.mean((p - y) ** 2))
        assert m["brier_ci"][0] <= m["brier"] <= m["brier_ci"][1]
        assert m["brier_base_rate"] == pytest.approx(y.mean() * (1 - y.mean()))
        assert m["recall_at_top"] == pytest.approx(result["recall_at_top30"][str(d)])
        assert m["recall_at_top_ci"][0] <= m["recall_at_top"] <= m["recall_at_top_ci"][1]
        assert result["auc_ci"]["gbdt"][str(d)] == m["auc_ci"]
        curve = result["reliability"][str(d)]
        assert sum(curve["count"]) == len(y)
    # fewer than 20 positives at Δ=1 among the held-out students: one caveat line
    n1 = result["per_horizon"]["1"]["n_pos"]
    assert (n1 < 20) == any(c.startswith("Δ=1: only") for c in result["caveats"])


def test_fairness_table_per_attribute(fitted, synth_pairs):
    ids = sorted(synth_pairs["student_id"].unique())
    attrs = pd.DataFrame({"grade": [5 + i % 2 for i in range(len(ids))],
                          "school": ["A" if i % 3 else "B" for i in range(len(ids))]},
                         index=pd.Index(ids, name="student_id"))
    cfg = fitted.config_.model_copy(update={"training": fitted.training.model_copy(
        update={"group_columns": ["grade", "school", "absent"]})})
    model = type(fitted)(cfg).fit_pairs(synth_pairs)
    result = evaluate(model, synth_pairs, horizons=[3], baselines=False,
                      attributes=attrs).metrics
    fair = result["fairness"]
    assert fair["horizon"] == 3 and set(fair["columns"]) == {"grade", "school"}
    assert any("'absent'" in n for n in result["notes"])
    rows = fair["columns"]["grade"]
    assert [r["group"] for r in rows] == ["5", "6"]
    assert sum(r["n_students"] for r in rows) == result["n_students"]
    assert sum(r["n_pos"] for r in rows) == result["per_horizon"]["3"]["n_pos"]
    for r in rows:
        assert {"flag_rate", "flag_rate_ci", "recall_at_top", "auc", "auc_ci",
                "calibration_gap", "false_flag_rate"} <= set(r)


def test_report_has_bands_reliability_fairness_and_temporal(fitted, synth_pairs, tmp_path):
    cfg = fitted.config_.model_copy(update={"training": fitted.training.model_copy(
        update={"temporal_cut": "auto"})})
    model = type(fitted)(cfg).fit_pairs(synth_pairs)
    result = evaluate(model, synth_pairs, horizons=[1, 3], baselines=False).metrics
    tmp = result["temporal"]
    assert tmp["cut"] and tmp["n_pairs"] > 0 and set(tmp["per_horizon"]) == {"1", "3"}
    cut = pd.Timestamp(tmp["cut"], tz="UTC")
    assert tmp["n_pairs"] == int((synth_pairs["t"] >= cut).sum())
    for d in ("1", "3"):
        m = tmp["per_horizon"][d]
        assert {"auc", "auc_ci", "n_pos", "n_students", "brier"} <= set(m)
    page = write_report(result, tmp_path).read_text()
    assert page.count("data:image/png;base64,") == 2  # AUC vs Δ with bands, reliability
    assert "Fairness by student group" in page and "Temporal hold-out" in page
    assert f"Cut {tmp['cut']}" in page
