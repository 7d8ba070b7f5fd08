"""atrisk.testing factories used across the test suite."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from atrisk.testing import espeak_wav


def test_espeak_wav_is_16k_mono_speech(tmp_path):
    path = espeak_wav("hello there", tmp_path / "sub" / "x.wav", speed=150)
    info = sf.info(path)
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    assert 0.5 < info.duration < 2.5
    x, _ = sf.read(path)
    assert abs(x).max() > 0.1
    slow = espeak_wav("hello there", tmp_path / "slow.wav", speed=80)
    assert sf.info(slow).duration > info.duration
    again = espeak_wav("hello there", tmp_path / "again.wav", speed=150)
    assert again.read_bytes() == path.read_bytes()  # no dither: repeatable


def test_tiny_model_folder(tiny_model_dir):
    vocab = json.loads((tiny_model_dir / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and "|" in vocab and "a" in vocab and "'" in vocab
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["vocab_size"] == len(vocab) and cfg["hidden_size"] == 32
    ratio = 1
    for s in cfg["conv_stride"]:
        ratio *= s
    assert ratio == 320


def test_tiny_model_is_seeded(tmp_path):
    from safetensors.numpy import load_file

    from atrisk.testing import make_tiny_wav2vec2

    a = load_file(make_tiny_wav2vec2(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(make_tiny_wav2vec2(tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(make_tiny_wav2vec2(tmp_path / "c", seed=4) / "model.safetensors")
    k = "lm_head.weight"
    assert (a[k] == b[k]).all() and not (a[k] == c[k]).all()
    with pytest.raises(ValueError):
        make_tiny_wav2vec2(tmp_path / "d", vocab="")
