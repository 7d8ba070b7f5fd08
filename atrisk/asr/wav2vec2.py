"""Wav2Vec2 CTC transcription (batched; GPU when there is one).

:class:`Wav2Vec2Transcriber` loads any ``Wav2Vec2ForCTC`` checkpoint with its
``Wav2Vec2Processor`` once, from a Hugging Face Hub id (downloaded on first use
and cached) or a local folder, and then transcribes signals: silero-vad
segments -> sorted by length -> batches of ``config.batch_size`` -> one forward
pass each -> greedy CTC decoding with word times.

Example:
    >>> t = Wav2Vec2Transcriber.from_pretrained("facebook/wav2vec2-base-960h")  # doctest: +SKIP
    >>> t.transcribe_file("class42/teacher.wav")  # doctest: +SKIP
    [Segment(start_s=1.9, end_s=4.3, text='good morning', confidence=0.93, words=(...))]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from atrisk.asr.base import MODEL_SAMPLE_RATE, Segment, short_message
from atrisk.asr.segmenting import SegmentingTranscriber
from atrisk.asr.vad import WINDOW_S
from atrisk.config import ASRConfig
from atrisk.device import resolve_device
from atrisk.errors import ConfigError, ModelLoadError
from atrisk.extras import require
from atrisk.records import Word

log = logging.getLogger(__name__)

#: Shortest piece of audio given to the model (the feature encoder's 25 ms receptive field).
MIN_PIECE_SAMPLES = 400
#: Speech segments gathered (in batches) before sorting by length and running them.
POOL_BATCHES = 8
#: Files a local checkpoint folder must hold (weights and feature-extractor settings
#: are checked separately).
REQUIRED_FILES = ("config.json", "vocab.json", "tokenizer_config.json")
#: Any one of these holds the feature-extractor settings (``processor_config.json`` is
#: what transformers 5 writes, ``preprocessor_config.json`` what older versions wrote).
FEATURE_FILES = ("preprocessor_config.json", "processor_config.json")
#: Any one of these holds the weights.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class Wav2Vec2Transcriber(SegmentingTranscriber):
    """Greedy-CTC transcription with a ``Wav2Vec2ForCTC`` model.

    Build it with :meth:`from_pretrained`; the constructor takes already loaded
    objects.  Signals, files and blocks go through the windowed VAD
    (:class:`~atrisk.asr.segmenting.SegmentingTranscriber`); the speech segments,
    ``POOL_BATCHES * batch_size`` at a time across signals, are sorted by length and
    run ``config.batch_size`` at a time.  A segment's text is the greedy CTC decoding
    in lower case; its confidence is the mean, over non-blank frames, of the highest
    softmax probability; word times come from the CTC frame offsets.  Segments that
    decode to no text are dropped.

    Args:
        model: A ``transformers.Wav2Vec2ForCTC`` in eval mode, on ``device``.
        processor: The matching ``transformers.Wav2Vec2Processor``.
        name: Value of the ``asr_model`` column, e.g. ``"wav2vec2:facebook/wav2vec2-base-960h"``.
        device: Torch device the model is on.
        config: ASR settings (VAD, batch size, longest segment); defaults when ``None``.

    Attributes:
        frame_s: Seconds per output frame (``inputs_to_logits_ratio / 16000``, 0.02 s
            for the standard feature encoder).
        timings: Seconds spent so far per stage, summed over calls: ``decode``
            (files), ``vad``, ``features`` (normalising and padding a batch, copy to
            the device), ``model`` (forward pass, softmax, copy back), ``ctc``
            (greedy decoding with word offsets); plus the counts ``segments`` and
            ``batches``.  Clear it to start a new measurement.
        vad_window_s: Seconds of audio the VAD looks at in one call
            (:func:`~atrisk.asr.vad.stream_speech`).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        name: str,
        device: str = "cpu",
        config: ASRConfig | None = None,
    ):
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.config = config or ASRConfig()
        self.dtype = next(model.parameters()).dtype
        self.frame_s = float(model.config.inputs_to_logits_ratio) / MODEL_SAMPLE_RATE
        tok = processor.tokenizer
        self._blank_id = int(tok.pad_token_id if tok.pad_token_id is not None
                             else model.config.pad_token_id)
        self._special = sorted(
            {t for t in tok.all_special_tokens if t != tok.word_delimiter_token},
            key=len, reverse=True,
        )
        self._use_mask = bool(getattr(processor.feature_extractor, "return_attention_mask", False))
        self.timings: dict[str, float] = {}
        self.vad_window_s = WINDOW_S

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | None = None,
        device: str = "auto",
        config: ASRConfig | None = None,
        quantize: bool | None = None,
    ) -> Wav2Vec2Transcriber:
        """Load a ``Wav2Vec2ForCTC`` checkpoint and its processor, once.

        A path that exists is read as a local folder (nothing is downloaded);
        anything else is a Hugging Face Hub id, downloaded on first use and then
        read from the Hub cache.  The model runs in float32 on CPU and bfloat16
        on CUDA.

        Args:
            path_or_id: Local checkpoint folder or hub id (e.g. ``"facebook/wav2vec2-base-960h"``);
                ``None``: ``config.model``.
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            config: ASR settings; defaults when ``None``.
            quantize: On CPU, replace the ``Linear`` layers (the transformer) by
                dynamically quantised int8 ones (``torch.ao.quantization.quantize_dynamic``):
                less CPU time on CPUs with int8 dot products; the outputs change
                slightly, so measure the WER of your checkpoint with and without it.
                ``None``: ``config.quantize``.  Ignored (with a warning) when ``device``
                is ``"auto"`` and resolves to CUDA.

        Returns:
            A ready transcriber.

        Raises:
            ConfigError: When ``device`` is unknown or CUDA is requested but absent.
            ModelLoadError: When the checkpoint cannot be loaded; the message names
                the model and the reason (missing file, hub unreachable, no CTC head, ...).
        """
        import torch

        dev = str(resolve_device(device))
        source = str(path_or_id if path_or_id is not None else (config or ASRConfig()).model)
        source = source.strip()
        if not source:
            raise ModelLoadError("no Wav2Vec2 model given: pass a hub id or a local folder")
        local = Path(source).expanduser()
        if local.exists():
            _check_local_folder(local)
            source = str(local.resolve())
            try:
                processor, model, info = _load(source, local_only=True)
            except Exception as exc:  # transformers raises OSError, ValueError, ...
                raise ModelLoadError(
                    f"cannot load Wav2Vec2 model {path_or_id!r}: the local folder {source} "
                    f"could not be read: {type(exc).__name__}: {short_message(exc)}"
                ) from exc
        else:
            processor, model, info = _load_from_hub(source)
        name = f"wav2vec2:{source}"
        missing = [k for k in info.get("missing_keys", []) if k.startswith("lm_head")]
        if missing:
            raise ModelLoadError(
                f"cannot use Wav2Vec2 model {path_or_id!r}: the checkpoint has no CTC head "
                f"({', '.join(sorted(missing))} missing); it is a pretrained-only model and "
                "must be fine-tuned for CTC first (atrisk asr finetune)"
            )
        n_tokens = len(processor.tokenizer)
        if n_tokens > model.config.vocab_size:
            raise ModelLoadError(
                f"cannot use Wav2Vec2 model {path_or_id!r}: its tokenizer has {n_tokens} tokens "
                f"but the model outputs only {model.config.vocab_size} classes (vocab.json does "
                "not belong to this checkpoint)"
            )
        dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
        try:
            model = model.to(device=dev, dtype=dtype).eval()
        except Exception as exc:  # e.g. CUDA out of memory
            raise ModelLoadError(
                f"cannot move Wav2Vec2 model {path_or_id!r} to {dev}: {short_message(exc)}"
            ) from exc
        config = config or ASRConfig()
        quantize = config.quantize if quantize is None else quantize
        if quantize and dev != "cpu":
            if (device or "").strip().lower() != "auto":
                raise ConfigError(
                    f"int8 quantisation (--asr-quantize) is for the CPU; device {device!r} "
                    "runs bfloat16 instead: drop --asr-quantize or use --device cpu"
                )
            log.warning("--asr-quantize ignored: the model runs on %s in bfloat16", dev)
            quantize = False
        if quantize:
            model = torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True  # no float copy
            )
            name += ":int8"
        return cls(model, processor, name=name, device=dev, config=config)

    # ------------------------------------------------------------ transcription
    def _transcribe_pieces(
        self, pieces: Iterable[tuple[int, float, float, np.ndarray]]
    ) -> Iterator[tuple[int, Segment]]:
        """Transcribe ``(key, start_s, end_s, samples)`` pieces, a pool at a time.

        Each pool (``POOL_BATCHES * batch_size`` pieces, across signals) is sorted by
        length, longest first (so that padding is small), and cut into batches of
        ``config.batch_size``.
        """
        bs = int(self.config.batch_size)
        pool = POOL_BATCHES * bs
        buffer: list[tuple[int, float, float, np.ndarray]] = []
        for piece in pieces:
            # shorter than the feature encoder's receptive field (25 ms): no frame
            if piece[3].size >= MIN_PIECE_SAMPLES:
                buffer.append(piece)
            if len(buffer) >= pool:
                yield from self._run_pool(buffer, bs)
                buffer = []
        yield from self._run_pool(buffer, bs)

    def _run_pool(self, chunks: list[tuple[int, float, float, np.ndarray]], bs: int
                  ) -> Iterator[tuple[int, Segment]]:
        chunks.sort(key=lambda c: c[3].size, reverse=True)
        for k in range(0, len(chunks), bs):
            batch = chunks[k : k + bs]
            for (i, *_), seg in zip(batch, self._run_batch_safe(batch), strict=True):
                if seg is not None:
                    yield i, seg

    def _run_batch_safe(self, batch: list[tuple[int, float, float, np.ndarray]]
                        ) -> list[Segment | None]:
        """:meth:`_run_batch`, halving the batch when the GPU runs out of memory."""
        import torch

        try:
            return self._run_batch(batch)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(batch) // 2
            return self._run_batch_safe(batch[:half]) + self._run_batch_safe(batch[half:])

    def _run_batch(self, batch: list[tuple[int, float, float, np.ndarray]]) -> list[Segment | None]:
        import torch

        t0 = time.perf_counter()
        arrays = [c[3] for c in batch]
        feats = self.processor.feature_extractor(
            arrays,
            sampling_rate=MODEL_SAMPLE_RATE,
            padding=True,
            return_attention_mask=self._use_mask,
            return_tensors="pt",
        )
        cuda = self.device.startswith("cuda")
        inputs = feats["input_values"]
        if cuda:  # page-locked host memory: the copy overlaps with queued GPU work
            inputs = inputs.pin_memory()
        inputs = inputs.to(self.device, dtype=self.dtype, non_blocking=cuda)
        kwargs = {}
        if self._use_mask and "attention_mask" in feats:
            kwargs["attention_mask"] = feats["attention_mask"].to(self.device, non_blocking=cuda)
        t1 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(
            device_type="cuda" if cuda else "cpu", dtype=self.dtype, enabled=cuda
        ):
            logits = self.model(inputs, **kwargs).logits
            max_p, ids = logits.float().softmax(dim=-1).max(dim=-1)
        lengths = self.model._get_feat_extract_output_lengths(
            torch.tensor([a.size for a in arrays])
        )
        max_p, ids = max_p.cpu().numpy(), ids.cpu().numpy()  # waits for the GPU
        t2 = time.perf_counter()
        out: list[Segment | None] = []
        for j, (_, start_s, end_s, _) in enumerate(batch):
            n = int(min(int(lengths[j]), ids.shape[1]))
            out.append(self._decode(ids[j, :n], max_p[j, :n], start_s, end_s))
        t3 = time.perf_counter()
        for key, dt in (("features", t1 - t0), ("model", t2 - t1), ("ctc", t3 - t2)):
            self.timings[key] = self.timings.get(key, 0.0) + dt
        self.timings["segments"] = self.timings.get("segments", 0.0) + len(batch)
        self.timings["batches"] = self.timings.get("batches", 0.0) + 1
        return out

    def _decode(self, ids: np.ndarray, max_p: np.ndarray, start_s: float, end_s: float
                ) -> Segment | None:
        tok = self.processor.tokenizer
        # special tokens are kept here so that frame offsets stay aligned; they are
        # removed from the words below
        decoded = tok.decode(ids.tolist(), skip_special_tokens=False, output_word_offsets=True)
        words: list[Word] = []
        for w in decoded.word_offsets or []:
            text = str(w["word"])
            for special in self._special:
                text = text.replace(special, "")
            text = text.strip().lower()
            if not text:
                continue
            w_start = start_s + float(w["start_offset"]) * self.frame_s
            w_end = start_s + float(w["end_offset"]) * self.frame_s
            w_start, w_end = min(w_start, end_s), min(w_end, end_s)
            words.append(Word(text=text, start_s=w_start, end_s=max(w_start, w_end)))
        if not words:
            return None
        non_blank = ids != self._blank_id
        confidence = float(max_p[non_blank].mean()) if non_blank.any() else math.nan
        return Segment(
            start_s=float(start_s),
            end_s=float(end_s),
            text=" ".join(w.text for w in words),
            confidence=confidence,
            words=tuple(words),
        )


def _load(source: str, local_only: bool) -> tuple[Any, Any, dict]:
    """Load processor and model (``local_only``: from a folder or the Hub cache only)."""
    require("transformers", feature="asr.backend = 'wav2vec2'")
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    processor = Wav2Vec2Processor.from_pretrained(source, local_files_only=local_only)
    model, info = Wav2Vec2ForCTC.from_pretrained(
        source, local_files_only=local_only, output_loading_info=True
    )
    return processor, model, info


_OFFLINE_HINT = (
    "pass a local checkpoint folder with --asr-model, or use --asr-backend pocketsphinx "
    "(bundled offline model) or --asr-backend transcripts"
)


def _load_from_hub(repo_id: str) -> tuple[Any, Any, dict]:
    """Load a hub id: from the local Hub cache when it is there, else download it.

    Before downloading, one quick request checks that the Hub is reachable and
    knows the id, so that an offline machine fails in a second instead of
    retrying every file for minutes.
    """
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    prefix = f"cannot load Wav2Vec2 model {repo_id!r}"
    try:
        validate_repo_id(repo_id)
    except Exception:
        raise ModelLoadError(
            f"{prefix}: there is no such folder, and it is not a valid Hugging Face Hub id "
            "(expected 'name' or 'organisation/name')"
        ) from None
    try:
        return _load(repo_id, local_only=True)  # already downloaded: no network needed
    except Exception:
        pass
    try:
        model_info(repo_id, timeout=10)
    except GatedRepoError:
        raise ModelLoadError(
            f"{prefix}: the model is gated on the Hugging Face Hub; accept its terms on "
            "huggingface.co and log in (hf auth login) first"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"{prefix}: no model with this id on the Hugging Face Hub (or it is private: log "
            "in with hf auth login); check the id, or pass a local folder"
        ) from None
    except HfHubHTTPError:
        pass  # e.g. rate limited: let the download itself try
    except Exception as exc:  # offline mode, DNS failure, timeout, proxy, ...
        raise ModelLoadError(
            f"{prefix}: it is not a local folder, not in the local Hub cache, and the Hugging "
            f"Face Hub cannot be reached ({type(exc).__name__}: {short_message(exc, 200)}); "
            f"{_OFFLINE_HINT}"
        ) from None
    try:
        return _load(repo_id, local_only=False)
    except Exception as exc:
        raise ModelLoadError(
            f"{prefix}: download from the Hugging Face Hub failed: "
            f"{type(exc).__name__}: {short_message(exc)}; {_OFFLINE_HINT}"
        ) from exc


def _check_local_folder(folder: Path) -> None:
    """Raise ModelLoadError naming the first file a checkpoint folder lacks."""
    if not folder.is_dir():
        raise ModelLoadError(
            f"cannot load Wav2Vec2 model {str(folder)!r}: it is a file, expected a checkpoint "
            f"folder holding {', '.join(REQUIRED_FILES)}, the processor settings and the weights"
        )
    for fname in REQUIRED_FILES:
        if not (folder / fname).is_file():
            what = {
                "config.json": "the model configuration",
                "vocab.json": "the tokenizer vocabulary",
                "tokenizer_config.json": "the tokenizer settings: special tokens, word delimiter",
            }[fname]
            raise ModelLoadError(
                f"cannot load Wav2Vec2 model {str(folder)!r}: {fname} ({what}) is missing from "
                "the folder; save both the model and its Wav2Vec2Processor there "
                "(model.save_pretrained(dir); processor.save_pretrained(dir))"
            )
    if not any((folder / f).is_file() for f in FEATURE_FILES):
        raise ModelLoadError(
            f"cannot load Wav2Vec2 model {str(folder)!r}: the feature extractor settings are "
            f"missing from the folder (expected {' or '.join(FEATURE_FILES)}); save the "
            "Wav2Vec2Processor there too (processor.save_pretrained(dir))"
        )
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelLoadError(
            f"cannot load Wav2Vec2 model {str(folder)!r}: no weights file in the folder "
            f"(expected one of {', '.join(WEIGHT_FILES)})"
        )
