"""``asr.backend = "auto"``: pick the speech recogniser that serves this user, offline first.

The order (:func:`resolve_backend`):

1. **wav2vec2** when ``asr.model`` names a local ``Wav2Vec2ForCTC`` folder, or names a
   Hub id other than the default (the user asked for that model: it is loaded, and
   downloaded once when not cached), or the default id is already in the Hugging
   Face cache (nothing is downloaded);
2. else **whisper**, the bundled ``tiny.en`` (or ``asr.whisper_model``), when its extra
   is installed — a local CTranslate2 Whisper folder or a faster-whisper model name
   given as ``asr.model`` also picks whisper;
3. else **pocketsphinx** when its extra is installed;
4. else a :class:`~atrisk.errors.ConfigError` naming the extras that would help.

Nothing here downloads, loads a model or imports torch: the checks look for files
and installed packages only.  The caller replaces ``auto`` by the chosen backend (and
model) before it computes resume keys, so a run with ``auto`` and one that names the
same backend share their cached sessions; the reason is printed and saved in
``run.json``.

Example:
    >>> from atrisk.config import ASRConfig
    >>> choice = resolve_backend(ASRConfig())  # doctest: +SKIP
    >>> choice.backend, choice.reason  # doctest: +SKIP
    ('whisper', 'no Wav2Vec2 checkpoint here (facebook/wav2vec2-base-960h is not ...')
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from atrisk.config import AUTO_BACKEND, ASRConfig
from atrisk.errors import ConfigError
from atrisk.extras import available

#: The wav2vec2 model ``auto`` looks for when ``asr.model`` is not set.
DEFAULT_WAV2VEC2 = ASRConfig.model_fields["model"].default


@dataclass(frozen=True)
class BackendChoice:
    """The backend ``auto`` chose, and why.

    Attributes:
        backend: A name of :data:`atrisk.registry.ASR_BACKENDS` with an audio model.
        config: ``asr`` settings with ``backend`` (and, for a Whisper folder or name
            given as ``asr.model``, ``whisper_model``) set to the choice.
        reason: One sentence for the user (printed, and saved in ``run.json``).
    """

    backend: str
    config: ASRConfig
    reason: str


def in_hf_cache(repo_id: str) -> bool:
    """Whether a Hub model's ``config.json`` is in the local Hugging Face cache (no network).

    Args:
        repo_id: ``organisation/name``.

    Returns:
        ``False`` also when huggingface-hub is not installed or the id is malformed.
    """
    if not available("huggingface_hub"):
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed id (HFValidationError) is simply not cached
        return False
    return isinstance(hit, str)


def is_whisper_folder(path: Path) -> bool:
    """Whether ``path`` looks like a CTranslate2 Whisper folder (``model.bin`` + vocabulary)."""
    return (path / "model.bin").is_file() and any(
        (path / f).is_file() for f in ("vocabulary.txt", "vocabulary.json"))


def _whisper_names() -> set[str]:
    """faster-whisper's model names (``tiny.en``, ``small``, ``large-v3``, ...), if installed."""
    if not available("faster_whisper"):
        return set()
    from faster_whisper import available_models

    return set(available_models())


def whisper_available() -> bool:
    """Whether the whisper backend can run offline here (faster-whisper and the bundled model)."""
    from atrisk.asr.whisper import is_available

    return is_available()


def resolve_backend(config: ASRConfig) -> BackendChoice:
    """Choose the ASR backend for ``config`` (unchanged unless its backend is ``auto``).

    Args:
        config: The ``asr`` settings; ``model`` is what ``--asr-model`` set.

    Returns:
        The choice, with the settings to run it.

    Raises:
        ConfigError: When ``auto`` finds no usable backend (no extra installed).
    """
    if config.backend != AUTO_BACKEND:
        return BackendChoice(config.backend, config, f"asr.backend = {config.backend}")
    model = (config.model or "").strip()
    explicit = model and model != DEFAULT_WAV2VEC2
    local = Path(model).expanduser() if model else None

    def pick(backend: str, reason: str, **update: object) -> BackendChoice:
        return BackendChoice(backend, config.model_copy(update={"backend": backend, **update}),
                             reason)

    if local is not None and local.exists():
        if local.is_dir() and is_whisper_folder(local):
            return pick("whisper", f"{model} is a CTranslate2 Whisper folder",
                        whisper_model=str(local.resolve()))
        return pick("wav2vec2", f"{model} is a local model folder")
    if explicit and model in _whisper_names():
        return pick("whisper", f"{model} is a faster-whisper model name", whisper_model=model)
    if explicit:
        return pick("wav2vec2", f"--asr-model {model} names a Wav2Vec2 checkpoint"
                    + ("" if in_hf_cache(model) else
                       " (not in the Hugging Face cache: it is downloaded once)"))
    if find_spec("transformers") is not None and in_hf_cache(model):
        return pick("wav2vec2", f"{model} is in the Hugging Face cache")
    why = (f"no Wav2Vec2 checkpoint here ({model} is not in the Hugging Face cache; "
           "nothing is downloaded in auto mode)")
    if whisper_available():
        what = (f"Whisper {config.whisper_model}" if config.whisper_model
                else "the bundled Whisper tiny.en")
        return pick("whisper", f"{why}: {what} runs offline")
    if available("pocketsphinx"):
        return pick("pocketsphinx", f"{why}, and Whisper is not installed "
                    "(pip install 'atrisk[whisper]'): pocketsphinx, lower accuracy")
    raise ConfigError(
        "asr.backend = auto found no speech recogniser: no Wav2Vec2 checkpoint (pass "
        "--asr-model FOLDER), and neither Whisper nor pocketsphinx is installed; install "
        "one: pip install 'atrisk[whisper]' (recommended) or 'atrisk[pocketsphinx]', or use "
        "--asr-backend transcripts"
    )
