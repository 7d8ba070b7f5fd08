"""Long tracks are streamed from their files, never decoded whole, with the in-memory tables.

``STREAM_TRACK_S`` is lowered to 0 here so that the short test tracks take the
streaming path; every table (and ``failures.jsonl``) must equal the in-memory run's
(within 1e-6 relative: streamed tracks take the bounded-memory functionals).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from atrisk import workflows
from atrisk.config import Config
from atrisk.extract import plan
from atrisk.extract import session as session_mod
from atrisk.ingest import audio
from atrisk.testing import make_tiny_wav2vec2, small_recordings
from tests.conftest import make_bad_recordings

TABLES = ("sessions", "prosody", "timing", "utterances", "in_class", "prosody_utterances")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v2") / "model")


@pytest.fixture(scope="module")
def bad_recordings(tmp_path_factory) -> Path:
    return make_bad_recordings(tmp_path_factory.mktemp("bad") / "recordings")


def _failures(ws: Path) -> list[dict]:
    rows = [json.loads(line) for line in (ws / "failures.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda f: (str(f.get("key")), str(f.get("track")), f["reason"]))


def _assert_same_outputs(a: Path, b: Path) -> None:
    # streamed tracks get openSMILE's functionals computed from its streamed frames
    # (bounded memory): within 1e-6 of the whole-track ones on these tracks
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{table}.parquet"),
                                      pd.read_parquet(b / f"{table}.parquet"), rtol=1e-6)
    assert _failures(a) == _failures(b)


def _run(rec, ws, cfg, monkeypatch, stream: bool, **kwargs):
    """Extract with every track streamed (``stream``) or none; return (result, decoded files)."""
    monkeypatch.setattr(session_mod, "STREAM_TRACK_S", 0.0 if stream else float("inf"))
    decoded: list[str] = []
    real = audio.load_audio
    monkeypatch.setattr(audio, "load_audio",
                        lambda path, *a, **k: decoded.append(Path(path).name) or real(path, *a,
                                                                                   **k))
    streamed = []
    real_stream = session_mod.stream_prosody
    monkeypatch.setattr(session_mod, "stream_prosody",
                        lambda ex, path, *a, **k: streamed.append(path.name)
                        or real_stream(ex, path, *a, **k))
    res = workflows.extract_folder(rec, ws, cfg, progress=False, **kwargs)
    return res, sorted(decoded), sorted(streamed)


def test_streamed_tracks_give_the_in_memory_tables(bad_recordings, tiny_model, tmp_path,
                                                   monkeypatch):
    """Every bad input kind, WAV/MP3/MP4 at 16 and 44.1 kHz, Wav2Vec2 ASR: same outputs."""
    cfg = Config().override({"asr.backend": "wav2vec2", "asr.model": str(tiny_model)})
    whole, decoded, streamed = _run(bad_recordings, tmp_path / "whole", cfg, monkeypatch,
                                    stream=False, workers=1, device="cpu")
    assert streamed == [] and len(decoded) == 13  # 7 sessions x 2 tracks, one missing
    res, decoded, streamed = _run(bad_recordings, tmp_path / "stream", cfg, monkeypatch,
                                  stream=True, workers=1, device="cpu")
    # only the two files whose header cannot be read are left to the in-memory path
    # (which reports them); the 11 others are streamed and never decoded whole
    assert decoded == ["teacher.wav", "teacher.wav"]
    assert len(streamed) == 11 and "student.mp3" in streamed and "teacher.mp4" in streamed
    assert (res.n_ok, res.n_partial, res.n_failed) == (whole.n_ok, whole.n_partial,
                                                        whole.n_failed) == (3, 4, 1)
    assert res.n_utterances == whole.n_utterances > 0
    _assert_same_outputs(tmp_path / "stream", tmp_path / "whole")
    sessions = pd.read_parquet(tmp_path / "stream" / "sessions.parquet").set_index("session_id")
    assert "track is silent" in sessions.loc["silent", "error"]
    assert sessions.loc["stereo", "duration_s"] == pytest.approx(4.0, abs=0.01)


def test_streamed_given_transcripts_and_resume(tmp_path, monkeypatch):
    """Transcripts backend: prosody streamed, same tables; a rerun resumes every session."""

    rec = small_recordings(tmp_path / "rec")
    cfg = Config().override({"asr.backend": "transcripts"})
    _run(rec, tmp_path / "whole", cfg, monkeypatch, stream=False, workers=1)
    res, decoded, streamed = _run(rec, tmp_path / "stream", cfg, monkeypatch, stream=True,
                                  workers=1)
    assert decoded == [] and len(streamed) == 5  # 3 teacher + 2 student tracks
    assert res.stage_seconds["prosody_s"] > 0
    _assert_same_outputs(tmp_path / "stream", tmp_path / "whole")
    prosody = pd.read_parquet(tmp_path / "stream" / "prosody.parquet")
    assert prosody["prosody_backend"].tolist() == ["opensmile-eGeMAPSv02-2.6.0"] * 5
    again, decoded, streamed = _run(rec, tmp_path / "stream", cfg, monkeypatch, stream=True,
                                    workers=1)
    assert again.n_resumed == 3 and decoded == streamed == []
    _assert_same_outputs(tmp_path / "stream", tmp_path / "whole")


def test_a_track_that_fails_mid_stream_is_listed_and_the_rest_completes(tmp_path, monkeypatch):
    """A decode error raised after openSMILE got blocks: no prosody row, the error is listed."""
    from atrisk.errors import AudioDecodeError

    rec = small_recordings(tmp_path / "rec")
    real = audio.stream_audio

    def broken(path, *a, **k):
        for i, block in enumerate(real(path, *a, **k)):
            if Path(path).parent.name == "s1" and Path(path).stem == "teacher" and i == 1:
                raise AudioDecodeError(f"{path}: cannot decode: truncated")
            yield block

    monkeypatch.setattr(session_mod, "stream_audio", broken)
    monkeypatch.setattr(session_mod, "STREAM_BLOCK", 8000)  # 2 s tracks: 4 blocks
    monkeypatch.setattr(session_mod, "STREAM_TRACK_S", 0.0)
    cfg = Config().override({"asr.backend": "transcripts"})
    res = workflows.extract_folder(rec, tmp_path / "ws", cfg, workers=1, progress=False)
    assert (res.n_ok, res.n_partial, res.n_failed) == (1, 2, 0)
    prosody = pd.read_parquet(tmp_path / "ws" / "prosody.parquet")
    assert [tuple(i) for i in prosody.index] == [("s0", "teacher"), ("s0", "student"),
                                                 ("s1", "student"), ("s2", "teacher")]
    fails = [f for f in _failures(tmp_path / "ws") if f["key"] == "s1"]
    assert [f["track"] for f in fails] == ["teacher"] and "truncated" in fails[0]["reason"]


def test_resume_key_covers_the_session_processor(tmp_path, monkeypatch):
    """How streamed tracks get their functionals is code of the session processor: in the key."""
    from atrisk import fingerprint
    from atrisk.ingest import manifest

    rec = small_recordings(tmp_path / "rec")
    session = manifest.read_manifest(rec)[0][0]
    cfg = Config().override({"asr.backend": "transcripts"})
    key = plan.session_key(session, cfg, "transcripts:x", None)
    assert plan.session_key(session, cfg, "transcripts:x", None) == key  # stable
    assert fingerprint.ENTRY_MODULES["audio"]["*"] == ("atrisk.extract.session",)
    real = fingerprint.module_fingerprint
    monkeypatch.setattr(fingerprint, "module_fingerprint",
                        lambda entries, *a: real(entries, *a) + "-changed"
                        if "atrisk.extract.session" in entries else real(entries, *a))
    fingerprint._fingerprint.cache_clear()
    try:
        assert plan.session_key(session, cfg, "transcripts:x", None) != key
    finally:
        fingerprint._fingerprint.cache_clear()
