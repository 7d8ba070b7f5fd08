"""Voice activity detection with silero-vad.

:func:`speech_segments` finds the stretches of speech in a signal, the unit
every ASR backend transcribes.  The silero-vad model (its weights ship inside
the pip package) is loaded on first use and kept for the life of the process.
"""

from __future__ import annotations

import threading

import numpy as np

from atrisk.asr.base import MODEL_SAMPLE_RATE, prepare_signal
from atrisk.config import ASRConfig
from atrisk.errors import ModelLoadError

#: Signals shorter than this (seconds) have no speech segments.
MIN_SIGNAL_S = 0.1

_MODEL = None
_LOCK = threading.Lock()


def _vad_model():
    """Return the process-wide silero-vad model, loading it on first use."""
    global _MODEL
    if _MODEL is None:
        try:
            from silero_vad import load_silero_vad

            _MODEL = load_silero_vad()
        except Exception as exc:  # pragma: no cover - broken installation
            raise ModelLoadError(f"cannot load the silero-vad model: {exc}") from exc
    return _MODEL


def speech_segments(
    signal: np.ndarray, sample_rate: int = 16000, config: ASRConfig | None = None
) -> list[tuple[float, float]]:
    """Find the speech in a mono signal.

    silero-vad marks speech with ``config.vad_threshold``, drops speech shorter
    than ``config.min_speech_ms``, merges stretches separated by less than
    ``config.min_silence_ms`` and pads each side by ``config.speech_pad_ms``.
    Segments longer than ``config.max_segment_s`` are then cut, at the
    lowest-energy 20 ms frame in the last third (at most 5 s) before the limit,
    so that every returned segment is at most ``max_segment_s`` long.

    Args:
        signal: Mono samples (NaN/inf count as 0).
        sample_rate: Rate of ``signal`` in Hz (resampled to 16 kHz when different).
        config: ASR settings; defaults when ``None``.

    Returns:
        ``(start_s, end_s)`` pairs in time order, seconds from the start of the
        signal; ``[]`` for silence or a signal shorter than 0.1 s.

    Raises:
        AudioDecodeError: When ``signal`` is not a 1-D (or 2-D) array.
        ModelLoadError: When silero-vad cannot be loaded.
    """
    config = config or ASRConfig()
    x = prepare_signal(signal, sample_rate)
    return _speech_segments_16k(x, config)


def _speech_segments_16k(x: np.ndarray, config: ASRConfig) -> list[tuple[float, float]]:
    """:func:`speech_segments` on a signal already prepared by ``prepare_signal``."""
    sr = MODEL_SAMPLE_RATE
    if x.size < MIN_SIGNAL_S * sr or not np.any(x):
        return []
    import torch
    from silero_vad import get_speech_timestamps

    model = _vad_model()
    with _LOCK, torch.inference_mode():
        stamps = get_speech_timestamps(
            torch.from_numpy(x),
            model,
            threshold=config.vad_threshold,
            sampling_rate=sr,
            min_speech_duration_ms=config.min_speech_ms,
            min_silence_duration_ms=config.min_silence_ms,
            speech_pad_ms=config.speech_pad_ms,
            return_seconds=False,
        )
    spans = [(int(s["start"]), min(int(s["end"]), x.size)) for s in stamps]
    spans = [(a, b) for a, b in spans if b > a]
    out: list[tuple[float, float]] = []
    max_len = int(config.max_segment_s * sr)
    for a, b in spans:
        for c, d in _split_long(x, a, b, max_len):
            out.append((c / sr, d / sr))
    return out


def _split_long(x: np.ndarray, start: int, end: int, max_len: int) -> list[tuple[int, int]]:
    """Cut ``x[start:end]`` into pieces of at most ``max_len`` samples at quiet points."""
    if max_len <= 0:
        return [(start, end)]
    frame = int(0.02 * MODEL_SAMPLE_RATE)
    pieces = []
    a = start
    while end - a > max_len:
        limit = a + max_len
        window = min(max_len // 3, 5 * MODEL_SAMPLE_RATE)
        lo = limit - window
        cut = limit
        if window >= 2 * frame:
            seg = x[lo:limit]
            n = seg.size // frame
            energy = (seg[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
            # the quietest frame; ties go to the latest one (longest piece)
            k = n - 1 - int(np.argmin(energy[::-1]))
            cut = lo + k * frame + frame // 2
        cut = max(a + 1, min(cut, limit))
        pieces.append((a, cut))
        a = cut
    pieces.append((a, end))
    return pieces
