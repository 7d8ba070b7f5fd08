"""What every ``atrisk`` command shares: option types, errors to exit codes, output.

Exit codes: 0 all good; 1 some sessions/rows failed (they are listed, the rest is done);
2 usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from atrisk.config import Config
from atrisk.errors import AtriskError
from atrisk.progress import console

T = TypeVar("T")


class Device(StrEnum):
    """Where models run."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML or YAML file with settings (see docs/cli.md); command-line options override it.",
        exists=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    console.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run_or_exit(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a library function, turning package errors into exit code 2 with the message."""
    try:
        return fn(*args, **kwargs)
    except AtriskError as exc:
        fail(str(exc), 2)


def cli_config(path: Path | None, overrides: dict[str, Any]) -> Config:
    """Load ``--config`` (defaults when ``None``) and apply the command-line overrides."""
    return run_or_exit(lambda: Config.load(path).override(overrides))


def asr_overrides(config: Path | None, backend: str | None, model: str | None) -> dict[str, Any]:
    """Config overrides of ``--asr-backend``/``--asr-model``.

    ``--asr-model`` is the Whisper model (``asr.whisper_model``) when the backend
    (``--asr-backend``, else ``asr.backend`` of ``--config``) is ``whisper``, and
    ``asr.model`` otherwise (with ``auto`` a CTranslate2 Whisper folder or a
    faster-whisper name given there still picks Whisper: :mod:`atrisk.asr.auto`).
    """
    if model is not None:
        effective = backend or cli_config(config, {}).asr.backend
        key = "asr.whisper_model" if effective == "whisper" else "asr.model"
    else:
        key = "asr.model"
    return {"asr.backend": backend, key: model}


def print_asr_choice(backend: str, reason: str, quiet: bool) -> None:
    """Say which ASR backend runs and why (``auto``), unless ``quiet``."""
    if not quiet:
        console.print(f"speech recognition: [bold]{backend}[/] ({reason})", highlight=False)


def print_failures(failures: list[dict], quiet: bool, limit: int = 20) -> None:
    """List failed files/rows (at most ``limit``) unless ``quiet``."""
    if quiet or not failures:
        return
    console.print(f"[yellow]{len(failures)} problem(s):[/]")
    for f in failures[:limit]:
        where = f.get("source", "")
        if f.get("row") is not None:
            where = f"{where}:{f['row']}"
        console.print(f"  - {where}: {f.get('reason', '')}", highlight=False, soft_wrap=True)
    if len(failures) > limit:
        console.print(f"  … and {len(failures) - limit} more (see failures.jsonl)")


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def parse_horizons(text: str | None) -> list[int] | None:
    """Parse ``--horizons`` (``1-14`` or ``1,7,14``); exit 2 on a bad value."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        fail(f"--horizons {text!r} is not a list like 1-14 or 1,7,14")
    if not out or min(out) < 1:
        fail(f"--horizons {text!r} must name positive days")
    return sorted(set(out))
