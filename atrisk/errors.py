"""Package exceptions.

Every error a user can trigger with bad input is one of these.  Messages name
the file (and row, where there is one), the reason, and, where possible, the fix.
"""

from __future__ import annotations


class AtriskError(Exception):
    """Base class of every error raised on purpose by atrisk."""


class ConfigError(AtriskError):
    """A configuration file or option is invalid (exit code 2)."""


class ManifestError(AtriskError):
    """``sessions.csv`` (or a row of it) cannot be used."""


class AudioDecodeError(AtriskError):
    """A track is missing, empty or cannot be decoded."""


class LogValidationError(AtriskError):
    """A log file (``students.csv``, ``orders.csv``, ...) cannot be used."""


class ModelLoadError(AtriskError):
    """A model (ASR checkpoint, spaCy pipeline, trained artifact) cannot be loaded."""


class TranscriptError(AtriskError):
    """An utterance/transcript file is malformed."""


class RowError(AtriskError):
    """One row of an input table is invalid; the rest of the table is still used.

    Args:
        source: File the row comes from.
        row: 1-based line number in that file (header is line 1), or ``None``.
        reason: What is wrong with the row.
        key: Identifier of the row's entity (session or student id), if known.
    """

    def __init__(self, source: str, row: int | None, reason: str, key: str | None = None):
        self.source = str(source)
        self.row = row
        self.reason = reason
        self.key = key
        where = f"{self.source}:{row}" if row is not None else self.source
        super().__init__(f"{where}: {reason}")

    def to_dict(self) -> dict[str, object]:
        """Return the error as a JSON-serialisable record (one line of failures.jsonl)."""
        return {"source": self.source, "row": self.row, "key": self.key, "reason": self.reason}
