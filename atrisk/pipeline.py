"""Run the stages: extract (recordings → tables), train, evaluate, predict.

Each public function here is what one CLI command calls.  ``extract`` streams
sessions through decode → prosody → ASR, writing each session's result
atomically to ``WORKSPACE/parts/`` as it finishes; a rerun skips every session
whose key (track content hashes + session row + output-changing config +
package version + ASR model + fingerprint of the extractor code,
:mod:`atrisk.fingerprint`) is already there, so a crashed run resumes and
gives the same tables as an uninterrupted one.

Two engines run the sessions: ``local`` (default), a process pool with a
bounded window over the lazily planned sessions, each worker holding one
prosody extractor and one transcriber; and ``ray``, a Ray Data pipeline
(:mod:`atrisk.engines.ray_data`) for a laptop or a cluster.  Both write the same
part files and give identical tables.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import atrisk
from atrisk.config import Config
from atrisk.errors import AtriskError, ConfigError, ModelLoadError, RowError
from atrisk.progress import console, progress_bar
from atrisk.records import SESSION_COLUMNS, TRACKS, Session, Utterance
from atrisk.workspace import Workspace, atomic_path, write_text

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")

#: torch intra-op threads of the torch prosody backend on the CPU, whatever the run's
#: ``threads``: its tensors are one track or utterance, and extra threads mostly spin (on
#: a loaded 2-core machine per-utterance prosody took 18.7 CPU-s with torch's default
#: threads against 1.68 with one; one thread on a quiet machine: 155.7 audio-s per
#: CPU-second against 171.5 wall audio-s/s with all threads, docs/prosody.md).
PROSODY_TORCH_THREADS = 1


def usable_cpus() -> int:
    """Return the CPUs this process may use: its affinity and cgroup CPU quota, at least 1.

    ``os.cpu_count()`` counts the host's CPUs, so in a container limited to 2 CPUs of a
    16-CPU host it gives 16 (and torch starts 16 threads); joblib's ``cpu_count``
    honours the affinity mask and the cgroup quota.
    """
    from joblib import cpu_count

    return max(1, int(cpu_count()))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``n``; restored afterwards.

    Args:
        n: Threads (at least 1); ``None`` leaves the count alone.  Nothing is done when
            torch is not imported (no torch model in this process).
    """
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


# --------------------------------------------------------------------------- results


@dataclass
class SessionResult:
    """What extracting one session produced (cached in ``parts/``)."""

    session_id: str
    status: str  # ok | partial | failed
    error: str  # "" when ok; "; "-joined track problems otherwise
    duration_s: float
    prosody: pd.DataFrame  # index (session_id, track), 88 columns; may be empty
    utterances: list[Utterance]
    track_errors: dict[str, str] = field(default_factory=dict)
    #: Seconds per stage on this session (decode_s, prosody_s, asr_s,
    #: utterance_prosody_s, text_s, and the CPU time of each as ``*_cpu_s``);
    #: not part of the tables (parts written before it existed lack it).
    timings: dict[str, float] = field(default_factory=dict)
    #: Functionals per utterance (rows in the order of ``utterances``, one per utterance
    #: of a decoded track), indexed ``(session_id, speaker, start_s, end_s)``; ``None``
    #: when ``prosody.per_utterance`` is off.
    utterance_prosody: pd.DataFrame | None = None


@dataclass
class ExtractResult:
    """Summary of an ``extract`` run.

    Attributes:
        workspace: The workspace folder.
        n_sessions: Sessions in the manifest (valid rows).
        n_ok / n_partial / n_failed: Sessions by status.
        n_resumed: Sessions taken from an earlier run's results.
        failures: One dict per failed file/row (also in ``failures.jsonl``).
        asr_backend: Backend actually used (after any fallback).
    """

    workspace: Path
    n_sessions: int
    n_ok: int
    n_partial: int
    n_failed: int
    n_resumed: int
    n_utterances: int
    failures: list[dict]
    asr_backend: str
    tables: dict[str, str]
    #: Seconds per stage: decode/prosody/asr/text summed over the sessions processed
    #: in this run (``*_s`` elapsed in the workers, ``*_cpu_s`` their CPU time; not
    #: the run's wall time), ``assemble_s`` on the driver.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when some sessions/rows failed (and the rest is done)."""
        return 1 if self.failures else 0


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class _WorkerSpec:
    config: Config
    asr_backend: str
    asr_model: str
    #: The run's ``--device`` (``auto``/``cpu``/``cuda``): ASR and the torch prosody backend.
    device: str
    torch_threads: int
    recordings: Path | None = None
    #: Tracks at least this long are streamed (taken from :data:`STREAM_TRACK_S` where
    #: the spec is made, i.e. in the driver, so that worker processes use the same value).
    stream_track_s: float = field(default_factory=lambda: STREAM_TRACK_S)
    #: Where the torch prosody backend runs when not on ``device`` (the ray engine: ``cpu``).
    prosody_device: str | None = None

    @property
    def uses_torch(self) -> bool:
        """Whether a torch model runs in the worker (ASR other than transcripts, torch prosody)."""
        return self.asr_backend != "transcripts" or self.config.prosody.backend == "torch"


class _SessionProcessor:
    """Decode + prosody + ASR for one session; holds the models (loaded once)."""

    def __init__(self, spec: _WorkerSpec, transcriber: Any | None = None, load_asr: bool = True):
        from atrisk.extractors.prosody import make_prosody_extractor

        self.spec = spec
        self.prosody = make_prosody_extractor(
            spec.config.prosody, sample_rate=spec.config.audio.sample_rate,
            device=spec.prosody_device or spec.device,
        )
        self.transcriber = transcriber
        if self.transcriber is None and load_asr and spec.asr_backend != "transcripts":
            self.transcriber = _load_transcriber(spec)

    def _prosody_threads(self):
        """Context of a prosody call: :data:`PROSODY_TORCH_THREADS` for torch on the CPU."""
        device = getattr(self.prosody, "device", None)
        if device is None or getattr(device, "type", None) != "cpu":
            return torch_threads(None)  # openSMILE (its own threads) or torch on CUDA
        return torch_threads(min(PROSODY_TORCH_THREADS, self.spec.torch_threads))

    def __call__(self, session: Session, given: list[Utterance] | None) -> SessionResult:
        """Decode, extract prosody and transcribe one session, one track in memory at a time."""
        if given is not None:
            return self.transcribe(self.decode(session, keep_signals=False, given=given), given)
        parts, utterances = [], []
        for track in TRACKS:
            part = self.decode(session, tracks=(track,))
            n_samples = max((s.size for s in part.signals.values() if s is not None), default=0)
            utterances += self._asr(part)  # drops the track's signal
            _release_memory(n_samples)
            parts.append(part)
        return self._finish(_merge_parts(session, parts), utterances)

    def decode(
        self,
        session: Session,
        keep_signals: bool = True,
        tracks: Sequence[str] = TRACKS,
        given: Sequence[Utterance] | None = None,
    ) -> DecodedPart:
        """Decode ``tracks`` of ``session`` one by one and compute their prosody (CPU stage).

        A track's signal is dropped right after its prosody unless ``keep_signals``
        (the ASR stage needs it), so at most one decoded track is held.  With ``given``
        utterances (transcripts backend) their per-utterance prosody is computed here,
        while the track is decoded.
        """
        from atrisk.ingest.audio import decode_session

        parts = []
        for track in tracks:
            streamed = self._decode_streamed(session, track, keep_signals)
            if streamed is not None:
                if given is not None and streamed.n_decoded:
                    self._utterance_prosody(streamed, track, session.track_path(track),
                                            [u for u in given if u.speaker == track])
                parts.append(streamed)
                continue
            only = dataclasses.replace(
                session, **{f"{t}_path": None for t in TRACKS if t != track}
            )
            t0, c0 = time.perf_counter(), time.process_time()
            decoded = decode_session(only, self.spec.config.audio, recordings=self.spec.recordings)
            signal, error = decoded.signals.get(track), decoded.errors.get(track)
            signal_size = None if signal is None else signal.size
            _release_memory(signal_size)  # the decoder's freed buffers, before openSMILE's
            t1, c1 = time.perf_counter(), time.process_time()
            with self._prosody_threads():
                prosody = self.prosody.process_sessions([decoded])
            # a prosody failure is the session's error too (listed in failures.jsonl)
            failed = getattr(self.prosody, "failures", {}).get((session.session_id, track))
            if error is None and failed:
                error = f"{session.track_path(track)}: prosody {failed}"
            del decoded  # the part holds the only reference to the signal
            part = DecodedPart(
                session=session,
                signals={track: signal if keep_signals else None},
                n_decoded=int(signal_size is not None),
                errors={} if error is None else {track: error},
                duration_s=math.nan if signal_size is None
                else signal_size / self.spec.config.audio.sample_rate,
                prosody=prosody,
                timings={
                    "decode_s": t1 - t0,
                    "prosody_s": time.perf_counter() - t1,
                    "decode_cpu_s": c1 - c0,
                    "prosody_cpu_s": time.process_time() - c1,
                },
            )
            if given is not None and signal is not None:
                self._utterance_prosody(
                    part, track, signal, [u for u in given if u.speaker == track]
                )
            if not keep_signals:
                signal = None
                _release_memory(signal_size)  # the signal and openSMILE's frames
            parts.append(part)
            del signal, part
        return _merge_parts(session, parts)

    def _streams(self, path: Path | None) -> bool:
        """Whether the track at ``path`` is long enough to be streamed instead of decoded whole.

        Streaming needs the openSMILE backend (the torch backend takes whole signals)
        and the rate the ASR models work at; a track whose header gives no duration
        is streamed too.  A file that cannot be read is left to the in-memory path,
        which reports it.
        """
        from atrisk.asr.base import MODEL_SAMPLE_RATE
        from atrisk.extractors.prosody import ProsodyExtractor

        if path is None or not isinstance(self.prosody, ProsodyExtractor):
            return False
        if self.spec.config.audio.sample_rate != MODEL_SAMPLE_RATE:
            return False
        duration = _header_seconds(path)
        if duration is None:
            return False
        return math.isnan(duration) or duration >= self.spec.stream_track_s

    def _decode_streamed(
        self, session: Session, track: str, keep_signals: bool
    ) -> DecodedPart | None:
        """Decode + prosody of one long track streamed from its file (``None``: not long).

        The same outputs as the in-memory path (samples of ``load_audio``, openSMILE
        fed the same sample stream, the same silent-track and failure messages), but
        only one block of the track is held; the ASR stage decodes the file again
        (``streams``) instead of keeping the signal.
        """
        from atrisk.errors import AudioDecodeError
        from atrisk.ingest.audio import silence_message

        path = session.track_path(track)
        if not self._streams(path):
            return None
        cfg = self.spec.config.audio
        t0, c0 = time.perf_counter(), time.process_time()
        stats: dict[str, float] = {"n": 0, "peak": 0.0, "decode_s": 0.0, "decode_cpu_s": 0.0}
        ok = True
        try:
            prosody = _stream_prosody(self.prosody, path, session.session_id, track,
                                      cfg.sample_rate, stats, _header_seconds(path))
        except AudioDecodeError as exc:
            ok, error, prosody = False, str(exc), self.prosody.process_sessions([])
        finally:  # openSMILE's buffers were freed in its consumer thread's malloc arena
            _release_memory(int(stats["n"]))
        if ok:
            error = silence_message(path, stats["peak"], cfg)
            failed = self.prosody.failures.get((session.session_id, track))
            if error is None and failed:
                error = f"{path}: prosody {failed}"
        return DecodedPart(
            session=session,
            signals={track: None},
            n_decoded=int(ok),
            errors={} if error is None else {track: error},
            duration_s=stats["n"] / cfg.sample_rate if ok else math.nan,
            prosody=prosody,
            timings={
                "decode_s": stats["decode_s"],
                "prosody_s": time.perf_counter() - t0 - stats["decode_s"],
                "decode_cpu_s": stats["decode_cpu_s"],
                "prosody_cpu_s": time.process_time() - c0 - stats["decode_cpu_s"],
            },
            streams={track: path} if ok and keep_signals else {},
        )

    def transcribe(self, part: DecodedPart, given: list[Utterance] | None) -> SessionResult:
        """Transcribe the decoded tracks of ``part`` (or take ``given``) and finish the result.

        Each track is transcribed on its own (the backend batches its speech
        segments), so every engine gives the same utterances for the same input.
        """
        return self._finish(part, list(given) if given is not None else self._asr(part))

    def _asr(self, part: DecodedPart) -> list[Utterance]:
        """Transcribe each decoded track of ``part``; record ASR errors; drop the signals."""
        from atrisk.asr.base import segments_to_utterances

        session = part.session
        utterances: list[Utterance] = []
        part.timings.setdefault("asr_s", 0.0)
        part.timings.setdefault("asr_cpu_s", 0.0)
        for track in TRACKS:
            signal = part.signals.pop(track, None)
            path = part.streams.pop(track, None)
            if signal is None and path is None:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                if signal is None:  # a long track: decoded again, block by block
                    segments = _stream_asr(self.transcriber, path,
                                           self.spec.config.audio.sample_rate)
                else:
                    segments = self.transcriber.transcribe_signal(
                        signal, self.spec.config.audio.sample_rate
                    )
            except AtriskError as exc:
                part.errors[track] = f"{session.track_path(track)}: ASR failed: {exc}"
                continue
            finally:
                part.timings["asr_s"] += time.perf_counter() - t0
                part.timings["asr_cpu_s"] += time.process_time() - c0
            track_utterances = segments_to_utterances(session.session_id, track, segments)
            utterances.extend(track_utterances)
            self._utterance_prosody(part, track, path if signal is None else signal,
                                    track_utterances)
        return utterances

    def _utterance_prosody(
        self, part: DecodedPart, track: str, signal: np.ndarray | Path,
        utterances: list[Utterance],
    ) -> None:
        """Compute the functionals of ``utterances`` of ``track`` into ``part`` (if configured).

        openSMILE failures on utterances are added to the track's error (the session
        becomes ``partial`` and the failure is listed); their rows are NaN.
        """
        if not self.spec.config.prosody.per_utterance:
            return
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            with self._prosody_threads():
                frame, failed = utterance_prosody(
                    self.prosody,
                    signal,
                    self.spec.config.audio.sample_rate,
                    part.session.session_id,
                    track,
                    utterances,
                )
        except AtriskError as exc:  # a streamed track that failed to decode this time
            frame, failed = None, [str(exc)]
        if frame is not None:
            part.utterance_prosody[track] = frame
        if failed:
            msg = (
                f"{part.session.track_path(track)}: prosody failed on {len(failed)} of "
                f"{len(utterances)} utterance(s): {failed[0]}"
                if frame is not None
                else f"{part.session.track_path(track)}: per-utterance prosody failed: "
                f"{failed[0]}"
            )
            part.errors[track] = f"{part.errors[track]}; {msg}" if track in part.errors else msg
        part.timings["utterance_prosody_s"] = (
            part.timings.get("utterance_prosody_s", 0.0) + time.perf_counter() - t0
        )
        part.timings["utterance_prosody_cpu_s"] = (
            part.timings.get("utterance_prosody_cpu_s", 0.0) + time.process_time() - c0
        )

    def _finish(self, part: DecodedPart, utterances: list[Utterance]) -> SessionResult:
        errors = part.errors
        status = "ok" if not errors else ("failed" if part.n_decoded == 0 else "partial")
        return SessionResult(
            session_id=part.session.session_id,
            status=status,
            error="; ".join(errors[t] for t in TRACKS if t in errors),
            duration_s=part.duration_s,
            prosody=part.prosody,
            utterances=utterances,
            track_errors=dict(errors),
            timings=dict(part.timings),
            utterance_prosody=_in_utterance_order(part.utterance_prosody, utterances)
            if self.spec.config.prosody.per_utterance
            else None,
        )


def utterance_prosody(
    extractor: Any,
    signal: np.ndarray | Path,
    sampling_rate: int,
    session_id: str,
    track: str,
    utterances: Sequence[Utterance],
) -> tuple[pd.DataFrame, list[str]]:
    """Return the functionals of each utterance of one track and the failures.

    The one place ``extract`` computes per-utterance prosody (both engines): the
    decoded ``signal`` of ``track`` is cut at each utterance's ``start_s``/``end_s``
    (clipped to the track) by the extractor's ``process_segments``; a long track that
    is not held is given as its file and cut while it is decoded again
    (``process_segment_stream``: the same rows).

    Args:
        extractor: A prosody extractor (``make_prosody_extractor``).
        signal: The decoded track, or the file of a streamed (long) track.
        sampling_rate: Its rate (Hz).
        session_id: The session.
        track: ``"teacher"`` or ``"student"`` (the utterances' speaker).
        utterances: The track's utterances, in order.

    Returns:
        ``(rows indexed (session_id, speaker, start_s, end_s) in the order of
        utterances, one reason per utterance the backend failed on)``.  An utterance
        beyond the end of the track, reversed, with a missing time, or too short to
        frame gives a NaN row and no failure.
    """
    segments = [(u.start_s, u.end_s) for u in utterances]
    if isinstance(signal, Path):  # a long track: cut from the file as it is decoded again
        from atrisk.ingest.audio import stream_audio

        frame = extractor.process_segment_stream(
            stream_audio(signal, sampling_rate, STREAM_BLOCK), sampling_rate, session_id,
            track, segments)
    else:
        frame = extractor.process_segments(signal, sampling_rate, session_id, track, segments)
    failures = getattr(extractor, "failures", {})
    keys = set(frame.index)
    return frame, [reason for key, reason in failures.items() if key in keys]


def _in_utterance_order(
    frames: dict[str, pd.DataFrame], utterances: Sequence[Utterance]
) -> pd.DataFrame | None:
    """Stack per-track utterance rows in the order of ``utterances`` (tracks without rows skipped).

    ``frames[track]`` holds one row per utterance of that track, in their order.
    """
    tracks = [t for t in TRACKS if t in frames]
    if not tracks:
        return None
    offset, start = {}, 0
    for t in tracks:
        offset[t] = start
        start += len(frames[t])
    seen = dict.fromkeys(tracks, 0)
    positions = []
    for u in utterances:
        if u.speaker in seen:
            positions.append(offset[u.speaker] + seen[u.speaker])
            seen[u.speaker] += 1
    stacked = pd.concat([frames[t] for t in tracks])
    return stacked.iloc[positions]


@dataclass
class DecodedPart:
    """A session after the CPU stage: prosody done, signals kept for ASR (may be empty)."""

    session: Session
    signals: dict[str, np.ndarray | None]
    n_decoded: int
    errors: dict[str, str]
    duration_s: float
    prosody: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    #: Per-utterance functionals per track (``prosody.per_utterance``), rows in the order
    #: of that track's utterances.
    utterance_prosody: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Long tracks whose signal is not held: the ASR stage streams them from these files.
    streams: dict[str, Path] = field(default_factory=dict)


#: Tracks at least this long (seconds, from the file header) are never decoded whole:
#: prosody and ASR each stream them from the file (:func:`_stream_prosody`,
#: :func:`_stream_asr`); same tables as the in-memory path.
STREAM_TRACK_S = 600.0
#: How a streamed track gets its openSMILE eGeMAPSv02 functionals, part of the resume key
#: and of ``run.json``: computed from openSMILE's streamed frames in bounded memory
#: (``ProsodyExtractor.process_stream``).  Since ``frames-2`` they leave out the frames
#: openSMILE's functionals leave out at end of input and were bit-identical to
#: openSMILE's whole-track functionals on every signal measured (``docs/prosody.md``);
#: ``frames-1`` kept a late frame on some short tracks.  Measured, not proven for every
#: track, so results made with whole-track functionals are still not resumed as the same.
STREAMED_PROSODY = "opensmile-eGeMAPSv02-frames-2"
#: Samples per block of a streamed track (60 s at 16 kHz).
STREAM_BLOCK = 16000 * 60
#: Tracks at least this long (samples) give their freed memory back to the OS at once.
LONG_TRACK_SAMPLES = 16000 * 600


def _header_seconds(path: Path) -> float | None:
    """Duration the header of ``path`` gives (NaN: none given; ``None``: unreadable)."""
    from atrisk.errors import AudioDecodeError
    from atrisk.ingest.audio import audio_info

    try:
        return audio_info(path).duration_s
    except AudioDecodeError:
        return None


def _stream_prosody(
    extractor: Any, path: Path, session_id: str, track: str, sample_rate: int,
    stats: dict[str, float], duration_s: float | None = None,
) -> pd.DataFrame:
    """Prosody row of one track streamed from ``path``; fills ``stats`` (n, peak, decode time).

    ``duration_s`` (the header's) sizes openSMILE's whole-track buffers once.

    Raises:
        AudioDecodeError: When the file cannot be decoded.
    """
    from atrisk.ingest.audio import stream_audio

    def blocks() -> Iterator[np.ndarray]:
        source = stream_audio(path, sample_rate, STREAM_BLOCK)
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            block = next(source, None)
            if block is not None and block.size:
                stats["n"] += block.size
                stats["peak"] = max(stats["peak"], float(np.max(np.abs(block))))
            stats["decode_s"] += time.perf_counter() - t0
            stats["decode_cpu_s"] += time.process_time() - c0
            if block is None:
                return
            yield block

    return extractor.process_stream(blocks(), sample_rate, session_id, track,
                                    duration_s=duration_s)


def _stream_asr(transcriber: Any, path: Path, sample_rate: int) -> list:
    """Segments of one track streamed from ``path`` (:meth:`Transcriber.transcribe_blocks`).

    Raises:
        AudioDecodeError: When the file cannot be decoded.
    """
    from atrisk.ingest.audio import stream_audio

    return transcriber.transcribe_blocks(stream_audio(path, sample_rate, STREAM_BLOCK))


def _release_memory(n_samples: int | None) -> None:
    """After a long track, give freed heap memory back to the OS (glibc keeps it otherwise).

    Decoding a long track leaves about its own size of freed buffers in the heap;
    returning them keeps the peak of a multi-hour class to one track's work.  Short
    tracks skip this (a garbage collection per track would cost more than it frees).
    """
    if n_samples is None or n_samples < LONG_TRACK_SAMPLES:
        return
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _merge_parts(session: Session, parts: list[DecodedPart]) -> DecodedPart:
    """Join per-track parts (in ``TRACKS`` order) into one part of the session."""
    if len(parts) == 1:
        return parts[0]
    frames = [p.prosody for p in parts if len(p.prosody)]
    timings: dict[str, float] = {}
    for p in parts:
        for k, v in p.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    durations = [p.duration_s for p in parts if not math.isnan(p.duration_s)]
    return DecodedPart(
        session=session,
        signals={t: s for p in parts for t, s in p.signals.items()},
        streams={t: f for p in parts for t, f in p.streams.items()},
        n_decoded=sum(p.n_decoded for p in parts),
        errors={t: e for p in parts for t, e in p.errors.items()},
        duration_s=max(durations) if durations else math.nan,
        prosody=pd.concat(frames) if frames else parts[-1].prosody,
        timings=timings,
        utterance_prosody={t: f for p in parts for t, f in p.utterance_prosody.items()},
    )


_PROCESSOR: _SessionProcessor | None = None


def _worker_init(spec: _WorkerSpec) -> None:
    global _PROCESSOR
    if spec.uses_torch:
        import torch

        torch.set_num_threads(spec.torch_threads)
    else:  # no torch model here: skip its import (≈ 3 CPU-s per worker); a later one obeys this
        os.environ.setdefault("OMP_NUM_THREADS", str(spec.torch_threads))
    _PROCESSOR = _SessionProcessor(spec)


def _worker_run(session: Session, given: list[Utterance] | None) -> SessionResult:
    assert _PROCESSOR is not None  # set by _worker_init; internal invariant, not user input
    return _PROCESSOR(session, given)


def _load_transcriber(spec: _WorkerSpec):
    from atrisk.asr import load_transcriber

    model = spec.asr_model if spec.asr_backend == "wav2vec2" else None
    return load_transcriber(
        spec.asr_backend, model=model, device=spec.device, config=spec.config.asr
    )


# --------------------------------------------------------------------------- keys / cache


def _file_digest(path: Path | None, cache: dict[Path, str]) -> str:
    if path is None:
        return "missing"
    if path in cache:
        return cache[path]
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
    except OSError as exc:
        digest = f"unreadable:{type(exc).__name__}"
    cache[path] = digest
    return digest


def session_key(
    session: Session,
    config: Config,
    asr_identity: str,
    given: list[Utterance] | None,
    digests: dict[Path, str] | None = None,
) -> str:
    """Return the resume key of a session.

    The key hashes the inputs' content, the output-changing config, the package
    version, the ASR model and the fingerprint of the code and packages that compute
    the session's results (:func:`atrisk.fingerprint.extract_fingerprint`: a backend
    changed without a version bump is recomputed, not reused).
    """
    from atrisk import fingerprint

    digests = {} if digests is None else digests
    payload = {
        "session": [
            session.session_id,
            session.student_id,
            session.teacher_id,
            session.start_time.isoformat(),
        ],
        "tracks": [_file_digest(session.track_path(t), digests) for t in TRACKS],
        "config": config.section_hash("audio", "prosody", "asr"),
        "asr": asr_identity,
        "streamed_prosody": STREAMED_PROSODY,
        "given": None
        if given is None
        else [(u.speaker, u.start_s, u.end_s, u.text) for u in given],
        "version": atrisk.__version__,
        "code": fingerprint.extract_fingerprint(config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


def _part_path(workspace: Workspace, session_id: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", session_id)[:80]
    sid_hash = hashlib.sha1(session_id.encode()).hexdigest()[:8]
    return workspace.root / "parts" / f"{safe}-{sid_hash}" / f"{key}.pkl"


def _read_part(path: Path) -> SessionResult | None:
    try:
        with open(path, "rb") as fh:
            result = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        return None
    return result if isinstance(result, SessionResult) else None


def _write_part(path: Path, result: SessionResult) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class PlannedSession:
    """One manifest session with its resume key's part file and, when done before, its result."""

    index: int
    session: Session
    given: list[Utterance] | None
    part: Path
    cached: SessionResult | None


def lookup_session(
    index: int,
    session: Session,
    given: list[Utterance] | None,
    workspace: Path,
    config: Config,
    asr_identity: str,
    digests: dict[Path, str] | None = None,
) -> PlannedSession:
    """Compute the resume key of one session and read its earlier result, if any.

    Only the track files are hashed (read in 1 MiB chunks); nothing is decoded.

    Args:
        index: Position of the session in the manifest.
        session: The session.
        given: Given utterances (transcripts backend) or ``None``.
        workspace: Workspace folder holding ``parts/``.
        config: Output-changing settings.
        asr_identity: Name of the ASR model (part of the key).
        digests: Cache of file digests shared between calls.

    Returns:
        The planned session (``cached`` is ``None`` when it must be processed).
    """
    key = session_key(session, config, asr_identity, given, digests)
    part = _part_path(Workspace(workspace), session.session_id, key)
    cached = _read_part(part) if part.is_file() else None
    return PlannedSession(index, session, given, part, cached)


def iter_plan(
    sessions: Iterable[Session],
    workspace: Path,
    config: Config,
    asr_identity: str,
    given_by_session: dict[str, list[Utterance]] | None,
) -> Iterator[PlannedSession]:
    """Yield the sessions one at a time with their resume lookups (lazy: O(1) sessions held).

    Args:
        sessions: Sessions in manifest order (any iterable; consumed lazily).
        workspace: Workspace folder.
        config: Output-changing settings.
        asr_identity: Name of the ASR model.
        given_by_session: Given utterances per session (transcripts backend), else ``None``.

    Yields:
        One :class:`PlannedSession` per session, in order.
    """
    digests: dict[Path, str] = {}
    for i, s in enumerate(sessions):
        given = None if given_by_session is None else given_by_session.get(s.session_id, [])
        yield lookup_session(i, s, given, workspace, config, asr_identity, digests)
        if len(digests) > 256:  # only shared files need the cache; keep it bounded
            digests.clear()


def bounded_imap(
    items: Iterable[Any], submit: Callable[[Any], Future], window: int
) -> Iterator[tuple[Any, Future]]:
    """Submit ``items`` with at most ``window`` futures pending; yield them as they finish.

    ``items`` is consumed lazily, so a folder of any size is scheduled with
    O(``window``) items in flight.

    Args:
        items: Work items (any iterable, e.g. a generator).
        submit: Function returning a future for one item.
        window: Most futures pending at once (at least 1).

    Yields:
        ``(item, future)`` pairs in completion order; the future is done.
    """
    it = iter(items)
    running: dict[Future, Any] = {}

    def fill() -> None:
        for item in it:
            running[submit(item)] = item
            if len(running) >= max(1, window):
                return

    fill()
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            yield running.pop(fut), fut
        fill()


def _done_future(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


# --------------------------------------------------------------------------- extract


def resolve_asr(
    config: Config,
    device: str,
    fallback: bool,
    warn: Callable[[str], None] = lambda m: console.print(f"[yellow]warning:[/] {m}"),
) -> tuple[Config, Any | None]:
    """Load the configured transcriber once (in this process) to fail early.

    Returns the (possibly changed) config and the loaded transcriber (``None``
    for the transcripts backend).

    Raises:
        ModelLoadError: The model cannot be loaded and ``fallback`` is off; the
            message names the reason and the ``--asr-backend`` choices.
    """
    from atrisk.asr import BACKENDS

    if config.asr.backend == "transcripts":
        return config, None
    spec = _WorkerSpec(config, config.asr.backend, config.asr.model, device, 1)
    try:
        return config, _load_transcriber(spec)
    except ModelLoadError as exc:
        if not fallback or config.asr.backend == "pocketsphinx":
            raise ModelLoadError(
                f"{exc}\nChoose another ASR backend with --asr-backend "
                f"({'|'.join(BACKENDS)}) or point --asr-model at a local Wav2Vec2ForCTC folder."
            ) from None
        warn(f"{exc}\nFalling back to the offline pocketsphinx ASR backend (lower accuracy).")
        config = config.override({"asr.backend": "pocketsphinx"})
        spec = _WorkerSpec(config, "pocketsphinx", config.asr.model, device, 1)
        return config, _load_transcriber(spec)


def _given_utterances(recordings: Path, transcripts: Path | None) -> tuple[dict, list[RowError]]:
    from atrisk.asr.transcripts import find_transcripts, utterances_for_session
    from atrisk.ingest.utterances import load_utterances

    path = transcripts or find_transcripts(recordings)
    if path is None:
        raise ConfigError(
            f"--asr-backend transcripts needs {recordings}/utterances.csv (or .parquet) "
            "with columns session_id, speaker, start_s, end_s, text, or --transcripts FILE"
        )
    df, errors = load_utterances(Path(path))
    by_session = {sid: utterances_for_session(df, sid) for sid in df["session_id"].unique()}
    return by_session, errors


def extract(
    recordings: Path | str,
    out: Path | str,
    config: Config | None = None,
    device: str = "auto",
    engine: str = "local",
    workers: int | None = None,
    known_students: set[str] | None = None,
    transcripts: Path | None = None,
    asr_fallback: bool = False,
    progress: bool = True,
    address: str | None = None,
    threads: int | None = None,
) -> ExtractResult:
    """Turn a recordings folder into the workspace tables.

    Writes ``sessions``, ``prosody``, ``utterances``, ``prosody_utterances`` (when
    ``prosody.per_utterance``; else without rows), ``in_class`` (Parquet),
    ``failures.jsonl``, ``config.toml`` and ``run.json`` into ``out``.

    Args:
        recordings: Folder with ``sessions.csv`` and one sub-folder per session.
        out: Workspace folder (created; earlier results there are reused).
        config: Output-changing settings; defaults when ``None``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``: where the ASR model
            and the torch prosody backend run (the ray engine runs prosody on the CPU).
            Not part of the resume key: a run on another device reuses earlier results.
        engine: ``local`` (process pool on this machine) or ``ray`` (a Ray Data
            pipeline, see :mod:`atrisk.engines.ray_data`); both give the same tables.
        workers: Processes for decode/prosody/ASR (default: the CPUs this process may
            use, :func:`usable_cpus`, at most the number of sessions); with ``ray`` and
            no ``address``, the CPUs of the local Ray instance.
        known_students: When given, manifest rows naming other students fail.
        transcripts: Utterance file for the ``transcripts`` backend.
        asr_fallback: Fall back to pocketsphinx when the wav2vec2 model cannot
            be loaded (``atrisk demo``); otherwise that is an error.
        progress: Show a progress bar.
        address: Ray cluster to join (``ray`` engine; ``None`` starts Ray locally).
        threads: torch intra-op threads per worker process, ``workers=1`` included
            (``local`` engine; default: :func:`usable_cpus` // workers); the torch
            prosody backend on the CPU uses :data:`PROSODY_TORCH_THREADS` whatever this
            says.  Not part of the resume key.

    Returns:
        The run summary; ``exit_code`` is 1 when something failed.

    Raises:
        ConfigError: Bad engine/device/config.
        ManifestError: ``sessions.csv`` missing or unusable.
        ModelLoadError: The ASR model cannot be loaded (and no fallback).
    """
    from atrisk import fingerprint
    from atrisk.extractors.prosody import make_prosody_extractor
    from atrisk.extractors.text import text_features
    from atrisk.features.in_class import build_in_class
    from atrisk.ingest.manifest import read_manifest

    config = config or Config()
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise ConfigError("--address is for --engine ray")
    if threads is not None and (engine != "local" or threads < 1):
        raise ConfigError("--threads is for --engine local (Ray gives each task its CPUs) "
                          f"and must be at least 1, got {threads}")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if config.prosody.feature_level != "functionals":
        raise ConfigError("extract writes prosody functionals per track: set "
                          "prosody.feature_level = 'functionals' (LLDs: docs/prosody.md)")
    recordings, ws = Path(recordings), Workspace(out)
    sessions, row_errors = read_manifest(recordings, known_students=known_students)
    failures: list[dict] = [{"stage": "manifest", **e.to_dict()} for e in row_errors]

    given_by_session: dict[str, list[Utterance]] = {}
    if config.asr.backend == "transcripts":
        given_by_session, t_errors = _given_utterances(recordings, transcripts)
        failures += [{"stage": "transcripts", **e.to_dict()} for e in t_errors]
    # the ray engine loads its models in the actors; here only check that they load
    config, transcriber = resolve_asr(config, "cpu" if engine == "ray" else device, asr_fallback)
    asr_identity = (
        transcriber.name
        if transcriber is not None
        else f"transcripts:{transcripts or 'utterances'}"
    )

    ws.root.mkdir(parents=True, exist_ok=True)
    given = given_by_session if config.asr.backend == "transcripts" else None
    results: dict[str, SessionResult] = {}
    text_rows: dict[str, pd.DataFrame] = {}
    resumed_ids: set[str] = set()
    n_resumed = 0
    with progress_bar("extracting sessions", total=len(sessions), enabled=progress) as bar:
        if engine == "ray":
            from atrisk.engines.ray_data import run_ray

            stream = run_ray(
                sessions, given, ws.root, recordings, config, asr_identity, device,
                workers=workers, address=address,
            )
        else:
            plan = iter_plan(sessions, ws.root, config, asr_identity, given)
            n_workers = max(1, min(workers or usable_cpus(), len(sessions)))
            stream = (
                (r, resumed, None)
                for r, resumed in _run_sessions(
                    plan, recordings, config, device, transcriber, n_workers, threads
                )
            )
        for result, resumed, text_row in stream:
            results[result.session_id] = result
            if resumed:
                resumed_ids.add(result.session_id)
            n_resumed += bool(resumed)
            if text_row is not None:
                text_rows[result.session_id] = text_row
            bar.advance(1)

    stage_seconds: dict[str, float] = {}
    for sid, r in results.items():
        if sid not in resumed_ids:
            for k, v in getattr(r, "timings", {}).items():
                stage_seconds[k] = stage_seconds.get(k, 0.0) + v
    t_assemble = time.perf_counter()
    # ---- assemble tables in manifest order (deterministic, same as an uninterrupted run)
    order = [s.session_id for s in sessions]
    sess_rows = []
    for s in sessions:
        r = results[s.session_id]
        sess_rows.append(
            {
                "session_id": s.session_id,
                "student_id": s.student_id,
                "teacher_id": s.teacher_id,
                "start_time": pd.Timestamp(s.start_time),
                "teacher_path": None if s.teacher_path is None else str(s.teacher_path),
                "student_path": None if s.student_path is None else str(s.student_path),
                "duration_s": r.duration_s,
                "status": r.status,
                "error": r.error,
            }
        )
        for track, msg in r.track_errors.items():
            failures.append(
                {
                    "stage": "audio",
                    "source": str(s.track_path(track) or recordings / s.session_id),
                    "row": None,
                    "key": s.session_id,
                    "reason": msg,
                    "track": track,
                }
            )
    for e in row_errors:  # invalid manifest rows are kept in the table as failed
        if e.key and e.key not in results:
            sess_rows.append(
                {
                    "session_id": e.key,
                    "student_id": None,
                    "teacher_id": None,
                    "start_time": pd.NaT,
                    "teacher_path": None,
                    "student_path": None,
                    "duration_s": np.nan,
                    "status": "failed",
                    "error": str(e),
                }
            )
    sessions_df = pd.DataFrame(sess_rows, columns=SESSION_COLUMNS)
    sessions_df["start_time"] = pd.to_datetime(sessions_df["start_time"], utc=True)

    prosody_extractor = make_prosody_extractor(config.prosody)
    prosody_df = prosody_table([results[sid].prosody for sid in order], prosody_extractor)
    utterances_df = utterances_frame(
        [u for sid in order for u in results[sid].utterances], asr_identity
    )
    utterance_prosody_df = utterance_prosody_table(
        [getattr(results[sid], "utterance_prosody", None) for sid in order],
        prosody_extractor,
    )
    ok_ids = [s.session_id for s in sessions if results[s.session_id].status != "failed"]
    t_text, c_text = time.perf_counter(), time.process_time()
    if engine == "ray":  # computed per batch by the engine's text stage
        text_df = _stack_text_rows(text_rows, ok_ids, config)
    else:
        text_df = text_features(utterances_df, config.text, session_ids=ok_ids)
    t_text = time.perf_counter() - t_text
    if engine != "ray":
        stage_seconds["text_s"] = t_text
        stage_seconds["text_cpu_s"] = time.process_time() - c_text
    in_class_df = build_in_class(
        sessions_df, prosody_df, text_df, utterance_prosody=utterance_prosody_df
    )

    tables = {
        "sessions": ws.write("sessions", sessions_df),
        "prosody": ws.write("prosody", prosody_df),
        "utterances": ws.write("utterances", utterances_df),
        "prosody_utterances": ws.write("prosody_utterances", utterance_prosody_df),
        "in_class": ws.write("in_class", in_class_df),
    }
    ws.write_failures(failures)
    ws.write_provenance(
        config.to_toml(),
        {
            "stage": "extract",
            "recordings": str(recordings.resolve()),
            "asr": asr_identity,
            "prosody_backend": prosody_extractor.backend_name,
            "code_fingerprint": fingerprint.extract_fingerprint(config),
            "streamed_prosody": STREAMED_PROSODY,
            "engine": engine,
        },
    )
    counts = sessions_df["status"].value_counts()
    return ExtractResult(
        workspace=ws.root,
        n_sessions=len(sessions),
        n_ok=int(counts.get("ok", 0)),
        n_partial=int(counts.get("partial", 0)),
        n_failed=int(counts.get("failed", 0)),
        n_resumed=n_resumed,
        n_utterances=len(utterances_df),
        failures=failures,
        asr_backend=config.asr.backend,
        tables={k: str(v) for k, v in tables.items()},
        stage_seconds={
            **stage_seconds,
            "assemble_s": time.perf_counter() - t_assemble - t_text,
        },
    )


def prosody_table(frames: Iterable[pd.DataFrame], extractor: Any) -> pd.DataFrame:
    """Return the per-track ``prosody`` table from the sessions' rows.

    The one place both engines (``local`` and ``ray``) assemble the table, for
    in-memory and streamed tracks alike; the backend is recorded in every row, as in
    ``prosody_utterances`` (the resume key holds the prosody config and the backend's
    code and package versions, so a reused session was computed by this backend).

    Args:
        frames: Each session's rows (``SessionResult.prosody``, indexed ``(session_id,
            track)``) in manifest order; empty frames are skipped.
        extractor: The prosody extractor of the run (feature names, backend name).

    Returns:
        Rows indexed ``(session_id, track)``, the functionals, and a string
        ``prosody_backend`` column (e.g. ``opensmile-eGeMAPSv02-2.6.0``); no rows (same
        columns) when there are none.
    """
    parts = [f for f in frames if len(f)]
    table = pd.concat(parts) if parts else extractor.process_sessions([])
    return table.assign(prosody_backend=extractor.backend_name)


def utterance_prosody_table(
    frames: Iterable[pd.DataFrame | None], extractor: Any
) -> pd.DataFrame:
    """Return the ``prosody_utterances`` table from the sessions' per-utterance rows.

    Args:
        frames: Each session's rows (``SessionResult.utterance_prosody``) in manifest
            order; ``None`` for none.
        extractor: The prosody extractor of the run (feature names, backend name).

    Returns:
        Rows indexed ``(session_id, speaker, start_s, end_s)``, the functionals, and a
        ``prosody_backend`` column; no rows (same columns) when there are none.
    """
    parts = [f for f in frames if f is not None and len(f)]
    if parts:
        table = pd.concat(parts)
    else:
        table = extractor.process_segments(
            np.zeros(0, np.float32), int(getattr(extractor, "sample_rate", 16000)), "",
            TRACKS[0], [],
        )
    table = table.astype("float64")
    table.attrs = {}
    return table.assign(prosody_backend=extractor.backend_name)


def _stack_text_rows(
    rows: dict[str, pd.DataFrame], ok_ids: list[str], config: Config
) -> pd.DataFrame:
    """Put the engine's per-session text feature rows in manifest order."""
    from atrisk.extractors.text import text_features

    frames = [rows[sid] for sid in ok_ids if sid in rows]
    empty = text_features(utterances_frame([], ""), config.text, session_ids=[])
    if not frames:
        return empty
    return pd.concat(frames).astype(empty.dtypes.to_dict())


def _run_sessions(
    plan: Iterable[PlannedSession],
    recordings: Path,
    config: Config,
    device: str,
    transcriber: Any | None,
    n_workers: int,
    threads: int | None = None,
) -> Iterator[tuple[SessionResult, bool]]:
    """Process planned sessions, writing each result to its part file as soon as it is done.

    Yields ``(result, resumed)``; sessions done by an earlier run are yielded as
    they come, the others from a process pool with at most ``2 * n_workers``
    sessions in flight (the plan is consumed lazily).  torch's intra-op threads are
    capped at ``threads`` per worker (default: :func:`usable_cpus` // ``n_workers``),
    with one worker too (in this process, restored afterwards); the torch prosody
    backend on the CPU uses :data:`PROSODY_TORCH_THREADS`.
    """
    threads = threads or max(1, usable_cpus() // n_workers)
    spec = _WorkerSpec(config, config.asr.backend, config.asr.model, device, threads, recordings)
    if n_workers == 1:
        if spec.uses_torch:
            import torch  # noqa: F401  (so that its thread count is set before the models run)
        with torch_threads(threads if spec.uses_torch else None):
            processor = None
            for item in plan:
                if item.cached is not None:
                    yield item.cached, True
                    continue
                processor = processor or _SessionProcessor(spec, transcriber=transcriber)
                result = processor(item.session, item.given)
                _write_part(item.part, result)
                yield result, False
        return
    ctx = multiprocessing.get_context("spawn")
    pool: ProcessPoolExecutor | None = None

    def submit(item: PlannedSession) -> Future:
        nonlocal pool
        if item.cached is not None:
            return _done_future(item.cached)
        if pool is None:  # started on the first session that needs work
            pool = ProcessPoolExecutor(
                n_workers, mp_context=ctx, initializer=_worker_init, initargs=(spec,)
            )
        return pool.submit(_worker_run, item.session, item.given)

    try:
        for item, fut in bounded_imap(plan, submit, 2 * n_workers):
            result = fut.result()
            if item.cached is None:
                _write_part(item.part, result)
            yield result, item.cached is not None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def utterances_frame(utterances: Sequence[Utterance], asr_model: str) -> pd.DataFrame:
    """Return the ``utterances`` table for a list of records (words as JSON text)."""
    rows = [
        {
            "session_id": u.session_id,
            "speaker": u.speaker,
            "start_s": float(u.start_s),
            "end_s": float(u.end_s),
            "text": u.text,
            "confidence": float(u.confidence),
            "asr_model": asr_model,
            "words": json.dumps(
                [[w.text, round(w.start_s, 3), round(w.end_s, 3)] for w in u.words]
            ),
        }
        for u in utterances
    ]
    cols = ["session_id", "speaker", "start_s", "end_s", "text", "confidence", "asr_model", "words"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- train / predict


@dataclass
class TrainResult:
    """Summary of ``train``."""

    model_dir: Path
    n_students: int
    n_pairs: int
    positive_ratio: dict[str, float]
    horizons: list[int]
    failures: list[dict]

    @property
    def exit_code(self) -> int:
        """1 when some log rows were rejected (the rest was used), else 0."""
        return 1 if self.failures else 0


def _load_logs_checked(logs_dir: Path):
    from atrisk.features.logs import load_logs

    logs = load_logs(Path(logs_dir))
    failures = [{"stage": "logs", **e.to_dict()} for e in logs.errors]
    return logs, failures


def _workspace_inputs(ws: Workspace) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    sessions = ws.read("sessions") if ws.has("sessions") else None
    in_class = ws.read("in_class") if ws.has("in_class") else None
    return sessions, in_class


def build_workspace_pairs(ws: Workspace, logs, config: Config, keys: pd.DataFrame | None = None):
    """Build the ``<student, t>`` pairs from a workspace's in-class table and the logs."""
    from atrisk.features.pairs import build_pairs
    from atrisk.training.labels import add_labels

    sessions, in_class = _workspace_inputs(ws)
    if sessions is not None:
        sessions = sessions[sessions["status"] != "failed"].dropna(subset=["student_id"])
    pairs = build_pairs(
        logs, in_class=in_class, sessions=sessions, config=config.features, keys=keys
    )
    return add_labels(pairs, config.training.horizons)


def train(
    workspace: Path | str,
    logs_dir: Path | str,
    out: Path | str,
    config: Config | None = None,
) -> TrainResult:
    """Build pairs from the workspace + logs, fit the augmented LightGBM, save the model.

    Writes the ``pairs`` table into the workspace and the model artifact into ``out``.
    """
    from atrisk.training.labels import augment
    from atrisk.training.model import train as fit

    config = config or Config()
    ws = Workspace(workspace)
    logs, failures = _load_logs_checked(Path(logs_dir))
    pairs = build_workspace_pairs(ws, logs, config)
    if pairs.empty:
        raise AtriskError(
            f"no <student, day> pairs could be built from {logs_dir}: "
            "are there class events in events.csv?"
        )
    h0 = config.training.horizons[0]
    stored = augment(pairs, h0, config.training.lookback, config.training.weighting)
    ws.write("pairs", stored.reset_index(drop=True))
    model = fit(pairs, config.training)
    model.save(Path(out))
    write_text(config.to_toml(), Path(out) / "config.toml")
    meta = model.metadata_
    return TrainResult(
        model_dir=Path(out),
        n_students=int(pairs["student_id"].nunique()),
        n_pairs=len(pairs),
        positive_ratio=meta.get("positive_ratio", {}),
        horizons=list(model.horizons),
        failures=failures,
    )


def evaluate(
    model_dir: Path | str,
    workspace: Path | str,
    logs_dir: Path | str,
    out: Path | str,
    horizons: Sequence[int] | None = None,
    baselines: bool = True,
) -> dict:
    """Evaluate a saved model on workspace + logs; write ``metrics.json`` and ``report.html``."""
    from atrisk.training.evaluate import evaluate as run_eval
    from atrisk.training.evaluate import write_report
    from atrisk.training.model import RiskModel

    model = RiskModel.load(Path(model_dir))
    config = Config().model_copy(update={"training": model.config})
    logs, failures = _load_logs_checked(Path(logs_dir))
    pairs = build_workspace_pairs(Workspace(workspace), logs, config)
    result = run_eval(model, pairs, horizons=horizons, baselines=baselines)
    result["failures"] = failures
    write_report(result, Path(out))
    return result


def predict(
    model_dir: Path | str,
    workspace: Path | str,
    logs_dir: Path | str,
    date: str | datetime,
    out: Path | str,
    horizon: int = 1,
    db: Path | str | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Write the ranked risk list of ``date`` (students active on that day) to ``out`` (CSV).

    A student is active on ``date`` when their first class is before it and no
    dropout/completion is known before it.  Features use only data before ``date``.
    With ``db``, the list is also written into that service store (re-running a day
    replaces its rows).
    """
    from atrisk.features.pairs import pair_keys
    from atrisk.training.model import RiskModel
    from atrisk.training.predict import predict_risk

    try:
        day = pd.Timestamp(date)
    except (ValueError, TypeError):
        raise ConfigError(f"--date {date!r} is not a date (use YYYY-MM-DD)") from None
    day = (day.tz_localize("UTC") if day.tzinfo is None else day.tz_convert("UTC")).normalize()
    model = RiskModel.load(Path(model_dir))
    config = Config().model_copy(update={"training": model.config})
    logs, failures = _load_logs_checked(Path(logs_dir))
    ws = Workspace(workspace)
    sessions, _ = _workspace_inputs(ws)
    keys = pair_keys(logs, sessions=sessions, as_of=day + pd.Timedelta(days=1))
    keys = keys[keys["t"] == day]
    if keys.empty:
        raise AtriskError(f"no student is active on {day.date()} in {logs_dir}")
    pairs = build_workspace_pairs(ws, logs, config, keys=keys)
    risk = predict_risk(model, pairs, horizon=horizon, date=day)
    out = Path(out)
    with atomic_path(out) as tmp:
        risk.to_csv(tmp, index=False)
    if db is not None:
        from atrisk.serve.store import write_risk

        write_risk(db, risk, day, horizon)
    return risk, failures
