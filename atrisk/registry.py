"""The backends atrisk knows, by name: the one place a new backend is added.

Each entry maps a backend name (what ``--prosody-backend`` / ``--asr-backend`` and the
config accept) to the ``module:Class`` that implements it.  Classes are imported only
when a backend is loaded, so reading this table imports nothing heavy; the config, the
CLI options and the service take their choices from here.  ``asr.backend`` also takes
``auto``, which is not a backend but a rule that picks one of these at run time
(:mod:`atrisk.asr.auto`).

* Prosody backends subclass :class:`atrisk.extractors.prosody.base.ProsodyBackend`
  (built by :func:`atrisk.extractors.prosody.load_prosody`).
* ASR backends subclass :class:`atrisk.asr.base.Transcriber` and provide
  ``from_pretrained(model, device=…, config=…)`` (built by
  :func:`atrisk.asr.load_transcriber`).  ``None`` marks a name with no audio model:
  ``transcripts`` reads given utterances.
"""

from __future__ import annotations

import importlib

#: Prosody backends: name -> "module:Class".
PROSODY_BACKENDS: dict[str, str] = {
    "opensmile": "atrisk.extractors.prosody.opensmile_backend:OpenSmileProsody",
    "torch": "atrisk.extractors.prosody.torch_backend:TorchProsody",
}

#: ASR backends: name -> "module:Class" (``None``: given transcripts, no audio model).
ASR_BACKENDS: dict[str, str | None] = {
    "wav2vec2": "atrisk.asr.wav2vec2:Wav2Vec2Transcriber",
    "whisper": "atrisk.asr.whisper:WhisperTranscriber",
    "pocketsphinx": "atrisk.asr.sphinx:PocketsphinxTranscriber",
    "transcripts": None,
}


def load_class(target: str) -> type:
    """Import and return the class named by a ``"module:Class"`` registry entry.

    Args:
        target: A value of :data:`PROSODY_BACKENDS` or :data:`ASR_BACKENDS`.

    Returns:
        The class.

    Raises:
        ImportError: When the module cannot be imported (a missing optional dependency).
        AttributeError: When the module has no such class.
    """
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
