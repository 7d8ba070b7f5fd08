"""eGeMAPSv02 functionals of streamed tracks in bounded openSMILE memory.

``OpenSmileProsody.process_stream`` (``bounded=True``) runs openSMILE up to the
contours its functionals read, with ring buffers, and computes the 88 functionals from
those frames (``egemaps.opensmile_functionals``); ``bounded=False`` is openSMILE's
own whole-track functionals.  The two must agree within 1e-6 (relative); on the
signals whose end of input shows the difference they are bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atrisk.extractors.prosody import opensmile_backend as prosody_module
from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
from atrisk.ingest.audio import load_audio

SR = 16000
TOL = 1e-6
SPEECH = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "speech"


def _blocks(x: np.ndarray, size: int):
    return (x[i:i + size] for i in range(0, x.size, size))


def _both(x: np.ndarray, block: int = 3 * SR + 17):
    ex = OpenSmileProsody()
    whole = ex.process_stream(_blocks(x, block), SR, "s", "teacher", bounded=False)
    bounded = ex.process_stream(_blocks(x, block), SR, "s", "teacher")
    assert whole.failures == {} and bounded.failures == {}
    return bounded.frame.iloc[0], whole.frame.iloc[0]


def _assert_close(bounded, whole, tol: float = TOL) -> None:
    assert list(bounded.index) == list(whole.index)
    b, w = bounded.to_numpy(), whole.to_numpy()
    np.testing.assert_array_equal(np.isnan(b), np.isnan(w))
    ok = ~np.isnan(w)
    rel = np.abs(b[ok] - w[ok]) / np.where(w[ok] == 0, 1.0, np.abs(w[ok]))
    worst = int(np.argmax(rel))
    assert rel.max() <= tol, f"{list(whole.index[ok])[worst]}: {b[ok][worst]} vs {w[ok][worst]}"


def _voiced_signal(seconds: float = 14.0, seed: int = 0) -> np.ndarray:
    """Gliding harmonic 'syllables' (voiced) between noise bursts and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    gate = (np.sin(2 * np.pi * 1.9 * t) > -0.2).astype(float)  # syllables and pauses
    noise = rng.normal(0, 0.05, t.size) * (np.sin(2 * np.pi * 0.45 * t) > 0.6)
    return (0.15 * voiced * gate + noise + rng.normal(0, 0.002, t.size)).astype(np.float32)


def test_bounded_functionals_equal_openSMILEs_on_a_synthetic_signal():
    bounded, whole = _both(_voiced_signal())
    assert whole["F0semitoneFrom27.5Hz_sma3nz_amean"] > 20  # voiced frames were found
    assert whole["VoicedSegmentsPerSec"] > 0.5  # several segments: the segment code runs
    _assert_close(bounded, whole)


def test_silent_and_unvoiced_streams_keep_the_nan_conventions():
    silent = np.zeros(12 * SR, np.float32)
    bounded, whole = _both(silent)
    _assert_close(bounded, whole)
    voiced_only = [n for n in whole.index if "sma3nz" in n and "UV" not in n]
    assert bounded[voiced_only].isna().all()  # no voiced frame: undefined, not 0
    # noise only: unvoiced frames, voiced-only functionals undefined the same way
    noise = np.random.default_rng(1).normal(0, 0.1, 12 * SR).astype(np.float32)
    bounded, whole = _both(noise)
    _assert_close(bounded, whole)


def test_a_stream_too_short_to_frame_gives_nan_like_openSMILE():
    bounded, whole = _both(np.full(400, 0.1, np.float32))
    assert bounded.isna().all() and whole.isna().all()


def test_bounded_run_uses_ring_buffers_and_one_sink_per_input_level(monkeypatch):
    ex = OpenSmileProsody()
    smile = ex._smile_for("inputs")
    seen: list[dict] = []
    real = smile._smile
    monkeypatch.setattr(smile, "_smile", lambda options: seen.append(dict(options))
                        or real(options=options))
    ex.process_stream(_blocks(_voiced_signal(4.0), SR), SR, "s", "teacher")
    assert seen[-1]["bufferModeConf"].endswith("shared/BufferModeRbLag.conf.inc")
    text = Path(smile.config_path).read_text()
    for sink, level in zip(prosody_module._INPUT_SINKS, prosody_module._FUNCTIONAL_INPUTS,
                           strict=True):
        assert f"[{sink}:cExternalSink]\nreader.dmLevel = {level}\nblocksize = 100\n" in text
    # the generated tree has no functionals components left, the smoothers stay, and
    # each sink ticks in the place of the first functionals component reading its level
    tree = Path(smile.config_path).parents[2]
    incs = "".join((tree / n).read_text() for n in prosody_module._EGEMAPS_INCLUDES)
    for name in prosody_module._EGEMAPS_FUNCTIONALS:
        assert f"instance[{name}]." not in incs
    func = (tree / "gemaps" / "v01b" / "GeMAPSv01b_core.func.conf.inc").read_text()
    # the end-of-input markers (energy level, coprime block sizes) tick before the sinks
    assert "instance[gemapsv01b_smoLoudness].type=cContourSmoother\n" + "".join(
        f"instance[atrisk_marker{i}].type=cExternalSink\n" for i in range(4)) + \
        "instance[atrisk_sink0].type=cExternalSink\n" \
        "instance[atrisk_sink1].type=cExternalSink\n" in func
    for marker, block in zip(prosody_module._MARKER_SINKS, (97, 99, 101, 103), strict=True):
        assert f"[{marker}:cExternalSink]\nreader.dmLevel = egemapsv02_energyRMS\n" \
               f"blocksize = {block}\n" in text
    for name in ("gemapsv01b_smoF0", "gemapsv01b_smoLoudness", "egemapsv02_smoSpectralNz",
                 "egemapsv02_energyRMS", "gemapsv01b_pitchSmoothViterbi"):
        assert f"instance[{name}]." in incs


def test_frame_store_keeps_float32_frames_across_blocks(monkeypatch):
    monkeypatch.setattr(prosody_module._FrameStore, "BLOCK", 4)
    store = prosody_module._FrameStore()
    data = np.arange(30, dtype=np.float32).reshape(10, 3)
    store(data[:3], None)
    store(data[3:9], None)  # crosses two block boundaries
    store(data[9:], None)
    assert store.frames == 10 and len(store.blocks) == 3
    out = store.array()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def _reads(*reads):
    """A sink callback that was called with ``reads`` (``(tick, frames)`` each)."""
    store = prosody_module._FrameStore(iter(t for t, _ in reads))
    for _, n in reads:
        store(np.zeros((n, 2), np.float32), None)
    return store


def test_eoi_cuts_end_each_level_at_its_read_in_the_first_end_of_input_tick():
    marker = prosody_module._Marker(iter([3, 9, 17]))
    for n in (97, 97, 40):  # two whole blocks before end of input, then the rest (40)
        marker(np.zeros((n, 1), np.float32), None)
    idle = prosody_module._Marker(iter([4, 10]))  # 194 frames: a multiple of 97
    for n in (97, 97):
        idle(np.zeros((n, 1), np.float32), None)
    stores = [
        _reads((5, 100), (18, 57), (25, 1)),  # 157 in the EOI tick, then a late frame
        _reads((6, 100), (19, 100)),  # the rest was exactly one block: 200
        _reads((7, 100), (12, 100)),  # nothing left at end of input: all 200
        _reads((8, 100), (21, 3), (30, 2)),  # 103, the 2 later frames are left out
    ]
    cuts = prosody_module._eoi_cuts(stores, [idle, marker], (97, 97))
    assert cuts == [157, 200, 200, 103]
    # no marker read a short block: the end-of-input tick cannot be found
    with pytest.raises(RuntimeError, match="end-of-input tick"):
        prosody_module._eoi_cuts(stores, [idle], (97,))


@pytest.mark.parametrize(("seconds", "level", "kept", "read"), [
    (2.05, 0, 199, 200),  # F0: a frame the Viterbi smoother flushed reached the sink
    (3.01, 1, 300, 301),  # loudness: the smoother's padded end frame (index 300)
])
def test_frames_written_after_the_first_end_of_input_tick_are_left_out(
        seconds, level, kept, read):
    # Signals whose late frames (written after openSMILE's functionals read their
    # level) reach the sinks: a late frame has the index of the sink's next block.
    x = _voiced_signal(seconds)
    ex = OpenSmileProsody()
    clock = prosody_module.itertools.count()
    stores = [prosody_module._FrameStore(clock) for _ in prosody_module._INPUT_SINKS]
    markers = [prosody_module._Marker(clock) for _ in prosody_module._MARKER_SINKS]
    ex._run("inputs", [x], SR, sinks=dict(zip(
        prosody_module._MARKER_SINKS + prosody_module._INPUT_SINKS, markers + stores,
        strict=True)))
    cuts = prosody_module._eoi_cuts(stores, markers, prosody_module._MARKER_BLOCKS)
    assert (cuts[level], stores[level].frames) == (kept, read)
    bounded, whole = _both(x)
    np.testing.assert_array_equal(bounded.to_numpy(), whole.to_numpy())  # bit-identical


#: The 11 recordings where the sinks read late frames before the end-of-input cut.
LATE_FRAME_FILES = (
    "speechbrain/tests/samples/ASR/spk2_snt1.wav",
    "speechbrain/tests/samples/single-mic/example2.flac",
    *(f"speechocean762_kids/SPEAKER{p}.WAV" for p in (
        "0149/001490109", "3012/030120021", "3012/030120163", "3027/030270033",
        "3027/030270083", "3412/034120174", "5015/050150116", "5428/054280128",
        "5547/055470120")),
)


@pytest.mark.realdata
def test_bounded_functionals_are_bit_identical_on_the_late_frame_recordings():
    files = [SPEECH / f for f in LATE_FRAME_FILES]
    if not all(f.is_file() for f in files):
        pytest.skip(f"real speech not found under {SPEECH}")
    for f in files:
        bounded, whole = _both(load_audio(f, SR), block=7 * SR)
        np.testing.assert_array_equal(bounded.to_numpy(), whole.to_numpy(), err_msg=str(f))


@pytest.mark.realdata
def test_bounded_functionals_equal_openSMILEs_on_real_speech():
    files = [SPEECH / "jfk.flac", SPEECH / "pyannote" / "sample.wav"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"real speech not found under {SPEECH}")
    for f in files:
        bounded, whole = _both(load_audio(f, SR))
        _assert_close(bounded, whole)
