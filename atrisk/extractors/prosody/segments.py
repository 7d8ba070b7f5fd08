"""Cutting a track into segments (utterances) for per-segment features; backend-neutral.

Every prosody backend computes functionals per utterance by cutting the decoded track at
the utterance times with these helpers
(:class:`~atrisk.extractors.prosody.base.ProsodyBackend`), so all cut the same samples and
index their rows the same way.  This module imports neither openSMILE nor torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from atrisk.ingest.audio import DecodedSession, mono_finite
from atrisk.records import Utterance

log = logging.getLogger(__name__)

#: Index names of per-segment features (DESIGN.md convention 2).
SEGMENT_INDEX = ["session_id", "speaker", "start_s", "end_s"]

#: One cut segment: ``((session_id, speaker, start_s, end_s), samples, sampling rate)``.
SegmentJob = tuple[tuple[str, str, float, float], np.ndarray, int]


def segment_bounds(start_s: float, end_s: float, sample_rate: int, n_samples: int
                   ) -> tuple[int, int]:
    """Return the sample range ``[lo, hi)`` of a segment, clipped to the track.

    Args:
        start_s: Segment start (seconds from the start of the track).
        end_s: Segment end (seconds).
        sample_rate: Rate of the track (Hz).
        n_samples: Length of the track (samples).

    Returns:
        ``(lo, hi)`` with ``0 <= lo, hi <= n_samples``; ``lo >= hi`` (an empty cut) when
        the segment lies beyond the end of the track, is reversed or a time is not finite.

    Example:
        >>> segment_bounds(0.5, 9.0, 16000, 16000)
        (8000, 16000)
    """
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        return 0, 0
    lo, hi = (min(n_samples, max(0, int(round(t * sample_rate)))) for t in (start_s, end_s))
    return lo, hi


def cut_segments(signal: np.ndarray, sample_rate: int,
                 segments: Iterable[tuple[float, float]]) -> list[np.ndarray]:
    """Return the samples of each segment of a 1-D ``signal`` (views, no copies).

    Args:
        signal: The whole track, 1-D.
        sample_rate: Its rate (Hz).
        segments: ``(start_s, end_s)`` pairs (see :func:`segment_bounds`).

    Returns:
        One array per segment; empty for a segment outside the track, reversed, or
        with a non-finite time.
    """
    cuts = []
    for a, b in segments:
        lo, hi = segment_bounds(float(a), float(b), int(sample_rate), signal.shape[-1])
        cuts.append(signal[..., lo:max(lo, hi)])
    return cuts


def segment_jobs(signal: np.ndarray, sample_rate: int, session_id: str, speaker: str,
                 segments: Iterable[tuple[float, float]]) -> list[SegmentJob]:
    """Cut one track into its segments, each with its index key.

    Args:
        signal: The whole track (1-D, as :func:`~atrisk.ingest.audio.mono_finite` gives).
        sample_rate: Its rate (Hz).
        session_id: Session of the track.
        speaker: ``"teacher"`` or ``"student"``.
        segments: ``(start_s, end_s)`` pairs (see :func:`segment_bounds`).

    Returns:
        ``((session_id, speaker, start_s, end_s), samples, rate)`` per segment, in order.
    """
    segs = [(float(a), float(b)) for a, b in segments]
    rate = int(sample_rate)
    return [((session_id, speaker, a, b), cut, rate)
            for (a, b), cut in zip(segs, cut_segments(signal, rate, segs), strict=True)]


def segment_jobs_from_blocks(blocks: Iterable[np.ndarray], sample_rate: int, session_id: str,
                             speaker: str, segments: Iterable[tuple[float, float]],
                             flush_samples: int = 16000 * 120,
                             ) -> Iterator[list[tuple[int, SegmentJob]]]:
    """Cut a track given as consecutive blocks into its segments, never holding the track.

    The cuts equal :func:`segment_jobs` of the joined blocks (same clipping to the
    track's end, empty cuts for segments beyond it, reversed or with a non-finite
    time); only the blocks' overlap with segments still open is kept.

    Args:
        blocks: Mono samples in order (e.g. :func:`~atrisk.ingest.audio.stream_audio`);
            non-finite samples count as 0 (:func:`~atrisk.ingest.audio.mono_finite`).
        sample_rate: Their rate (Hz).
        session_id: Session of the track.
        speaker: ``"teacher"`` or ``"student"``.
        segments: ``(start_s, end_s)`` pairs (see :func:`segment_bounds`).
        flush_samples: Yield the finished cuts once they hold this many samples.

    Yields:
        Lists of ``(position in segments, job)`` for the cuts finished so far; every
        segment appears exactly once over all lists.
    """
    segs = [(float(a), float(b)) for a, b in segments]
    rate = int(sample_rate)
    # the unclipped sample range of each segment; clipping to the end happens as the
    # blocks run out (min(n, .) in segment_bounds)
    bounds = [segment_bounds(a, b, rate, 2 ** 62) for a, b in segs]
    open_ = {i: [] for i, (lo, hi) in enumerate(bounds) if hi > lo}
    done: list[tuple[int, SegmentJob]] = []
    held = 0

    def finish(i: int) -> None:
        nonlocal held
        pieces = open_.pop(i, [])
        cut = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        held += cut.size
        done.append((i, ((session_id, speaker, *segs[i]), cut, rate)))

    for i, (lo, hi) in enumerate(bounds):
        if hi <= lo:
            finish(i)
    offset = 0
    for block in blocks:
        x = mono_finite(block, rate)
        end = offset + x.size
        for i in list(open_):
            lo, hi = bounds[i]
            if lo < end and hi > offset:
                open_[i].append(x[max(lo, offset) - offset:min(hi, end) - offset].copy())
            if hi <= end:
                finish(i)
        offset = end
        if held >= flush_samples:
            yield done
            done, held = [], 0
    for i in list(open_):  # segments running past the end: clipped; beyond it: empty
        finish(i)
    if done:
        yield done


def index_from_keys(keys: list[tuple[str, str, float, float]]) -> pd.MultiIndex:
    """Return a :data:`SEGMENT_INDEX` MultiIndex of ``keys`` (empty when there are none)."""
    if keys:
        return pd.MultiIndex.from_tuples(keys, names=SEGMENT_INDEX)
    return pd.MultiIndex.from_arrays([[], [], [], []], names=SEGMENT_INDEX)


def utterance_cuts(decoded: Iterable[DecodedSession], utterances: Iterable[Utterance],
                   default_rate: int) -> list[SegmentJob]:
    """Cut each utterance out of its decoded track.

    Args:
        decoded: Decoded sessions (:func:`~atrisk.ingest.audio.decode_session`).
        utterances: Utterances; ``utterance.speaker`` names the track of
            ``utterance.session_id`` that is cut at ``start_s``/``end_s``.
        default_rate: Rate of sessions that carry no ``sample_rate``.

    Returns:
        ``(index key, samples, rate)`` per utterance whose track was decoded, in the given
        order; an utterance whose track is missing is skipped with a warning.
    """
    signals = {(d.session.session_id, t): (s, int(getattr(d, "sample_rate", default_rate)))
               for d in decoded for t, s in d.signals.items() if s is not None}
    jobs = []
    for u in utterances:
        found = signals.get((u.session_id, u.speaker))
        if found is None:
            log.warning("utterance %s/%s %.2f-%.2f s: no decoded track; skipped",
                        u.session_id, u.speaker, u.start_s, u.end_s)
            continue
        signal, rate = found
        (cut,) = cut_segments(signal, rate, [(u.start_s, u.end_s)])
        jobs.append(((u.session_id, u.speaker, float(u.start_s), float(u.end_s)), cut, rate))
    return jobs
