"""The ray engine gives the local engine's tables, failures and resume behaviour."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from atrisk import pipeline
from atrisk.config import Config

pytest.importorskip("ray")

TABLES = ("sessions", "prosody", "utterances", "in_class")


def _failures(ws):
    rows = [json.loads(line) for line in (ws / "failures.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda f: (str(f.get("key")), str(f.get("track")), f["reason"]))


def test_ray_and_local_engines_give_identical_tables(tmp_path, monkeypatch):
    """Local mode with 2 CPUs, pocketsphinx ASR on the actor pool, every bad input kind."""
    from tests.conftest import make_bad_recordings

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    rec = make_bad_recordings(tmp_path / "recordings")
    cfg = Config().override({"asr.backend": "pocketsphinx"})
    local = pipeline.extract(rec, tmp_path / "local", cfg, workers=2, progress=False)
    ray_res = pipeline.extract(rec, tmp_path / "ray", cfg, engine="ray", workers=2,
                               progress=False)
    assert (ray_res.n_ok, ray_res.n_partial, ray_res.n_failed) == (
        local.n_ok, local.n_partial, local.n_failed) == (3, 4, 1)
    assert ray_res.exit_code == local.exit_code == 1
    assert ray_res.n_resumed == 0 and ray_res.n_utterances == local.n_utterances > 0
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "local" / f"{table}.parquet"))
    assert _failures(tmp_path / "ray") == _failures(tmp_path / "local")
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["engine"] == "ray"
    # resume across engines: the ray run's part files are the local engine's cache
    again = pipeline.extract(rec, tmp_path / "ray", cfg, workers=2, progress=False)
    assert again.n_resumed == again.n_sessions - 0 == 7
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / "in_class.parquet"),
                                  pd.read_parquet(tmp_path / "local" / "in_class.parquet"))
