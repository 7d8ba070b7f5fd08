"""openSMILE prosody extractor: functionals, LLDs, utterances, chunks, workers, bad inputs."""

from __future__ import annotations

import faulthandler
import math
import pickle
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import opensmile
import pandas as pd
import pytest
import soundfile as sf

from atrisk.config import AudioConfig, ProsodyConfig
from atrisk.errors import AudioDecodeError, ConfigError
from atrisk.extractors.prosody import load_prosody
from atrisk.extractors.prosody import opensmile_backend as prosody_module
from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
from atrisk.ingest.audio import DecodedSession, decode_session, load_audio
from atrisk.records import Session, Utterance

TEXT = "Hello, today we will learn about fractions and how to add them together."
LOUD = "loudness_sma3_amean"
F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"


def _espeak(path: Path, pitch: int = 50) -> Path:
    subprocess.run(["espeak-ng", "-v", "en", "-p", str(pitch), "-w", str(path), TEXT], check=True)
    return path


@pytest.fixture(scope="module")
def extractor() -> OpenSmileProsody:
    return OpenSmileProsody()


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
    # digital silence: no voiced frame, so voiced-only functionals are undefined (NaN)
    assert np.isnan(zeros[F0]) and zeros[LOUD] < 0.01
    assert zeros["VoicedSegmentsPerSec"] == 0.0
    empty = extractor.process_signal(np.zeros(0, dtype=np.float32), 16000)
    assert empty.isna().all()  # openSMILE: segment too short, NaN


def test_opensmile_failure_gives_nan_row(tmp_path, monkeypatch):
    ex = OpenSmileProsody()

    def boom(*args, **kwargs):
        raise RuntimeError("openSMILE exploded")

    monkeypatch.setattr(ex.smile, "_smile", boom)
    out = ex.process_signal(np.ones(16000, dtype=np.float32) * 0.1, 16000)
    assert out.shape == (88,) and out.isna().all()


def test_bad_inputs(extractor, tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
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
    df = extractor.process_sessions([s1, s2]).frame
    assert df.index.names == ["session_id", "track"]
    assert list(df.index) == [("s1", "teacher"), ("s1", "student"), ("s2", "teacher")]
    assert df.shape == (3, 88) and list(df.columns) == extractor.feature_names
    # same signal → same features, whichever session it is in
    np.testing.assert_allclose(df.loc[("s1", "student")].to_numpy(),
                               df.loc[("s2", "teacher")].to_numpy(), rtol=1e-6)
    assert df.loc[("s1", "student"), F0] > df.loc[("s1", "teacher"), F0]
    empty = extractor.process_sessions([]).frame
    assert empty.shape == (0, 88) and empty.index.names == ["session_id", "track"]


def test_process_sessions_does_not_modify_signals(extractor):
    sig = np.full(8000, np.nan, dtype=np.float32)
    sig[::2] = 0.1
    session = Session("s9", "u", "t", datetime(2024, 1, 1, tzinfo=UTC), None, None)
    d = DecodedSession(session, {"teacher": sig, "student": None}, {}, 0.5, 16000)
    df = extractor.process_sessions([d]).frame
    assert list(df.index) == [("s9", "teacher")]
    assert np.isnan(sig[1])  # caller's array untouched


def test_pickle_roundtrip(extractor, speech):
    before = extractor.process_file(speech["ref"])
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone._smiles == {}  # Smile is recreated lazily in the worker
    pd.testing.assert_frame_equal(clone.process_file(speech["ref"]), before)
    assert clone.config == ProsodyConfig() and clone.sample_rate == 16000
    assert not math.isnan(before[LOUD].iloc[0])


# -- long tracks in chunks, LLDs, ComParE -------------------------------------------------

SR = 16000


def _tone(freq: float, seconds: float, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _semitones(freq: float) -> float:
    return 12 * math.log2(freq / 27.5)  # eGeMAPS F0 scale: semitones above 27.5 Hz


@pytest.fixture(scope="module")
def long_speech(speech) -> np.ndarray:
    low, high = load_audio(speech["low"], SR), load_audio(speech["high"], SR)
    gap = np.zeros(SR // 2, dtype=np.float32)
    return np.concatenate([low, gap, high, gap, 0.5 * low])


def test_chunked_functionals_equal_whole_signal(long_speech):
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    whole = smile.process_signal(long_speech, SR).iloc[0].to_numpy(dtype="float64")
    for chunk_s in (0.37, 2.0, 600.0):  # many chunks through the ring buffer, and one
        ours = OpenSmileProsody(chunk_s=chunk_s).process_signal(long_speech, SR)
        np.testing.assert_array_equal(ours.to_numpy(), whole)  # bit-identical


def test_chunked_lld_equal_whole_signal(long_speech):
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    whole = smile.process_signal(long_speech, SR)
    ex = OpenSmileProsody(chunk_s=0.37)
    lld = ex.process_signal_lld(long_speech, SR)
    assert list(lld.columns) == list(whole.columns) == ex.lld_names and len(ex.lld_names) == 25
    assert lld.index.names == ["start_s", "end_s"] and len(lld) == len(whole)
    np.testing.assert_array_equal(lld.to_numpy(), whole.to_numpy(dtype="float64"))
    starts = lld.index.get_level_values("start_s").to_numpy()
    np.testing.assert_allclose(np.diff(starts), 0.01, atol=1e-9)  # 10 ms hop


def test_lld_feature_level_in_files_and_sessions(speech):
    ex = OpenSmileProsody(ProsodyConfig(feature_level="lld"))
    df = ex.process_files([speech["ref"]])
    assert df.index.names == ["file", "start_s", "end_s"] and df.shape[1] == 25
    n_frames = len(ex.process_signal_lld(load_audio(speech["ref"], SR), SR))
    assert len(df) == n_frames > 100
    t = datetime(2024, 3, 1, tzinfo=UTC)
    s1 = decode_session(Session("s1", "u1", "t1", t, speech["low"], None), AudioConfig())
    sess = ex.process_sessions([s1]).frame
    assert sess.index.names == ["session_id", "track", "start_s", "end_s"]
    assert set(sess.index.get_level_values("track")) == {"teacher"}


def test_compare_2016_on_request():
    ex = OpenSmileProsody(ProsodyConfig(feature_set="ComParE_2016"), chunk_s=0.4)  # 4 chunks
    x = _tone(220, 1.5)
    ours = ex.process_signal(x, SR)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                            feature_level=opensmile.FeatureLevel.Functionals)
    ref = smile.process_signal(x, SR).iloc[0]
    assert len(ours) == 6373 and list(ours.index) == list(ref.index)
    np.testing.assert_array_equal(ours.to_numpy(), ref.to_numpy(dtype="float64"))
    assert ex.backend_name.startswith("opensmile-ComParE_2016-")


# -- per utterance ------------------------------------------------------------------------


def test_process_segments_and_utterances():
    ex = OpenSmileProsody()
    # 1 s of 220 Hz, 1 s of silence, 1 s of 330 Hz
    track = np.concatenate([_tone(220, 1.0), np.zeros(SR, np.float32), _tone(330, 1.0)])
    seg = ex.process_segments(track, SR, "s1", "student", [(0.0, 1.0), (2.0, 3.0), (5.0, 6.0)]).frame
    assert seg.index.names == ["session_id", "speaker", "start_s", "end_s"]
    assert list(seg.index) == [("s1", "student", 0.0, 1.0), ("s1", "student", 2.0, 3.0),
                               ("s1", "student", 5.0, 6.0)]
    assert seg[F0].iloc[0] == pytest.approx(_semitones(220), abs=0.05)  # 35.98
    assert seg[F0].iloc[1] == pytest.approx(_semitones(330), abs=0.05)  # 42.99
    assert seg.iloc[2].isna().all()  # beyond the end of the track: empty segment
    np.testing.assert_array_equal(seg.iloc[0].to_numpy(),
                                  ex.process_signal(track[:SR], SR).to_numpy())
    session = Session("s1", "u", "t", datetime(2024, 1, 1, tzinfo=UTC), None, None)
    d = DecodedSession(session, {"teacher": None, "student": track}, {}, 3.0, SR)
    utts = [Utterance("s1", "student", 2.0, 3.0, "three"),
            Utterance("s1", "teacher", 0.0, 1.0, "missing track"),
            Utterance("s1", "student", 0.0, 1.0, "one")]
    per_utt = ex.process_utterances([d], utts).frame
    assert list(per_utt.index) == [("s1", "student", 2.0, 3.0), ("s1", "student", 0.0, 1.0)]
    np.testing.assert_array_equal(per_utt.to_numpy(), seg.iloc[[1, 0]].to_numpy())


def test_segments_with_bad_times_give_defined_rows(extractor):
    """0.05 s, partly/wholly beyond the end, reversed, missing time: each row by hand."""
    track = np.concatenate([_tone(220, 1.0), np.zeros(SR, np.float32), _tone(330, 1.0)])
    segs = [(0.5, 0.55), (2.5, 9.0), (4.0, 5.0), (1.0, 0.5), (math.nan, 1.0), (2.2, 3.0)]
    seg, failures = extractor.process_segments(track, SR, "s1", "student", segs)
    pd.testing.assert_index_equal(seg.index, pd.MultiIndex.from_tuples(
        [("s1", "student", a, b) for a, b in segs], names=["session_id", "speaker", "start_s",
                                                           "end_s"]))
    # 0.05 s = 800 samples: openSMILE cannot frame it (as the whole-signal call): NaN
    assert seg.iloc[0].isna().all()
    assert extractor.process_signal(track[8000:8800], SR).isna().all()
    # partly beyond the end: clipped, equals the cut signal samples 40000..48000
    np.testing.assert_array_equal(seg.iloc[1].to_numpy(),
                                  extractor.process_signal(track[40000:], SR).to_numpy())
    assert seg[F0].iloc[1] == pytest.approx(_semitones(330), abs=0.05)
    assert seg.iloc[2:5].isna().all().all()  # beyond the end, reversed, NaN time: NaN rows
    np.testing.assert_array_equal(seg.iloc[5].to_numpy(),
                                  extractor.process_signal(track[35200:], SR).to_numpy())
    assert failures == {}  # NaN rows for undefined input are not failures


def test_segment_failures_are_recorded_per_segment(monkeypatch):
    ex = OpenSmileProsody()
    real_run = OpenSmileProsody._run

    def run_failing_on_short(self, level, x, rate, **kwargs):
        # fault injection: a real openSMILE crash cannot be provoked on demand
        pieces = [x] if isinstance(x, np.ndarray) else x  # a signal, or its list of pieces
        if isinstance(pieces, list) and sum(p.size for p in pieces) == SR // 2:
            raise RuntimeError("injected openSMILE crash")
        return real_run(self, level, x, rate, **kwargs)

    monkeypatch.setattr(OpenSmileProsody, "_run", run_failing_on_short)
    track = _tone(220, 2.0)
    seg, failures = ex.process_segments(track, SR, "s1", "teacher", [(0.0, 1.0), (1.0, 1.5)])
    assert seg.iloc[1].isna().all() and seg[F0].iloc[0] == pytest.approx(_semitones(220),
                                                                          abs=0.05)
    assert list(failures) == [("s1", "teacher", 1.0, 1.5)]
    assert "injected openSMILE crash" in failures[("s1", "teacher", 1.0, 1.5)]


# -- many files in parallel ---------------------------------------------------------------


def test_parallel_files_equal_serial(speech, tmp_path):
    tone = tmp_path / "tone.wav"
    sf.write(tone, _tone(180, 1.0), SR)
    files = [speech["low"], tone, speech["high"], speech["ref"]]
    serial = OpenSmileProsody().process_files(files)
    parallel = OpenSmileProsody(num_workers=2).process_files(files)
    pd.testing.assert_frame_equal(parallel, serial)
    assert list(serial.index) == [str(f) for f in files]
    t = datetime(2024, 3, 1, tzinfo=UTC)
    decoded = [decode_session(Session(f"s{i}", "u", "t", t, f, None), AudioConfig())
               for i, f in enumerate(files[:2])]
    pd.testing.assert_frame_equal(OpenSmileProsody(num_workers=2).process_sessions(decoded).frame,
                                  OpenSmileProsody().process_sessions(decoded).frame)


# -- backend factory ----------------------------------------------------------------------


def test_make_prosody_extractor(monkeypatch):
    ex = load_prosody(ProsodyConfig(), sample_rate=8000, num_workers=2)
    assert isinstance(ex, OpenSmileProsody) and ex.sample_rate == 8000 and ex.num_workers == 2
    monkeypatch.setitem(sys.modules, "atrisk.extractors.prosody.torch_backend", None)  # not importable
    with pytest.raises(ConfigError, match="torch.*not available"):
        load_prosody(ProsodyConfig.model_construct(backend="torch"))
    with pytest.raises(ConfigError, match="unknown prosody.backend"):
        load_prosody(ProsodyConfig.model_construct(backend="praat"))


# -- bad inputs: defined outputs, never a crash ------------------------------------------


def test_bad_input_silence(extractor):
    out = extractor.process_signal(np.zeros(2 * SR, np.float32), SR)
    assert np.isnan(out[F0]) and np.isnan(out["jitterLocal_sma3nz_amean"])
    assert out[LOUD] == pytest.approx(0.001, abs=1e-3)
    assert out["equivalentSoundLevel_dBp"] == pytest.approx(-120.0)  # openSMILE's floor
    assert out["MeanUnvoicedSegmentLength"] > 1.5  # the whole 2 s is one unvoiced stretch


def test_bad_input_pure_tone(extractor):
    out = extractor.process_signal(_tone(220, 2.0), SR)
    assert out[F0] == pytest.approx(_semitones(220), abs=0.05)  # 35.98 semitones
    assert out["F0semitoneFrom27.5Hz_sma3nz_stddevNorm"] < 1e-3
    assert out["VoicedSegmentsPerSec"] == pytest.approx(0.5, abs=0.05)  # one 2 s segment
    assert np.isnan(out["alphaRatioUV_sma3nz_amean"])  # no unvoiced frame: undefined


def test_bad_input_clipping(extractor):
    loud = 3.0 * _tone(220, 2.0) / 0.3  # peaks at 3.0: clipped to full scale
    out = extractor.process_signal(loud, SR)
    clipped = extractor.process_signal(np.clip(loud, -1.0, 1.0), SR)
    np.testing.assert_array_equal(out.to_numpy(), clipped.to_numpy())
    assert out[F0] == pytest.approx(_semitones(220), abs=0.1)
    assert out[LOUD] > extractor.process_signal(_tone(220, 2.0), SR)[LOUD]


def test_bad_input_dc_offset(extractor):
    plain = extractor.process_signal(_tone(220, 2.0), SR)
    shifted = extractor.process_signal(_tone(220, 2.0) + np.float32(0.4), SR)
    assert shifted[F0] == pytest.approx(plain[F0], abs=0.05)
    assert np.isfinite(shifted[LOUD])


def test_bad_input_telephone_8khz(extractor, tmp_path):
    path = tmp_path / "phone.wav"
    sf.write(path, _tone(220, 2.0, sr=8000), 8000, subtype="PCM_16")
    df = extractor.process_file(path)  # resampled to 16 kHz by load_audio
    assert df.shape == (1, 88)
    assert df[F0].iloc[0] == pytest.approx(_semitones(220), abs=0.05)
    direct = extractor.process_signal(_tone(220, 2.0, sr=8000), 8000)  # openSMILE at 8 kHz
    assert direct[F0] == pytest.approx(_semitones(220), abs=0.1)


def test_bad_input_tenth_of_a_second(extractor, tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _tone(220, 0.1), SR)
    row = extractor.process_file(path).iloc[0]
    assert row[F0] == pytest.approx(_semitones(220), abs=0.05)  # 10 frames are enough
    assert row["VoicedSegmentsPerSec"] == 0.0  # too short for a counted segment
    tiny = extractor.process_signal(_tone(220, 0.01), SR)  # 10 ms: cannot be framed
    assert tiny.isna().all()


def test_bad_input_nan_samples(extractor):
    x = _tone(220, 2.0)
    holes = x.copy()
    holes[::97] = np.nan
    holes[5] = np.inf
    zeroed = x.copy()
    zeroed[::97] = 0
    zeroed[5] = 0
    out = extractor.process_signal(holes, SR)
    np.testing.assert_array_equal(out.to_numpy(), extractor.process_signal(zeroed, SR).to_numpy())
    assert out[F0] == pytest.approx(_semitones(220), abs=0.1)


def test_file_is_streamed_in_chunks_and_equals_decoded_signal(speech, tmp_path):
    stereo = tmp_path / "stereo.flac"
    x = load_audio(speech["low"], 22050)
    sf.write(stereo, np.stack([0.8 * x, 0.2 * x], axis=1), 22050)
    ex = OpenSmileProsody(chunk_s=0.3)  # ~15 chunks of decoded audio
    streamed = ex.process_file(stereo)
    decoded = ex.process_signal(load_audio(stereo, SR), SR)  # whole track, then openSMILE
    np.testing.assert_array_equal(streamed.to_numpy()[0], decoded.to_numpy())
    lld = OpenSmileProsody(ProsodyConfig(feature_level="lld"), chunk_s=0.3).process_file(stereo)
    np.testing.assert_array_equal(lld.to_numpy(), ex.process_signal_lld(
        load_audio(stereo, SR), SR).to_numpy())
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        ex.process_file(bad)


# -- streaming: producer/consumer robustness ------------------------------------------------


class _LateThread(threading.Thread):
    """A consumer thread scheduled 0.5 s after ``start()``, as on a machine with load
    average 25 on 2 cores (the OS scheduler is what cannot be controlled here)."""

    def run(self) -> None:
        threading.Event().wait(0.5)
        super().run()


def test_slow_producer_starves_consumer_without_changing_features(speech, monkeypatch):
    # openSMILE's run() waits for an external source that has no data and no end of
    # input (TICK_EXT_SOURCE_NOT_AVAIL): a producer slower than the consumer (ffmpeg on a
    # loaded machine) must not end the run early nor change a bit of the result.
    real = prosody_module._stream_file

    def slow(*args, **kwargs):
        for piece in real(*args, **kwargs):
            time.sleep(0.03)  # the consumer drains the 2-chunk ring buffer meanwhile
            yield piece

    monkeypatch.setattr(prosody_module, "_stream_file", slow)
    ex = OpenSmileProsody(chunk_s=0.2)  # ~15 chunks, each a 30 ms wait
    streamed = ex.process_file(speech["ref"]).to_numpy()[0]
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    whole = smile.process_signal(load_audio(speech["ref"], SR), SR).iloc[0].to_numpy()
    np.testing.assert_array_equal(streamed, whole.astype("float64"))


def test_error_before_consumer_runs_is_reported_not_masked(monkeypatch, caplog):
    # Regression: an error in the producer while the consumer thread had been started but
    # had not reached run() (openSMILE still "initialized") made abort() raise "must be in
    # the running state for aborting", hiding the error, then join() waited forever.
    class Interrupted(Exception):
        pass

    class LateAndInterrupted(_LateThread):
        def start(self) -> None:
            super().start()
            signal.setitimer(signal.ITIMER_REAL, 0.1)  # e.g. Ctrl-C while the producer polls

    def interrupt(*_):
        raise Interrupted("producer interrupted")

    previous = signal.signal(signal.SIGALRM, interrupt)
    monkeypatch.setattr(prosody_module.threading, "Thread", LateAndInterrupted)
    faulthandler.dump_traceback_later(60, exit=True)  # a deadlock fails instead of hanging
    try:
        out = OpenSmileProsody(chunk_s=0.1).process_signal(_tone(150, 5.0), SR)
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert out.isna().all()
    assert "producer interrupted" in caplog.text
    assert "running state" not in caplog.text


def test_thread_start_failure_is_reported(monkeypatch, caplog):
    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(prosody_module.threading, "Thread", NoThread)
    out = OpenSmileProsody(chunk_s=0.1).process_signal(_tone(150, 5.0), SR)
    assert out.isna().all()
    assert "can't start new thread" in caplog.text
    assert "running state" not in caplog.text and "cannot join" not in caplog.text


def test_process_sessions_lists_the_track_opensmile_failed_on(monkeypatch):
    class NoThread(threading.Thread):  # fails only on tracks longer than the ring buffer
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(prosody_module.threading, "Thread", NoThread)
    session = Session("s7", "u", "t", datetime(2024, 1, 1, tzinfo=UTC), None, None)
    d = DecodedSession(session, {"teacher": _tone(150, 5.0), "student": _tone(220, 1.0)},
                       {}, 5.0, SR)
    ex = OpenSmileProsody(chunk_s=0.1)
    df, failures = ex.process_sessions([d])
    assert df.loc[("s7", "teacher")].isna().all()
    assert df.loc[("s7", "student"), F0] == pytest.approx(_semitones(220), abs=0.1)
    assert failures == {("s7", "teacher"): "s7/teacher: openSMILE failed: RuntimeError: "
                                              "can't start new thread"}
    assert ex.process_sessions([]).failures == {}


def test_whole_track_in_one_piece_is_cut_to_the_ring(speech, monkeypatch):
    # Without the ffmpeg binary process_file decodes the whole track and hands it over in
    # one piece, larger than the 2-chunk ring buffer: the write used to fail forever.
    ex = OpenSmileProsody(chunk_s=0.1)
    monkeypatch.setattr(prosody_module.shutil, "which", lambda name: None)
    out = ex.process_file(speech["ref"]).to_numpy()[0]
    np.testing.assert_array_equal(out, ex.process_signal(load_audio(speech["ref"], SR),
                                                         SR).to_numpy())
    assert not math.isnan(out[0])


def test_extract_refuses_lld_feature_level(tmp_path):
    from atrisk.config import Config
    from atrisk.extract import Extractor

    config = Config().override({"prosody.feature_level": "lld"})
    with pytest.raises(ConfigError, match="feature_level"):
        Extractor(config).extract(tmp_path / "recordings", tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


PYANNOTE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "speech" / "pyannote"


@pytest.mark.realdata
def test_real_two_speaker_recording_streamed_and_per_turn():
    """pyannote's 30 s two-speaker sample: the file streamed in 1.7 s chunks equals
    openSMILE on the whole file, and each RTTM speaker turn gets its own functionals."""
    wav, rttm = PYANNOTE / "sample.wav", PYANNOTE / "sample.rttm"
    if not wav.is_file():
        pytest.skip(f"real data not found at {wav}")
    ex = OpenSmileProsody(chunk_s=1.7)
    ours = ex.process_file(wav)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    np.testing.assert_array_equal(ours.to_numpy()[0],
                                  smile.process_file(str(wav)).iloc[0].to_numpy(dtype="float64"))
    turns = [(float(f[3]), float(f[3]) + float(f[4]), f[7])
             for f in (line.split() for line in rttm.read_text().splitlines()) if f]
    x = load_audio(wav, SR)
    per_turn = ex.process_segments(x, SR, "sample", "student", [(a, b) for a, b, _ in turns]).frame
    assert len(per_turn) == len(turns) == 10
    assert (per_turn[LOUD] > 0.05).all()
    assert per_turn[F0].notna().mean() >= 0.9  # speech turns are voiced
    # the turn-level loudness mean brackets the whole file's (speech + pauses)
    assert per_turn[LOUD].max() > ours[LOUD].iloc[0] * 0.9


def test_frames_for_sizes_whole_track_levels_from_the_duration():
    frames_for = prosody_module._frames_for
    # 10 ms frames; tracks that fit the shipped nT = 1000 keep the shipped include
    assert frames_for(None) is None and frames_for(math.nan) is None
    assert frames_for(0.0) is None and frames_for(10.0) is None  # 1000 frames fit
    # 10.01 s = 1001 frames + 1000 margin = 2001 -> next multiple of 1000
    assert frames_for(10.01) == 3000
    # the 3 h bench track: 10,827 s = 1,082,700 frames + 1000 = 1,083,700 -> 1,084,000
    assert frames_for(10827.0) == 1_084_000
    path = Path(prosody_module._buffer_mode(1_084_000))
    assert path.read_text().split() == ["writer.levelconf.growDyn", "=", "1",
                                        "writer.levelconf.isRb", "=", "0",
                                        "writer.levelconf.nT", "=", "1084000"]


@pytest.mark.realdata
def test_sized_buffers_give_the_shipped_configs_functionals(monkeypatch):
    """openSMILE with its whole-track levels sized from the duration (generated
    ``bufferModeConf``) gives exactly the functionals of the shipped config, whether the
    duration is right, too short (the levels still grow) or unknown."""
    wav = PYANNOTE / "sample.wav"
    if not wav.is_file():
        pytest.skip(f"real data not found at {wav}")
    x = load_audio(wav, SR).astype("float64")
    shipped = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                              feature_level=opensmile.FeatureLevel.Functionals)
    expected = shipped.process_file(str(wav)).iloc[0].to_numpy(dtype="float64")
    ex = OpenSmileProsody(chunk_s=1.7)
    seen: list[dict] = []
    smile = ex._smile_for("functionals")
    real = smile._smile
    monkeypatch.setattr(smile, "_smile", lambda options: seen.append(dict(options))
                        or real(options=options))
    duration = x.size / SR
    assert 29 < duration < 31
    blocks = [x[i:i + 16000 * 7] for i in range(0, x.size, 16000 * 7)]
    for hint, include in ((duration, "buffer_mode_4000.conf.inc"),  # 30 s: 3000 + 1000
                          (11.0, "buffer_mode_3000.conf.inc"),  # too short: grows
                          (None, None)):
        row = ex.process_stream(iter(blocks), SR, "s", "teacher", duration_s=hint,
                                bounded=False).frame
        np.testing.assert_array_equal(row.to_numpy()[0], expected)  # bit-identical
        got = seen[-1].get("bufferModeConf")
        assert (got is None) if include is None else Path(got).name == include
    # a whole signal is sized from its length
    np.testing.assert_array_equal(ex.process_signal(x, SR).to_numpy(), expected)
    assert Path(seen[-1]["bufferModeConf"]).name == "buffer_mode_4000.conf.inc"


def test_pruned_egemaps_config_drops_only_unused_components():
    path = prosody_module._pruned_egemaps()
    assert path is not None and Path(path).is_file()
    assert OpenSmileProsody().smile.config_path == path  # the functionals use it
    assert OpenSmileProsody(ProsodyConfig(feature_level="lld"))._smile_for(
        "lld").config_path.endswith("opensmile/core/config/egemaps/v02/eGeMAPSv02.conf")
    gemaps = Path(path).parents[2] / "gemaps" / "v01b"
    text = "".join((gemaps / n).read_text() for n in prosody_module._GEMAPS_INCLUDES)
    for name in prosody_module._EGEMAPS_UNUSED:
        assert f"instance[gemapsv01b_{name}]" not in text
    # the components eGeMAPSv02's functionals need stay
    for name in ("smoF0", "smoLoudness", "functionalsF0", "functionalsLoudness",
                 "temporalF0", "pitchSmoothViterbi", "logSpectral"):
        assert f"instance[gemapsv01b_{name}]." in text


SPEECH = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "speech"


@pytest.mark.realdata
def test_pruned_egemaps_config_equals_shipped_on_real_speech():
    """The generated eGeMAPSv02 config without the unused GeMAPSv01b components gives
    bit-identical functionals to the shipped config on every real recording here."""
    files = sorted(p for p in SPEECH.rglob("*") if p.suffix in (".wav", ".flac"))
    if len(files) < 10:
        pytest.skip(f"real speech not found under {SPEECH}")
    shipped = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                              feature_level=opensmile.FeatureLevel.Functionals)
    pruned = opensmile.Smile(feature_set=prosody_module._pruned_egemaps(),
                             feature_level=opensmile.FeatureLevel.Functionals)
    assert pruned.feature_names == shipped.feature_names
    for f in files:
        x = load_audio(f, SR)
        np.testing.assert_array_equal(pruned.process_signal(x, SR).to_numpy(),
                                      shipped.process_signal(x, SR).to_numpy(), err_msg=str(f))


def test_generated_config_removed_between_runs_is_made_again(speech, tmp_path, monkeypatch):
    import shutil

    # a private cache folder: the shared one may be in use by other processes
    monkeypatch.setattr(prosody_module, "_cache_folder", lambda: tmp_path)
    ex = OpenSmileProsody()
    x = load_audio(speech["ref"], SR)
    first = ex.process_signal(x, SR)
    shutil.rmtree(Path(ex.smile.config_path).parents[2])  # e.g. a tmp cleaner
    again = ex.process_signal(x, SR)
    np.testing.assert_array_equal(again.to_numpy(), first.to_numpy())
    assert Path(ex.smile.config_path).is_file()
    assert Path(ex.smile.config_path).is_relative_to(tmp_path)
