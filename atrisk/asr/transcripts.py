"""The "transcripts" ASR backend: utterances given in a file instead of recognised.

Use it when the tutoring platform already has transcripts (its own ASR, human
captions).  The file (``recordings/utterances.csv`` or ``.parquet``) holds one
row per utterance with ``session_id, speaker, start_s, end_s, text`` (optional
``confidence``, ``asr_model``); it is loaded and validated by
:func:`atrisk.ingest.utterances.load_utterances`.  This module finds the file
and turns its rows into :class:`~atrisk.records.Utterance` records.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from atrisk.errors import TranscriptError
from atrisk.records import Utterance

#: File names looked for in the recordings folder, in this order.
TRANSCRIPT_NAMES = ("utterances.csv", "utterances.tsv", "utterances.parquet", "utterances.pq")


def find_transcripts(recordings: Path | str) -> Path | None:
    """Return the utterance file of a recordings folder, if it has one.

    Args:
        recordings: The recordings folder (the one holding ``sessions.csv``).

    Returns:
        ``recordings/utterances.csv`` (or ``.tsv``, ``.parquet``, ``.pq``) when
        present, else ``None``.

    Raises:
        TranscriptError: When more than one of those files is present (which one
            to use would be a guess).
    """
    folder = Path(recordings)
    found = [folder / n for n in TRANSCRIPT_NAMES if (folder / n).is_file()]
    if len(found) > 1:
        raise TranscriptError(
            f"{folder} holds several utterance files ({', '.join(p.name for p in found)}); "
            "keep one, or name the file to use with --transcripts FILE"
        )
    return found[0] if found else None


def load_transcripts(path: Path | str):
    """Load and validate an utterance file (thin wrapper of ``load_utterances``).

    Args:
        path: A CSV/TSV/Parquet utterance file.

    Returns:
        ``(utterances DataFrame, list of RowError)`` as returned by
        :func:`atrisk.ingest.utterances.load_utterances`.

    Raises:
        TranscriptError: When the file is missing, unparsable or lacks required columns.
    """
    from atrisk.ingest.utterances import load_utterances

    return load_utterances(Path(path))


def utterances_for_session(df: pd.DataFrame, session_id: str) -> list[Utterance]:
    """Return one session's utterances from a loaded utterance table.

    ``df`` is not modified.  Times are seconds from the start of the session's
    track (the ``start_s``/``end_s`` of the file, unchanged); a missing time
    stays ``nan``.  Missing ``confidence`` is ``nan``.

    Args:
        df: Table with the columns ``session_id, speaker, start_s, end_s, text``
            (``confidence`` optional), as returned by ``load_utterances``.
        session_id: The session to select (compared as a string).

    Returns:
        The session's utterances sorted by start time (missing times last), then
        speaker; ``[]`` when the session has none.

    Raises:
        TranscriptError: When ``df`` lacks a required column or holds a speaker
            other than ``teacher``/``student`` for this session.
    """
    required = ["session_id", "speaker", "start_s", "end_s", "text"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TranscriptError(f"utterance table lacks the column(s) {', '.join(missing)}")
    rows = df.loc[df["session_id"].astype(str) == str(session_id)]
    has_conf = "confidence" in rows.columns
    out: list[Utterance] = []
    for rec in rows.to_dict("records"):
        speaker = str(rec["speaker"]).strip().lower()
        if speaker not in ("teacher", "student"):
            raise TranscriptError(
                f"session {session_id}: speaker {rec['speaker']!r} is not teacher or student"
            )
        out.append(
            Utterance(
                session_id=str(session_id),
                speaker=speaker,  # type: ignore[arg-type]
                start_s=_num(rec["start_s"]),
                end_s=_num(rec["end_s"]),
                text=str(rec["text"]),
                confidence=_num(rec["confidence"]) if has_conf else math.nan,
            )
        )
    out.sort(key=lambda u: (math.isnan(u.start_s), 0.0 if math.isnan(u.start_s) else u.start_s,
                            u.speaker))
    return out


def _num(value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan
