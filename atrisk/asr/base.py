"""What every ASR backend shares: the :class:`Segment` record and :class:`Transcriber`.

A transcriber is an inference object (DESIGN.md convention 5): it is built
once (the model loads once) and then called on many signals.  Times are
seconds from the start of the signal given to it.  A signal without speech
gives an empty list, never an error.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atrisk.errors import AudioDecodeError
from atrisk.records import TRACKS, Utterance, Word

#: Rate every backend works at (Hz); other rates are resampled to it.
MODEL_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Segment:
    """One stretch of recognised speech inside a signal.

    Attributes:
        start_s: Start, seconds from the start of the signal.
        end_s: End, seconds from the start of the signal.
        text: Recognised text as the backend writes it: lower case without punctuation
            (wav2vec2, pocketsphinx) or with casing and punctuation (whisper); words
            separated by single spaces.  Compare texts after
            :func:`atrisk.asr.normalize.normalize_text`.
        confidence: Recogniser confidence in [0, 1], ``nan`` when unknown.
        words: Word-level times (seconds from the start of the signal), in time order.
    """

    start_s: float
    end_s: float
    text: str
    confidence: float = math.nan
    words: tuple[Word, ...] = field(default=())

    @property
    def duration_s(self) -> float:
        """Length of the segment in seconds."""
        return self.end_s - self.start_s


class Transcriber(ABC):
    """Speech-to-text over whole signals: VAD segments, then recognition of each.

    Subclasses implement :meth:`transcribe_signal` (and may override
    :meth:`transcribe_batch` to batch work across signals).

    Attributes:
        name: Backend and model, as recorded in the ``asr_model`` column
            (e.g. ``"wav2vec2:facebook/wav2vec2-base-960h"``, ``"pocketsphinx:en-us"``).
    """

    name: str = "unknown"

    @abstractmethod
    def transcribe_signal(self, signal: np.ndarray, sample_rate: int = 16000) -> list[Segment]:
        """Transcribe one mono signal.

        Args:
            signal: Samples in [-1, 1] (any float or int dtype); NaN/inf count as 0.
            sample_rate: Rate of ``signal`` in Hz (resampled to 16 kHz when different).

        Returns:
            Segments in time order; ``[]`` when there is no speech.

        Raises:
            AudioDecodeError: When ``signal`` is not a 1-D (or channels x samples) array.
        """

    def transcribe_batch(
        self, signals: Sequence[np.ndarray], sample_rate: int = 16000
    ) -> list[list[Segment]]:
        """Transcribe several signals (the default calls :meth:`transcribe_signal` on each).

        Args:
            signals: Mono signals, all at ``sample_rate``.
            sample_rate: Rate of the signals in Hz.

        Returns:
            One list of segments per signal, in the order given.

        Raises:
            AudioDecodeError: When a signal is not a usable array.
        """
        return [self.transcribe_signal(s, sample_rate) for s in signals]

    def transcribe_file(self, path: Path | str) -> list[Segment]:
        """Decode an audio (or video) file to 16 kHz mono and transcribe it.

        Args:
            path: Any file :func:`atrisk.ingest.audio.load_audio` decodes.

        Returns:
            Segments in time order, times from the start of the file.

        Raises:
            AudioDecodeError: When the file is missing or cannot be decoded.
        """
        from atrisk.ingest.audio import load_audio

        signal = load_audio(Path(path), sample_rate=MODEL_SAMPLE_RATE)
        return self.transcribe_signal(signal, MODEL_SAMPLE_RATE)

    def transcribe_blocks(self, blocks: Iterable[np.ndarray]) -> list[Segment]:
        """Transcribe one 16 kHz mono signal given as consecutive blocks.

        Gives exactly :meth:`transcribe_signal`'s segments for the joined blocks.  This
        default joins the blocks first (the whole signal is held); backends that can
        stream (:class:`~atrisk.asr.wav2vec2.Wav2Vec2Transcriber`) hold one VAD window.

        Args:
            blocks: Float samples at :data:`MODEL_SAMPLE_RATE`, in order (e.g. from
                :func:`atrisk.ingest.audio.stream_audio`).

        Returns:
            Segments in time order, times from the start of the first block.

        Raises:
            AudioDecodeError: When the block source fails to decode.
        """
        parts = [np.asarray(b, dtype=np.float32) for b in blocks]
        signal = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        del parts
        return self.transcribe_signal(signal, MODEL_SAMPLE_RATE)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def short_message(exc: BaseException, limit: int = 400) -> str:
    """Return an exception's message on one line, cut to ``limit`` characters.

    Args:
        exc: Any exception (a library's message may span many lines).
        limit: Longest result.

    Returns:
        The message with runs of whitespace made single spaces, ``...`` when cut.
    """
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of 1-D blocks into blocks of exactly ``size`` samples (last shorter).

    Args:
        blocks: 1-D arrays in order, of any lengths.
        size: Samples per output block (at least 1).

    Yields:
        Finite float32 arrays (NaN/inf set to 0), each ``size`` long but the last.
    """
    size = max(1, int(size))
    held: list[np.ndarray] = []
    n = 0
    for b in blocks:
        b = np.asarray(b, dtype=np.float32).ravel()
        while b.size:
            take = min(size - n, b.size)
            held.append(b[:take])
            n += take
            b = b[take:]
            if n == size:
                out = np.concatenate(held) if len(held) > 1 else held[0]
                yield np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
                held, n = [], 0
    if n:
        out = np.concatenate(held) if len(held) > 1 else held[0]
        yield np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def prepare_signal(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Return ``signal`` as finite float32 mono at 16 kHz (a new array; the input is untouched).

    NaN and inf become 0; integer PCM is scaled to [-1, 1]; a 2-D array is
    averaged over its channel axis (the shorter one); other rates are resampled
    with torchaudio.

    Args:
        signal: 1-D samples, or a 2-D channels x samples (or samples x channels) array.
        sample_rate: Rate of ``signal`` in Hz.

    Returns:
        A 1-D float32 array at :data:`MODEL_SAMPLE_RATE`.

    Raises:
        AudioDecodeError: When the array has more than 2 dimensions or the rate is not positive.
    """
    x = np.asarray(signal)
    if x.ndim == 0 or x.ndim > 2:
        raise AudioDecodeError(
            f"expected a 1-D signal (or channels x samples), got an array of shape {x.shape}"
        )
    if int(sample_rate) <= 0:
        raise AudioDecodeError(f"sample rate must be positive, got {sample_rate}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = np.nan_to_num(x.astype(np.float32, copy=True), nan=0.0, posinf=0.0, neginf=0.0)
    if x.ndim == 2:
        x = x.mean(axis=int(np.argmin(x.shape))).astype(np.float32)
    if int(sample_rate) != MODEL_SAMPLE_RATE and x.size:
        import torch
        import torchaudio.functional as AF

        x = AF.resample(torch.from_numpy(x), int(sample_rate), MODEL_SAMPLE_RATE).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def segments_to_utterances(
    session_id: str, speaker: str, segments: Sequence[Segment]
) -> list[Utterance]:
    """Turn a track's segments into :class:`~atrisk.records.Utterance` records.

    Args:
        session_id: The class the track belongs to.
        speaker: ``"teacher"`` or ``"student"``.
        segments: Output of a :class:`Transcriber` on that track.

    Returns:
        One utterance per segment, sorted by start time.

    Raises:
        ValueError: When ``speaker`` is not one of ``atrisk.records.TRACKS``.
    """
    if speaker not in TRACKS:
        raise ValueError(f"speaker must be one of {TRACKS}, got {speaker!r}")
    return [
        Utterance(
            session_id=str(session_id),
            speaker=speaker,  # type: ignore[arg-type]
            start_s=float(seg.start_s),
            end_s=float(seg.end_s),
            text=seg.text,
            confidence=float(seg.confidence),
            words=tuple(seg.words),
        )
        for seg in sorted(segments, key=lambda s: (s.start_s, s.end_s))
    ]
