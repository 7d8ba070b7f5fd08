"""openSMILE eGeMAPSv02 prosody extractor."""

from __future__ import annotations

import math
import pickle
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import opensmile
import pandas as pd
import pytest
import soundfile as sf

from atrisk.config import AudioConfig, ProsodyConfig
from atrisk.errors import AudioDecodeError
from atrisk.extractors.prosody import ProsodyExtractor
from atrisk.ingest.audio import DecodedSession, decode_session, load_audio
from atrisk.records import Session

TEXT = "Hello, today we will learn about fractions and how to add them together."
LOUD = "loudness_sma3_amean"
F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"


def _espeak(path: Path, pitch: int = 50) -> Path:
    subprocess.run(["espeak-ng", "-v", "en", "-p", str(pitch), "-w", str(path), TEXT], check=True)
    return path


@pytest.fixture(scope="module")
def extractor() -> ProsodyExtractor:
    return ProsodyExtractor()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("speech")
    low, high = _espeak(d / "low.wav", 20), _espeak(d / "high.wav", 80)
    ref = d / "ref16k.wav"  # 16 kHz mono PCM: what the pipeline feeds openSMILE
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(low), "-ar", "16000",
                    "-ac", "1", "-c:a", "pcm_s16le", str(ref)], check=True)
    return {"low": low, "high": high, "ref": ref}


def test_feature_names_are_opensmiles(extractor):
    names = extractor.feature_names
    assert len(names) == 88 and len(set(names)) == 88
    assert LOUD in names and F0 in names
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert names == list(smile.feature_names)
    assert extractor.backend_name == f"opensmile-eGeMAPSv02-{opensmile.__version__}"


def test_reference_values_equal_opensmile(extractor, speech):
    ours = extractor.process_file(speech["ref"])
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    theirs = smile.process_file(str(speech["ref"]))
    assert ours.shape == (1, 88)
    assert list(ours.index) == [str(speech["ref"])] and ours.index.name == "file"
    np.testing.assert_allclose(ours.to_numpy()[0], theirs[ours.columns].to_numpy()[0],
                               rtol=1e-6, atol=1e-9)
    # sanity of the actual numbers for espeak speech
    assert 0.1 < ours[LOUD].iloc[0] < 5
    assert 10 < ours[F0].iloc[0] < 45


def test_louder_copy_has_higher_loudness(extractor, speech):
    x = load_audio(speech["low"], 16000)
    quiet = extractor.process_signal(0.2 * x, 16000)
    loud = extractor.process_signal(0.8 * x, 16000)
    assert loud[LOUD] > 1.5 * quiet[LOUD]
    # pitch does not depend on level
    assert loud[F0] == pytest.approx(quiet[F0], abs=0.5)


def test_higher_pitched_voice_has_higher_f0(extractor, speech):
    df = extractor.process_files([speech["low"], speech["high"]])
    assert list(df.index) == [str(speech["low"]), str(speech["high"])]
    low, high = df[F0].to_numpy()
    assert high > low + 2.0  # semitones


def test_short_and_silent_signals_do_not_crash(extractor, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.sin(2 * np.pi * 200 * np.arange(1600) / 16000), 16000)
    df = extractor.process_file(short)  # 0.1 s
    assert df.shape == (1, 88)
    zeros = extractor.process_signal(np.zeros(16000, dtype=np.float32), 16000)
    assert zeros.shape == (88,)
    # digital silence: openSMILE returns finite values, no voiced frames, ~0 loudness
    assert np.isfinite(zeros.to_numpy()).all()
    assert zeros[F0] == 0.0 and zeros[LOUD] < 0.01
    empty = extractor.process_signal(np.zeros(0, dtype=np.float32), 16000)
    assert empty.isna().all()  # openSMILE: segment too short, NaN


def test_opensmile_failure_gives_nan_row(tmp_path, monkeypatch):
    ex = ProsodyExtractor()

    def boom(*args, **kwargs):
        raise RuntimeError("openSMILE exploded")

    monkeypatch.setattr(ex.smile, "process_signal", boom)
    out = ex.process_signal(np.ones(16000, dtype=np.float32) * 0.1, 16000)
    assert out.shape == (88,) and out.isna().all()


def test_bad_inputs(extractor, tmp_path):
    with pytest.raises(ValueError, match="sampling_rate"):
        extractor.process_signal(np.zeros(100), 1)
    with pytest.raises(AudioDecodeError, match="file not found"):
        extractor.process_file(tmp_path / "missing.wav")


def test_stereo_signal_is_averaged(extractor, speech):
    x = load_audio(speech["low"], 16000)
    mono = extractor.process_signal(0.5 * x, 16000)
    stereo = extractor.process_signal(np.stack([0.7 * x, 0.3 * x]), 16000)
    np.testing.assert_allclose(stereo.to_numpy(), mono.to_numpy(), rtol=1e-5, atol=1e-6)


def test_process_sessions_index_and_values(extractor, speech):
    t = datetime(2024, 3, 1, tzinfo=UTC)
    s1 = decode_session(Session("s1", "u1", "t1", t, speech["low"], speech["high"]), AudioConfig())
    s2 = decode_session(Session("s2", "u2", "t1", t, speech["high"], None), AudioConfig())
    df = extractor.process_sessions([s1, s2])
    assert df.index.names == ["session_id", "track"]
    assert list(df.index) == [("s1", "teacher"), ("s1", "student"), ("s2", "teacher")]
    assert df.shape == (3, 88) and list(df.columns) == extractor.feature_names
    # same signal → same features, whichever session it is in
    np.testing.assert_allclose(df.loc[("s1", "student")].to_numpy(),
                               df.loc[("s2", "teacher")].to_numpy(), rtol=1e-6)
    assert df.loc[("s1", "student"), F0] > df.loc[("s1", "teacher"), F0]
    empty = extractor.process_sessions([])
    assert empty.shape == (0, 88) and empty.index.names == ["session_id", "track"]


def test_process_sessions_does_not_modify_signals(extractor):
    sig = np.full(8000, np.nan, dtype=np.float32)
    sig[::2] = 0.1
    session = Session("s9", "u", "t", datetime(2024, 1, 1, tzinfo=UTC), None, None)
    d = DecodedSession(session, {"teacher": sig, "student": None}, {}, 0.5, 16000)
    df = extractor.process_sessions([d])
    assert list(df.index) == [("s9", "teacher")]
    assert np.isnan(sig[1])  # caller's array untouched


def test_pickle_roundtrip(extractor, speech):
    before = extractor.process_file(speech["ref"])
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone._smile is None  # Smile is recreated lazily in the worker
    pd.testing.assert_frame_equal(clone.process_file(speech["ref"]), before)
    assert clone.config == ProsodyConfig() and clone.sample_rate == 16000
    assert not math.isnan(before[LOUD].iloc[0])
