"""Timing features without words: acoustic speaking rate and pause statistics per track.

:class:`TimingFeatures` computes, from the signal alone (no ASR), one row of
:data:`TIMING_COLUMNS` per track with librosa, in the audinterface style of the prosody
extractors: ``process_signal``, ``process_file``, ``process_stream`` (a long track given
as consecutive blocks, never held) and ``process_sessions`` (rows indexed
``(session_id, track)``).

Method (all on frames of ``frame_s`` = 32 ms every ``hop_s`` = 10 ms, ``center=False``):

* **Speech frames.**  The frame RMS level (:func:`librosa.feature.rms`, in dB re full
  scale) above ``max(level) - top_db`` (librosa's rule in :func:`librosa.effects.split`)
  and above ``floor_dbfs``; or, when speech segments are given (e.g. the VAD segments of
  :mod:`atrisk.asr.vad` or the utterance times), the frames whose centre lies in a
  segment.  Gaps shorter than ``min_pause_s`` are filled (stop closures, not pauses),
  then speech runs shorter than ``min_speech_s`` are dropped (clicks).
* **Pauses** are the gaps between consecutive speech runs (each at least
  ``min_pause_s``); silence before the first and after the last speech is not a pause.
* **Syllable nuclei** are the peaks (:func:`librosa.util.peak_pick`) of the smoothed
  band energy ``band_hz`` (300-2500 Hz: where vowel formants carry their energy, from
  :func:`librosa.stft`) that rise ``peak_delta_db`` above their 0.2 s neighbourhood,
  are at least ``min_syllable_s`` apart, lie in a speech run, and are within
  ``peak_window_db`` of the 95th percentile of the band energy over speech frames (a
  level reference robust to single loud events; it drops noise bursts between words).

Columns (:data:`TIMING_COLUMNS`): ``speech_rate_syll_s`` (nuclei per second of speech,
i.e. an articulation rate), ``syllables``, ``speech_s``, ``speech_ratio`` (speech over
the whole track), ``pause_count``, ``pause_mean_s`` and ``pause_max_s`` (NaN when there
is no pause), ``pauses_per_min`` (per minute from the first speech onset to the last
speech offset).  Every column is NaN for a signal shorter than one frame or without a
speech frame (silence, digital zero, or a level below ``floor_dbfs``).

The computation is cut into chunks of :data:`CHUNK_S` seconds of frames, so memory does
not grow with the track beyond two float32 values per frame (about 2.9 MB per hour), and
:meth:`TimingFeatures.process_stream` gives the same row as
:meth:`TimingFeatures.process_signal` of the joined blocks.  This module imports neither
torch nor openSMILE.

Example:
    >>> import numpy as np
    >>> tf = TimingFeatures()
    >>> row = tf.process_signal(np.zeros(16000, dtype="float32"), 16000)
    >>> bool(row.isna().all())
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
from scipy.ndimage import uniform_filter1d

from atrisk.config import TimingConfig
from atrisk.extractors.prosody.base import Extracted
from atrisk.ingest.audio import DecodedSession, mono_finite, stream_audio
from atrisk.records import TRACKS, Utterance

log = logging.getLogger(__name__)

#: Index names of :meth:`TimingFeatures.process_sessions` (as the prosody table).
SESSION_INDEX = ["session_id", "track"]

#: Columns of every row, in order.
TIMING_COLUMNS: list[str] = [
    "speech_rate_syll_s",
    "syllables",
    "speech_s",
    "speech_ratio",
    "pause_count",
    "pause_mean_s",
    "pause_max_s",
    "pauses_per_min",
]

#: Seconds of frames computed in one librosa call (bounds the STFT's memory).
CHUNK_S = 60.0
#: Samples per block when :meth:`TimingFeatures.process_file` decodes a file.
FILE_BLOCK_S = 60.0
#: Percentile of the band energy over speech frames that ``peak_window_db`` is below.
PEAK_REFERENCE_PERCENTILE = 95.0
#: Frames of the moving average that smooths the band-energy envelope (30 ms).
SMOOTH_FRAMES = 3
#: Lowest RMS level (dB re full scale) a frame can have (librosa's ``amin`` 1e-5).
_AMIN_DB = -100.0


class _Frames:
    """Frame RMS level and band energy of a signal fed in blocks of any size.

    Frame ``k`` covers samples ``[k * hop, k * hop + frame)`` whatever the block
    boundaries, so the frames equal those of the joined signal.
    """

    def __init__(self, sample_rate: int, config: TimingConfig) -> None:
        self.rate = int(sample_rate)
        self.frame = max(2, int(round(config.frame_s * self.rate)))
        self.hop = max(1, int(round(config.hop_s * self.rate)))
        freqs = librosa.fft_frequencies(sr=self.rate, n_fft=self.frame)
        lo, hi = config.band_hz
        self.band = (freqs >= lo) & (freqs <= hi)
        if not self.band.any():  # a band above Nyquist: the whole spectrum but DC
            self.band = freqs > 0
        self.chunk = max(1, int(CHUNK_S / config.hop_s))
        self.n_samples = 0
        self._carry = np.zeros(0, dtype=np.float32)
        self._rms_db: list[np.ndarray] = []
        self._band_db: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Frame a block (1-D float32) after the samples already added."""
        self.n_samples += block.size
        buf = np.concatenate([self._carry, block]) if self._carry.size else block
        n = 0 if buf.size < self.frame else 1 + (buf.size - self.frame) // self.hop
        for i in range(0, n, self.chunk):
            j = min(n, i + self.chunk)
            self._frames_of(buf[i * self.hop:(j - 1) * self.hop + self.frame])
        self._carry = np.array(buf[n * self.hop:], dtype=np.float32)

    def _frames_of(self, x: np.ndarray) -> None:
        rms = librosa.feature.rms(y=x, frame_length=self.frame, hop_length=self.hop,
                                  center=False)[0]
        power = np.abs(librosa.stft(x, n_fft=self.frame, hop_length=self.hop,
                                    center=False)) ** 2
        band = power[self.band].sum(axis=0)
        self._rms_db.append(librosa.amplitude_to_db(rms, ref=1.0, top_db=None)
                            .astype(np.float32))
        self._band_db.append(librosa.power_to_db(band, ref=1.0, amin=1e-10, top_db=None)
                             .astype(np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(rms_db, band_db)`` of every complete frame so far."""
        if not self._rms_db:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(self._rms_db), np.concatenate(self._band_db)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return the ``[start, end)`` frame ranges where ``mask`` is true."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                    strict=True))


def _segment_mask(n_frames: int, frame: int, hop: int, rate: int,
                  segments: Iterable[tuple[float, float]]) -> np.ndarray:
    """Frames whose centre lies in one of ``segments`` (seconds; non-finite ones ignored)."""
    centres = (np.arange(n_frames) * hop + frame / 2.0) / rate
    mask = np.zeros(n_frames, dtype=bool)
    for start, end in segments:
        a, b = float(start), float(end)
        if math.isfinite(a) and math.isfinite(b) and b > a:
            mask |= (centres >= a) & (centres < b)
    return mask


def _speech_runs(speech: np.ndarray, hop_s: float, config: TimingConfig
                 ) -> list[tuple[int, int]]:
    """Return the speech runs after filling gaps under ``min_pause_s``, dropping short runs."""
    min_gap = int(round(config.min_pause_s / hop_s))
    min_run = int(round(config.min_speech_s / hop_s))
    merged: list[list[int]] = []
    for a, b in _runs(speech):
        if merged and a - merged[-1][1] < min_gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged if b - a >= max(1, min_run)]


def _nuclei(band_db: np.ndarray, inside: np.ndarray, hop_s: float, config: TimingConfig) -> int:
    """Count the syllable nuclei: band-energy peaks inside speech (module docstring)."""
    env = uniform_filter1d(band_db.astype(np.float64), SMOOTH_FRAMES, mode="nearest")
    half = max(1, int(round(0.05 / hop_s)))  # local maximum over +-50 ms
    avg = max(1, int(round(0.1 / hop_s)))  # mean over +-100 ms
    wait = max(1, int(round(config.min_syllable_s / hop_s)))
    peaks = librosa.util.peak_pick(env, pre_max=half, post_max=half + 1, pre_avg=avg,
                                   post_avg=avg + 1, delta=config.peak_delta_db, wait=wait)
    peaks = peaks[inside[peaks]]
    if not peaks.size:
        return 0
    level = np.percentile(env[inside], PEAK_REFERENCE_PERCENTILE)
    return int(np.count_nonzero(env[peaks] >= level - config.peak_window_db))


def _row(frames: _Frames, config: TimingConfig,
         segments: Sequence[tuple[float, float]] | None) -> pd.Series:
    """Return the row of :data:`TIMING_COLUMNS` from the frame levels of a whole track."""
    rms_db, band_db = frames.arrays()
    if rms_db.size == 0:
        return nan_row()
    rate = frames.rate
    hop_s = frames.hop / rate
    if segments is None:
        ref = float(rms_db.max())
        speech = (rms_db > max(ref - config.top_db, config.floor_dbfs)) & (rms_db > _AMIN_DB)
    else:
        speech = _segment_mask(rms_db.size, frames.frame, frames.hop, rate, segments)
    runs = _speech_runs(speech, hop_s, config)
    if not runs:
        return nan_row()
    inside = np.zeros(rms_db.size, dtype=bool)
    for a, b in runs:
        inside[a:b] = True
    n_syll = _nuclei(band_db, inside, hop_s, config)
    speech_s = int(inside.sum()) * hop_s
    gaps = np.array([(runs[i + 1][0] - runs[i][1]) * hop_s for i in range(len(runs) - 1)])
    span_min = (runs[-1][1] - runs[0][0]) * hop_s / 60.0
    duration_s = frames.n_samples / rate
    values = {
        "speech_rate_syll_s": n_syll / speech_s,
        "syllables": float(n_syll),
        "speech_s": speech_s,
        "speech_ratio": min(1.0, speech_s / duration_s),
        "pause_count": float(gaps.size),
        "pause_mean_s": float(gaps.mean()) if gaps.size else math.nan,
        "pause_max_s": float(gaps.max()) if gaps.size else math.nan,
        "pauses_per_min": gaps.size / span_min,
    }
    return pd.Series(values, index=TIMING_COLUMNS, dtype="float64")


class TimingStream:
    """The timing features of one track fed block by block (:meth:`TimingFeatures.start_stream`).

    Lets a caller that already reads a track in blocks (e.g. to stream it to
    openSMILE) compute the timing row from the same blocks, without decoding twice.

    Args:
        config: Settings.
        sample_rate: Rate of the blocks (Hz).
        speech_segments: As in :meth:`TimingFeatures.process_signal`.

    Raises:
        ValueError: When ``sample_rate`` is below 1000 Hz.

    Example:
        >>> stream = TimingFeatures().start_stream(16000)
        >>> for block in blocks:  # doctest: +SKIP
        ...     stream.add(block)
        >>> stream.row()["pause_count"]  # doctest: +SKIP
    """

    def __init__(self, config: TimingConfig, sample_rate: int,
                 speech_segments: Sequence[tuple[float, float]] | None = None) -> None:
        self.rate = int(sample_rate)
        mono_finite(np.zeros(0, np.float32), self.rate)  # checks the rate
        self.config = config
        self.speech_segments = None if speech_segments is None else list(speech_segments)
        self._frames = _Frames(self.rate, config)

    @property
    def n_samples(self) -> int:
        """Samples added so far."""
        return self._frames.n_samples

    def add(self, block: np.ndarray) -> None:
        """Add the next block of the track.

        Args:
            block: Samples, 1-D or ``(channels, samples)`` (channels averaged; NaN/inf
                count as 0).

        Raises:
            ValueError: When ``block`` has more than 2 axes.
        """
        self._frames.add(mono_finite(block, self.rate))

    def row(self) -> pd.Series:
        """Return the timing features of the blocks added so far.

        Returns:
            A float64 Series indexed by :data:`TIMING_COLUMNS` (all NaN when shorter than
            one frame or without speech), equal to
            :meth:`TimingFeatures.process_signal` of the joined blocks.
        """
        return _row(self._frames, self.config, self.speech_segments)


def nan_row() -> pd.Series:
    """Return a row of :data:`TIMING_COLUMNS`, all NaN (no speech, or too short to frame).

    Returns:
        A float64 Series indexed by :data:`TIMING_COLUMNS`.
    """
    return pd.Series(math.nan, index=TIMING_COLUMNS, dtype="float64")


def speech_segments_by_track(utterances: Iterable[Utterance]
                             ) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Group utterance times by ``(session_id, track)`` for :meth:`TimingFeatures.process_sessions`.

    Args:
        utterances: Utterances (VAD/ASR segments or given transcripts); ``speaker`` names
            the track.

    Returns:
        ``(session_id, speaker)`` → ``[(start_s, end_s), ...]`` in the given order.
    """
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for u in utterances:
        out.setdefault((u.session_id, u.speaker), []).append((float(u.start_s), float(u.end_s)))
    return out


class TimingFeatures:
    """Acoustic speaking rate and pause statistics of a track (see the module docstring).

    Args:
        config: Settings; defaults when ``None``.
        sample_rate: Rate files are decoded to by :meth:`process_file` (Hz).

    Example:
        >>> tf = TimingFeatures()
        >>> tf.process_file("recordings/s1/student.wav")["pause_count"]  # doctest: +SKIP
    """

    def __init__(self, config: TimingConfig | None = None, sample_rate: int = 16000) -> None:
        self.config = config or TimingConfig()
        self.sample_rate = int(sample_rate)

    def __repr__(self) -> str:
        return f"TimingFeatures(config={self.config!r}, sample_rate={self.sample_rate})"

    @property
    def feature_names(self) -> list[str]:
        """The columns of every row (:data:`TIMING_COLUMNS`)."""
        return list(TIMING_COLUMNS)

    # -- processing ------------------------------------------------------------------

    def start_stream(self, sample_rate: int,
                     speech_segments: Sequence[tuple[float, float]] | None = None
                     ) -> TimingStream:
        """Return an accumulator of one track's blocks (:class:`TimingStream`).

        Args:
            sample_rate: Rate of the blocks (Hz).
            speech_segments: As in :meth:`process_signal`.

        Returns:
            A :class:`TimingStream`; ``add`` each block, then ``row()``.

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz.
        """
        return TimingStream(self.config, sample_rate, speech_segments)

    def process_signal(self, signal: np.ndarray, sample_rate: int,
                       speech_segments: Sequence[tuple[float, float]] | None = None
                       ) -> pd.Series:
        """Return the timing features of one signal (a whole track or one utterance).

        Args:
            signal: Samples, 1-D or ``(channels, samples)`` (channels are averaged;
                NaN/inf count as 0).
            sample_rate: Rate of ``signal`` (Hz).
            speech_segments: ``(start_s, end_s)`` stretches of speech (e.g. VAD segments);
                ``None``: speech is found from the level (``top_db``, ``floor_dbfs``).

        Returns:
            A float64 Series indexed by :data:`TIMING_COLUMNS`; all NaN when the signal is
            shorter than one frame or holds no speech frame.

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz or ``signal`` has more
                than 2 axes.
        """
        stream = self.start_stream(sample_rate, speech_segments)
        stream.add(signal)
        return stream.row()

    def process_stream(self, blocks: Iterable[np.ndarray], sample_rate: int,
                       session_id: str, track: str,
                       speech_segments: Sequence[tuple[float, float]] | None = None
                       ) -> pd.DataFrame:
        """Return :meth:`process_sessions`'s row of one track given as consecutive blocks.

        The row equals :meth:`process_signal` of the joined blocks; only the frame levels
        are kept (two float32 per 10 ms), never the track.

        Args:
            blocks: Samples in order (e.g. :func:`~atrisk.ingest.audio.stream_audio`),
                each 1-D or ``(channels, samples)``.
            sample_rate: Their rate (Hz).
            session_id: Session of the track (first index level).
            track: ``"teacher"`` or ``"student"`` (second index level).
            speech_segments: As in :meth:`process_signal`.

        Returns:
            One row indexed by ``(session_id, track)``.

        Raises:
            AudioDecodeError: When the block source fails to decode.
            ValueError: As :meth:`process_signal`.
        """
        stream = self.start_stream(sample_rate, speech_segments)
        for block in blocks:  # an AudioDecodeError of a decoding stream propagates
            stream.add(block)
        row = stream.row()
        return self._frame([row], pd.MultiIndex.from_tuples([(session_id, track)],
                                                            names=SESSION_INDEX))

    def process_file(self, path: Path | str,
                     speech_segments: Sequence[tuple[float, float]] | None = None
                     ) -> pd.DataFrame:
        """Return the timing features of one file, decoded to :attr:`sample_rate` mono.

        The file is decoded in blocks (:func:`~atrisk.ingest.audio.stream_audio`), so a
        track of hours is never held in memory.

        Args:
            path: Any file :func:`~atrisk.ingest.audio.load_audio` can decode.
            speech_segments: As in :meth:`process_signal`.

        Returns:
            One row indexed by the file path (index name ``file``).

        Raises:
            AudioDecodeError: When the file is missing, empty, cannot be decoded, has no
                audio stream or decodes to 0 samples.
        """
        blocks = stream_audio(path, self.sample_rate, int(FILE_BLOCK_S * self.sample_rate))
        stream = self.start_stream(self.sample_rate, speech_segments)
        for block in blocks:
            stream.add(block)
        row = stream.row()
        return self._frame([row], pd.Index([str(path)], name="file", dtype="object"))

    def process_files(self, paths: Iterable[Path | str]) -> pd.DataFrame:
        """Return the rows of :meth:`process_file` for several files, in order.

        Args:
            paths: Files to process.

        Returns:
            One row per file, indexed by path (``file``).

        Raises:
            AudioDecodeError: When a file cannot be decoded.
        """
        parts = [self.process_file(p) for p in paths]
        if parts:
            return pd.concat(parts)
        return self._frame([], pd.Index([], name="file", dtype="object"))

    def process_sessions(
        self,
        decoded: Iterable[DecodedSession],
        speech_segments: Mapping[tuple[str, str], Sequence[tuple[float, float]]] | None = None,
    ) -> Extracted:
        """Return the timing features of every decoded track of the sessions, and the failures.

        Never raises for one track: a track whose features cannot be computed gets a
        NaN row, and its reason is returned (a warning is logged).

        Args:
            decoded: Sessions from :func:`~atrisk.ingest.audio.decode_session`; tracks
                whose signal is ``None`` (missing or undecodable) are skipped.
            speech_segments: ``(session_id, track)`` → speech stretches of that track
                (e.g. :func:`speech_segments_by_track` of the VAD/ASR utterances); tracks
                not in it (or ``None``) find speech from the level.  A track that is in
                it with no segment has no speech (NaN row).

        Returns:
            :class:`~atrisk.extractors.prosody.base.Extracted`: rows indexed by
            ``(session_id, track)`` with columns :data:`TIMING_COLUMNS`, and
            ``(session_id, track) -> "session/track: reason"`` for each failed track.
        """
        keys: list[tuple[str, str]] = []
        rows: list[pd.Series] = []
        failures: dict[tuple, str] = {}
        for item in decoded:
            rate = int(getattr(item, "sample_rate", self.sample_rate))
            for track in TRACKS:
                signal = item.signals.get(track)
                if signal is None:
                    continue
                key = (item.session.session_id, track)
                segments = None if speech_segments is None else speech_segments.get(key)
                try:
                    row = self.process_signal(signal, rate, segments)
                except Exception as exc:  # one bad track must not stop a batch
                    reason = f"timing features failed: {type(exc).__name__}: {exc}"
                    log.warning("%s/%s: %s; features set to NaN", key[0], key[1], reason)
                    failures[key] = f"{key[0]}/{key[1]}: {reason}"
                    row = nan_row()
                keys.append(key)
                rows.append(row)
        return Extracted(self.frame(rows, keys), failures)

    def frame(self, rows: Sequence[pd.Series], keys: Sequence[tuple[str, str]]) -> pd.DataFrame:
        """Return rows of :data:`TIMING_COLUMNS` indexed by ``(session_id, track)``.

        Args:
            rows: One Series per track (e.g. :meth:`TimingStream.row`).
            keys: Their ``(session_id, track)``, in the same order.

        Returns:
            A float64 frame indexed ``(session_id, track)`` (no rows: same columns).
        """
        index = pd.MultiIndex.from_tuples(list(keys), names=SESSION_INDEX) if keys else \
            pd.MultiIndex.from_arrays([[], []], names=SESSION_INDEX)
        return self._frame(list(rows), index)

    def _frame(self, rows: list[pd.Series], index: pd.Index) -> pd.DataFrame:
        if rows:
            data = np.vstack([r.to_numpy(dtype="float64") for r in rows])
        else:
            data = np.empty((0, len(TIMING_COLUMNS)), dtype="float64")
        return pd.DataFrame(data, index=index, columns=TIMING_COLUMNS)

