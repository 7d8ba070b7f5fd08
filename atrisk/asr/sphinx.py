"""Offline English ASR with pocketsphinx (the model ships inside the pip package).

:class:`PocketsphinxTranscriber` decodes each silero-vad segment with one
reused ``pocketsphinx.Decoder`` (bundled US English acoustic model, language
model and dictionary).  It needs no download and runs faster than real time
on one CPU core, at a higher word error rate than Wav2Vec2 (about 0.4 on read
adult speech): use it where no Wav2Vec2 checkpoint can be had.
"""

from __future__ import annotations

import math
import re
import threading

import numpy as np

from atrisk.asr.base import MODEL_SAMPLE_RATE, Segment, Transcriber, prepare_signal
from atrisk.asr.vad import speech_segments_16k
from atrisk.config import ASRConfig
from atrisk.errors import ConfigError, ModelLoadError
from atrisk.extras import require
from atrisk.records import Word

_VARIANT = re.compile(r"\(\d+\)$")

#: Decoder options of each ``asr.pocketsphinx_search`` preset.  "fast" trades accuracy
#: for speed: beams narrowed, at most 3000 active HMMs per frame, 2 Gaussians scored,
#: every second frame decoded (speed: docs/asr.md).
SEARCH_PRESETS: dict[str, dict[str, object]] = {
    "accurate": {},
    "fast": {"beam": 1e-40, "wbeam": 1e-30, "pbeam": 1e-40, "maxhmmpf": 3000, "topn": 2,
             "ds": 2},
}


def _is_filler(word: str) -> bool:
    """``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++GARBAGE++`` and the like."""
    return not word or word[0] in "<[+"


class PocketsphinxTranscriber(Transcriber):
    """Transcribe with pocketsphinx's bundled en-us model.

    Segment bounds are the VAD segments; word times come from the decoder's
    word segmentation (100 frames per second).  Confidence is the mean word
    posterior probability of the recognised (non-filler) words.

    Args:
        config: ASR settings (VAD); defaults when ``None``.

    Raises:
        ModelLoadError: When the pocketsphinx package or its model cannot be loaded.
    """

    @classmethod
    def from_pretrained(cls, model: str | None = None, device: str = "cpu",
                        config: ASRConfig | None = None) -> PocketsphinxTranscriber:
        """Build the transcriber (the registry's common constructor).

        Args:
            model: ``None`` or ``"en-us"``: the model bundled with the pip package.
            device: Ignored: pocketsphinx runs on the CPU.
            config: ASR settings (VAD, search preset).

        Raises:
            ConfigError: When another model is asked for.
            ModelLoadError: When pocketsphinx or its model cannot be loaded.
        """
        if model not in (None, "", "en-us"):
            raise ConfigError(
                f"the pocketsphinx backend uses its bundled en-us model; --asr-model {model!r} "
                "is for the backends that load a model (see --asr-backend)"
            )
        return cls(config=config)

    def __init__(self, config: ASRConfig | None = None):
        self.config = config or ASRConfig()
        pocketsphinx = require("pocketsphinx", feature="asr.backend = 'pocketsphinx'")
        try:
            self.model_path = pocketsphinx.get_model_path("en-us")
            # batch CMN: cepstral means from the whole segment (it is decoded at once)
            self._decoder = pocketsphinx.Decoder(
                loglevel="ERROR", cmn="batch", **SEARCH_PRESETS[self.config.pocketsphinx_search]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the pocketsphinx en-us model: {type(exc).__name__}: {exc}"
            ) from exc
        self.frame_rate = int(self._decoder.config["frate"])
        if int(self._decoder.config["samprate"]) != MODEL_SAMPLE_RATE:  # pragma: no cover
            raise ModelLoadError(
                f"pocketsphinx model expects {self._decoder.config['samprate']} Hz audio, "
                f"atrisk gives it {MODEL_SAMPLE_RATE} Hz"
            )
        self._lock = threading.Lock()
        preset = self.config.pocketsphinx_search
        self.name = "pocketsphinx:en-us" + ("" if preset == "accurate" else f":{preset}")

    def transcribe_signal(self, signal: np.ndarray, sample_rate: int = 16000) -> list[Segment]:
        """Transcribe one mono signal, VAD segment by VAD segment.

        Args:
            signal: Mono samples in [-1, 1]; NaN/inf count as 0.
            sample_rate: Rate of ``signal`` in Hz (resampled to 16 kHz when different).

        Returns:
            Segments in time order (text in lower case); ``[]`` when there is no
            speech or nothing was recognised.

        Raises:
            AudioDecodeError: When ``signal`` is not a usable array.
        """
        x = prepare_signal(signal, sample_rate)
        out = []
        for start_s, end_s in speech_segments_16k(x, self.config):
            a, b = int(round(start_s * MODEL_SAMPLE_RATE)), int(round(end_s * MODEL_SAMPLE_RATE))
            seg = self._decode(x[a:b], start_s, end_s)
            if seg is not None:
                out.append(seg)
        return out

    def _decode(self, piece: np.ndarray, start_s: float, end_s: float) -> Segment | None:
        pcm = (np.clip(piece, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            dec = self._decoder
            # fresh feature state (noise estimate, CMN) for every segment, so that a
            # segment's result does not depend on what the decoder heard before
            dec.reinit_feat()
            dec.start_utt()
            dec.process_raw(pcm, no_search=False, full_utt=True)
            dec.end_utt()
            if dec.hyp() is None:
                return None
            raw = [(s.word, s.start_frame, s.end_frame, s.prob) for s in dec.seg()]
        words, probs = [], []
        for word, f0, f1, prob in raw:
            if _is_filler(word):
                continue
            text = _VARIANT.sub("", word).lower()
            w_start = min(start_s + f0 / self.frame_rate, end_s)
            w_end = min(start_s + (f1 + 1) / self.frame_rate, end_s)
            words.append(Word(text=text, start_s=w_start, end_s=w_end))
            if prob is not None and math.isfinite(prob):
                probs.append(min(max(float(prob), 0.0), 1.0))
        if not words:
            return None
        return Segment(
            start_s=float(start_s),
            end_s=float(end_s),
            text=" ".join(w.text for w in words),
            confidence=float(np.mean(probs)) if probs else math.nan,
            words=tuple(words),
        )
