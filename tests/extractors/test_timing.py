"""Timing features without words: speaking rate and pauses from librosa, on espeak-ng speech."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from pydantic import ValidationError

from atrisk.errors import AudioDecodeError
from atrisk.extractors.timing import (
    SESSION_INDEX,
    TIMING_COLUMNS,
    TimingConfig,
    TimingFeatures,
    speech_segments_by_track,
)
from atrisk.ingest.audio import DecodedSession
from atrisk.records import Session, Utterance
from atrisk.testing import espeak_wav

SR = 16000
TEXT = "please write this down in your notes and then read the first question aloud"
#: Syllables of TEXT (espeak-ng --ipa: one vowel group per syllable).
TEXT_SYLLABLES = 17
CLIPS = ("the cat sat on the mat", "can you say that again", "what is seven times eight")


def _read(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == SR  # test helper invariant
    return x


def _trim(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """The clip from its first to its last sample above ``threshold``."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0]:loud[-1] + 1]


def _zeros(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


@pytest.fixture(scope="module")
def timing() -> TimingFeatures:
    return TimingFeatures()


@pytest.fixture(scope="module")
def rates(tmp_path_factory) -> dict[int, np.ndarray]:
    """TEXT spoken by espeak-ng at 110 and 220 words per minute."""
    d = tmp_path_factory.mktemp("rates")
    return {s: _read(espeak_wav(TEXT, d / f"s{s}.wav", speed=s)) for s in (110, 220)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[np.ndarray]:
    """Three espeak-ng sentences, trimmed to their sound."""
    d = tmp_path_factory.mktemp("clips")
    return [_trim(_read(espeak_wav(t, d / f"c{i}.wav"))) for i, t in enumerate(CLIPS)]


def _with_pauses(clips: list[np.ndarray], gaps: tuple[float, float]) -> np.ndarray:
    """0.5 s, clip 0, gap 0, clip 1, gap 1, clip 2, 0.5 s, plus noise at -60 dBFS."""
    x = np.concatenate([_zeros(0.5), clips[0], _zeros(gaps[0]), clips[1], _zeros(gaps[1]),
                        clips[2], _zeros(0.5)])
    return x + np.random.default_rng(0).normal(0, 1e-3, x.size).astype(np.float32)


# -- speaking rate ------------------------------------------------------------------------


def test_twice_the_speaking_rate_doubles_the_rate(timing, rates):
    slow, fast = (timing.process_signal(rates[s], SR) for s in (110, 220))
    # espeak-ng's speech at 220 wpm takes 2.05x less time than at 110 wpm (whole files);
    # the counted nuclei are the same up to 1-2 merged in fast speech (measured ratio 1.85)
    ratio = fast["speech_rate_syll_s"] / slow["speech_rate_syll_s"]
    assert 1.7 < ratio < 2.3
    for row in (slow, fast):
        assert abs(row["syllables"] - TEXT_SYLLABLES) <= 3
        assert row["pause_count"] == 0  # one sentence without commas
    assert 2.5 < slow["speech_rate_syll_s"] < 3.5  # 17 syllables in about 5.85 s of speech


def test_a_steady_tone_has_no_syllables_and_modulation_does(timing):
    t = np.arange(4 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # inside the band
    row = timing.process_signal(tone, SR)
    assert row["speech_rate_syll_s"] < 0.5
    assert row["speech_ratio"] > 0.95 and row["pause_count"] == 0
    # the same tone modulated at 4 Hz (syllable-like): 4 nuclei per second
    am = tone * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)).astype(np.float32)
    assert timing.process_signal(am, SR)["speech_rate_syll_s"] == pytest.approx(4.0, abs=0.3)


# -- pauses -------------------------------------------------------------------------------


@pytest.mark.parametrize("gaps", [(0.6, 1.2), (0.3, 2.0)])
def test_inserted_silences_are_the_pauses(timing, clips, gaps):
    x = _with_pauses(clips, gaps)
    row = timing.process_signal(x, SR)
    assert row["pause_count"] == 2
    # a pause is shorter than the silence by about one frame (32 ms frames reach into it)
    assert row["pause_max_s"] == pytest.approx(max(gaps), abs=0.06)
    assert row["pause_mean_s"] == pytest.approx(sum(gaps) / 2, abs=0.06)
    speech = sum(c.size for c in clips) / SR
    assert row["speech_s"] == pytest.approx(speech, abs=0.15)
    assert row["speech_ratio"] == pytest.approx(row["speech_s"] * SR / x.size)
    span_min = (speech + sum(gaps)) / 60
    assert row["pauses_per_min"] == pytest.approx(2 / span_min, rel=0.05)


def test_short_gaps_are_not_pauses(timing, clips):
    row = timing.process_signal(_with_pauses(clips, (0.15, 0.8)), SR)
    assert row["pause_count"] == 1
    assert row["pause_max_s"] == pytest.approx(0.8, abs=0.06)


def test_given_speech_segments_replace_the_level_detector(timing, clips):
    x = _with_pauses(clips, (0.6, 1.2))
    start1 = 0.5 + clips[0].size / SR + 0.6
    end1 = start1 + clips[1].size / SR
    # only the middle sentence is declared speech: no pause, its own length
    row = timing.process_signal(x, SR, speech_segments=[(start1, end1)])
    assert row["pause_count"] == 0
    assert row["speech_s"] == pytest.approx(clips[1].size / SR, abs=0.02)
    alone = timing.process_signal(clips[1], SR)
    assert abs(row["syllables"] - alone["syllables"]) <= 1
    # no segment at all: no speech
    assert timing.process_signal(x, SR, speech_segments=[]).isna().all()


# -- no speech, bad input -----------------------------------------------------------------


@pytest.mark.parametrize("signal", [
    np.zeros(0, np.float32),  # empty
    np.zeros(100, np.float32),  # shorter than one frame
    np.zeros(3 * SR, np.float32),  # digital silence
    np.random.default_rng(1).normal(0, 1e-3, 3 * SR).astype(np.float32),  # -60 dBFS noise
    np.full(SR, np.nan, np.float32),  # NaN samples count as 0
])
def test_no_speech_gives_a_nan_row(timing, signal):
    row = timing.process_signal(signal, SR)
    assert list(row.index) == TIMING_COLUMNS
    assert row.isna().all()


def test_bad_rate_and_shape_raise(timing):
    with pytest.raises(ValueError, match="sample_rate"):
        timing.process_signal(np.zeros(100, np.float32), 10)
    with pytest.raises(ValueError, match="1-D"):
        timing.process_signal(np.zeros((2, 2, 10), np.float32), SR)


def test_bad_files_raise_audio_decode_error(timing, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    for path in (empty, corrupt, tmp_path / "missing.wav"):
        with pytest.raises(AudioDecodeError, match=path.name):
            timing.process_file(path)


def test_invalid_config_is_refused():
    with pytest.raises(ValidationError):
        TimingConfig(band_hz=(2500.0, 300.0))
    with pytest.raises(ValidationError):
        TimingConfig(hop_s=0.05, frame_s=0.02)
    with pytest.raises(ValidationError):
        TimingConfig(top_dB=30)  # unknown field (typo)


# -- streams, files, sessions -------------------------------------------------------------


def test_blocks_of_any_size_give_the_signals_row(timing, clips):
    x = _with_pauses(clips, (0.6, 1.2))
    whole = timing.process_signal(x, SR)
    for block in (1000, 4097, SR):
        blocks = (x[i:i + block] for i in range(0, x.size, block))
        row = timing.process_stream(blocks, SR, "s1", "student").iloc[0]
        pd.testing.assert_series_equal(row, whole, check_names=False)


def test_a_stream_fed_by_a_caller_gives_the_signals_row(timing, clips):
    """The tee a caller uses when it already reads the track in blocks (openSMILE)."""
    x = _with_pauses(clips, (0.6, 1.2))
    stream = timing.start_stream(SR)
    for i in range(0, x.size, 7000):
        stream.add(np.stack([x[i:i + 7000]] * 2))  # stereo blocks: channels averaged
    assert stream.n_samples == x.size
    pd.testing.assert_series_equal(stream.row(), timing.process_signal(x, SR), atol=1e-9)
    with pytest.raises(ValueError, match="sample_rate"):
        timing.start_stream(10)


def test_a_long_signal_is_framed_in_chunks(clips, monkeypatch):
    """Chunking the frames (bounded memory) changes no value."""
    from atrisk.extractors import timing as timing_module

    x = _with_pauses(clips, (0.6, 1.2))
    whole = TimingFeatures().process_signal(x, SR)
    monkeypatch.setattr(timing_module, "CHUNK_S", 0.37)
    pd.testing.assert_series_equal(TimingFeatures().process_signal(x, SR), whole)


def test_file_row_equals_signal_row_and_stereo_is_averaged(timing, clips, tmp_path):
    x = _with_pauses(clips, (0.6, 1.2))
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([x, x], 1), SR, subtype="FLOAT")
    frame = timing.process_file(path)
    assert frame.index.name == "file" and frame.index[0] == str(path)
    pd.testing.assert_series_equal(frame.iloc[0], timing.process_signal(x, SR),
                                   check_names=False, atol=1e-9)
    assert len(timing.process_files([path, path])) == 2


def test_other_sample_rates_agree(timing, clips):
    import librosa

    x = _with_pauses(clips, (0.6, 1.2))
    y = librosa.resample(x, orig_sr=SR, target_sr=8000)
    a, b = timing.process_signal(x, SR), timing.process_signal(y, 8000)
    assert b["pause_count"] == a["pause_count"]
    assert abs(b["syllables"] - a["syllables"]) <= 2
    assert b["pause_max_s"] == pytest.approx(a["pause_max_s"], abs=0.03)


def test_sessions_are_indexed_by_session_and_track(timing, clips):
    x = _with_pauses(clips, (0.6, 1.2))
    sess = [
        DecodedSession(Session("s1", "u1", "t1", datetime(2024, 3, 1, tzinfo=UTC), None, None),
                       {"teacher": x, "student": np.zeros(SR, np.float32)}),
        DecodedSession(Session("s2", "u2", "t1", datetime(2024, 3, 2, tzinfo=UTC), None, None),
                       {"teacher": None, "student": x}),
    ]
    out, failures = timing.process_sessions(sess)
    assert list(out.index.names) == SESSION_INDEX and list(out.columns) == TIMING_COLUMNS
    assert list(out.index) == [("s1", "teacher"), ("s1", "student"), ("s2", "student")]
    assert out.loc[("s1", "teacher"), "pause_count"] == 2
    assert out.loc[("s1", "student")].isna().all()  # silent track
    assert failures == {}
    # utterance times as speech segments: the student of s2 said only the first sentence
    utts = [Utterance("s2", "student", 0.5, 0.5 + clips[0].size / SR, "the cat sat on the mat")]
    segs = speech_segments_by_track(utts)
    assert segs == {("s2", "student"): [(0.5, 0.5 + clips[0].size / SR)]}
    out2, _ = timing.process_sessions(sess, segs)
    assert out2.loc[("s2", "student"), "pause_count"] == 0
    assert out2.loc[("s2", "student"), "speech_s"] < out.loc[("s2", "student"), "speech_s"] / 2
    assert out2.loc[("s1", "teacher"), "pause_count"] == 2  # not in segs: level detector
    assert timing.process_sessions([]).frame.empty


def test_a_failing_track_gets_a_nan_row_and_a_reason(timing, clips):
    bad = DecodedSession(Session("s3", "u3", "t1", datetime(2024, 3, 3, tzinfo=UTC), None, None),
                         {"teacher": np.zeros((2, 2, 5), np.float32), "student": clips[0]})
    out, failures = timing.process_sessions([bad])
    assert out.loc[("s3", "teacher")].isna().all()
    assert out.loc[("s3", "student"), "syllables"] > 0
    assert list(failures) == [("s3", "teacher")]
    assert "s3/teacher" in failures[("s3", "teacher")]
    assert not hasattr(timing, "failures")  # returned, never left on the extractor


def test_import_does_not_load_torch():
    code = ("import sys, json; import atrisk.extractors.timing; "
            "print(json.dumps(sorted(m for m in ('torch', 'opensmile') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []


def test_config_round_trips():
    cfg = TimingConfig(top_db=30.0, band_hz=(250.0, 3000.0))
    assert TimingConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert not math.isnan(TimingFeatures(cfg).process_signal(
        (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32), SR
    )["speech_s"])


# -- real speech --------------------------------------------------------------------------

#: TIMIT vowel (and syllabic consonant) phones: one per syllable of the aligned transcript.
_TIMIT_NUCLEI = set("iy ih eh ey ae aa aw ay ah ao oy ow uh uw ux er ax ix axr ax-h el em en "
                    "eng".split())


@pytest.mark.realdata
def test_syllable_counts_on_read_speech(timing, shared_data):
    """speechbrain's 10 aligned utterances: counted nuclei vs vowel phones."""
    folder = shared_data / "speech" / "speechbrain" / "tests" / "samples"
    ann = {}
    for name in ("ASR_train.json", "ASR_dev.json"):
        ann.update(json.loads((folder / "annotation" / name).read_text()))
    errors = []
    for key, item in ann.items():
        truth = sum(p in _TIMIT_NUCLEI for p in item["phn"].split())
        row = timing.process_file(folder / "ASR" / f"{key}.wav")
        errors.append(row["syllables"].iloc[0] / truth - 1)
    assert len(errors) == 10
    assert np.mean(np.abs(errors)) < 0.25  # measured 0.139
