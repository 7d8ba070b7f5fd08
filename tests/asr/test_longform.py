"""Long-form transcription: streamed decoding, windowed VAD, files of any length, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atrisk.asr.vad import _silero, speech_segments, stream_speech
from atrisk.asr.wav2vec2 import Wav2Vec2Transcriber
from atrisk.config import ASRConfig
from atrisk.errors import AudioDecodeError, ModelLoadError
from atrisk.ingest.audio import stream_audio

SR = 16000
# max 4 s segments: the smallest VAD window is 2 * 4 s + 2 * margin (1.0 s) = 10 s
SHORT = ASRConfig(max_segment_s=4.0, batch_size=4)


def blocks_of(x: np.ndarray, seconds: float = 1.0):
    step = int(seconds * SR)
    return [x[k : k + step] for k in range(0, x.size, step)]


@pytest.fixture(scope="module")
def long_signal(speech) -> np.ndarray:
    """~62 s: the three sentences with 1 s gaps, seven times over."""
    return np.tile(speech.signal, 7)


def test_one_window_gives_exactly_speech_segments(speech):
    got = list(stream_speech(blocks_of(speech.signal), ASRConfig()))
    assert [(a, b) for a, b, _ in got] == speech_segments(speech.signal, SR)
    for a, b, piece in got:
        assert np.array_equal(piece, speech.signal[round(a * SR) : round(b * SR)])


def test_windows_carry_unfinished_speech(long_signal):
    whole = speech_segments(long_signal, SR, SHORT)
    got = list(stream_speech(blocks_of(long_signal), SHORT, window_s=10.0))
    assert len(whole) == 21  # 7 x 3 sentences, none longer than 4 s
    assert len(got) == len(whole)
    for (a, b, piece), (c, d) in zip(got, whole, strict=True):
        # silero restarts its state at each window and its 32 ms frames shift, so a
        # boundary moves by a few frames (measured: starts 40 ms, ends 120 ms at most)
        assert abs(a - c) < 0.06 and abs(b - d) < 0.15
        assert np.array_equal(piece, long_signal[round(a * SR) : round(b * SR)])
        assert b - a <= 4.0 + 1e-9
    assert [a for a, _, _ in got] == sorted(a for a, _, _ in got)


def test_batched_lanes_match_sequential_silero(long_signal):
    import torch

    from atrisk.asr import vad

    # 62 s -> three 20 s lanes side by side; silero's own loop steps through it alone
    cfg = ASRConfig(max_segment_s=1000.0)
    ref = _silero().get_speech_timestamps(
        torch.from_numpy(long_signal), vad._vad_model(), threshold=cfg.vad_threshold,
        sampling_rate=SR, min_speech_duration_ms=cfg.min_speech_ms,
        min_silence_duration_ms=cfg.min_silence_ms, speech_pad_ms=cfg.speech_pad_ms)
    got = speech_segments(long_signal, SR, cfg)
    assert long_signal.size // vad.VAD_FRAME // int(vad.LANE_S * SR / vad.VAD_FRAME) == 3
    assert len(got) == len(ref) == 21
    for (a, b), r in zip(got, ref, strict=True):
        assert abs(a - r["start"] / SR) < 0.1 and abs(b - r["end"] / SR) < 0.1
    # one lane (shorter than 2 x LANE_S): exactly silero's result
    short = long_signal[: 30 * SR]
    ref = _silero().get_speech_timestamps(
        torch.from_numpy(short), vad._vad_model(), threshold=cfg.vad_threshold,
        sampling_rate=SR, min_speech_duration_ms=cfg.min_speech_ms,
        min_silence_duration_ms=cfg.min_silence_ms, speech_pad_ms=cfg.speech_pad_ms)
    assert speech_segments(short, SR, cfg) == [(r["start"] / SR, r["end"] / SR) for r in ref]


def test_stream_is_lazy(long_signal):
    # 1 s blocks; with a 10 s window the first segment comes long before the end
    seen = []

    def gen():
        for k, block in enumerate(blocks_of(long_signal)):
            seen.append(k)
            yield block

    stream = stream_speech(gen(), SHORT, window_s=10.0)
    next(stream)
    assert len(seen) <= 11
    assert len(list(stream)) == 20  # the rest still comes
    assert len(seen) == int(np.ceil(long_signal.size / SR))


def test_transcribe_file_equals_transcribe_signal(w2v2, speech, tmp_path):
    path = tmp_path / "track.flac"
    sf.write(path, speech.signal, SR)
    x, _ = sf.read(path, dtype="float32")  # 16-bit FLAC: compare on what the file holds
    w2v2.timings.clear()
    from_file = w2v2.transcribe_file(path)
    t = dict(w2v2.timings)
    assert from_file == w2v2.transcribe_signal(x, SR)
    assert len(from_file) == 3
    assert t["segments"] == 3 and t["batches"] == 1
    assert all(t[k] > 0 for k in ("decode", "vad", "features", "model", "ctc"))


def test_long_file_over_many_windows(tiny_model_dir, long_signal, tmp_path):
    tr = Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cpu", config=SHORT)
    tr.vad_window_s = 10.0
    path = tmp_path / "long.wav"
    sf.write(path, long_signal, SR, subtype="FLOAT")
    segs = tr.transcribe_file(path)
    assert segs == tr.transcribe_signal(long_signal, SR)
    assert len(segs) == 21
    assert all(s.duration_s <= 4.0 + 1e-9 for s in segs)
    assert tr.timings["batches"] >= 6  # pools of 8 x 4, batches of 4
    for s in segs:
        assert s.words and s.start_s <= s.words[0].start_s <= s.words[-1].end_s <= s.end_s


def test_other_rates_stream_through_ffmpeg(w2v2, sentence, tmp_path):
    import torch
    import torchaudio.functional as AF

    x8k = AF.resample(torch.from_numpy(sentence), SR, 8000).numpy()
    path = tmp_path / "track8k.wav"
    sf.write(path, x8k, 8000)
    blocks = list(stream_audio(path, SR, SR))
    assert all(b.dtype == np.float32 and b.size == SR for b in blocks[:-1])
    assert abs(sum(b.size for b in blocks) - sentence.size) <= 16
    segs = w2v2.transcribe_file(path)
    assert len(segs) == 1 and 1.5 <= segs[0].start_s <= 2.1


def test_stereo_file_is_averaged(tmp_path, sentence):
    stereo = np.stack([sentence, np.zeros_like(sentence)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, SR, subtype="FLOAT")
    got = np.concatenate(list(stream_audio(path, SR)))
    assert np.allclose(got, sentence / 2, atol=1e-7)
    # through ffmpeg (48 kHz): averaged too, not FFmpeg's louder down-mix
    import torch
    import torchaudio.functional as AF

    x48 = AF.resample(torch.from_numpy(stereo.T.copy()), SR, 48000).numpy().T
    path48 = tmp_path / "stereo48k.wav"
    sf.write(path48, x48, 48000, subtype="FLOAT")
    got48 = np.concatenate(list(stream_audio(path48, SR)))
    assert abs(got48.size - sentence.size) <= 16
    n = min(got48.size, sentence.size)
    assert np.max(np.abs(got48[:n])) == pytest.approx(np.max(np.abs(sentence / 2)), rel=0.05)


def test_silence_short_and_empty_files_give_nothing(w2v2, speech, tmp_path):
    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(60 * SR, dtype=np.float32), SR)
    assert w2v2.transcribe_file(silent) == []
    short = tmp_path / "short.wav"
    sf.write(short, speech.clips[0][int(0.3 * SR) : int(0.4 * SR)], SR)  # 0.1 s of speech
    assert w2v2.transcribe_file(short) == []
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)  # a header, no samples
    with pytest.raises(AudioDecodeError, match="0 samples"):  # as every decoder says
        w2v2.transcribe_file(empty)


def test_nan_inf_in_a_float_file_count_as_zero(w2v2, sentence, tmp_path):
    bad = sentence.copy()
    bad[100:2000] = np.nan
    bad[SR // 2 : SR // 2 + 10] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, bad, SR, subtype="FLOAT")
    got = w2v2.transcribe_file(path)
    assert len(got) == 1
    assert got == w2v2.transcribe_signal(np.nan_to_num(bad, nan=0.0, posinf=0.0), SR)
    assert all(np.isfinite(b).all() for b in stream_audio(path, SR))


def test_clipped_speech_is_found_at_the_same_place(w2v2, sentence):
    clean = w2v2.transcribe_signal(sentence, SR)
    assert len(clean) == 1
    clipped = np.clip(sentence * 8.0, -1.0, 1.0)
    assert np.mean(np.abs(clipped) == 1.0) > 0.02  # 3 % of the samples at full scale
    got = w2v2.transcribe_signal(clipped, SR)
    assert [(s.start_s, s.end_s) for s in got] == [(clean[0].start_s, clean[0].end_s)]
    assert 0.0 < got[0].confidence <= 1.0
    # square-wave-like speech (12 % clipped): the VAD finds less of it, but no error
    worse = w2v2.transcribe_signal(np.clip(sentence * 30.0, -1.0, 1.0), SR)
    assert len(worse) == 1
    assert clean[0].start_s <= worse[0].start_s < worse[0].end_s <= clean[0].end_s


def test_unreadable_files_raise_naming_the_file(w2v2, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioDecodeError, match="junk.wav: cannot decode"):
        w2v2.transcribe_file(junk)
    with pytest.raises(AudioDecodeError, match="missing.flac: file not found"):
        w2v2.transcribe_file(tmp_path / "missing.flac")


def test_missing_tokenizer_config_names_the_file(tiny_model_dir, tmp_path):
    broken = tmp_path / "no_tok"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "tokenizer_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer_config\.json \(the tokenizer settings"):
        Wav2Vec2Transcriber.from_pretrained(str(broken), device="cpu")


def test_vad_keeps_torch_thread_count(speech):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        _silero()
        speech_segments(speech.signal[: 3 * SR], SR)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_int8_quantised_model_is_opt_in(tiny_model_dir, sentence):
    import torch

    tr = Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cpu", quantize=True)
    assert tr.name.endswith(":int8")
    kinds = {type(m).__module__ for m in tr.model.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in k for k in kinds)
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear
                   for m in tr.model.modules())
    segs = tr.transcribe_signal(sentence, SR)
    assert len(segs) == 1 and 1.5 <= segs[0].start_s <= 2.1


def test_quantize_from_config_and_cuda_refusal(tiny_model_dir):
    import torch

    from atrisk.asr import load_transcriber
    from atrisk.errors import ConfigError

    tr = load_transcriber("wav2vec2", str(tiny_model_dir), device="cpu",
                          config=ASRConfig(quantize=True))
    assert tr.name.endswith(":int8")
    assert not Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cpu",
                                                   quantize=False).name.endswith(":int8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cuda", quantize=True)


def test_path_objects_and_strings(w2v2, sentence, tmp_path: Path):
    path = tmp_path / "t.flac"
    sf.write(path, sentence, SR)
    assert w2v2.transcribe_file(str(path)) == w2v2.transcribe_file(path)


def test_transcribe_blocks_of_any_size_equals_transcribe_signal(tiny_model_dir, long_signal):
    """Blocks of odd sizes are regrouped as transcribe_signal cuts: same segments, many windows."""
    from atrisk.asr.base import Transcriber, rechunk

    tr = Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cpu", config=SHORT)
    tr.vad_window_s = 10.0
    expected = tr.transcribe_signal(long_signal, SR)
    assert len(expected) == 21
    assert tr.transcribe_blocks(blocks_of(long_signal, 0.77)) == expected
    assert tr.transcribe_blocks(iter([long_signal])) == expected
    # the base class's default (backends that cannot stream) joins the blocks
    assert Transcriber.transcribe_blocks(tr, blocks_of(long_signal, 3.3)) == expected
    sizes = [b.size for b in rechunk(blocks_of(np.arange(10, dtype=np.float32), 3 / SR), 4)]
    assert sizes == [4, 4, 2]
    assert rechunk([np.array([np.nan, 1, np.inf], dtype=np.float32)], 2).__next__().tolist() \
        == [0.0, 1.0]
