"""Assembling the workspace tables from the sessions' results, in manifest order.

The one place both engines' results become the ``sessions``, ``prosody``, ``timing``,
``utterances`` and ``prosody_utterances`` tables, so a resumed run, an uninterrupted run
and either engine give the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.config import TextConfig
from atrisk.errors import RowError
from atrisk.extract.session import SessionResult
from atrisk.extractors.prosody import SESSION_INDEX, ProsodyBackend
from atrisk.extractors.prosody.segments import index_from_keys
from atrisk.extractors.text import text_features
from atrisk.extractors.timing import TIMING_COLUMNS
from atrisk.records import SESSION_COLUMNS, UTTERANCE_COLUMNS, Session, Utterance

#: Columns of the ``utterances`` table as written (the records' columns + word times).
UTTERANCE_TABLE_COLUMNS = [*UTTERANCE_COLUMNS, "words"]


def sessions_table(
    sessions: Sequence[Session],
    results: dict[str, SessionResult],
    row_errors: Iterable[RowError],
    recordings: Path,
) -> tuple[pd.DataFrame, list[dict]]:
    """Return the ``sessions`` table and one failure record per failed track.

    Args:
        sessions: Valid manifest sessions, in order (each has a result).
        results: Result per session id.
        row_errors: Invalid manifest rows; those naming a session id get a ``failed`` row.
        recordings: The recordings folder (names a track without a file).

    Returns:
        ``(table, failures)``; failures are ``failures.jsonl`` records (stage ``audio``).
    """
    rows, failures = [], []
    for s in sessions:
        r = results[s.session_id]
        rows.append({
            "session_id": s.session_id,
            "student_id": s.student_id,
            "teacher_id": s.teacher_id,
            "start_time": pd.Timestamp(s.start_time),
            "teacher_path": None if s.teacher_path is None else str(s.teacher_path),
            "student_path": None if s.student_path is None else str(s.student_path),
            "duration_s": r.duration_s,
            "status": r.status,
            "error": r.error,
        })
        for track, msg in r.track_errors.items():
            failures.append({
                "stage": "audio",
                "source": str(s.track_path(track) or recordings / s.session_id),
                "row": None,
                "key": s.session_id,
                "reason": msg,
                "track": track,
            })
    for e in row_errors:  # invalid manifest rows are kept in the table as failed
        if e.key and e.key not in results:
            rows.append({
                "session_id": e.key, "student_id": None, "teacher_id": None,
                "start_time": pd.NaT, "teacher_path": None, "student_path": None,
                "duration_s": np.nan, "status": "failed", "error": str(e),
            })
    table = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    table["start_time"] = pd.to_datetime(table["start_time"], utc=True)
    return table, failures


def prosody_table(frames: Iterable[pd.DataFrame], backend: ProsodyBackend) -> pd.DataFrame:
    """Return the per-track ``prosody`` table from the sessions' rows.

    Args:
        frames: Each session's rows (``SessionResult.prosody``, indexed ``(session_id,
            track)``) in manifest order; empty frames are skipped.
        backend: The run's prosody backend (feature names, backend name).

    Returns:
        Rows indexed ``(session_id, track)``, the functionals, and a string
        ``prosody_backend`` column (e.g. ``opensmile-eGeMAPSv02-2.6.0``); no rows (same
        columns) when there are none.
    """
    parts = [f for f in frames if len(f)]
    if parts:
        table = pd.concat(parts)
    else:
        table = backend.frame(None, pd.MultiIndex.from_arrays([[], []], names=SESSION_INDEX))
    return table.assign(prosody_backend=backend.backend_name)


def timing_table(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Return the per-track ``timing`` table from the sessions' rows.

    Args:
        frames: Each session's rows (``SessionResult.timing``, indexed ``(session_id,
            track)``) in manifest order; ``None`` or empty frames are skipped.

    Returns:
        Rows indexed ``(session_id, track)``, float columns
        :data:`~atrisk.extractors.timing.TIMING_COLUMNS`; no rows (same columns) when
        there are none.
    """
    parts = [f for f in frames if f is not None and len(f)]
    if parts:
        return pd.concat(parts).reindex(columns=TIMING_COLUMNS).astype("float64")
    index = pd.MultiIndex.from_arrays([[], []], names=SESSION_INDEX)
    return pd.DataFrame(np.empty((0, len(TIMING_COLUMNS))), index=index, columns=TIMING_COLUMNS)


def utterance_prosody_table(frames: Iterable[pd.DataFrame | None],
                            backend: ProsodyBackend) -> pd.DataFrame:
    """Return the ``prosody_utterances`` table from the sessions' per-utterance rows.

    Args:
        frames: Each session's rows (``SessionResult.utterance_prosody``) in manifest
            order; ``None`` for none.
        backend: The run's prosody backend (feature names, backend name).

    Returns:
        Rows indexed ``(session_id, speaker, start_s, end_s)``, the functionals, and a
        ``prosody_backend`` column; no rows (same columns) when there are none.
    """
    parts = [f for f in frames if f is not None and len(f)]
    table = pd.concat(parts) if parts else backend.frame(None, index_from_keys([]))
    table = table.astype("float64")
    table.attrs = {}
    return table.assign(prosody_backend=backend.backend_name)


def utterances_frame(utterances: Sequence[Utterance], asr_model: str) -> pd.DataFrame:
    """Return the ``utterances`` table for a list of records (word times as JSON text).

    Args:
        utterances: The records, in table order.
        asr_model: The ASR backend and model that made them (``asr_model`` column).

    Returns:
        One row per utterance, columns :data:`UTTERANCE_TABLE_COLUMNS`.
    """
    rows = [
        {
            "session_id": u.session_id,
            "speaker": u.speaker,
            "start_s": float(u.start_s),
            "end_s": float(u.end_s),
            "text": u.text,
            "confidence": float(u.confidence),
            "asr_model": asr_model,
            "words": json.dumps(
                [[w.text, round(w.start_s, 3), round(w.end_s, 3)] for w in u.words]
            ),
        }
        for u in utterances
    ]
    return pd.DataFrame(rows, columns=UTTERANCE_TABLE_COLUMNS)


def stack_text_rows(rows: dict[str, pd.DataFrame], ok_ids: list[str],
                    config: TextConfig) -> pd.DataFrame:
    """Put per-session text feature rows (computed by an engine) in manifest order.

    Args:
        rows: One-row frame per session id.
        ok_ids: Sessions that did not fail, in manifest order.
        config: Text settings (for the columns and dtypes of an empty table).

    Returns:
        The text feature table indexed by ``session_id``.
    """
    frames = [rows[sid] for sid in ok_ids if sid in rows]
    empty = text_features(utterances_frame([], ""), config, session_ids=[])
    if not frames:
        return empty
    return pd.concat(frames).astype(empty.dtypes.to_dict())
