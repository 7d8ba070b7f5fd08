"""Internal cross-validation of LightGBM parameters, grouped by student."""

from __future__ import annotations

import numpy as np
import pytest

from atrisk.training.fit import tune_params
from atrisk.training.model import RiskModel

GRID = [{"num_leaves": 3, "min_child_samples": 5}, {"num_leaves": 7, "min_child_samples": 40}]


def test_tune_scores_every_grid_point_and_keeps_the_best(synth_pairs, small_config):
    res = tune_params(synth_pairs, small_config, grid=GRID, folds=3, horizon=3)
    assert res["horizon"] == 3 and res["folds"] == 3
    assert [{k: s[k] for k in ("num_leaves", "min_child_samples")} for s in res["scores"]] == GRID
    aucs = [s["auc"] for s in res["scores"]]
    assert all(0.5 < a <= 1.0 for a in aucs)
    assert res["best"] == GRID[int(np.argmax(aucs))]


def test_folds_group_students(synth_pairs, small_config, monkeypatch):
    # record the training/validation students of every fold fit: never shared
    import atrisk.training.fit as m

    seen = []
    real = m.fit_horizon

    def spy(train, *a, **k):
        seen.append(set(train["student_id"]))
        return real(train, *a, **k)

    monkeypatch.setattr(m, "fit_horizon", spy)
    tune_params(synth_pairs, small_config, grid=GRID[:1], folds=3, horizon=3)
    students = set(synth_pairs["student_id"])
    assert len(seen) == 3
    held_out = [students - s for s in seen]
    assert all(h for h in held_out)
    assert not (held_out[0] & held_out[1]) and not (held_out[1] & held_out[2])
    assert set().union(*held_out) == students


@pytest.mark.slow
def test_risk_model_tune_switch(synth_pairs, small_config, monkeypatch):
    import atrisk.training.fit as m

    monkeypatch.setattr(m, "TUNE_GRID", GRID)
    model = RiskModel(small_config, tune=True).fit_pairs(synth_pairs)
    best = model.metadata_["tuning"]["best"]
    assert best in GRID
    assert model.training.num_leaves == best["num_leaves"]
    assert model.pipeline(1).named_steps["model"].num_leaves == best["num_leaves"]
    plain = RiskModel(small_config).fit_pairs(synth_pairs)
    assert plain.metadata_["tuning"] is None
