"""pocketsphinx backend: real recognition of espeak speech and of a real recording."""

from __future__ import annotations

import time

import numpy as np
import pytest

from atrisk.asr import load_transcriber
from atrisk.asr.sphinx import PocketsphinxTranscriber, _is_filler
from atrisk.testing import espeak_wav

SR = 16000
NUMBERS = {"one", "two", "three", "four", "five", "six", "seven"}


@pytest.fixture(scope="module")
def counting(tmp_path_factory) -> np.ndarray:
    import soundfile as sf

    path = espeak_wav("one two three four five six seven", tmp_path_factory.mktemp("s") / "n.wav")
    x, _ = sf.read(path, dtype="float32")
    return np.concatenate([np.zeros(SR, dtype=np.float32), x, np.zeros(SR // 2, dtype=np.float32)])


def test_recognises_counting(sphinx, counting):
    segs = sphinx.transcribe_signal(counting, SR)
    assert len(segs) == 1
    seg = segs[0]
    words = [w.text for w in seg.words]
    assert len(NUMBERS & set(words)) >= 3, seg.text
    assert seg.text == " ".join(words)
    assert all("(" not in w and w[0] not in "<[+" for w in words)
    assert 0.5 <= seg.start_s <= 1.1 and seg.end_s <= counting.size / SR
    for a, b in zip(seg.words, seg.words[1:], strict=False):
        assert a.start_s < b.start_s and a.end_s <= b.start_s + 1e-9
    for w in seg.words:
        assert seg.start_s <= w.start_s < w.end_s <= seg.end_s
    assert 0.0 <= seg.confidence <= 1.0


def test_word_times_follow_the_speech(sphinx, counting):
    # shifting the signal by 64 VAD windows (2.048 s) shifts every word by as much;
    # the result does not depend on what the decoder heard before
    shift = 64 * 512
    shifted = np.concatenate([np.zeros(shift, dtype=np.float32), counting])
    a = sphinx.transcribe_signal(counting, SR)[0]
    b = sphinx.transcribe_signal(shifted, SR)[0]
    assert [w.text for w in a.words] == [w.text for w in b.words]
    for wa, wb in zip(a.words, b.words, strict=True):
        assert wb.start_s - wa.start_s == pytest.approx(shift / SR, abs=1e-6)
        assert wb.end_s - wa.end_s == pytest.approx(shift / SR, abs=1e-6)
    assert a == sphinx.transcribe_signal(counting, SR)[0]


def test_silence_and_nan(sphinx, counting):
    assert sphinx.transcribe_signal(np.zeros(3 * SR, dtype=np.float32), SR) == []
    assert sphinx.transcribe_signal(np.zeros(SR // 20, dtype=np.float32), SR) == []
    bad = counting.copy()
    bad[:100] = np.nan
    assert sphinx.transcribe_signal(bad, SR) == sphinx.transcribe_signal(
        np.nan_to_num(bad), SR)


def test_batch_and_name(sphinx, counting):
    out = sphinx.transcribe_batch([np.zeros(SR, dtype=np.float32), counting], SR)
    assert out[0] == [] and len(out[1]) == 1
    assert sphinx.name == "pocketsphinx:en-us"
    assert isinstance(load_transcriber("pocketsphinx"), PocketsphinxTranscriber)


def test_fillers():
    for w in ["<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "++GARBAGE++", ""]:
        assert _is_filler(w)
    assert not _is_filler("americans")


@pytest.mark.realdata
def test_jfk(sphinx, shared_data):
    path = shared_data / "speech" / "jfk.flac"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from atrisk.ingest.audio import load_audio

    signal = load_audio(path)
    duration = signal.size / SR
    t0 = time.perf_counter()
    segs = sphinx.transcribe_file(path)
    rtf = (time.perf_counter() - t0) / duration
    print(f"pocketsphinx on jfk.flac: {duration:.1f} s audio, RTF {rtf:.2f}")
    words = {w.text for s in segs for w in s.words}
    assert words & {"americans", "country", "fellow"}
    assert segs[0].start_s < 1.0 and segs[-1].end_s <= duration + 1e-6


def test_result_does_not_depend_on_history(sphinx, counting, speech):
    # the decoder keeps feature state (noise estimate, CMN) between utterances
    # unless reset: the same segment must give the same result whatever came before
    rng = np.random.default_rng(0)
    noisy = counting + rng.normal(0, 0.02, counting.size).astype(np.float32)
    other = speech.signal[: 4 * SR] * 3 + rng.normal(0, 0.05, 4 * SR).astype(np.float32)
    first = sphinx.transcribe_signal(noisy, SR)
    sphinx.transcribe_signal(other, SR)
    assert sphinx.transcribe_signal(noisy, SR) == first
    assert PocketsphinxTranscriber().transcribe_signal(noisy, SR) == first
