"""Decode tracks to mono float32 at a fixed sample rate.

Decoding uses torchcodec's :class:`~torchcodec.decoders.AudioDecoder` (FFmpeg
libraries underneath), so WAV, FLAC, MP3, OGG/Opus, M4A and video containers
(MP4, MKV, WebM, MOV: their first audio stream) all work.  When torchcodec
cannot be imported, the ``ffmpeg``/``ffprobe`` binaries are used instead.
Lossless PCM files (WAV, FLAC, AIFF) already at the wanted rate are read with
soundfile (libsndfile): the same samples (PCM scaled alike, channels averaged
alike), much less CPU per file, and no torch import in the worker process (numbers:
docs/performance.md); anything else, or a file soundfile refuses, goes through
torchcodec.

Conventions:

* Channels are **averaged** into mono (not FFmpeg's default down-mix, which sums
  stereo channels with a gain of 0.707 each and so raises the level by 3 dB).
* Resampling is FFmpeg's (libswresample), done per channel before averaging.
* Non-finite samples (NaN, ±inf, possible in float WAV files) are replaced with
  0 and decoding continues; a warning is logged with the count.
* Every failure is an :class:`~atrisk.errors.AudioDecodeError` whose message
  starts with the file: ``file not found``, ``file is empty (0 bytes)``,
  ``cannot decode: <reason>``, ``no audio stream``, ``decoded to 0 samples``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from atrisk.config import AudioConfig
from atrisk.errors import AudioDecodeError
from atrisk.ingest.manifest import describe_missing_track
from atrisk.records import TRACKS, Session

log = logging.getLogger(__name__)

_MAX_REASON = 200


@dataclass(frozen=True)
class AudioInfo:
    """What a track holds, read from the container header.

    Attributes:
        duration_s: Duration of the (first) audio stream in seconds (``nan`` when unknown).
        sample_rate: Native sample rate (Hz).
        channels: Number of channels.
    """

    duration_s: float
    sample_rate: int
    channels: int


@dataclass
class DecodedSession:
    """The decoded tracks of one session.

    Attributes:
        session: The session record.
        signals: ``"teacher"``/``"student"`` → mono float32 signal, or ``None`` for a track
            that is missing or failed to decode.
        errors: Track → message for every problem: a missing track, a decode error, or a
            silent-track warning (the signal of a silent track is still in ``signals``).
        duration_s: Longest decoded track in seconds, ``nan`` when none decoded.
        sample_rate: Sample rate of the signals (Hz).
    """

    session: Session
    signals: dict[str, np.ndarray | None]
    errors: dict[str, str] = field(default_factory=dict)
    duration_s: float = math.nan
    sample_rate: int = 16000

    @property
    def failed_tracks(self) -> list[str]:
        """Tracks without a signal (missing or undecodable), in ``TRACKS`` order."""
        return [t for t in TRACKS if self.signals.get(t) is None]


# --------------------------------------------------------------------------- backends


#: The torchcodec module once imported; ``None`` when it cannot be (then ffmpeg is used);
#: ``False`` before the first try.  Tests set it to ``None`` to exercise the fallback.
_TORCHCODEC: ModuleType | None | bool = False


def _torchcodec() -> ModuleType | None:
    """Return the ``torchcodec`` module, or ``None`` when it cannot be imported (cached)."""
    global _TORCHCODEC
    if _TORCHCODEC is False:
        try:
            import torchcodec
            import torchcodec._core
            import torchcodec.decoders  # noqa: F401

            _TORCHCODEC = torchcodec
        except Exception as exc:  # ImportError, or OSError when FFmpeg libraries are missing
            log.warning("torchcodec unavailable (%s); decoding with the ffmpeg binary", exc)
            _TORCHCODEC = None
    return _TORCHCODEC  # type: ignore[return-value]


_CPP_PREFIX = re.compile(r"^[\w:]+, \S+\.(?:cpp|h):\d+, ")


def _short_reason(exc: BaseException, path: Path) -> str:
    """Turn a decoder exception into a one-line reason without source locations or the path."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _CPP_PREFIX.sub("", text)
    text = text.replace(f"Could not open input file: {path}", "").strip() or text
    text = text.replace(str(path), "<file>")
    return text[:_MAX_REASON]


def _tool_reason(stderr: str, path: Path, default: str) -> str:
    """Last line of an ffmpeg/ffprobe error output, without the file name."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()] or [default]
    reason = lines[-1].replace(f"{path}: ", "").replace(str(path), "<file>").strip()
    return reason[:_MAX_REASON] or default


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioDecodeError(f"{path}: file not found")
    if not path.is_file():
        raise AudioDecodeError(f"{path}: not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise AudioDecodeError(f"{path}: file is empty (0 bytes)")


def _first_audio_stream(tc: ModuleType, path: Path):
    """Return the metadata of the first audio stream of ``path`` (torchcodec)."""
    try:
        container = tc._core.get_container_metadata_from_header(str(path))
    except Exception as exc:
        raise AudioDecodeError(f"{path}: cannot decode: {_short_reason(exc, path)}") from None
    audio = [s for s in container.streams if getattr(s, "media_type", None) == "audio"]
    if not audio:
        raise AudioDecodeError(f"{path}: no audio stream")
    return min(audio, key=lambda s: s.stream_index)


def _decode_torchcodec(tc: ModuleType, path: Path, sample_rate: int) -> np.ndarray:
    stream = _first_audio_stream(tc, path)
    try:
        decoder = tc.decoders.AudioDecoder(
            str(path), stream_index=stream.stream_index, sample_rate=sample_rate
        )
        samples = decoder.get_all_samples()
    except Exception as exc:
        reason = _short_reason(exc, path)
        if "No audio frames were decoded" in reason:
            raise AudioDecodeError(f"{path}: decoded to 0 samples") from None
        raise AudioDecodeError(f"{path}: cannot decode: {reason}") from None
    data = samples.data.numpy()  # (channels, samples)
    return data.mean(axis=0, dtype=np.float64) if data.shape[0] > 1 else data[0]


def _ffprobe(path: Path) -> dict:
    exe = shutil.which("ffprobe")
    if exe is None:
        raise AudioDecodeError(
            f"{path}: cannot decode: neither torchcodec nor ffprobe is available"
        )
    proc = subprocess.run(
        [exe, "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=channels,sample_rate,duration:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        reason = _tool_reason(proc.stderr, path, "ffprobe failed")
        raise AudioDecodeError(f"{path}: cannot decode: {reason}")
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        raise AudioDecodeError(f"{path}: no audio stream")
    stream = dict(streams[0])
    stream.setdefault("duration", (info.get("format") or {}).get("duration"))
    return stream


def _decode_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    channels = int(_ffprobe(path).get("channels") or 1)
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioDecodeError(f"{path}: cannot decode: neither torchcodec nor ffmpeg is available")
    proc = subprocess.run(
        [exe, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-ar", str(sample_rate), "-f", "f32le", "-"],
        capture_output=True, check=False,
    )
    if proc.returncode != 0:
        reason = _tool_reason(proc.stderr.decode("utf-8", "replace"), path, "ffmpeg failed")
        raise AudioDecodeError(f"{path}: cannot decode: {reason}")
    raw = np.frombuffer(proc.stdout, dtype="<f4")
    usable = raw.size - raw.size % channels
    data = raw[:usable].reshape(-1, channels)
    return data.mean(axis=1, dtype=np.float64) if channels > 1 else data[:, 0]


#: Containers read with soundfile when already at the wanted rate (lossless PCM: the
#: samples are the file's, so any decoder gives the same; lossy formats are left to
#: FFmpeg, whose decoder delay/padding handling libsndfile's need not share).
_SOUNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF"})


def _decode_soundfile(path: Path, sample_rate: int) -> np.ndarray | None:
    """Read a lossless PCM file at ``sample_rate`` with soundfile; ``None`` = not this path."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.format not in _SOUNDFILE_FORMATS or info.samplerate != sample_rate:
            return None
        data = sf.read(str(path), dtype="float32", always_2d=True)[0]  # (samples, channels)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return None  # torchcodec decodes it or words the error
    return data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0]


# --------------------------------------------------------------------------- public API


def load_audio(path: Path | str, sample_rate: int = 16000) -> np.ndarray:
    """Decode a track to a mono float32 signal at ``sample_rate``.

    Args:
        path: An audio file (WAV, FLAC, MP3, OGG, ...) or a video whose first audio
            stream is the track.
        sample_rate: Output rate (Hz).

    Returns:
        1-D float32 array in [-1, 1] (channels averaged); non-finite samples are set to 0.

    Raises:
        AudioDecodeError: When the file is missing, empty (0 bytes), cannot be decoded,
            has no audio stream, or decodes to 0 samples.
    """
    path = Path(path)
    _check_file(path)
    signal = _decode_soundfile(path, sample_rate)
    if signal is None:
        tc = _torchcodec()
        if tc is not None:
            signal = _decode_torchcodec(tc, path, sample_rate)
        else:
            signal = _decode_ffmpeg(path, sample_rate)
    signal = np.asarray(signal, dtype=np.float32)
    if signal.size == 0:
        raise AudioDecodeError(f"{path}: decoded to 0 samples")
    bad = ~np.isfinite(signal)
    if bad.any():
        log.warning("%s: %d non-finite samples (NaN/inf) replaced with 0", path, int(bad.sum()))
        signal = np.where(bad, np.float32(0), signal)
    return np.ascontiguousarray(signal)


def stream_audio(path: Path | str, sample_rate: int = 16000, block: int = 16000 * 60
                 ) -> Iterator[np.ndarray]:
    """Decode a track in blocks: :func:`load_audio`'s samples without holding the track.

    The ``ffmpeg`` binary decodes and resamples the first audio stream and its
    output is read ``block`` samples at a time; channels are averaged (in float64,
    as :func:`load_audio` does) and non-finite samples set to 0, so the blocks
    joined are exactly :func:`load_audio`'s signal (tested for WAV, FLAC, MP3,
    OGG/Opus and MP4 at other rates and channel counts).  Without the ``ffmpeg``
    binary the whole track is decoded by :func:`load_audio` and yielded in blocks.

    Args:
        path: An audio file or a video whose first audio stream is the track.
        sample_rate: Output rate (Hz).
        block: Samples per block (every block but the last is exactly this long).

    Yields:
        1-D float32 arrays.

    Raises:
        AudioDecodeError: When the file is missing, empty, cannot be decoded, has no
            audio stream, or decodes to 0 samples (raised when the stream gets there).
    """
    path = Path(path)
    block = max(1, int(block))
    exe = shutil.which("ffmpeg")
    if exe is None:  # torchcodec only: the whole track, then its blocks
        signal = load_audio(path, sample_rate)
        for i in range(0, signal.size, block):
            yield signal[i:i + block]
        return
    _check_file(path)
    channels = int(_ffprobe(path).get("channels") or 1)
    frame = 4 * channels
    proc = subprocess.Popen(
        [exe, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-ar", str(sample_rate), "-f", "f32le", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    n = 0
    try:
        out, err = proc.stdout, proc.stderr  # both pipes (never None here)
        while raw := out.read(frame * block):  # a buffered read: full blocks until the end
            data = np.frombuffer(raw[: len(raw) - len(raw) % frame], dtype="<f4")
            data = data.reshape(-1, channels)
            x = np.asarray(data.mean(axis=1, dtype=np.float64) if channels > 1 else data[:, 0],
                           dtype=np.float32)
            if not np.isfinite(x).all():
                x = np.where(np.isfinite(x), x, np.float32(0))
            n += x.size
            yield x
        stderr = err.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise AudioDecodeError(
                f"{path}: cannot decode: {_tool_reason(stderr, path, 'ffmpeg failed')}"
            )
        if n == 0:
            raise AudioDecodeError(f"{path}: decoded to 0 samples")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def silence_message(path: Path | str, signal_peak: float, config: AudioConfig) -> str | None:
    """Return the silent-track warning of a track whose peak is ``signal_peak`` (else ``None``).

    Args:
        path: The track file (named in the message).
        signal_peak: Largest absolute sample value of the decoded track.
        config: Holds the threshold ``silence_peak``.

    Returns:
        ``"<path>: track is silent (peak …)"`` when the peak is below the threshold.
    """
    if signal_peak < config.silence_peak:
        return f"{path}: track is silent (peak {signal_peak:.4f} < {config.silence_peak:g})"
    return None


def audio_info(path: Path | str) -> AudioInfo:
    """Read duration, sample rate and channel count of the first audio stream from the header.

    Args:
        path: The track file.

    Returns:
        The :class:`AudioInfo` (``duration_s`` is ``nan`` when the header does not say).

    Raises:
        AudioDecodeError: When the file is missing, empty, unreadable or has no audio stream.
    """
    path = Path(path)
    _check_file(path)
    tc = _torchcodec()
    if tc is not None:
        stream = _first_audio_stream(tc, path)
        duration = stream.duration_seconds_from_header
        return AudioInfo(
            duration_s=float(duration) if duration is not None else math.nan,
            sample_rate=int(stream.sample_rate or 0),
            channels=int(stream.num_channels or 0),
        )
    stream = _ffprobe(path)
    try:
        duration = float(stream.get("duration"))
    except (TypeError, ValueError):
        duration = math.nan
    return AudioInfo(
        duration_s=duration,
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
    )


#: Lowest sampling rate a signal handed to a feature extractor may have (eGeMAPS frames
#: need at least a few samples; openSMILE crashes the interpreter on rates such as 1 Hz).
MIN_SAMPLING_RATE = 1000


def mono_finite(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Return ``signal`` as 1-D float32 with channels averaged and NaN/inf set to 0.

    Args:
        signal: Samples, 1-D or ``(channels, samples)``.
        sample_rate: Its rate in Hz (checked, not changed).

    Returns:
        A 1-D float32 array (the input itself when nothing needed changing).

    Raises:
        ValueError: When ``sample_rate`` is below :data:`MIN_SAMPLING_RATE` or the
            signal has more than two dimensions.
    """
    if int(sample_rate) < MIN_SAMPLING_RATE:
        raise ValueError(
            f"sample_rate must be at least {MIN_SAMPLING_RATE} Hz, got {sample_rate}"
        )
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0, dtype=np.float32)
    elif x.ndim != 1:
        raise ValueError(f"signal must be 1-D or (channels, samples), got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, np.float32(0))
    return x


def peak(signal: np.ndarray) -> float:
    """Return the largest absolute sample value (0.0 for an empty signal).

    Args:
        signal: Samples.

    Returns:
        ``max(|signal|)``.
    """
    arr = np.asarray(signal)
    return float(np.max(np.abs(arr))) if arr.size else 0.0


def is_silent(signal: np.ndarray, threshold: float = AudioConfig().silence_peak) -> bool:
    """Whether the signal's peak is below ``threshold`` (``AudioConfig.silence_peak``).

    Args:
        signal: Samples.
        threshold: Peak below which the track counts as silent.

    Returns:
        ``True`` when ``peak(signal) < threshold``.
    """
    return peak(signal) < threshold


def decode_session(
    session: Session, config: AudioConfig | None = None, recordings: Path | str | None = None
) -> DecodedSession:
    """Decode both tracks of a session; never raises for a bad track.

    Args:
        session: The session (from :func:`~atrisk.ingest.manifest.read_manifest`).
        config: Sample rate and silence threshold (defaults when ``None``).
        recordings: The recordings folder, used to word the missing-track message
            (``recordings/<id>/student.*: no student track found ...``); without it the
            message names ``<session_id>/<track>.*``.

    Returns:
        A :class:`DecodedSession`: a signal per decodable track (silent tracks included,
        with a warning in ``errors``), ``None`` plus a message for each missing or
        undecodable track.
    """
    config = config or AudioConfig()
    signals: dict[str, np.ndarray | None] = {}
    errors: dict[str, str] = {}
    for track in TRACKS:
        path = session.track_path(track)
        if path is None:
            signals[track] = None
            errors[track] = describe_missing_track(recordings or "", session.session_id, track)
            continue
        try:
            signal = load_audio(path, config.sample_rate)
        except AudioDecodeError as exc:
            signals[track] = None
            errors[track] = str(exc)
            continue
        signals[track] = signal
        silent = silence_message(path, peak(signal), config)
        if silent:
            errors[track] = silent
    lengths = [s.size / config.sample_rate for s in signals.values() if s is not None]
    return DecodedSession(
        session=session,
        signals=signals,
        errors=errors,
        duration_s=max(lengths) if lengths else math.nan,
        sample_rate=config.sample_rate,
    )
