"""Wav2Vec2 backend with a tiny random model: structure, timing, errors (not words)."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from atrisk.asr import BACKENDS, load_transcriber
from atrisk.asr.base import Segment
from atrisk.asr.wav2vec2 import Wav2Vec2Transcriber
from atrisk.config import ASRConfig
from atrisk.errors import ConfigError, ModelLoadError

SR = 16000


def check_segments(segments: list[Segment], n_samples: int) -> None:
    prev_start = -1.0
    for seg in segments:
        assert 0.0 <= seg.start_s < seg.end_s <= n_samples / SR + 1e-6
        assert seg.start_s >= prev_start
        prev_start = seg.start_s
        assert seg.text and seg.text == seg.text.lower() and "  " not in seg.text
        assert 0.0 < seg.confidence <= 1.0
        assert seg.text == " ".join(w.text for w in seg.words)
        for a, b in zip(seg.words, seg.words[1:], strict=False):
            assert a.end_s <= b.start_s + 1e-9
        for w in seg.words:
            assert seg.start_s - 1e-9 <= w.start_s <= w.end_s <= seg.end_s + 1e-9


def test_loads_folder_and_times_speech_after_silence(w2v2, tiny_model_dir, sentence):
    assert w2v2.name == f"wav2vec2:{tiny_model_dir.resolve()}"
    assert w2v2.device == "cpu" and str(w2v2.dtype) == "torch.float32"
    assert w2v2.frame_s == pytest.approx(0.02)
    segments = w2v2.transcribe_signal(sentence, SR)
    assert len(segments) == 1  # one sentence, one VAD segment
    seg = segments[0]
    assert seg.start_s >= 1.5  # 2 s of silence before the speech
    assert seg.start_s <= 2.1
    assert seg.end_s <= sentence.size / SR
    assert seg.words  # the random model emits characters, so there is text
    check_segments(segments, sentence.size)


def test_batch_of_three_keeps_order(w2v2, speech, sentence):
    silence = np.zeros(3 * SR, dtype=np.float32)
    out = w2v2.transcribe_batch([sentence, silence, speech.signal], SR)
    assert len(out) == 3
    assert len(out[0]) == 1 and out[1] == [] and len(out[2]) == 3
    for segs, sig in zip(out, [sentence, silence, speech.signal], strict=True):
        check_segments(segs, sig.size)
    for seg, start in zip(out[2], speech.starts, strict=True):
        assert abs(seg.start_s - start) < 0.3


def test_batched_equals_single_with_attention_mask(tiny_masked_model_dir, speech, sentence):
    # a model that uses an attention mask is not changed by the padding of a batch
    tr = Wav2Vec2Transcriber.from_pretrained(str(tiny_masked_model_dir), device="cpu",
                                             config=ASRConfig(batch_size=4))
    assert tr._use_mask
    batched = tr.transcribe_batch([speech.signal, sentence], SR)
    single = [tr.transcribe_signal(speech.signal, SR), tr.transcribe_signal(sentence, SR)]
    for b_segs, s_segs in zip(batched, single, strict=True):
        assert [s.text for s in b_segs] == [s.text for s in s_segs]
        assert [s.start_s for s in b_segs] == [s.start_s for s in s_segs]
        for b, s in zip(b_segs, s_segs, strict=True):
            assert b.confidence == pytest.approx(s.confidence, abs=1e-4)


def test_silence_and_short_signals_give_nothing(w2v2, speech):
    assert w2v2.transcribe_signal(np.zeros(5 * SR, dtype=np.float32), SR) == []
    rng = np.random.default_rng(0)
    assert w2v2.transcribe_signal(rng.normal(0, 1e-4, 5 * SR).astype(np.float32), SR) == []
    clip = speech.clips[0]
    loud = clip[int(0.3 * SR):]
    assert w2v2.transcribe_signal(loud[: SR // 10], SR) == []  # 0.1 s
    assert w2v2.transcribe_signal(loud[:100], SR) == []
    assert w2v2.transcribe_signal(np.zeros(0, dtype=np.float32), SR) == []


def test_nan_and_inf_samples_count_as_zero(w2v2, sentence):
    bad = sentence.copy()
    bad[100:2000] = np.nan
    bad[SR // 2 : SR // 2 + 10] = np.inf
    zeroed = np.nan_to_num(bad, nan=0.0, posinf=0.0, neginf=0.0)
    got = w2v2.transcribe_signal(bad, SR)
    assert np.isnan(bad[100])  # the caller's array is untouched
    assert got == w2v2.transcribe_signal(zeroed, SR)
    assert len(got) == 1


def test_other_sample_rate_is_resampled(w2v2, sentence):
    import torch
    import torchaudio.functional as AF

    x8k = AF.resample(torch.from_numpy(sentence), SR, 8000).numpy()
    segs = w2v2.transcribe_signal(x8k, 8000)
    assert len(segs) == 1
    assert abs(segs[0].start_s - w2v2.transcribe_signal(sentence, SR)[0].start_s) < 0.1


def test_ctc_decoding_frame_offsets_to_seconds(w2v2):
    # frames: blank a a blank | b b blank c <unk>(removed) blank; 20 ms per frame
    tok = w2v2.processor.tokenizer
    v = tok.get_vocab()
    ids = np.array([v["<pad>"], v["a"], v["a"], v["<pad>"], v["|"], v["b"], v["b"],
                    v["<pad>"], v["c"], v["<unk>"], v["<pad>"]])
    max_p = np.array([0.9, 0.5, 0.7, 0.9, 0.6, 0.4, 0.8, 0.9, 0.3, 0.2, 0.9])
    seg = w2v2._decode(ids, max_p, 10.0, 10.3)
    assert seg.text == "a bc"
    assert [w.text for w in seg.words] == ["a", "bc"]
    assert seg.words[0].start_s == pytest.approx(10.02)
    assert seg.words[0].end_s == pytest.approx(10.06)
    assert seg.words[1].start_s == pytest.approx(10.10)
    assert seg.words[1].end_s == pytest.approx(10.20)
    non_blank = [0.5, 0.7, 0.6, 0.4, 0.8, 0.3, 0.2]
    assert seg.confidence == pytest.approx(np.mean(non_blank))
    assert (seg.start_s, seg.end_s) == (10.0, 10.3)
    # only blanks / delimiters: no text, no segment
    assert w2v2._decode(np.array([v["<pad>"], v["|"], v["<pad>"]]), np.ones(3), 0.0, 1.0) is None


def test_missing_vocab_names_the_file(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "vocab.json").unlink()
    with pytest.raises(ModelLoadError, match="vocab.json") as err:
        Wav2Vec2Transcriber.from_pretrained(str(broken), device="cpu")
    assert str(broken) in str(err.value)


def test_missing_weights_and_processor_are_named(tiny_model_dir, tmp_path):
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights file"):
        Wav2Vec2Transcriber.from_pretrained(str(no_weights), device="cpu")
    no_proc = tmp_path / "no_proc"
    shutil.copytree(tiny_model_dir, no_proc)
    (no_proc / "processor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="feature extractor"):
        Wav2Vec2Transcriber.from_pretrained(str(no_proc), device="cpu")
    with pytest.raises(ModelLoadError, match="expected a checkpoint folder"):
        Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir / "config.json"), device="cpu")


def test_checkpoint_without_ctc_head_is_refused(tiny_model_dir, tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = tmp_path / "pretrained_only"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    Wav2Vec2Model(Wav2Vec2Config.from_pretrained(tiny_model_dir)).save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="no CTC head"):
        Wav2Vec2Transcriber.from_pretrained(str(folder), device="cpu")


def test_unknown_hub_id_offline_fails_fast_and_clearly(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_transcriber("wav2vec2", model="no-such-org/no-such-wav2vec2-model", device="cpu")
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "no-such-org/no-such-wav2vec2-model" in msg
    assert "Hugging Face Hub" in msg and "pocketsphinx" in msg


def test_unknown_hub_id_fails_fast_with_or_without_network():
    # online: the Hub says there is no such repository; offline: it cannot be reached
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-wav2vec2-model") as err:
        load_transcriber("wav2vec2", model="no-such-org/no-such-wav2vec2-model", device="cpu")
    assert time.perf_counter() - t0 < 30
    assert "no model with this id" in str(err.value) or "cannot be reached" in str(err.value)


def test_missing_folder_that_is_no_hub_id():
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_transcriber("wav2vec2", model="/no/such/checkpoint/folder", device="cpu")


def test_cuda_without_cuda_is_a_clear_error(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="tpu")


def test_auto_device_on_cpu_machine_is_cpu_fp32(tiny_model_dir):
    import torch

    tr = load_transcriber("wav2vec2", model=str(tiny_model_dir), device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert tr.device == expected
    assert tr.dtype == (torch.bfloat16 if expected == "cuda" else torch.float32)


def test_load_transcriber_backend_errors():
    with pytest.raises(ConfigError) as err:
        load_transcriber("nope")
    for name in BACKENDS:
        assert name in str(err.value)
    assert "'nope'" in str(err.value)
    with pytest.raises(ConfigError, match="utterance files"):
        load_transcriber("transcripts")
    with pytest.raises(ConfigError, match="bundled en-us"):
        load_transcriber("pocketsphinx", model="facebook/wav2vec2-base-960h")


def test_max_segment_limits_model_input(tiny_model_dir, speech):
    # the 3-sentence signal as one VAD segment (long min_silence) cut at 2.5 s
    cfg = ASRConfig(min_silence_ms=5000, max_segment_s=2.5, batch_size=3)
    tr = Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cpu", config=cfg)
    segs = tr.transcribe_signal(speech.signal, SR)
    assert len(segs) >= 4
    assert all(s.duration_s <= 2.5 + 1e-9 for s in segs)
    check_segments(segs, speech.signal.size)
    assert not math.isnan(segs[0].confidence)


@pytest.mark.gpu
def test_cuda_runs_bf16(tiny_model_dir, sentence):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    tr = Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cuda")
    assert tr.dtype == torch.bfloat16 and next(tr.model.parameters()).is_cuda
    segs = tr.transcribe_batch([sentence, sentence[: SR // 20]], SR)
    assert len(segs) == 2 and len(segs[0]) == 1 and segs[1] == []
    assert segs[0][0].start_s >= 1.5
    check_segments(segs[0], sentence.size)


def test_transcribe_file(w2v2, sentence, tmp_path: Path):
    import soundfile as sf

    pytest.importorskip("atrisk.ingest.audio")
    path = tmp_path / "track.flac"
    sf.write(path, sentence, SR)
    segs = w2v2.transcribe_file(path)
    assert len(segs) == 1 and segs[0].start_s >= 1.5
    direct = w2v2.transcribe_signal(sentence, SR)
    assert segs[0].start_s == direct[0].start_s
