"""The shared KDD Cup 2015 copy: counts, features, a model on unseen courses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atrisk.mooc.kddcup import activity_features, context_groups, load_kddcup
from atrisk.mooc.model import MoocConfig, MoocModel

pytestmark = pytest.mark.realdata


FOLDER = Path(__file__).resolve().parents[3] / "shared" / "data" / "kddcup2015"


@pytest.fixture(scope="module")
def kdd():
    folder = FOLDER
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the public data sits beside the repo in CI)")
    return load_kddcup(folder)


def test_shared_copy_loads_cleanly(kdd):
    assert len(kdd) == 46192 and len(set(kdd.course_id)) == 24
    assert kdd.problems == [] and kdd.n_missing_truth == 0
    assert float(np.mean(kdd.labels)) == pytest.approx(0.829, abs=5e-4)
    assert kdd.user_id is None  # no user ids: user context is off on this data
    feats = activity_features(kdd)
    assert feats.shape == (46192, 104)
    assert context_groups(kdd, feats).shape == (46192, 104, 5)


@pytest.mark.slow
def test_gbdt_and_cfin_on_unseen_courses(kdd):
    courses = sorted(set(kdd.course_id))
    test = np.isin(kdd.course_id, courses[::5])
    cfg = MoocConfig(models=["lr", "gbdt", "cfin"], folds=5)
    res = MoocModel(cfg, device="cpu").fit(kdd.subset(~test)).evaluate(kdd.subset(test))
    assert all(m["auc"] > 0.84 for m in res["models"].values()), res
