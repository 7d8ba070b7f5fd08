"""Engines that run the sessions of an extract: ``local`` (process pool) and ``ray`` (Ray Data).

Both follow :class:`~atrisk.extract.engines.base.Engine`; :func:`make_engine` builds one
by name.  The Ray engine is imported only when it is used.
"""

from __future__ import annotations

from atrisk.errors import ConfigError
from atrisk.extract.engines.base import Engine, EngineOutput, ExtractJob
from atrisk.extract.engines.local import LocalEngine
from atrisk.extras import require

#: Engine names ``--engine`` accepts.
ENGINES = ("local", "ray")

__all__ = ["ENGINES", "Engine", "EngineOutput", "ExtractJob", "LocalEngine", "make_engine"]


def make_engine(name: str, workers: int | None = None, address: str | None = None,
                threads: int | None = None) -> Engine:
    """Return the engine called ``name`` with its options.

    Args:
        name: ``local`` or ``ray``.
        workers: Worker processes (local) or CPUs of a local Ray; default: the CPUs this
            process may use.
        address: Ray cluster to join (``ray`` only).
        threads: torch intra-op threads per worker process (``local`` only).

    Returns:
        The engine.

    Raises:
        ConfigError: When the name is unknown or an option does not fit the engine.
    """
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if address is not None and name != "ray":
        raise ConfigError("--address is for --engine ray")
    if threads is not None and (name != "local" or threads < 1):
        raise ConfigError("--threads is for --engine local (Ray gives each task its CPUs) "
                          f"and must be at least 1, got {threads}")
    if name == "ray":
        require("ray", feature="--engine ray")
        from atrisk.extract.engines.ray_data import RayEngine

        return RayEngine(workers=workers, address=address)
    return LocalEngine(workers=workers, threads=threads)
