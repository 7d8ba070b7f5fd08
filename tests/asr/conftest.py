"""Fixtures for the ASR tests: espeak-ng speech, a tiny random Wav2Vec2 model, transcribers.

Everything heavy is session-scoped: the tiny model is built once, each
transcriber is loaded once (as the pipeline does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atrisk.testing import espeak_wav, make_tiny_wav2vec2

SR = 16000
SENTENCES = (
    "the cat sat on the mat",
    "please write this down in your notes",
    "can you say that again",
)


def read_wav(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == SR  # test helper invariant, not user input
    return x


def onset_s(x: np.ndarray, threshold: float = 1e-3) -> float:
    """First sample above ``threshold`` (seconds): where espeak's speech starts."""
    return float(np.argmax(np.abs(x) > threshold)) / SR


@dataclass(frozen=True)
class Speech:
    """Three espeak sentences separated by 1 s silences (1 s of silence first)."""

    signal: np.ndarray
    starts: tuple[float, ...]  # where each sentence's sound begins (s)
    ends: tuple[float, ...]  # where each sentence's clip ends (s)
    clips: tuple[np.ndarray, ...]


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    folder = tmp_path_factory.mktemp("espeak")
    clips = tuple(read_wav(espeak_wav(s, folder / f"s{i}.wav")) for i, s in enumerate(SENTENCES))
    gap = np.zeros(SR, dtype=np.float32)
    parts, starts, ends, pos = [gap], [], [], SR
    for clip in clips:
        starts.append(pos / SR + onset_s(clip))
        parts += [clip, gap]
        pos += clip.size
        ends.append(pos / SR)
        pos += gap.size
    return Speech(np.concatenate(parts), tuple(starts), tuple(ends), clips)


@pytest.fixture(scope="session")
def sentence(speech: Speech) -> np.ndarray:
    """The first sentence after 2 s of silence."""
    return np.concatenate([np.zeros(2 * SR, dtype=np.float32), speech.clips[0]])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-w2v2") / "model")


@pytest.fixture(scope="session")
def tiny_masked_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-w2v2-mask") / "model",
                              attention_mask=True)


@pytest.fixture(scope="session")
def w2v2(tiny_model_dir: Path):
    from atrisk.asr.wav2vec2 import Wav2Vec2Transcriber

    return Wav2Vec2Transcriber.from_pretrained(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def sphinx():
    from atrisk.asr.sphinx import PocketsphinxTranscriber

    return PocketsphinxTranscriber()
