"""The ray engine gives the local engine's tables, failures and resume behaviour."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from atrisk import workflows
from atrisk.config import Config
from atrisk.testing import small_recordings

pytest.importorskip("ray")

TABLES = ("sessions", "prosody", "utterances", "prosody_utterances", "in_class")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs for the module (extract reuses an initialised Ray)."""
    from atrisk.extract.engines.ray_data import init_ray

    started = init_ray(num_cpus=2)
    yield
    if started:
        import ray

        ray.shutdown()


def _assert_same_outputs(a, b):
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{table}.parquet"),
                                      pd.read_parquet(b / f"{table}.parquet"))
    assert _failures(a) == _failures(b)


def _failures(ws):
    rows = [json.loads(line) for line in (ws / "failures.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda f: (str(f.get("key")), str(f.get("track")), f["reason"]))


@pytest.mark.slow  # ≈ 130 s on 2 cores: two extracts with pocketsphinx, Ray start-up
def test_ray_and_local_engines_give_identical_tables(tmp_path):
    """Local mode with 2 CPUs, pocketsphinx ASR on the actor pool, every bad input kind."""
    from tests.conftest import make_bad_recordings

    rec = make_bad_recordings(tmp_path / "recordings")
    cfg = Config().override({"asr.backend": "pocketsphinx"})
    local = workflows.extract_folder(rec, tmp_path / "local", cfg, workers=2, progress=False)
    ray_res = workflows.extract_folder(rec, tmp_path / "ray", cfg, engine="ray", workers=2,
                               progress=False)
    assert (ray_res.n_ok, ray_res.n_partial, ray_res.n_failed) == (
        local.n_ok, local.n_partial, local.n_failed) == (3, 4, 1)
    assert ray_res.exit_code == local.exit_code == 1
    assert ray_res.n_resumed == 0 and ray_res.n_utterances == local.n_utterances > 0
    _assert_same_outputs(tmp_path / "ray", tmp_path / "local")
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["engine"] == "ray"
    # resume across engines: the ray run's part files are the local engine's cache
    again = workflows.extract_folder(rec, tmp_path / "ray", cfg, workers=2, progress=False)
    assert again.n_resumed == again.n_sessions - 0 == 7
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / "in_class.parquet"),
                                  pd.read_parquet(tmp_path / "local" / "in_class.parquet"))


def test_ray_engine_equals_local_with_given_transcripts(tmp_path):
    """Default-suite check: 2-CPU local Ray, CPU stage + text stage, a missing track."""
    rec = small_recordings(tmp_path / "rec")
    cfg = Config().override({"asr.backend": "transcripts"})
    local = workflows.extract_folder(rec, tmp_path / "local", cfg, workers=1, progress=False)
    ray_res = workflows.extract_folder(rec, tmp_path / "ray", cfg, engine="ray", workers=2,
                               progress=False)
    assert (ray_res.n_ok, ray_res.n_partial, ray_res.exit_code) == (2, 1, 1)
    assert (local.n_ok, local.n_partial, local.exit_code) == (2, 1, 1)
    _assert_same_outputs(tmp_path / "ray", tmp_path / "local")
    prosody = pd.read_parquet(tmp_path / "ray" / "prosody.parquet")
    assert len(prosody) == 5  # 3 teacher + 2 student tracks, each with its backend
    assert prosody["prosody_backend"].tolist() == ["opensmile-eGeMAPSv02-2.6.0"] * 5
    ic = pd.read_parquet(tmp_path / "ray" / "in_class.parquet")
    assert ic.loc["s1", "inter_qa_rounds"] == 1  # text features came from the ray text stage
    assert ray_res.stage_seconds["text_s"] > 0 and ray_res.stage_seconds["prosody_s"] > 0
    # a second ray run resumes every session from the part files
    again = workflows.extract_folder(rec, tmp_path / "ray", cfg, engine="ray", workers=2,
                             progress=False)
    assert again.n_resumed == 3 and again.stage_seconds.get("prosody_s", 0.0) == 0.0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / "in_class.parquet"), ic)


@pytest.mark.slow  # ≈ 60 s on 2 cores: two extracts with the torch prosody backend
def test_ray_engine_equals_local_with_the_torch_prosody_backend(tmp_path):
    """Per-track and per-utterance torch prosody: the same tables from both engines."""
    rec = small_recordings(tmp_path / "rec")
    cfg = Config().override({"asr.backend": "transcripts", "prosody.backend": "torch"})
    workflows.extract_folder(rec, tmp_path / "local", cfg, device="cpu", workers=1, progress=False)
    workflows.extract_folder(rec, tmp_path / "ray", cfg, engine="ray", workers=2, progress=False)
    _assert_same_outputs(tmp_path / "ray", tmp_path / "local")
    pu = pd.read_parquet(tmp_path / "ray" / "prosody_utterances.parquet")
    assert len(pu) == 5 and pu["prosody_backend"].str.startswith("torch-eGeMAPSv02").all()
    p = pd.read_parquet(tmp_path / "ray" / "prosody.parquet")
    assert set(p["prosody_backend"]) == set(pu["prosody_backend"])


def test_unknown_engine_and_address_without_ray_are_config_errors(tmp_path):
    from atrisk.errors import ConfigError

    rec = small_recordings(tmp_path / "rec")
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        workflows.extract_folder(rec, tmp_path / "ws", engine="spark", progress=False)
    with pytest.raises(ConfigError, match="--address is for --engine ray"):
        workflows.extract_folder(rec, tmp_path / "ws", engine="local", address="10.0.0.1:6379",
                         progress=False)
