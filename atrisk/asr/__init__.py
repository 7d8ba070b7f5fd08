"""Speech recognition: VAD segments -> text with times, behind one interface.

Backends (``--asr-backend``; the names and classes are in
:data:`atrisk.registry.ASR_BACKENDS`, the one place a backend is added):

* ``wav2vec2`` - any ``Wav2Vec2ForCTC`` checkpoint, hub id or local folder
  (:class:`~atrisk.asr.wav2vec2.Wav2Vec2Transcriber`); GPU when there is one.
* ``whisper`` - faster-whisper (CTranslate2) with the Whisper ``tiny.en`` model bundled
  in a pip package, or any CTranslate2 Whisper folder
  (:class:`~atrisk.asr.whisper.WhisperTranscriber`); offline, punctuation and casing
  kept.
* ``pocketsphinx`` - offline English model bundled with the pip package
  (:class:`~atrisk.asr.sphinx.PocketsphinxTranscriber`); no download, lower accuracy.
* ``transcripts`` - utterances given in a file; no audio is transcribed
  (:mod:`atrisk.asr.transcripts`; the extractor reads them itself).

``auto`` (the default of ``asr.backend``) picks one of them at run time
(:func:`atrisk.asr.auto.resolve_backend`): a Wav2Vec2 checkpoint that is here, else
Whisper, else pocketsphinx.

Every audio backend is a :class:`~atrisk.asr.base.Transcriber` with a
``from_pretrained(model, device=…, config=…)`` constructor, built once by
:func:`load_transcriber` and then called on many signals.  This module imports no
torch; the backends import it when they are loaded.

Example:
    >>> t = load_transcriber("pocketsphinx")  # doctest: +SKIP
    >>> t.transcribe_file("class42/student.wav")  # doctest: +SKIP
"""

from __future__ import annotations

from atrisk.asr.base import Segment, Transcriber, segments_to_utterances
from atrisk.config import AUTO_BACKEND, ASRConfig
from atrisk.errors import ConfigError, ModelLoadError
from atrisk.registry import ASR_BACKENDS, load_class

#: Names accepted by ``--asr-backend``.
BACKENDS = tuple(ASR_BACKENDS)

__all__ = ["BACKENDS", "Segment", "Transcriber", "load_transcriber", "segments_to_utterances"]


def load_transcriber(
    backend: str,
    model: str | None = None,
    device: str = "auto",
    config: ASRConfig | None = None,
) -> Transcriber:
    """Build the transcriber of an ASR backend (the model loads here, once).

    Args:
        backend: A name of :data:`BACKENDS` with an audio model (not ``"transcripts"``),
            or ``"auto"`` (:func:`atrisk.asr.auto.resolve_backend`, with ``model`` as
            ``asr.model``).
        model: The backend's model (wav2vec2: hub id or local folder, ``None``:
            ``config.model``; whisper: CTranslate2 folder or faster-whisper name,
            ``None``: ``config.whisper_model``, else the bundled tiny.en); pocketsphinx
            takes only ``None`` or ``"en-us"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (CPU-only backends
            ignore it).
        config: ASR settings (VAD, batch size, ...); defaults when ``None``.
            Its ``backend`` field is not read: ``backend`` decides.

    Returns:
        A ready :class:`~atrisk.asr.base.Transcriber`.

    Raises:
        ConfigError: When the backend is unknown, has no audio transcriber
            (``transcripts``), the model does not fit the backend, or the device is
            unusable.
        ModelLoadError: When the model (or the backend's package) cannot be loaded.
    """
    config = config or ASRConfig()
    name = (backend or "").strip().lower()
    if name == AUTO_BACKEND:
        from atrisk.asr.auto import resolve_backend

        if model:
            config = config.model_copy(update={"model": model})
        choice = resolve_backend(config.model_copy(update={"backend": AUTO_BACKEND}))
        name, config = choice.backend, choice.config
        model = config.model if name == "wav2vec2" else None
    if name not in ASR_BACKENDS:
        raise ConfigError(
            f"unknown ASR backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    target = ASR_BACKENDS[name]
    if target is None:
        raise ConfigError(
            f"the {name} backend reads utterance files (recordings/utterances.csv or "
            ".parquet, or --transcripts FILE) and has no audio transcriber; use "
            "atrisk.asr.transcripts.find_transcripts / utterances_for_session instead"
        )
    try:
        cls = load_class(target)
    except ImportError as exc:
        raise ModelLoadError(f"the {name} ASR backend cannot be imported: {exc} "
                             f"(pip install 'atrisk[{name}]')") from None
    return cls.from_pretrained(model, device=device, config=config)
