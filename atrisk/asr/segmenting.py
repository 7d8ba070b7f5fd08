"""The part every VAD-segmenting transcriber shares: signal, batch, file and block entry points.

:class:`SegmentingTranscriber` turns each entry point into one stream of speech pieces
``(key, start_s, end_s, samples)`` from the windowed VAD (:func:`atrisk.asr.vad.stream_speech`)
and hands it to the backend's :meth:`~SegmentingTranscriber._transcribe_pieces`
(Wav2Vec2: pools sorted by length; Whisper: pieces packed into decoding windows).  A file
is decoded in :data:`BLOCK_S`-second blocks and an array is cut the same way, so a
signal, its file and its blocks give the same segments, in bounded memory.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atrisk.asr.base import MODEL_SAMPLE_RATE, Segment, Transcriber, prepare_signal, rechunk
from atrisk.asr.vad import WINDOW_S, stream_speech
from atrisk.config import ASRConfig
from atrisk.ingest.audio import stream_audio

#: Seconds per decoded block of a file (and per view of an in-memory signal).
BLOCK_S = 30.0

#: A speech piece: ``(key, start_s, end_s, samples)``, key = index of its signal.
Piece = tuple[int, float, float, np.ndarray]


class SegmentingTranscriber(Transcriber):
    """A transcriber that runs the VAD and decodes its speech pieces (abstract).

    Subclasses set :attr:`config`, and implement :meth:`_transcribe_pieces`.

    Attributes:
        config: ASR settings (VAD threshold, batch size, longest segment).
        timings: Seconds spent per stage (``decode``, ``vad``, ...), summed over calls.
        vad_window_s: Seconds of audio the VAD looks at in one call.
    """

    config: ASRConfig
    timings: dict[str, float]
    vad_window_s: float = WINDOW_S

    @abstractmethod
    def _transcribe_pieces(self, pieces: Iterable[Piece]) -> Iterator[tuple[int, Segment]]:
        """Decode speech pieces; yield ``(key, segment)`` (any order; pieces may be dropped)."""

    def _speech(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[float, float, np.ndarray]]:
        """Return the VAD's speech pieces of one signal given as blocks."""
        return stream_speech(blocks, self.config, self.vad_window_s, self.timings)

    def transcribe_signal(self, signal: np.ndarray, sample_rate: int = 16000) -> list[Segment]:
        """Transcribe one signal (see :meth:`transcribe_batch`).

        Args:
            signal: Mono samples; NaN/inf count as 0.
            sample_rate: Rate of ``signal`` in Hz (resampled to 16 kHz when different).

        Returns:
            Segments in time order; ``[]`` when there is no speech.

        Raises:
            AudioDecodeError: When ``signal`` is not a usable array.
        """
        return self.transcribe_batch([signal], sample_rate)[0]

    def transcribe_batch(
        self, signals: Sequence[np.ndarray], sample_rate: int = 16000
    ) -> list[list[Segment]]:
        """Transcribe several signals: their speech pieces go to the model together.

        Each signal goes through the windowed VAD exactly as :meth:`transcribe_file`
        would take it; the pieces of all signals, in order, are decoded by
        :meth:`_transcribe_pieces` (which batches them).

        Args:
            signals: Mono signals, all at ``sample_rate``.
            sample_rate: Rate of the signals in Hz.

        Returns:
            One list of segments (time order) per signal.

        Raises:
            AudioDecodeError: When a signal is not a usable array.
        """
        prepared = [prepare_signal(s, sample_rate) for s in signals]
        pieces = (
            (i, start_s, end_s, piece)
            for i, x in enumerate(prepared)
            for start_s, end_s, piece in self._speech(array_blocks(x))
        )
        results: list[list[Segment]] = [[] for _ in prepared]
        for i, seg in self._transcribe_pieces(pieces):
            results[i].append(seg)
        for segs in results:
            segs.sort(key=lambda s: (s.start_s, s.end_s))
        return results

    def transcribe_file(self, path: Path | str) -> list[Segment]:
        """Transcribe a file of any length in bounded memory.

        The file is decoded in :data:`BLOCK_S`-second blocks
        (:func:`~atrisk.ingest.audio.stream_audio`) and given to
        :meth:`transcribe_blocks`.

        Args:
            path: Any audio or video file ffmpeg decodes.

        Returns:
            Segments in time order, times from the start of the file; ``[]``
            when there is no speech.

        Raises:
            AudioDecodeError: When the file is missing or cannot be decoded.
        """
        blocks = timed(stream_audio(path, MODEL_SAMPLE_RATE, int(BLOCK_S * MODEL_SAMPLE_RATE)),
                       self.timings, "decode")
        return self.transcribe_blocks(blocks)

    def transcribe_blocks(self, blocks: Iterable[np.ndarray]) -> list[Segment]:
        """Transcribe a 16 kHz signal given as consecutive blocks, in bounded memory.

        The blocks are regrouped into :data:`BLOCK_S`-second blocks (as
        :meth:`transcribe_signal` cuts a signal), so the segments are exactly
        :meth:`transcribe_signal`'s on the joined blocks, while only about one VAD
        window (:attr:`vad_window_s`) and what :meth:`_transcribe_pieces` buffers
        are held.

        Args:
            blocks: Float samples at 16 kHz, in order (e.g. from
                :func:`atrisk.ingest.audio.stream_audio`).

        Returns:
            Segments in time order, times from the start of the first block.

        Raises:
            AudioDecodeError: When the block source fails to decode.
        """
        step = max(1, int(BLOCK_S * MODEL_SAMPLE_RATE))
        pieces = ((0, start_s, end_s, piece)
                  for start_s, end_s, piece in self._speech(rechunk(blocks, step)))
        segments = [seg for _, seg in self._transcribe_pieces(pieces)]
        segments.sort(key=lambda s: (s.start_s, s.end_s))
        return segments


def array_blocks(x: np.ndarray, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Yield ``x`` in views of ``block_s`` seconds (the in-memory twin of a file stream).

    Args:
        x: 16 kHz samples.
        block_s: Seconds per view.

    Returns:
        An iterator of views (no copies).
    """
    step = max(1, int(block_s * MODEL_SAMPLE_RATE))
    for k in range(0, x.size, step):
        yield x[k : k + step]


def timed(items: Iterator[Any], timings: dict[str, float], key: str) -> Iterator[Any]:
    """Yield from ``items``, adding the seconds spent producing them to ``timings[key]``.

    Args:
        items: Any iterator (e.g. decoded blocks).
        timings: Where the seconds are summed.
        key: The stage name.

    Returns:
        The same items, in order.
    """
    while True:
        t0 = time.perf_counter()
        item = next(items, None)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        if item is None:
            return
        yield item
