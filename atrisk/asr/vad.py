"""Voice activity detection with silero-vad.

:func:`speech_segments` finds the stretches of speech in a signal, the unit
every ASR backend transcribes.  The silero-vad model (its weights ship inside
the pip package) is loaded on first use and kept for the life of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

import numpy as np

from atrisk.asr.base import MODEL_SAMPLE_RATE, prepare_signal
from atrisk.config import ASRConfig
from atrisk.errors import ModelLoadError

#: Signals shorter than this (seconds) have no speech segments.
MIN_SIGNAL_S = 0.1
#: Audio the streaming VAD looks at in one call (seconds); see :func:`stream_speech`.
WINDOW_S = 300.0
#: silero-vad frame at 16 kHz (samples).
VAD_FRAME = 512
#: Shortest stretch (seconds) run as one lane of the batched VAD, and most lanes.
LANE_S = 20.0
MAX_LANES = 64
#: Audio (seconds) each lane after the first sees before its own frames.
WARM_S = 2.0

_MODEL = None
_LOCK = threading.Lock()


def _silero():
    """Import ``silero_vad``, keeping torch's thread count.

    ``silero_vad`` calls ``torch.set_num_threads(1)`` when it is imported, which
    would slow every later model in the process (the Wav2Vec2 forward pass
    among them) to one core; the count set before the import is put back.
    """
    import torch

    threads = torch.get_num_threads()
    import silero_vad

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return silero_vad


def _vad_model():
    """Return the process-wide silero-vad model, loading it on first use."""
    global _MODEL
    if _MODEL is None:
        try:
            _MODEL = _silero().load_silero_vad()
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
    return speech_segments_16k(x, config)


def speech_segments_16k(x: np.ndarray, config: ASRConfig) -> list[tuple[float, float]]:
    """:func:`speech_segments` on a signal already prepared by ``prepare_signal``."""
    sr = MODEL_SAMPLE_RATE
    if x.size < MIN_SIGNAL_S * sr or not np.any(x):
        return []
    import torch

    model = _vad_model()
    with _LOCK, torch.inference_mode():
        # silero-vad runs one small step per 32 ms: with more than one intra-op
        # thread it spends its time synchronising threads (far slower; docs/asr.md),
        # so it runs on one and the count is restored
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            probs = _speech_probs(x, model)
        finally:
            torch.set_num_threads(threads)
    stamps = _silero().get_speech_timestamps_from_probs(
        probs,
        sampling_rate=sr,
        threshold=config.vad_threshold,
        min_speech_duration_ms=config.min_speech_ms,
        min_silence_duration_ms=config.min_silence_ms,
        speech_pad_ms=config.speech_pad_ms,
        return_seconds=False,
        audio_length_samples=x.size,
    )
    spans = [(int(s["start"]), min(int(s["end"]), x.size)) for s in stamps]
    spans = [(a, b) for a, b in spans if b > a]
    out: list[tuple[float, float]] = []
    max_len = int(config.max_segment_s * sr)
    for a, b in spans:
        for c, d in _split_long(x, a, b, max_len):
            out.append((c / sr, d / sr))
    return out


def _speech_probs(x: np.ndarray, model) -> list[float]:
    """Return silero's speech probability of every 512-sample frame of ``x``.

    silero-vad steps through the audio 32 ms at a time, and one step costs
    about as much for one stream as for dozens, so a signal longer than
    ``2 * LANE_S`` is cut into lanes of at least ``LANE_S`` seconds run side by
    side as one batch.  Each lane after the first starts ``WARM_S`` earlier,
    and the probabilities of that warm-up are dropped, so that the model's
    state has settled when the lane's own frames begin.  A shorter signal runs
    as one lane: the same probabilities as ``silero_vad.get_speech_timestamps``.
    """
    import torch

    w = VAD_FRAME
    n = -(-x.size // w)  # frames, the last one zero-padded
    padded = np.zeros(n * w, dtype=np.float32)
    padded[: x.size] = x
    lanes = max(1, min(MAX_LANES, n // int(LANE_S * MODEL_SAMPLE_RATE / w)))
    per = -(-n // lanes)  # frames per lane
    warm = int(WARM_S * MODEL_SAMPLE_RATE / w) if lanes > 1 else 0
    batch = np.zeros((lanes, (warm + per) * w), dtype=np.float32)
    for k in range(lanes):
        a = max(0, k * per - warm) * w
        b = min(n, (k + 1) * per) * w
        seg = padded[a:b]
        lead = warm * w - (k * per * w - a)  # lane 0: zeros before it are not used
        batch[k, lead : lead + seg.size] = seg
    xb = torch.from_numpy(batch)
    model.reset_states()
    steps = [model(xb[:, i : i + w], MODEL_SAMPLE_RATE) for i in range(0, xb.shape[1], w)]
    probs = torch.cat(steps, dim=1)[:, warm:].reshape(-1)[:n]
    return probs.tolist()


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


def stream_speech(
    blocks: Iterable[np.ndarray],
    config: ASRConfig | None = None,
    window_s: float = WINDOW_S,
    timings: dict[str, float] | None = None,
) -> Iterator[tuple[float, float, np.ndarray]]:
    """Find the speech in a stream of 16 kHz blocks, holding about one window at a time.

    Blocks are gathered into windows of ``window_s`` seconds and each window goes
    through :func:`speech_segments`'s VAD and splitting.  Segments that end
    within a safety margin (``min_silence_ms + 2 * speech_pad_ms`` + 0.5 s) of
    the window end may still grow, so the audio from the first such segment on
    is carried into the next window and looked at again.  A signal that fits
    in one window gives exactly the segments of :func:`speech_segments`.

    Args:
        blocks: Mono float32 16 kHz blocks in order (e.g. from
            :func:`atrisk.ingest.audio.stream_audio`), finite values.
        config: ASR settings; defaults when ``None``.
        window_s: Audio per VAD call, seconds; raised to at least
            ``2 * max_segment_s`` + margin so that a window always finishes a segment.
        timings: When given, seconds spent in the VAD are added under ``"vad"``.

    Yields:
        ``(start_s, end_s, samples)`` per segment in time order; times are seconds
        from the start of the stream, ``samples`` a copy of that stretch.

    Raises:
        ModelLoadError: When silero-vad cannot be loaded.
    """
    config = config or ASRConfig()
    sr = MODEL_SAMPLE_RATE
    margin = int(((config.min_silence_ms + 2 * config.speech_pad_ms) / 1000 + 0.5) * sr)
    window = max(int(window_s * sr), int(2 * config.max_segment_s * sr) + 2 * margin)
    parts: list[np.ndarray] = []
    held = 0  # samples in parts
    offset = 0  # stream position of the first held sample
    blocks_iter = iter(blocks)
    done = False
    while not done:
        block = next(blocks_iter, None)
        if block is None:
            done = True
        elif block.size:
            parts.append(np.asarray(block, dtype=np.float32))
            held += block.size
        if not held or (held < window and not done):
            continue
        buf = np.concatenate(parts) if len(parts) > 1 else parts[0]
        t0 = time.perf_counter()
        spans = speech_segments_16k(buf, config)
        if timings is not None:
            timings["vad"] = timings.get("vad", 0.0) + time.perf_counter() - t0
        keep_from = buf.size if done else buf.size - margin
        for start_s, end_s in spans:
            a, b = int(round(start_s * sr)), int(round(end_s * sr))
            if not done and b > buf.size - margin:
                keep_from = min(a, keep_from)
                break
            yield (offset + a) / sr, (offset + b) / sr, buf[a:b].copy()
        parts = [buf[keep_from:].copy()] if keep_from < buf.size else []
        held = buf.size - keep_from
        offset += keep_from
