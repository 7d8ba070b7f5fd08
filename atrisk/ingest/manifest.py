"""Read and validate ``recordings/sessions.csv`` into :class:`~atrisk.records.Session` records.

The manifest has one row per class with the columns ``session_id, student_id,
teacher_id, start_time`` and, optionally, ``teacher_path, student_path``.  A
missing file or a missing required column is a usage error
(:class:`~atrisk.errors.ManifestError`); a bad row is reported as a
:class:`~atrisk.errors.RowError` and skipped while the other rows are used.

Track discovery: a track whose path column is absent or empty is looked for as
``recordings/<session_id>/teacher.<ext>`` / ``student.<ext>`` with ``<ext>``
taken from :data:`AUDIO_EXTENSIONS` in that order (case-insensitive).  A track
that is not found is ``None`` in the :class:`Session` (not a row error: the
session is still processed with its other track; see
:func:`describe_missing_track`).  An explicit path is resolved against the
recordings folder when relative and kept even when the file does not exist, so
that the decoder later reports that exact file.

Example:
    >>> sessions, errors = read_manifest(Path("recordings"))  # doctest: +SKIP
    >>> [e.to_dict() for e in errors]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from atrisk.errors import ManifestError, RowError
from atrisk.records import TRACKS, Session, Speaker

#: File name of the manifest inside the recordings folder.
MANIFEST_NAME = "sessions.csv"

#: Columns every manifest must have.
REQUIRED_COLUMNS = ("session_id", "student_id", "teacher_id", "start_time")

#: Optional columns: explicit track files (relative to the recordings folder, or absolute).
OPTIONAL_COLUMNS = ("teacher_path", "student_path")

#: Longest field of a manifest row (characters); a longer one makes that row an error.
MAX_FIELD_CHARS = 4096
#: Fields up to this size are read (csv's default limit, 128 KiB, would reject the whole
#: file for one long field); past it the file is unreadable.
CSV_FIELD_LIMIT = 1 << 26


def allow_long_csv_fields() -> None:
    """Raise the csv module's field size limit to :data:`CSV_FIELD_LIMIT` (never lower it).

    The limit is process-wide; readers then reject an oversized row themselves, as a
    row error, instead of the csv module rejecting the whole file.
    """
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


#: Extensions tried, in this order, when a track file is discovered.
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".mkv", ".webm", ".mov",
)


def parse_start_time(value: str) -> datetime:
    """Parse an ISO 8601 time; a naive time is taken as UTC, an aware one is converted to UTC.

    Args:
        value: Text such as ``2024-03-01T15:30:00``, ``2024-03-01 15:30+08:00`` or
            ``2024-03-01T07:30:00Z``.

    Returns:
        A timezone-aware UTC datetime.

    Raises:
        ValueError: When ``value`` is not an ISO 8601 date/time.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty start_time")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _track_index(folder: Path) -> dict[str, dict[str, str]]:
    """Map ``track -> {extension: file name}`` for the audio files in ``folder`` (one scandir)."""
    found: dict[str, dict[str, str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.rpartition(".")
                if not dot or stem.lower() not in TRACKS:
                    continue
                ext = "." + ext.lower()
                if ext not in AUDIO_EXTENSIONS:
                    continue
                try:
                    if not entry.is_file():
                        continue
                except OSError:
                    continue
                found.setdefault(stem.lower(), {}).setdefault(ext, entry.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return {}
    return found


def find_track(recordings: Path, session_id: str, track: Speaker) -> Path | None:
    """Look for ``recordings/<session_id>/<track>.<ext>`` (first of :data:`AUDIO_EXTENSIONS`).

    Args:
        recordings: The recordings folder.
        session_id: The session (its folder name).
        track: ``"teacher"`` or ``"student"``.

    Returns:
        The file, or ``None`` when there is none.
    """
    folder = Path(recordings) / session_id
    return _pick(_track_index(folder).get(track, {}), folder)


def _pick(by_ext: dict[str, str], folder: Path) -> Path | None:
    for ext in AUDIO_EXTENSIONS:
        if ext in by_ext:
            return folder / by_ext[ext]
    return None


def describe_missing_track(recordings: Path | str, session_id: str, track: Speaker) -> str:
    """Return the message reported when a session has no file for ``track``.

    Args:
        recordings: The recordings folder.
        session_id: The session.
        track: ``"teacher"`` or ``"student"``.

    Returns:
        For example ``"recordings/s3/student.*: no student track found (looked for
        .wav, .flac, ...)"``.
    """
    where = Path(recordings) / session_id / f"{track}.*"
    return f"{where}: no {track} track found (looked for {', '.join(AUDIO_EXTENSIONS)})"


def _check_session_id(session_id: str) -> str | None:
    if not session_id:
        return "empty session_id"
    if session_id in {".", ".."} or "/" in session_id or "\\" in session_id:
        return f"session_id {session_id!r} cannot be used as a folder name"
    return None


def iter_manifest(
    recordings: Path | str, known_students: set[str] | None = None
) -> Iterator[Session | RowError]:
    """Stream the manifest: a :class:`Session` per good row, a :class:`RowError` per bad one.

    Args:
        recordings: The recordings folder holding ``sessions.csv``.
        known_students: When given, a row whose student is not in this set is a row error.

    Yields:
        Sessions and row errors in file order.

    Raises:
        ManifestError: When ``sessions.csv`` is missing, unreadable, not CSV, or lacks
            required columns.
    """
    recordings = Path(recordings)
    path = recordings / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path}: manifest not found; a recordings folder needs a {MANIFEST_NAME} with "
            f"columns {', '.join(REQUIRED_COLUMNS)}"
        )
    source = str(path)
    allow_long_csv_fields()
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise ManifestError(f"{path}: file is empty (no header line)")
            columns = [h.strip() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ManifestError(
                    f"{path}: missing required column(s) {', '.join(missing)} "
                    f"(found: {', '.join(columns) or 'none'})"
                )
            pos = {c: columns.index(c) for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
                   if c in columns}
            seen: dict[str, int] = {}
            prev_end = reader.line_num
            for fields in reader:
                line = prev_end + 1  # first line of this record
                prev_end = reader.line_num
                if not fields or not any(f.strip() for f in fields):
                    continue
                yield _row(recordings, source, line, fields, columns, pos, seen, known_students)
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not valid UTF-8 text (byte {exc.start}: {exc.reason}); "
            "save the manifest as UTF-8 CSV"
        ) from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _row(
    recordings: Path,
    source: str,
    line: int,
    fields: list[str],
    columns: list[str],
    pos: dict[str, int],
    seen: dict[str, int],
    known_students: set[str] | None,
) -> Session | RowError:
    def get(name: str) -> str:
        i = pos.get(name)
        return fields[i].strip() if i is not None and i < len(fields) else ""

    # a NUL byte (it cannot be in a file name) or a huge field makes the row an error
    bad = [f"{_column(columns, i)} contains a NUL byte" for i, f in enumerate(fields)
           if "\x00" in f]
    bad += [f"{_column(columns, i)} has {len(f)} characters (at most {MAX_FIELD_CHARS})"
            for i, f in enumerate(fields) if len(f) > MAX_FIELD_CHARS]
    if bad:
        sid = get("session_id")
        ok_id = sid and "\x00" not in sid and len(sid) <= MAX_FIELD_CHARS
        return RowError(source, line, "; ".join(bad) + "; row skipped",
                        key=sid if ok_id else None)

    session_id = get("session_id")
    reasons: list[str] = []
    if len(fields) > len(columns):
        reasons.append(f"has {len(fields)} fields but the header has {len(columns)}")
    bad_id = _check_session_id(session_id)
    if bad_id:
        reasons.append(bad_id)
    elif session_id in seen:
        reasons.append(f"duplicate session_id {session_id!r} (first on line {seen[session_id]})")
    else:
        seen[session_id] = line
    student_id, teacher_id = get("student_id"), get("teacher_id")
    if not student_id:
        reasons.append("empty student_id")
    elif known_students is not None and student_id not in known_students:
        reasons.append(f"unknown student {student_id!r} (not in logs/students.csv)")
    if not teacher_id:
        reasons.append("empty teacher_id")
    start_text = get("start_time")
    start_time = None
    try:
        start_time = parse_start_time(start_text)
    except ValueError:
        reasons.append(
            f"start_time {start_text!r} is not an ISO 8601 date/time (e.g. 2024-03-01T15:30:00Z)"
            if start_text else "empty start_time"
        )
    if reasons:
        return RowError(source, line, "; ".join(reasons), key=session_id or None)

    paths: dict[str, Path | None] = {}
    index: dict[str, dict[str, str]] | None = None
    folder = recordings / session_id
    for track in TRACKS:
        given = get(f"{track}_path")
        if given:
            p = Path(given).expanduser()
            paths[track] = p if p.is_absolute() else recordings / p
        else:
            if index is None:
                index = _track_index(folder)
            paths[track] = _pick(index.get(track, {}), folder)
    return Session(
        session_id=session_id,
        student_id=student_id,
        teacher_id=teacher_id,
        start_time=start_time,
        teacher_path=paths["teacher"],
        student_path=paths["student"],
    )


def _column(columns: list[str], i: int) -> str:
    return columns[i] if i < len(columns) and columns[i] else f"field {i + 1}"


def read_manifest(
    recordings: Path | str, known_students: set[str] | None = None
) -> tuple[list[Session], list[RowError]]:
    """Read ``recordings/sessions.csv`` into sessions and row errors.

    Args:
        recordings: The recordings folder holding ``sessions.csv``.
        known_students: When given (the ids of ``logs/students.csv``), a row whose
            student is not in the set is a row error.

    Returns:
        ``(sessions, errors)``: the good rows as :class:`Session` records, in file order,
        and one :class:`RowError` per skipped row (``row`` = 1-based line, header = 1).

    Raises:
        ManifestError: When ``sessions.csv`` is missing, unreadable, not CSV, or lacks
            required columns.
    """
    sessions: list[Session] = []
    errors: list[RowError] = []
    for item in iter_manifest(recordings, known_students):
        (errors if isinstance(item, RowError) else sessions).append(item)
    return sessions, errors
