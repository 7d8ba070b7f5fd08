"""MOOC models together: fit, save/load, evaluate on unseen courses, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from atrisk.cli import app
from atrisk.errors import LogValidationError, ModelLoadError
from atrisk.mooc.cfin import CFINConfig
from atrisk.mooc.kddcup import load_kddcup
from atrisk.mooc.model import MODELS, MoocConfig, MoocModel, prepare_inputs

from .kdd_factory import make_kdd_folder

FAST_CFIN = CFINConfig(embed_dim=4, conv_size=8, hidden=[16, 8], epochs=12, patience=12,
                       batch_size=32, lr=3e-3)


def test_fit_save_load_unseen_courses(tmp_path):
    train_dir, _ = make_kdd_folder(tmp_path / "train", {"A": 60, "B": 60, "C": 60}, seed=1)
    test_dir, _ = make_kdd_folder(tmp_path / "test", {"X": 50, "Y": 50}, seed=2, start_id=1000)
    cfg = MoocConfig(models=["lr", "gbdt", "cfin", "cfin_en"], cfin=FAST_CFIN)
    model = MoocModel(cfg, device="cpu").fit(load_kddcup(train_dir))
    model.save(tmp_path / "m")
    test = load_kddcup(test_dir)
    res = model.evaluate(test)
    assert list(res["models"]) == ["lr", "gbdt", "cfin", "cfin_en"]
    assert res["n_enrollments"] == 100
    assert res["dropout_rate"] == pytest.approx(float(np.mean(test.labels)))
    # the generator makes engagement predictive: every model beats chance clearly
    assert all(m["auc"] > 0.7 for m in res["models"].values()), res
    again = MoocModel.load(tmp_path / "m", device="cpu").evaluate(test)
    for name, m in res["models"].items():
        assert again["models"][name]["auc"] == pytest.approx(m["auc"], abs=1e-6)
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["cv"]["lr"]["best_params"]["C"] in (0.01, 0.1, 1.0)


def test_context_of_unseen_courses_comes_from_their_own_data(tmp_path):
    d, _ = make_kdd_folder(tmp_path / "d", {"X": 30, "Y": 30}, seed=3)
    data = load_kddcup(d)
    inp = prepare_inputs(data)
    x = inp.X
    for c in ("X", "Y"):
        m = data.course_id == c
        # group value 1 is x - (course mean), over that course's enrollments only
        np.testing.assert_allclose(inp.G[m, :, 1], x[m] - x[m].mean(0), atol=1e-4)
    assert inp.Z.shape == (60, 0)
    # labels play no part: same inputs without truth.csv
    (d / "truth.csv").unlink()
    np.testing.assert_array_equal(prepare_inputs(load_kddcup(d, labels=False)).G, inp.G)


def test_user_context_and_course_onehot(tmp_path):
    d, _ = make_kdd_folder(tmp_path / "u", {"A": 40, "B": 40}, seed=4, users=True)
    data = load_kddcup(d)
    cfg = MoocConfig(models=["cfin"], course_onehot=True, cfin=FAST_CFIN)
    model = MoocModel(cfg, device="cpu").fit(data)
    assert model.uses_users_ and model.cfin_.shape_ == (104, 7, 2)
    assert model.cfin_.net_.use_attention  # context Z exists → attention on
    assert model.evaluate(data)["models"]["cfin"]["auc"] > 0.7
    no_users, _ = make_kdd_folder(tmp_path / "n", {"A": 10}, seed=5)
    with pytest.raises(LogValidationError, match="user context"):
        model.predict(load_kddcup(no_users))


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not a MOOC model"):
        MoocModel.load(tmp_path)


def test_cli_train_evaluate_unseen_courses_and_bad_rows(tmp_path):
    train_dir, _ = make_kdd_folder(tmp_path / "train", {"A": 50, "B": 50}, seed=6)
    test_dir, labels = make_kdd_folder(tmp_path / "test", {"Z": 60}, seed=7, start_id=500)
    with gzip.open(test_dir / "trainCourseZ.csv.gz", "at") as fh:
        fh.write("500,2014-06-01,-1,0,0,0,0,0,0\n")  # negative count: dropped, listed
    runner = CliRunner()
    r = runner.invoke(app, ["mooc", "train", "--data", str(train_dir), "--out",
                            str(tmp_path / "m"), "--epochs", "2", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["mooc", "evaluate", "--model", str(tmp_path / "m"), "--data",
                            str(test_dir), "--json", "--device", "cpu"])
    assert r.exit_code == 1  # one bad row, listed; everything else evaluated
    out = json.loads(r.stdout)
    assert set(out) == {"n_enrollments", "dropout_rate", "models"}
    assert list(out["models"]) == list(MODELS) and out["n_enrollments"] == 60
    assert out["dropout_rate"] == pytest.approx(np.mean(list(labels.values())))
    assert all(0.5 < m["auc"] <= 1 and 0 <= m["f1"] <= 1 for m in out["models"].values())
    assert "negative event count" in r.stderr
    r = runner.invoke(app, ["mooc", "evaluate", "--model", str(tmp_path / "nope"), "--data",
                            str(test_dir)])
    assert r.exit_code == 2 and "not a MOOC model" in " ".join(r.stderr.split())


def test_save_over_an_older_model_leaves_no_stale_part_or_temp_file(tmp_path):
    d, _ = make_kdd_folder(tmp_path / "d", {"A": 40, "B": 40}, seed=5)
    data = load_kddcup(d)
    with_cfin = MoocModel(MoocConfig(models=["lr", "cfin"], cfin=FAST_CFIN), device="cpu").fit(data)
    with_cfin.save(tmp_path / "m")
    assert (tmp_path / "m" / "cfin.pt").is_file()
    lr_only = MoocModel(MoocConfig(models=["lr"]), device="cpu").fit(data)
    lr_only.save(tmp_path / "m")
    # the older CFIN must not be loaded beside the new baselines
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "baselines.joblib", "checksums.sha256", "meta.json"]
    loaded = MoocModel.load(tmp_path / "m", device="cpu")
    assert loaded.cfin_ is None and loaded.cfin_en_ is None
    assert list(loaded.predict(data)) == ["lr"]


def test_a_changed_joblib_part_is_refused_before_it_is_unpickled(tmp_path):
    import os
    import pickle

    d, _ = make_kdd_folder(tmp_path / "d", {"A": 40, "B": 40}, seed=6)
    MoocModel(MoocConfig(models=["lr"]), device="cpu").fit(load_kddcup(d)).save(tmp_path / "m")
    assert MoocModel.load(tmp_path / "m", device="cpu").baselines_
    marker = tmp_path / "ran"

    class Payload:  # unpickling this would create the marker file
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (tmp_path / "m" / "baselines.joblib").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelLoadError, match="does not match its checksum"):
        MoocModel.load(tmp_path / "m", device="cpu")
    assert not marker.exists()
    (tmp_path / "m" / "checksums.sha256").unlink()
    with pytest.raises(ModelLoadError, match="checksums.sha256 is missing"):
        MoocModel.load(tmp_path / "m", device="cpu")
    assert not marker.exists()
