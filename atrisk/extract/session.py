"""One session at a time: decode both tracks, prosody, timing, ASR, per-utterance prosody.

:class:`SessionProcessor` is what both engines run for each session; it holds the prosody
backend, the timing extractor and the transcriber (loaded once) and returns a
:class:`SessionResult`.  Each track is decoded and processed on its own, so at most one
decoded track is held; tracks of :data:`STREAM_TRACK_S` or more are streamed from their
files instead (prosody and timing read the same blocks; ASR decodes the file again, block
by block), giving the same results in bounded memory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.asr import load_transcriber
from atrisk.asr.base import MODEL_SAMPLE_RATE, Segment, Transcriber, segments_to_utterances
from atrisk.config import Config
from atrisk.errors import AtriskError, AudioDecodeError
from atrisk.extract.resources import PROSODY_TORCH_THREADS, release_memory, torch_threads
from atrisk.extractors.prosody import (
    Extracted,
    ProsodyBackend,
    StreamingProsody,
    load_prosody,
)
from atrisk.extractors.timing import TimingFeatures, nan_row
from atrisk.ingest.audio import (
    audio_info,
    decode_session,
    silence_message,
    stream_audio,
)
from atrisk.records import TRACKS, Session, Utterance

#: Tracks at least this long (seconds, from the file header) are never decoded whole:
#: prosody and ASR each stream them from the file (:func:`_stream_prosody`,
#: :func:`_stream_asr`); same tables as the in-memory path.
STREAM_TRACK_S = 600.0
#: Samples per block of a streamed track (60 s at 16 kHz).
STREAM_BLOCK = 16000 * 60




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
    #: ASR-independent timing features per decoded track
    #: (:data:`atrisk.extractors.timing.TIMING_COLUMNS`), indexed ``(session_id, track)``.
    timing: pd.DataFrame | None = None



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
    #: Timing features per decoded track, indexed ``(session_id, track)``.
    timing: pd.DataFrame | None = None



@dataclass(frozen=True)
class WorkerSpec:
    """What a :class:`SessionProcessor` computes, and where (sent to worker processes).

    Attributes:
        config: Output-changing settings.
        asr_backend: The ASR backend (after any fallback).
        asr_model: Its model (wav2vec2: hub id or folder).
        device: The run's ``--device`` (``auto``/``cpu``/``cuda``): ASR and the torch
            prosody backend.
        torch_threads: torch intra-op threads of the worker.
        recordings: The recordings folder (for messages naming files).
        stream_track_s: Tracks at least this long are streamed.
        prosody_device: Where the torch prosody backend runs when not on ``device``.
    """

    config: Config
    asr_backend: str
    asr_model: str
    device: str
    torch_threads: int
    recordings: Path | None = None
    #: Taken from :data:`STREAM_TRACK_S` where the spec is made (the driver), so that
    #: worker processes use the same value.
    stream_track_s: float = field(default_factory=lambda: STREAM_TRACK_S)
    prosody_device: str | None = None

    @property
    def uses_torch(self) -> bool:
        """Whether a torch model runs in the worker (ASR other than transcripts, torch prosody)."""
        return self.asr_backend != "transcripts" or self.config.prosody.backend == "torch"



class SessionProcessor:
    """Decode, prosody and ASR of one session at a time; holds the models (loaded once).

    Both engines run this class: the local engine one per worker process, the Ray engine
    one per task process and ASR actor.

    Args:
        spec: What to compute and where (:class:`WorkerSpec`).
        transcriber: An already loaded transcriber to use (else one is loaded).
        load_asr: Load the transcriber now (``False``: decode and prosody only, e.g. the
            Ray engine's CPU stage).
        prosody: An already built prosody backend to use (else one is built from
            ``spec``).

    Raises:
        ModelLoadError: When the ASR model cannot be loaded.
        ConfigError: When the prosody backend or device is unusable.
    """

    def __init__(self, spec: WorkerSpec, transcriber: Transcriber | None = None,
                 load_asr: bool = True, prosody: ProsodyBackend | None = None):
        self.spec = spec
        self.prosody = prosody or load_prosody(
            spec.config.prosody, sample_rate=spec.config.audio.sample_rate,
            device=spec.prosody_device or spec.device,
        )
        self.timing = TimingFeatures(spec.config.timing,
                                     sample_rate=spec.config.audio.sample_rate)
        self.transcriber = transcriber
        if self.transcriber is None and load_asr and spec.asr_backend != "transcripts":
            self.transcriber = load_spec_transcriber(spec)

    def _prosody_threads(self):
        """Context of a prosody call: :data:`PROSODY_TORCH_THREADS` for torch on the CPU."""
        device = getattr(self.prosody, "device", None)  # torch backends only
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
            release_memory(n_samples)
            parts.append(part)
        return self._finish(merge_parts(session, parts), utterances)

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
            release_memory(signal_size)  # the decoder's freed buffers, before openSMILE's
            t1, c1 = time.perf_counter(), time.process_time()
            with self._prosody_threads():
                prosody, failures = self.prosody.process_sessions([decoded])
            # a prosody failure is the session's error too (listed in failures.jsonl)
            failed = failures.get((session.session_id, track))
            if error is None and failed:
                error = f"{session.track_path(track)}: prosody {failed}"
            t2, c2 = time.perf_counter(), time.process_time()
            timing, t_failures = self.timing.process_sessions([decoded])
            failed = t_failures.get((session.session_id, track))
            if failed:  # the track's row is NaN; the session is partial
                error = _join(error, f"{session.track_path(track)}: {failed}")
            del decoded  # the part holds the only reference to the signal
            part = DecodedPart(
                session=session,
                signals={track: signal if keep_signals else None},
                n_decoded=int(signal_size is not None),
                errors={} if error is None else {track: error},
                duration_s=math.nan if signal_size is None
                else signal_size / self.spec.config.audio.sample_rate,
                prosody=prosody,
                timing=timing,
                timings={
                    "decode_s": t1 - t0,
                    "prosody_s": t2 - t1,
                    "timing_s": time.perf_counter() - t2,
                    "decode_cpu_s": c1 - c0,
                    "prosody_cpu_s": c2 - c1,
                    "timing_cpu_s": time.process_time() - c2,
                },
            )
            if given is not None and signal is not None:
                self._utterance_prosody(
                    part, track, signal, [u for u in given if u.speaker == track]
                )
            if not keep_signals:
                signal = None
                release_memory(signal_size)  # the signal and openSMILE's frames
            parts.append(part)
            del signal, part
        return merge_parts(session, parts)

    def _streams(self, path: Path | None) -> bool:
        """Whether the track at ``path`` is long enough to be streamed instead of decoded whole.

        Streaming needs a backend that computes functionals from a stream
        (:class:`~atrisk.extractors.prosody.StreamingProsody`: openSMILE; the torch backend
        takes whole signals) and the rate the ASR models work at; a track whose header
        gives no duration is streamed too.  A file that cannot be read is left to the
        in-memory path, which reports it.
        """
        if path is None or not isinstance(self.prosody, StreamingProsody):
            return False
        if self.spec.config.audio.sample_rate != MODEL_SAMPLE_RATE:
            return False
        duration = header_seconds(path)
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
        path = session.track_path(track)
        if not self._streams(path):
            return None
        cfg = self.spec.config.audio
        t0, c0 = time.perf_counter(), time.process_time()
        stats: dict[str, float] = {"n": 0, "peak": 0.0, "decode_s": 0.0, "decode_cpu_s": 0.0,
                                   "timing_s": 0.0, "timing_cpu_s": 0.0}
        timing_stream = self.timing.start_stream(cfg.sample_rate)
        timing_error: list[str] = []

        def add_timing(block: np.ndarray) -> None:  # the blocks openSMILE reads
            if timing_error:
                return
            t, c = time.perf_counter(), time.process_time()
            try:
                timing_stream.add(block)
            except Exception as exc:  # the row becomes NaN; prosody goes on
                timing_error.append(
                    f"{session.session_id}/{track}: timing features failed: "
                    f"{type(exc).__name__}: {exc}")
            stats["timing_s"] += time.perf_counter() - t
            stats["timing_cpu_s"] += time.process_time() - c

        ok = True
        try:
            prosody, failures = stream_prosody(self.prosody, path, session.session_id, track,
                                               cfg.sample_rate, stats, header_seconds(path),
                                               on_block=add_timing)
        except AudioDecodeError as exc:
            ok, error, (prosody, failures) = False, str(exc), self.prosody.process_sessions([])
        finally:  # openSMILE's buffers were freed in its consumer thread's malloc arena
            release_memory(int(stats["n"]))
        timing = self.timing.frame([], [])
        if ok:
            error = silence_message(path, stats["peak"], cfg)
            failed = failures.get((session.session_id, track))
            if error is None and failed:
                error = f"{path}: prosody {failed}"
            t, c = time.perf_counter(), time.process_time()
            if not timing_error:
                try:
                    row = timing_stream.row()
                except Exception as exc:
                    timing_error.append(
                        f"{session.session_id}/{track}: timing features failed: "
                        f"{type(exc).__name__}: {exc}")
            if timing_error:
                row = nan_row()
                error = _join(error, f"{path}: {timing_error[0]}")
            timing = self.timing.frame([row], [(session.session_id, track)])
            stats["timing_s"] += time.perf_counter() - t
            stats["timing_cpu_s"] += time.process_time() - c
        return DecodedPart(
            session=session,
            signals={track: None},
            n_decoded=int(ok),
            errors={} if error is None else {track: error},
            duration_s=stats["n"] / cfg.sample_rate if ok else math.nan,
            prosody=prosody,
            timing=timing,
            timings={
                "decode_s": stats["decode_s"],
                "prosody_s": time.perf_counter() - t0 - stats["decode_s"] - stats["timing_s"],
                "timing_s": stats["timing_s"],
                "decode_cpu_s": stats["decode_cpu_s"],
                "prosody_cpu_s": time.process_time() - c0 - stats["decode_cpu_s"]
                - stats["timing_cpu_s"],
                "timing_cpu_s": stats["timing_cpu_s"],
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
                    segments = stream_asr(self.transcriber, path,
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
            timing=part.timing,
        )



def utterance_prosody(
    extractor: ProsodyBackend,
    signal: np.ndarray | Path,
    sample_rate: int,
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
        extractor: A prosody backend (:func:`~atrisk.extractors.prosody.load_prosody`).
        signal: The decoded track, or the file of a streamed (long) track.
        sample_rate: Its rate (Hz).
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
        frame, failures = extractor.process_segment_stream(
            stream_audio(signal, sample_rate, STREAM_BLOCK), sample_rate, session_id,
            track, segments)
    else:
        frame, failures = extractor.process_segments(signal, sample_rate, session_id, track,
                                                     segments)
    return frame, list(failures.values())



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


def header_seconds(path: Path) -> float | None:
    """Return the duration the header of ``path`` gives (NaN: none given; ``None``: unreadable)."""
    try:
        return audio_info(path).duration_s
    except AudioDecodeError:
        return None


def stream_prosody(
    extractor: StreamingProsody, path: Path, session_id: str, track: str, sample_rate: int,
    stats: dict[str, float], duration_s: float | None = None,
    on_block: Callable[[np.ndarray], None] | None = None,
) -> Extracted:
    """Return the prosody row of one track streamed from ``path``; fills ``stats``.

    ``stats`` gets the samples decoded (``n``), their peak and the decoding time.

    ``duration_s`` (the header's) sizes openSMILE's whole-track buffers once.
    ``on_block`` is called with every decoded block before the backend sees it (the
    timing features read the same blocks).

    Raises:
        AudioDecodeError: When the file cannot be decoded.
    """

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
            if on_block is not None and block.size:
                on_block(block)
            yield block

    return extractor.process_stream(blocks(), sample_rate, session_id, track,
                                    duration_s=duration_s)


def stream_asr(transcriber: Transcriber, path: Path, sample_rate: int) -> list[Segment]:
    """Return the segments of one track streamed from ``path`` (``transcribe_blocks``).

    Raises:
        AudioDecodeError: When the file cannot be decoded.
    """
    return transcriber.transcribe_blocks(stream_audio(path, sample_rate, STREAM_BLOCK))


def merge_parts(session: Session, parts: list[DecodedPart]) -> DecodedPart:
    """Join per-track parts (in ``TRACKS`` order) into one part of the session."""
    if len(parts) == 1:
        return parts[0]
    frames = [p.prosody for p in parts if len(p.prosody)]
    timing = [p.timing for p in parts if p.timing is not None and len(p.timing)]
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
        timing=pd.concat(timing) if timing else parts[-1].timing,
        timings=timings,
        utterance_prosody={t: f for p in parts for t, f in p.utterance_prosody.items()},
    )



def _join(error: str | None, message: str) -> str:
    """``error`` and ``message`` joined by ``"; "`` (just ``message`` when there is no error)."""
    return message if not error else f"{error}; {message}"


def load_spec_transcriber(spec: WorkerSpec) -> Transcriber:
    """Load the transcriber a :class:`WorkerSpec` names (the model loads here, once).

    Raises:
        ModelLoadError: When the model cannot be loaded.
    """
    model = spec.asr_model if spec.asr_backend == "wav2vec2" else None
    return load_transcriber(
        spec.asr_backend, model=model, device=spec.device, config=spec.config.asr
    )


