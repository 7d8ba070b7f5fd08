"""The engine protocol: what runs the sessions of one extract.

An engine takes an :class:`ExtractJob` (the sessions, their inputs and settings) and
yields one :class:`EngineOutput` per session as it finishes, having written each new
result to its part file.  The :class:`~atrisk.extract.Extractor` assembles the tables,
so every engine gives the same tables for the same input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from atrisk.asr.base import Transcriber
from atrisk.config import Config
from atrisk.extract.session import SessionResult
from atrisk.records import Session, Utterance


@dataclass(frozen=True)
class ExtractJob:
    """Everything an engine needs to run the sessions of one extract.

    Attributes:
        sessions: Valid manifest sessions, in order.
        given: Given utterances per session (transcripts backend), else ``None``.
        workspace: Workspace folder (holds ``parts/``).
        recordings: Recordings folder.
        config: Output-changing settings (after any ASR fallback).
        asr_identity: The ASR backend and model (part of the resume key).
        device: The run's ``--device``: ``auto``, ``cpu`` or ``cuda``.
    """

    sessions: Sequence[Session]
    given: dict[str, list[Utterance]] | None
    workspace: Path
    recordings: Path
    config: Config
    asr_identity: str
    device: str


@dataclass
class EngineOutput:
    """One finished session.

    Attributes:
        result: The session's result.
        resumed: Whether it came from an earlier run's part file.
        text: Its text feature row when the engine computed it (else ``None``: the
            extractor computes the text features of all sessions at once).
    """

    result: SessionResult
    resumed: bool
    text: pd.DataFrame | None = None


@runtime_checkable
class Engine(Protocol):
    """Runs the sessions of an extract (``local``: a process pool; ``ray``: Ray Data)."""

    name: str

    def asr_check_device(self, device: str) -> str:
        """Return the device on which the driver loads the ASR model once, to fail early."""
        ...

    def run(self, job: ExtractJob, transcriber: Transcriber | None) -> Iterator[EngineOutput]:
        """Process the job's sessions; yield each as it finishes (new ones written to parts).

        Args:
            job: The sessions and settings.
            transcriber: The transcriber the driver loaded (an engine running in this
                process may use it instead of loading another); ``None`` for transcripts.

        Yields:
            One output per session.
        """
        ...
