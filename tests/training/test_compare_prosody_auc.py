"""scripts/recipes/compare_prosody_auc.py on a tiny voiced cohort: both backends, same pairs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from atrisk.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["opensmile", "torch"]

# about 40 CPU-seconds (voicing, two extractions, model fits twice): slow, not default
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                 reason="espeak-ng (apt-get install espeak-ng) voices the cohort")]


def _script():
    spec = importlib.util.spec_from_file_location(
        "compare_prosody_auc", ROOT / "scripts" / "recipes" / "compare_prosody_auc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ARGS = ["--students", "12", "--recorded", "2", "--max-track-s", "6", "--folds", "2",
        "--deltas", "1,3", "--bootstrap", "20", "--workers", "1"]


def test_tiny_cohort_both_backends(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    script = _script()
    res = script.main(["--out", str(out), "--work", str(work), *ARGS])
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    printed = json.loads(capsys.readouterr().out)
    assert printed["auc"] == res["compare"]["auc"]
    assert printed["difference"] == res["compare"]["difference"]

    cohort = res["cohort"]
    # students S0001-S0012 of the paper-scale cohort, simulated exactly as there
    assert cohort["same_students_as_paper_scale"] is True
    assert cohort["n_students"] == 12 and cohort["n_dropouts"] == 3  # S0006, S0011, S0012
    tracks = sorted((work / "cohort" / "recordings").glob("*/*.wav"))
    assert cohort["n_tracks"] == len(tracks) == 2 * cohort["n_sessions"]
    assert cohort["audio_seconds"] == pytest.approx(sum(sf.info(p).duration for p in tracks),
                                                    abs=0.1)
    # both backends ran on every session and say which they are
    for b in BACKENDS:
        e = res["extract"][b]
        assert e["prosody_backend"].startswith(f"{b}-eGeMAPSv02")
        assert e["n_ok"] == e["n_sessions"] == cohort["n_sessions"] and e["n_failed"] == 0
        pros = Workspace(work / f"ws_{b}").read("prosody")
        # indexed (session_id, track): 88 functionals + the backend that computed them
        assert pros.shape == (2 * cohort["n_sessions"], 89)
        assert set(pros["prosody_backend"]) == {e["prosody_backend"]}
    a, b = (Workspace(work / f"ws_{x}").read("prosody") for x in BACKENDS)
    assert list(a.columns) == list(b.columns)  # same names, so the same pairs columns
    assert a.index.equals(b.index) and not a.equals(b)  # but the values differ

    cmp = res["compare"]
    assert cmp["n_features"]["prosody_only"] == 2 * 88 + 2 * 7  # + per-utterance means
    assert cmp["n_features"]["all"] == cmp["n_features"]["prosody_only"] + \
        cmp["n_features"]["no_prosody"]
    assert cmp["non_prosody_columns_identical"] is True  # same transcripts, same logs
    assert cmp["n_held_out_pairs"] == cmp["n_pairs"]  # 2 folds: every pair held out once
    for v in ("all", "prosody_only", "no_prosody"):
        assert set(cmp["auc"][v]) == set(BACKENDS)
        for x in BACKENDS:
            assert list(cmp["auc"][v][x]) == ["1", "3"]
    for v in ("all", "prosody_only"):
        for k in ("1", "3"):
            va, vb = cmp["auc"][v]["opensmile"][k], cmp["auc"][v]["torch"][k]
            assert va is not None and 0 <= va <= 1 and 0 <= vb <= 1
            assert cmp["difference"][v][k] == pytest.approx(va - vb, abs=1e-15)
            lo, hi = cmp["difference_ci"][v][k]
            assert -1 <= lo <= hi <= 1
    # the reference without prosody does not depend on the backend
    assert cmp["auc"]["no_prosody"]["opensmile"] == cmp["auc"]["no_prosody"]["torch"]
    assert res["command"] == "python scripts/recipes/compare_prosody_auc.py --out " + \
        f"{out} --work {work} " + " ".join(ARGS)
    assert "| 1 |" in (out / "results.md").read_text()

    # a rerun with the same --work reuses the cohort and every extracted session
    capsys.readouterr()
    res2 = script.main(["--out", str(tmp_path / "out2"), "--work", str(work), *ARGS])
    assert res2["compare"]["auc"] == cmp["auc"]
    assert res2["cohort"] == res["cohort"]  # not voiced again (same timings)
    for b in BACKENDS:
        assert res2["extract"][b]["n_resumed"] == cohort["n_sessions"]
        assert res2["extract"][b]["cost_from_earlier_run"] is True
        assert res2["extract"][b]["cost_run_n_resumed"] == 0  # the first run extracted all
        assert res2["extract"][b]["cpu_s"] == res["extract"][b]["cpu_s"]
