"""silero-vad segmentation: positions of espeak sentences, splitting of long speech."""

from __future__ import annotations

import numpy as np
import pytest

from atrisk.asr import vad
from atrisk.asr.vad import _split_long, speech_segments
from atrisk.config import ASRConfig
from atrisk.errors import AudioDecodeError

SR = 16000


def test_three_sentences_three_segments_at_known_places(speech):
    segs = speech_segments(speech.signal, SR, ASRConfig())
    assert len(segs) == 3
    for (start, end), known_start, clip_end in zip(segs, speech.starts, speech.ends, strict=True):
        assert abs(start - known_start) <= 0.3
        assert start < end <= clip_end + 0.3
    assert segs == sorted(segs)


def test_model_is_loaded_once(speech):
    speech_segments(speech.signal[: 3 * SR], SR)
    first = vad._vad_model()
    speech_segments(speech.signal[: 3 * SR], SR)
    assert vad._vad_model() is first


def test_long_speech_is_cut_below_max_segment(speech):
    block = speech.signal[SR:]  # three sentences with 1 s gaps, ~9 s
    long = np.tile(block, int(np.ceil(70 * SR / block.size)))[: 70 * SR]
    cfg = ASRConfig(max_segment_s=30.0, min_silence_ms=3000)
    segs = speech_segments(long, SR, cfg)
    assert len(segs) >= 3
    assert all(e - s <= 30.0 + 1e-9 for s, e in segs)
    # the cuts are near the limit and lose nothing: pieces are contiguous
    assert all(e - s >= 25.0 for s, e in segs[:-1])
    for (_, e1), (s2, _) in zip(segs, segs[1:], strict=False):
        assert s2 == pytest.approx(e1)
    assert segs[-1][1] - segs[0][0] > 65.0


def test_split_long_cuts_at_the_quietest_point():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, 40 * SR).astype(np.float32)
    x[int(27.0 * SR) : int(27.1 * SR)] = 0.0  # a short pause 3 s before the limit
    pieces = _split_long(x, 0, x.size, 30 * SR)
    assert len(pieces) == 2
    cut = pieces[0][1] / SR
    assert 27.0 <= cut <= 27.1
    assert pieces[1] == (pieces[0][1], x.size)
    # without a pause the cut is still within the limit
    y = rng.normal(0, 0.3, 65 * SR).astype(np.float32)
    pieces = _split_long(y, 0, y.size, 30 * SR)
    assert [b - a <= 30 * SR for a, b in pieces] == [True] * len(pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == y.size


def test_silence_short_and_empty_signals():
    assert speech_segments(np.zeros(10 * SR, dtype=np.float32), SR) == []
    assert speech_segments(np.zeros(0, dtype=np.float32), SR) == []
    rng = np.random.default_rng(1)
    assert speech_segments(rng.normal(0, 0.5, SR // 20).astype(np.float32), SR) == []


def test_short_speech_is_empty(speech):
    clip = speech.clips[0][int(0.3 * SR):]
    assert speech_segments(clip[: SR // 10 - 1], SR) == []


def test_nan_inf_count_as_zero(speech):
    x = speech.signal.copy()
    x[: SR // 2] = np.nan
    x[int(4.5 * SR) : int(4.6 * SR)] = -np.inf
    clean = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    assert speech_segments(x, SR) == speech_segments(clean, SR)
    assert len(speech_segments(x, SR)) == 3


def test_int16_stereo_and_other_rates(speech):
    import torch
    import torchaudio.functional as AF

    ref = speech_segments(speech.signal, SR)
    pcm = (speech.signal * 32767).astype(np.int16)
    got = speech_segments(pcm, SR)
    assert len(got) == 3
    assert np.allclose(np.array(got), np.array(ref), atol=0.07)  # two VAD windows
    stereo = np.stack([speech.signal, speech.signal])
    assert speech_segments(stereo, SR) == ref
    x441 = AF.resample(torch.from_numpy(speech.signal), SR, 44100).numpy()
    got = speech_segments(x441, 44100)
    assert len(got) == 3
    for (a, b), (c, d) in zip(got, ref, strict=True):
        assert abs(a - c) < 0.1 and abs(b - d) < 0.1


def test_bad_shapes_raise_package_error():
    with pytest.raises(AudioDecodeError, match="shape"):
        speech_segments(np.zeros((2, 2, 100), dtype=np.float32), SR)
    with pytest.raises(AudioDecodeError, match="sample rate"):
        speech_segments(np.zeros(SR, dtype=np.float32), 0)
