"""Speech recognition: VAD segments -> text with times, behind one interface.

Backends (``--asr-backend``):

* ``wav2vec2`` - any ``Wav2Vec2ForCTC`` checkpoint, hub id or local folder
  (:class:`~atrisk.asr.wav2vec2.Wav2Vec2Transcriber`); best accuracy, GPU when there is one.
* ``pocketsphinx`` - offline English model bundled with the pip package
  (:class:`~atrisk.asr.sphinx.PocketsphinxTranscriber`); no download, lower accuracy.
* ``transcripts`` - utterances given in a file; no audio is transcribed
  (:mod:`atrisk.asr.transcripts`; the pipeline handles it itself).

Every audio backend is a :class:`~atrisk.asr.base.Transcriber`, built once by
:func:`load_transcriber` and then called on many signals.  This module imports
no torch; the backends import it when they are loaded.

Example:
    >>> t = load_transcriber("pocketsphinx")  # doctest: +SKIP
    >>> t.transcribe_file("class42/student.wav")  # doctest: +SKIP
"""

from __future__ import annotations

from atrisk.asr.base import Segment, Transcriber, segments_to_utterances
from atrisk.config import ASRConfig
from atrisk.errors import ConfigError

#: Names accepted by ``--asr-backend``.
BACKENDS = ("wav2vec2", "pocketsphinx", "transcripts")

__all__ = ["BACKENDS", "Segment", "Transcriber", "load_transcriber", "segments_to_utterances"]


def load_transcriber(
    backend: str,
    model: str | None = None,
    device: str = "auto",
    config: ASRConfig | None = None,
) -> Transcriber:
    """Build the transcriber of an ASR backend (the model loads here, once).

    Args:
        backend: One of :data:`BACKENDS` except ``"transcripts"``.
        model: wav2vec2: hub id or local folder (``config.model`` when ``None``).
            pocketsphinx: must be ``None`` or ``"en-us"`` (its bundled model).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (wav2vec2;
            pocketsphinx always runs on the CPU).
        config: ASR settings (VAD, batch size, ...); defaults when ``None``.
            Its ``backend`` field is not read: ``backend`` decides.

    Returns:
        A ready :class:`~atrisk.asr.base.Transcriber`.

    Raises:
        ConfigError: When the backend is unknown, is ``"transcripts"`` (no audio
            transcriber), a pocketsphinx model other than en-us is asked for, or
            the device is unusable.
        ModelLoadError: When the model cannot be loaded (the message says why).
    """
    config = config or ASRConfig()
    name = (backend or "").strip().lower()
    if name == "wav2vec2":
        from atrisk.asr.wav2vec2 import Wav2Vec2Transcriber

        return Wav2Vec2Transcriber.from_pretrained(model or config.model, device=device,
                                                   config=config)
    if name == "pocketsphinx":
        if model not in (None, "", "en-us"):
            raise ConfigError(
                f"the pocketsphinx backend uses its bundled en-us model; --asr-model {model!r} "
                "is only for --asr-backend wav2vec2"
            )
        from atrisk.asr.sphinx import PocketsphinxTranscriber

        return PocketsphinxTranscriber(config=config)
    if name == "transcripts":
        raise ConfigError(
            "the transcripts backend reads utterance files (recordings/utterances.csv or "
            ".parquet, or --transcripts FILE) and has no audio transcriber; use "
            "atrisk.asr.transcripts.find_transcripts / utterances_for_session instead"
        )
    raise ConfigError(
        f"unknown ASR backend {backend!r}; choose one of: {', '.join(BACKENDS)}"
    )
