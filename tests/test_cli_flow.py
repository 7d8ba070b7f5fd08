"""train → evaluate → predict through the CLI, on a log-only synthetic cohort with bad rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from atrisk.cli import app
from atrisk.synthetic import generate_cohort

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    generate_cohort(root / "data", n_students=60, seed=3, audio=False)
    logs = root / "data" / "logs"
    ev = logs / "events.csv"
    lines = ev.read_text().splitlines()
    cols = lines[0].split(",")
    bad = lines[1].split(",")
    bad[cols.index("event_id")] = "bad-time"
    bad[cols.index("time")] = "2024-02-30T25:00:00"
    ev.write_text("\n".join([*lines, ",".join(bad)]) + "\n")
    n_event_lines = len(lines) + 1
    cfg = root / "cfg.toml"
    cfg.write_text("[training]\nhorizons = [1, 7]\nn_estimators = 50\n")
    r = runner.invoke(
        app,
        [
            "train",
            "--workspace",
            str(root / "ws"),
            "--logs",
            str(logs),
            "--out",
            str(root / "model"),
            "--config",
            str(cfg),
        ],
    )
    return root, logs, r, n_event_lines


def test_train_lists_bad_rows_and_exits_1(trained):
    root, logs, r, n_lines = trained
    assert r.exit_code == 1, r.output
    assert f"events.csv:{n_lines}" in r.output.replace("\n", "")
    assert (root / "model" / "model.joblib").is_file()
    pairs = pd.read_parquet(root / "ws" / "pairs.parquet")
    assert {
        "student_id",
        "t",
        "dropout_within_1",
        "dropout_within_7",
        "weight",
        "is_pseudo",
    } <= set(pairs.columns)
    assert pairs.loc[pairs.is_pseudo, "weight"].between(0, 1, inclusive="right").all()


def test_evaluate_writes_report(trained):
    root, logs, _, _ = trained
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(root / "model"),
            "--workspace",
            str(root / "ws"),
            "--logs",
            str(logs),
            "--out",
            str(root / "rep"),
            "--no-baselines",
            "--json",
        ],
    )
    assert r.exit_code == 1  # the bad log row is still reported
    out = json.loads(r.stdout)
    # per Δ, for the student split and the temporal hold-out: the AUC with its
    # interval and the numbers behind it, and the Brier score
    for split in (out, out["temporal"]):
        assert set(split["per_horizon"]) == {"1", "7"}
        for m in split["per_horizon"].values():
            assert {"auc", "auc_ci", "n_pos", "n_students", "brier"} <= set(m)
            assert m["n_students"] > 0 and m["n_pos"] >= 0
            if m["auc_ci"] is not None:
                assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
            assert m["brier"] is None or 0 <= m["brier"] <= 1
    metrics = json.loads((root / "rep" / "metrics.json").read_text())
    assert set(metrics["auc"]["gbdt"]) == {"1", "7"}
    assert all(v is None or 0 <= v <= 1 for v in metrics["auc"]["gbdt"].values())
    html = (root / "rep" / "report.html").read_text()
    assert html.lower().startswith("<!doctype html")
    assert "data:image/png;base64," in html  # the AUC-vs-Δ figure is embedded
    assert "gbdt" in html


def test_predict_writes_ranked_list(trained):
    from atrisk.demo import busiest_day

    root, logs, _, _ = trained
    day = busiest_day(logs)
    out = root / "risk.csv"
    r = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(root / "model"),
            "--workspace",
            str(root / "ws"),
            "--logs",
            str(logs),
            "--date",
            str(day.date()),
            "--horizon",
            "7",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 1
    risk = pd.read_csv(out)
    assert len(risk) >= 5
    assert risk["probability"].between(0, 1).all()
    assert sorted(risk["rank"]) == list(range(1, len(risk) + 1))
    assert risk.sort_values("rank")["probability"].is_monotonic_decreasing
    assert (
        risk["flagged"].sum() == max(1, round(0.3 * len(risk)))
        or abs(risk["flagged"].mean() - 0.3) < 1 / len(risk) + 1e-9
    )
    assert risk.loc[risk.flagged, "top_reasons"].str.len().gt(0).all()


def test_predict_bad_date_and_untrained_horizon_are_usage_errors(trained):
    root, logs, _, _ = trained
    base = [
        "predict",
        "--model",
        str(root / "model"),
        "--workspace",
        str(root / "ws"),
        "--logs",
        str(logs),
        "--out",
        str(root / "x.csv"),
    ]
    r = runner.invoke(app, [*base, "--date", "not-a-date"])
    assert r.exit_code == 2 and "not-a-date" in r.output
    r = runner.invoke(app, [*base, "--date", "2024-03-20", "--horizon", "5"])
    assert r.exit_code == 2 and "7" in r.output


def test_predict_db_replaces_the_day(trained):
    from atrisk.demo import busiest_day
    from atrisk.serve.store import Store

    root, logs, _, _ = trained
    day = busiest_day(logs)
    db = root / "store.duckdb"
    args = [
        "predict",
        "--model",
        str(root / "model"),
        "--workspace",
        str(root / "ws"),
        "--logs",
        str(logs),
        "--date",
        str(day.date()),
        "--horizon",
        "1",
        "--out",
        str(root / "r.csv"),
        "--db",
        str(db),
    ]
    for _ in range(2):  # re-running a day replaces, never duplicates
        assert runner.invoke(app, args).exit_code == 1
    risk = pd.read_csv(root / "r.csv")
    with Store(db, read_only=True) as store:
        n = (
            store.cursor()
            .execute("select count(*), count(distinct student_id) from risk")
            .fetchone()
        )
    assert n == (len(risk), len(risk))


def test_predict_and_evaluate_use_the_feature_settings_the_model_was_trained_with(tmp_path):
    """Non-default [features] at train time; predict/evaluate without --config follow them."""
    generate_cohort(tmp_path / "data", n_students=40, seed=5, audio=False)
    logs = tmp_path / "data" / "logs"
    cfg = tmp_path / "c.toml"
    cfg.write_text("[features]\nwindows_days = [3, 10]\nin_class_sessions = 2\n"
                   "[training]\nhorizons = [1, 3]\nn_estimators = 30\n")
    ws, model = tmp_path / "ws", tmp_path / "model"
    r = runner.invoke(app, ["train", "--workspace", str(ws), "--logs", str(logs), "--out",
                            str(model), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    pairs = pd.read_parquet(ws / "pairs.parquet")
    assert "time_classes_3d" in pairs.columns and "time_classes_7d" not in pairs.columns
    saved = (model / "config.toml").read_text()
    assert "windows_days = [\n    3,\n    10,\n]" in saved or "windows_days = [3, 10]" in saved
    r = runner.invoke(app, ["evaluate", "--model", str(model), "--workspace", str(ws), "--logs",
                            str(logs), "--out", str(tmp_path / "rep"), "--no-baselines",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)["auc"]["gbdt"]) == {"1", "3"}
    from atrisk.demo import busiest_day

    day = busiest_day(logs)
    r = runner.invoke(app, ["predict", "--model", str(model), "--workspace", str(ws), "--logs",
                            str(logs), "--date", str(day.date()), "--out",
                            str(tmp_path / "risk.csv"), "--json"])
    assert r.exit_code == 0, r.output
    # the model's own settings built the features: the same list as building them by hand
    from atrisk import Config, Logs, RiskModel

    m = RiskModel.load(model)
    assert m.features.windows_days == [3, 10] and m.features.in_class_sessions == 2
    assert Config().features.windows_days != [3, 10]
    by_hand = m.rank(Logs.read(logs), None, day)
    risk = pd.read_csv(tmp_path / "risk.csv")
    assert list(risk["student_id"].astype(str)) == list(by_hand["student_id"])
    assert risk["probability"].to_numpy() == pytest.approx(by_hand["probability"].to_numpy())
