"""The two core records: :class:`Session` and :class:`Utterance`.

Tables in the workspace are these records in Parquet.  Code passes these typed
records, or DataFrames with the documented columns (``UTTERANCE_COLUMNS``,
``SESSION_COLUMNS``), never loose dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

Speaker = Literal["teacher", "student"]
TRACKS: tuple[Speaker, Speaker] = ("teacher", "student")

#: Columns of the ``sessions`` table.
SESSION_COLUMNS = [
    "session_id",
    "student_id",
    "teacher_id",
    "start_time",
    "teacher_path",
    "student_path",
    "duration_s",
    "status",
    "error",
]

#: Columns of the ``utterances`` table (and of ``atrisk features text --utterances``).
UTTERANCE_COLUMNS = ["session_id", "speaker", "start_s", "end_s", "text", "confidence", "asr_model"]


@dataclass(frozen=True)
class Session:
    """One recorded class: who took part, when, and one audio source per track.

    Attributes:
        session_id: Unique id of the class.
        student_id: The student.
        teacher_id: The teacher.
        start_time: Start of the class, timezone-aware UTC.
        teacher_path: Teacher track file, or ``None`` when it was not found.
        student_path: Student track file, or ``None`` when it was not found.
    """

    session_id: str
    student_id: str
    teacher_id: str
    start_time: datetime
    teacher_path: Path | None
    student_path: Path | None

    def track_path(self, track: Speaker) -> Path | None:
        """Return the file of ``track`` (``"teacher"`` or ``"student"``)."""
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
        return self.teacher_path if track == "teacher" else self.student_path


@dataclass(frozen=True)
class Word:
    """A word with its time span inside the track (seconds)."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech by one speaker.

    Attributes:
        session_id: The class it belongs to.
        speaker: ``"teacher"`` or ``"student"``.
        start_s: Start, seconds from the start of the track.
        end_s: End, seconds from the start of the track.
        text: Transcribed or given text.
        confidence: Recogniser confidence in [0, 1], ``nan`` when unknown.
        words: Word-level times, when the recogniser gives them.
    """

    session_id: str
    speaker: Speaker
    start_s: float
    end_s: float
    text: str
    confidence: float = math.nan
    words: tuple[Word, ...] = field(default=())

    @property
    def duration_s(self) -> float:
        """Length of the utterance in seconds."""
        return self.end_s - self.start_s
