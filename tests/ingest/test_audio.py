"""Decoding of tracks: formats, resampling, down-mix, errors, silent tracks."""

from __future__ import annotations

import math
import subprocess
import wave
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atrisk.config import AudioConfig
from atrisk.errors import AudioDecodeError
from atrisk.ingest import audio
from atrisk.ingest.audio import (
    AudioInfo,
    audio_info,
    decode_session,
    is_silent,
    load_audio,
    peak,
)
from atrisk.records import Session

SRC_RATE = 44100
# 86 AAC frames of 1024 samples: the MP4's AAC track then has no tail padding.
N_SRC = 86 * 1024
SRC_DURATION = N_SRC / SRC_RATE  # 1.99692 s
FREQ = 1000.0
LEFT, RIGHT = 0.5, 0.3  # averaged mono peak: 0.4


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A 44.1 kHz stereo 1 kHz sine as WAV, FLAC, MP3, OGG and an MP4 video."""
    d = tmp_path_factory.mktemp("media")
    t = np.arange(N_SRC) / SRC_RATE
    tone = np.sin(2 * np.pi * FREQ * t)
    sf.write(d / "tone.wav", np.stack([LEFT * tone, RIGHT * tone], axis=1), SRC_RATE,
             subtype="PCM_16")
    files = {"wav": d / "tone.wav"}
    for ext in ("flac", "mp3", "ogg"):
        _ffmpeg("-i", str(d / "tone.wav"), str(d / f"tone.{ext}"))
        files[ext] = d / f"tone.{ext}"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2",
            "-i", str(d / "tone.wav"), "-shortest", "-c:v", "mpeg4", "-c:a", "aac",
            str(d / "video.mp4"))
    files["mp4"] = d / "video.mp4"
    return files


def _dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "mp4"])
def test_formats_decode_to_16k_mono_with_duration_and_pitch(media, fmt):
    x = load_audio(media[fmt], 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size / 16000 - SRC_DURATION) <= 0.020
    assert abs(_dominant_freq(x, 16000) - FREQ) < 2.0
    assert np.isfinite(x).all()


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_channels_are_averaged_not_summed(media, fmt):
    # FFmpeg's own stereo→mono down-mix would give 0.707 * (0.5 + 0.3) = 0.566.
    x = load_audio(media[fmt], 16000)
    assert peak(x) == pytest.approx((LEFT + RIGHT) / 2, abs=0.01)


def test_other_sample_rate(media):
    x = load_audio(media["flac"], 8000)
    assert abs(x.size / 8000 - SRC_DURATION) <= 0.020
    assert abs(_dominant_freq(x, 8000) - FREQ) < 2.0


@pytest.mark.parametrize("fmt", ["wav", "mp4"])
def test_ffmpeg_fallback_matches_torchcodec(media, fmt, monkeypatch):
    ref = load_audio(media[fmt], 16000)
    monkeypatch.setattr(audio, "_TORCHCODEC", None)  # as if torchcodec failed to import
    x = load_audio(media[fmt], 16000)
    assert x.shape == ref.shape
    assert np.max(np.abs(x - ref)) < 1e-4
    info = audio_info(media[fmt])
    assert (info.sample_rate, info.channels) == (SRC_RATE, 2)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_pcm_at_the_wanted_rate_is_read_by_soundfile_with_torchcodecs_samples(
        tmp_path, fmt, channels, monkeypatch):
    rng = np.random.default_rng(3)
    x = (rng.integers(-32768, 32767, size=(16000, channels))).astype(np.int16)
    path = tmp_path / f"pcm.{fmt}"
    sf.write(path, x, 16000, subtype="PCM_16")
    tc = audio._torchcodec()
    ref = np.asarray(audio._decode_torchcodec(tc, path, 16000), dtype=np.float32)
    monkeypatch.setattr(audio, "_TORCHCODEC", False)  # torchcodec must not be imported
    monkeypatch.setattr(audio, "_torchcodec", lambda: pytest.fail("torchcodec used"))
    got = load_audio(path, 16000)
    assert np.array_equal(got, ref)  # bit-identical
    want = x.astype(np.float64).mean(axis=1) / 32768  # PCM / 2^15, channels averaged
    assert np.array_equal(got, want.astype(np.float32))


def test_soundfile_path_leaves_other_rates_and_lossy_files_to_torchcodec(media, monkeypatch):
    used = []
    real = audio._decode_torchcodec
    monkeypatch.setattr(audio, "_decode_torchcodec",
                        lambda tc, path, rate: used.append(path.suffix) or real(tc, path, rate))
    load_audio(media["wav"], 16000)  # 44.1 kHz file: resampled by FFmpeg
    load_audio(media["mp3"], 44100)  # lossy, even at its own rate
    assert used == [".wav", ".mp3"]


def test_audio_info_reads_header(media):
    info = audio_info(media["wav"])
    assert isinstance(info, AudioInfo)
    assert info.sample_rate == SRC_RATE and info.channels == 2
    assert info.duration_s == pytest.approx(SRC_DURATION, abs=0.001)
    video = audio_info(media["mp4"])
    assert video.sample_rate == SRC_RATE and video.channels == 2
    assert video.duration_s == pytest.approx(SRC_DURATION, abs=0.03)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "teacher.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioDecodeError, match="cannot decode") as err:
        load_audio(bad)
    assert str(bad) in str(err.value)
    assert ".cpp" not in str(err.value)  # no decoder source locations in user messages


def test_empty_file(tmp_path):
    empty = tmp_path / "student.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"file is empty \(0 bytes\)") as err:
        load_audio(empty)
    assert str(err.value).startswith(str(empty))


def test_missing_file(tmp_path):
    with pytest.raises(AudioDecodeError, match="file not found") as err:
        load_audio(tmp_path / "nope.flac")
    assert "nope.flac" in str(err.value)
    with pytest.raises(AudioDecodeError, match="file not found"):
        audio_info(tmp_path / "nope.flac")


def test_video_without_audio(tmp_path):
    f = tmp_path / "mute.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1", "-c:v", "mpeg4", str(f))
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(f)


def test_wav_with_zero_frames(tmp_path):
    f = tmp_path / "hdr.wav"
    with wave.open(str(f), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    with pytest.raises(AudioDecodeError, match="decoded to 0 samples"):
        load_audio(f)


def test_non_finite_samples_become_zero(tmp_path):
    x = np.full(16000, 0.25, dtype=np.float32)
    x[100], x[200], x[300] = np.nan, np.inf, -np.inf
    f = tmp_path / "nan.wav"
    sf.write(f, x, 16000, subtype="FLOAT")
    y = load_audio(f, 16000)
    assert np.isfinite(y).all()
    assert y[100] == y[200] == y[300] == 0.0
    assert y[101] == pytest.approx(0.25)


def test_peak_and_is_silent():
    x = np.array([0.0, -0.5, 0.25], dtype=np.float32)
    assert peak(x) == 0.5
    assert peak(np.zeros(0)) == 0.0
    assert not is_silent(x, 1e-3)
    assert is_silent(x * 1e-3, 1e-3)
    assert is_silent(np.zeros(10), AudioConfig().silence_peak)


def _session(sid: str, teacher: Path | None, student: Path | None) -> Session:
    return Session(sid, "u1", "t1", datetime(2024, 3, 1, tzinfo=UTC), teacher, student)


def test_decode_session_reports_silent_track_but_keeps_it(tmp_path, media):
    silent = tmp_path / "student.wav"
    sf.write(silent, np.zeros(8000, dtype=np.float32), 16000, subtype="PCM_16")
    d = decode_session(_session("s1", media["flac"], silent), AudioConfig())
    assert d.signals["student"] is not None and d.signals["student"].size == 8000
    assert d.errors == {"student": f"{silent}: track is silent (peak 0.0000 < 0.001)"}
    assert d.failed_tracks == []
    assert d.duration_s == pytest.approx(SRC_DURATION, abs=0.02)
    assert d.sample_rate == 16000


def test_decode_session_missing_and_corrupt_tracks(tmp_path):
    bad = tmp_path / "teacher.wav"
    bad.write_bytes(b"RIFF not really a wav file at all" * 10)
    d = decode_session(_session("s3", bad, None), AudioConfig(), recordings="recordings")
    assert d.signals == {"teacher": None, "student": None}
    assert d.errors["teacher"].startswith(f"{bad}: cannot decode")
    assert d.errors["student"].startswith("recordings/s3/student.*: no student track found")
    assert d.failed_tracks == ["teacher", "student"]
    assert math.isnan(d.duration_s)


@pytest.mark.parametrize("kind", ["wav", "flac", "mp3", "ogg", "mp4"])
@pytest.mark.parametrize("rate", [16000, 8000])
def test_stream_audio_gives_exactly_load_audio_samples(media, kind, rate):
    """Streamed blocks (odd block size) joined are load_audio's signal, bit for bit."""
    from atrisk.ingest.audio import stream_audio

    whole = load_audio(media[kind], rate)
    blocks = list(stream_audio(media[kind], rate, block=7001))
    assert all(b.size == 7001 for b in blocks[:-1]) and 0 < blocks[-1].size <= 7001
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    assert np.array_equal(np.concatenate(blocks), whole)


def test_stream_audio_errors_name_the_file(tmp_path):
    from atrisk.ingest.audio import stream_audio

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    for path, why in ((tmp_path / "none.wav", "file not found"),
                      (empty, "file is empty"), (junk, "cannot decode")):
        with pytest.raises(AudioDecodeError, match=why) as err:
            list(stream_audio(path, 16000))
        assert str(path) in str(err.value)
