"""The ray engine streams long tracks too: the ASR actors get the file, not the signal."""

from __future__ import annotations

import pandas as pd
import pytest

from atrisk import workflows
from atrisk.config import Config
from atrisk.extract import session as session_mod
from atrisk.testing import make_tiny_wav2vec2, small_recordings

pytest.importorskip("ray")

TABLES = ("sessions", "prosody", "utterances", "in_class", "prosody_utterances")


def test_ray_streamed_equals_local_in_memory(tmp_path, monkeypatch):
    """Local engine with tracks in memory vs ray engine with every track streamed."""
    from atrisk.extract.engines.ray_data import init_ray
    rec = small_recordings(tmp_path / "rec")
    model = make_tiny_wav2vec2(tmp_path / "model")
    cfg = Config().override({"asr.backend": "wav2vec2", "asr.model": str(model)})
    local = workflows.extract_folder(rec, tmp_path / "local", cfg, workers=1, device="cpu",
                             progress=False)
    started = init_ray(num_cpus=2)
    try:
        # the driver's threshold reaches the Ray workers through the stage context
        monkeypatch.setattr(session_mod, "STREAM_TRACK_S", 0.0)
        res = workflows.extract_folder(rec, tmp_path / "ray", cfg, engine="ray", workers=2,
                               device="cpu", progress=False)
    finally:
        if started:
            import ray

            ray.shutdown()
    assert (res.n_ok, res.n_partial) == (local.n_ok, local.n_partial) == (2, 1)
    assert res.n_utterances == local.n_utterances > 0
    for table in TABLES:
        # streamed tracks: bounded-memory functionals, within 1e-6 of openSMILE's own
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "local" / f"{table}.parquet"),
                                      rtol=1e-6)
