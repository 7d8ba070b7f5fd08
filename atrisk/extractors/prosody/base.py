"""The prosody interface: one base class, every ``process_*`` method written once.

A backend (openSMILE, torch, …) implements :meth:`ProsodyBackend.functionals` — the
functionals of a list of signals and, per signal, why it failed — plus its
``feature_names`` and ``backend_name``.  Everything else (signal, file, session,
segment and utterance entry points, the index names, the failure records) lives here,
so every backend behaves the same.  Failures are *returned* with the rows
(:class:`Extracted`), never left on the backend.

Backends that can compute a whole track from a stream of blocks, in bounded memory,
also implement :class:`StreamingProsody`; ``atrisk extract`` tests for that capability,
not for a class.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from atrisk.config import ProsodyConfig
from atrisk.extractors.prosody.segments import (
    SEGMENT_INDEX,
    SegmentJob,
    index_from_keys,
    segment_jobs,
    segment_jobs_from_blocks,
    utterance_cuts,
)
from atrisk.ingest.audio import DecodedSession, load_audio, mono_finite
from atrisk.records import TRACKS, Utterance

#: Index names of per-track rows (the ``prosody`` table key).
SESSION_INDEX = ["session_id", "track"]

__all__ = ["SEGMENT_INDEX", "SESSION_INDEX", "Extracted", "ProsodyBackend", "StreamingProsody"]


@dataclass(frozen=True)
class Extracted:
    """Feature rows and the failures behind their NaN rows (unpacks as ``frame, failures``).

    Attributes:
        frame: One row per item asked for, in order (NaN where a backend failed or the
            item is too short to frame).
        failures: ``index key -> "where: reason"`` for each row the backend failed on;
            rows that are NaN because the input is too short are not failures.
    """

    frame: pd.DataFrame
    failures: dict[tuple, str] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.frame, self.failures))


class ProsodyBackend(ABC):
    """Functionals per track, file, segment or utterance, from one backend.

    Subclasses set :attr:`name` (their registry name, :data:`atrisk.registry.PROSODY_BACKENDS`)
    and implement :meth:`functionals`, :attr:`feature_names` and :attr:`backend_name`.

    Attributes:
        config: The prosody settings the backend was made with.
        sample_rate: Rate (Hz) files are decoded to by :meth:`process_file`.
    """

    name: ClassVar[str] = ""
    config: ProsodyConfig
    sample_rate: int

    # -- what a backend implements -----------------------------------------------------

    @property
    @abstractmethod
    def feature_names(self) -> list[str]:
        """Column names of the functionals, in order."""

    @property
    @abstractmethod
    def backend_name(self) -> str:
        """Backend id recorded in the tables' ``prosody_backend`` column (name and version)."""

    @abstractmethod
    def functionals(self, signals: Sequence[np.ndarray], sample_rate: int
                    ) -> tuple[np.ndarray, list[str | None]]:
        """Return the functionals of each signal and why the backend failed on it.

        Args:
            signals: 1-D (or ``(channels, samples)``) arrays, all at ``sample_rate``;
                non-finite samples count as 0.
            sample_rate: Their rate (Hz).

        Returns:
            ``(rows, reasons)``: a ``(len(signals), len(feature_names))`` float64 array
            (NaN rows for signals too short to frame or that failed) and one reason per
            signal (``None`` when it did not fail).

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz or a signal has more than
                2 axes.
        """

    # -- written once for every backend -----------------------------------------------

    def process_signal(self, signal: np.ndarray, sample_rate: int) -> pd.Series:
        """Return the functionals of one signal (NaN when too short or the backend fails).

        Args:
            signal: Samples, 1-D or ``(channels, samples)`` (channels are averaged).
            sample_rate: Rate of ``signal`` (Hz).

        Returns:
            A float64 Series indexed by :attr:`feature_names`.

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz or ``signal`` has more than
                2 axes.
        """
        rows, _ = self.functionals([signal], sample_rate)
        return pd.Series(rows[0], index=self.feature_names, dtype="float64")

    def process_file(self, path: Path | str) -> pd.DataFrame:
        """Return the functionals of one file (decoded to :attr:`sample_rate` mono).

        Args:
            path: Any file :func:`~atrisk.ingest.audio.load_audio` decodes.

        Returns:
            One row indexed by the file path (index name ``file``).

        Raises:
            AudioDecodeError: When the file is missing or cannot be decoded.
        """
        return self.process_files([path])

    def process_files(self, paths: Sequence[Path | str] | Iterable[Path | str]
                      ) -> pd.DataFrame:
        """Return the functionals of several files, one row each, in order.

        Args:
            paths: Files to process.

        Returns:
            Rows indexed by file path (index name ``file``).

        Raises:
            AudioDecodeError: When a file cannot be decoded (use :meth:`process_sessions`
                with :func:`~atrisk.ingest.audio.decode_session` for batches that must not
                stop on a bad file).
        """
        files = [str(p) for p in paths]
        signals = [load_audio(f, self.sample_rate) for f in files]
        rows, _ = self.functionals(signals, self.sample_rate) if files else (None, [])
        return self.frame(rows, pd.Index(files, name="file", dtype="object"))

    def process_sessions(self, decoded: Iterable[DecodedSession]) -> Extracted:
        """Return the functionals of every decoded track of the sessions.

        Args:
            decoded: Sessions from :func:`~atrisk.ingest.audio.decode_session`; tracks
                whose signal is ``None`` (missing or undecodable) are skipped.

        Returns:
            Rows indexed by ``(session_id, track)`` and the failures, keyed the same way,
            as ``"session/track: reason"``.
        """
        jobs = []
        for item in decoded:
            rate = int(getattr(item, "sample_rate", self.sample_rate))
            for track in TRACKS:
                signal = item.signals.get(track)
                if signal is not None:
                    jobs.append(((item.session.session_id, track), signal, rate))
        rows, reasons = self._by_rate([j[1] for j in jobs], [j[2] for j in jobs])
        keys = [j[0] for j in jobs]
        index = pd.MultiIndex.from_tuples(keys, names=SESSION_INDEX) if keys else \
            pd.MultiIndex.from_arrays([[], []], names=SESSION_INDEX)
        failures = {key: f"{key[0]}/{key[1]}: {reason}"
                    for key, reason in zip(keys, reasons, strict=True) if reason}
        return Extracted(self.frame(rows, index), failures)

    def process_segments(self, signal: np.ndarray, sample_rate: int, session_id: str,
                         speaker: str, segments: Iterable[tuple[float, float]]) -> Extracted:
        """Return the functionals of each segment of one track (e.g. each utterance).

        Each row equals :meth:`process_signal` of the track cut at the segment's times
        (:func:`~atrisk.extractors.prosody.segments.cut_segments`).

        Args:
            signal: The whole track, 1-D or ``(channels, samples)`` (channels averaged).
            sample_rate: Rate of ``signal`` (Hz).
            session_id: Session of the track (first index level).
            speaker: ``"teacher"`` or ``"student"`` (second index level).
            segments: ``(start_s, end_s)`` pairs, seconds from the start of the track;
                clipped to the track.  A segment beyond the end of the track, reversed,
                with a non-finite time, or too short for the backend to frame gives a NaN
                row and no failure.

        Returns:
            One row per segment, in order, indexed ``(session_id, speaker, start_s,
            end_s)``, and the failures keyed the same way.

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz or ``signal`` has more than
                2 axes.

        Example:
            >>> backend.process_segments(x, 16000, "s1", "student", [(1, 2)])  # doctest: +SKIP
        """
        x = mono_finite(signal, sample_rate)
        return self._segments(segment_jobs(x, sample_rate, session_id, speaker, segments))

    def process_segment_stream(self, blocks: Iterable[np.ndarray], sample_rate: int,
                               session_id: str, speaker: str,
                               segments: Iterable[tuple[float, float]]) -> Extracted:
        """Return :meth:`process_segments` of a track given as consecutive blocks.

        For tracks too long to hold: the segments are cut as the blocks pass
        (:func:`~atrisk.extractors.prosody.segments.segment_jobs_from_blocks`) and computed
        a batch at a time, so the rows equal :meth:`process_segments` of the joined blocks.

        Args:
            blocks: Mono samples in order (e.g. :func:`~atrisk.ingest.audio.stream_audio`).
            sample_rate: Their rate (Hz).
            session_id: Session of the track (first index level).
            speaker: ``"teacher"`` or ``"student"`` (second index level).
            segments: ``(start_s, end_s)`` pairs, as in :meth:`process_segments`.

        Returns:
            One row per segment, in the order of ``segments``, and the failures.

        Raises:
            AudioDecodeError: When the block source fails to decode.
        """
        segs = list(segments)
        if not segs:  # nothing to cut: the blocks are not decoded
            return self._segments([])
        frames: list[pd.DataFrame] = []
        order: list[int] = []
        failures: dict[tuple, str] = {}
        for batch in segment_jobs_from_blocks(blocks, sample_rate, session_id, speaker, segs):
            part = self._segments([job for _, job in batch])
            frames.append(part.frame)
            failures.update(part.failures)
            order.extend(i for i, _ in batch)
        rows = pd.concat(frames)
        return Extracted(rows.iloc[np.argsort(order, kind="stable")], failures)

    def process_utterances(self, decoded: Iterable[DecodedSession],
                           utterances: Iterable[Utterance]) -> Extracted:
        """Return the functionals of each utterance (prosody of what was said, not of pauses).

        Args:
            decoded: Sessions from :func:`~atrisk.ingest.audio.decode_session`.
            utterances: Utterances; the track of ``utterance.speaker`` in
                ``utterance.session_id`` is cut at its times (clipped as in
                :meth:`process_segments`).

        Returns:
            One row per utterance whose track was decoded, in the given order, indexed
            ``(session_id, speaker, start_s, end_s)``, and the failures.
        """
        return self._segments(utterance_cuts(decoded, utterances, self.sample_rate))

    def frame(self, rows: np.ndarray | None, index: pd.Index) -> pd.DataFrame:
        """Return ``rows`` as a float64 DataFrame with :attr:`feature_names` columns.

        Args:
            rows: ``(len(index), n_features)`` values; ``None`` for no rows.
            index: The row index.

        Returns:
            The frame (no rows, the same columns, when ``index`` is empty).
        """
        names = self.feature_names
        data = np.empty((0, len(names))) if rows is None or not len(index) else rows
        return pd.DataFrame(np.asarray(data, dtype="float64").reshape(-1, len(names)),
                            index=index, columns=names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sample_rate={self.sample_rate})"

    # -- helpers -------------------------------------------------------------------------

    def _segments(self, jobs: list[SegmentJob]) -> Extracted:
        """Functionals of cut segments, with failures keyed by segment."""
        rows, reasons = self._by_rate([j[1] for j in jobs], [j[2] for j in jobs])
        keys = [j[0] for j in jobs]
        failures = {key: f"{key[0]}/{key[1]} {key[2]:.2f}-{key[3]:.2f} s: {reason}"
                    for key, reason in zip(keys, reasons, strict=True) if reason}
        return Extracted(self.frame(rows, index_from_keys(keys)), failures)

    def _by_rate(self, signals: list[np.ndarray], rates: list[int]
                 ) -> tuple[np.ndarray, list[str | None]]:
        """:meth:`functionals` of signals of mixed rates (rows in the given order)."""
        data = np.full((len(signals), len(self.feature_names)), math.nan)
        reasons: list[str | None] = [None] * len(signals)
        by_rate: dict[int, list[int]] = {}
        for i, rate in enumerate(rates):
            by_rate.setdefault(int(rate), []).append(i)
        for rate, idx in by_rate.items():
            rows, why = self.functionals([signals[i] for i in idx], rate)
            data[idx] = rows
            for i, reason in zip(idx, why, strict=True):
                reasons[i] = reason
        return data, reasons


@runtime_checkable
class StreamingProsody(Protocol):
    """A backend that computes a whole track's functionals from a stream of blocks."""

    def process_stream(self, blocks: Iterable[np.ndarray], sample_rate: int, session_id: str,
                       track: str, duration_s: float | None = None) -> Extracted:
        """Return the ``(session_id, track)`` row of a track given as consecutive blocks.

        Args:
            blocks: Mono samples in order; the track is never held whole.
            sample_rate: Their rate (Hz).
            session_id: Session of the track.
            track: ``"teacher"`` or ``"student"``.
            duration_s: Expected length (e.g. from the file header), for buffer sizing
                only; the features never depend on it.

        Returns:
            One row and the failure, if any.

        Raises:
            AudioDecodeError: When the block source fails to decode.
        """
        ...
