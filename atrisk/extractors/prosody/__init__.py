"""Prosody: eGeMAPSv02 functionals per track and per utterance, behind one interface.

Backends (``--prosody-backend``, :data:`atrisk.registry.PROSODY_BACKENDS`):

* ``opensmile`` — :class:`~atrisk.extractors.prosody.opensmile_backend.OpenSmileProsody`,
  the reference implementation (licence: research and education only); also
  ComParE_2016 and low-level descriptors, and hours-long tracks in bounded memory.
* ``torch`` — :class:`~atrisk.extractors.prosody.torch_backend.TorchProsody`, our
  licence-clean re-implementation of eGeMAPSv02 (CPU or CUDA, batched).

Both subclass :class:`~atrisk.extractors.prosody.base.ProsodyBackend`; build one with
:func:`load_prosody`.  Importing this package imports neither openSMILE nor torch.

Example:
    >>> backend = load_prosody(ProsodyConfig(backend="opensmile"))      # doctest: +SKIP
    >>> backend.process_file("recordings/s1/teacher.wav")               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from atrisk.config import ProsodyConfig
from atrisk.errors import ConfigError
from atrisk.extractors.prosody.base import (
    SEGMENT_INDEX,
    SESSION_INDEX,
    Extracted,
    ProsodyBackend,
    StreamingProsody,
)
from atrisk.registry import PROSODY_BACKENDS, load_class

__all__ = [
    "PROSODY_BACKENDS",
    "SEGMENT_INDEX",
    "SESSION_INDEX",
    "Extracted",
    "ProsodyBackend",
    "StreamingProsody",
    "load_prosody",
]


def load_prosody(config: ProsodyConfig | None = None, sample_rate: int = 16000,
                 device: str | None = None, **kwargs: Any) -> ProsodyBackend:
    """Return the prosody backend named by ``config.backend``.

    Args:
        config: Prosody settings (defaults when ``None``).
        sample_rate: Rate (Hz) files are decoded to.
        device: Where a torch backend runs (``auto``/``None``: CUDA when available,
            ``cpu``, ``cuda[:i]``; the run's ``--device``, not a config setting);
            CPU-only backends ignore it.
        **kwargs: Passed on to the backend (e.g. ``num_workers`` for openSMILE).

    Returns:
        The backend.

    Raises:
        ConfigError: When the backend is unknown or its module cannot be imported.
    """
    config = config or ProsodyConfig()
    target = PROSODY_BACKENDS.get(config.backend)
    if target is None:
        raise ConfigError(f"unknown prosody.backend {config.backend!r}; choose one of: "
                          f"{', '.join(PROSODY_BACKENDS)}")
    try:
        cls = load_class(target)
    except (ImportError, AttributeError) as exc:
        others = [n for n in PROSODY_BACKENDS if n != config.backend]
        raise ConfigError(f"prosody.backend={config.backend!r} is not available: {exc}; "
                          f"use --prosody-backend {' or '.join(others)}") from exc
    return cls(config, sample_rate=sample_rate, device=device, **kwargs)
