"""Load an utterance (transcript) file: CSV, TSV or Parquet.

The file holds one row per utterance with the columns ``session_id, speaker,
start_s, end_s, text`` and, optionally, ``confidence`` and ``asr_model`` (see
:data:`atrisk.records.UTTERANCE_COLUMNS`).  Bad rows never stop the load: they
are reported as :class:`~atrisk.errors.RowError` and the rest is used.

Row rules (also in ``docs/features.md``):

* ``speaker`` must be ``teacher`` or ``student`` (any case, surrounding spaces
  ignored); anything else is a ``RowError`` and the row is dropped.
* ``session_id`` must not be empty (``RowError``, row dropped).
* ``start_s``/``end_s`` that are empty become ``NaN`` silently; values that are
  not finite numbers become ``NaN`` with a ``RowError`` and the row is **kept**
  (the time-based counters of that session/speaker become ``NaN``).
* ``end_s < start_s`` or ``start_s < 0`` is a ``RowError`` and the row is dropped.
* Rows whose text is empty or only whitespace are dropped without an error (an
  utterance without words carries nothing the counters can use).
* A CSV that is not valid UTF-8 is decoded with undecodable bytes replaced by
  U+FFFD, and one ``RowError`` (``row=None``) names the file and the lines.
* CSV rows with the wrong number of fields are a ``RowError`` and dropped.
* A field holding a NUL byte, a ``text`` longer than :data:`MAX_TEXT_CHARS` or
  another field longer than :data:`MAX_FIELD_CHARS` is a ``RowError`` and the row is
  dropped (the rest of the file is used).

Row numbers are 1-based file lines for CSV/TSV (header is line 1; a quoted
field spanning lines is numbered by its first line) and 1-based record numbers
for Parquet.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.errors import RowError, TranscriptError
from atrisk.ingest.manifest import allow_long_csv_fields
from atrisk.records import TRACKS, UTTERANCE_COLUMNS

#: Columns an utterance file must have.
REQUIRED_COLUMNS = ["session_id", "speaker", "start_s", "end_s", "text"]
#: Columns an utterance file may have (kept when present).
OPTIONAL_COLUMNS = ["confidence", "asr_model"]

#: Longest utterance text (characters); a longer row is dropped with a row error.
MAX_TEXT_CHARS = 100_000
#: Longest other field (characters).
MAX_FIELD_CHARS = 4096

_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_MAX_LINES_LISTED = 10


def load_utterances(path: Path | str) -> tuple[pd.DataFrame, list[RowError]]:
    """Load and clean an utterance file.

    Args:
        path: A ``.csv``, ``.tsv``, ``.parquet`` or ``.pq`` file with the columns
            ``session_id, speaker, start_s, end_s, text`` (``confidence`` and
            ``asr_model`` optional; other columns are ignored).

    Returns:
        ``(utterances, problems)``: the cleaned utterances with the columns of
        :data:`atrisk.records.UTTERANCE_COLUMNS` that the file has, in that
        order (``session_id``/``speaker``/``text`` strings, times and
        ``confidence`` float64), sorted by ``session_id`` then ``start_s``
        (missing times last) with a fresh ``RangeIndex``; and the list of
        problems found (dropped rows, rows kept with ``NaN`` times, an encoding
        problem).

    Raises:
        TranscriptError: When the file is missing, has an unsupported suffix,
            cannot be parsed, or lacks required columns.

    Example:
        >>> utts, problems = load_utterances("transcripts.csv")  # doctest: +SKIP
        >>> for p in problems:  # doctest: +SKIP
        ...     print(p)

    """
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(
            f"utterance file {path} does not exist; expected a CSV/TSV/Parquet file with the "
            f"columns {', '.join(REQUIRED_COLUMNS)}"
        )
    suffix = path.suffix.lower()
    problems: list[RowError] = []
    if suffix in _CSV_SUFFIXES:
        raw, line_numbers, read_problems = _read_delimited(path, _CSV_SUFFIXES[suffix])
        problems.extend(read_problems)
    elif suffix in _PARQUET_SUFFIXES:
        raw = _read_parquet(path)
        line_numbers = np.arange(1, len(raw) + 1)
    else:
        raise TranscriptError(
            f"utterance file {path} has an unsupported suffix {path.suffix!r}; "
            "use .csv, .tsv, .parquet or .pq"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise TranscriptError(
            f"utterance file {path} lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, raw.columns)) or 'no columns'} and needs "
            f"{', '.join(REQUIRED_COLUMNS)}"
        )
    df, row_problems = _clean(raw, line_numbers, str(path))
    problems.extend(row_problems)
    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    return df, problems


def _read_delimited(path: Path, delimiter: str) -> tuple[pd.DataFrame, np.ndarray, list[RowError]]:
    """Parse a CSV/TSV with exact line numbers; all values as strings."""
    data = path.read_bytes()
    problems: list[RowError] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", errors="replace")
        bad = []
        for i, line in enumerate(data.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(i)
        shown = ", ".join(map(str, bad[:_MAX_LINES_LISTED]))
        more = f" and {len(bad) - _MAX_LINES_LISTED} more" if len(bad) > _MAX_LINES_LISTED else ""
        problems.append(
            RowError(
                str(path),
                None,
                f"file is not valid UTF-8 (line(s) {shown}{more}); undecodable bytes were "
                "replaced with U+FFFD and the rows kept; save the file as UTF-8 to fix",
            )
        )
    allow_long_csv_fields()  # one long field is a row error, not an unreadable file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    prev_line = 0
    try:
        for record in reader:
            first_line = prev_line + 1
            prev_line = reader.line_num
            if not record or all(not f.strip() for f in record):
                continue  # blank line
            if header is None:
                header = [h.strip() for h in record]
                continue
            rows.append(record)
            lines.append(first_line)
    except csv.Error as exc:
        raise TranscriptError(
            f"utterance file {path}: cannot parse line {reader.line_num}: {exc}"
        ) from None
    if header is None:
        raise TranscriptError(
            f"utterance file {path} is empty; it needs a header with the columns "
            f"{', '.join(REQUIRED_COLUMNS)}"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise TranscriptError(
            f"utterance file {path} has duplicate column(s) {', '.join(dupes)} in its header"
        )
    good_rows, good_lines = [], []
    for record, line in zip(rows, lines, strict=True):
        if len(record) != len(header):
            problems.append(
                RowError(
                    str(path),
                    line,
                    f"row has {len(record)} field(s) but the header has {len(header)}; row dropped",
                )
            )
            continue
        good_rows.append(record)
        good_lines.append(line)
    df = pd.DataFrame(good_rows, columns=header, dtype=object)
    return df, np.asarray(good_lines, dtype=np.int64), problems


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise TranscriptError(f"utterance file {path} cannot be read as Parquet: {exc}") from None


def _as_text(value: object) -> str:
    """Turn a cell into a string ('' for missing); bytes are decoded leniently."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def _parse_time(value: object) -> tuple[float, bool]:
    """Return ``(seconds, ok)``; empty cells are ``(nan, True)``, garbage ``(nan, False)``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return math.nan, True
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return math.nan, True
        try:
            x = float(s)
        except ValueError:
            return math.nan, False
    else:
        try:
            x = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan, False
    if not math.isfinite(x):
        return math.nan, False
    return x, True


def _unusable_fields(row: dict[str, object]) -> str:
    """Name the fields of a row holding a NUL byte or too many characters ('' when none)."""
    bad = []
    for col, value in row.items():
        if not isinstance(value, str | bytes | bytearray):
            continue
        n = len(value)
        limit = MAX_TEXT_CHARS if col == "text" else MAX_FIELD_CHARS
        if n > limit:
            bad.append(f"{col} has {n} characters (at most {limit})")
        elif ("\x00" if isinstance(value, str) else b"\x00") in value:
            bad.append(f"{col} contains a NUL byte")
    return "; ".join(bad)


def _clean(
    raw: pd.DataFrame, line_numbers: np.ndarray, source: str
) -> tuple[pd.DataFrame, list[RowError]]:
    problems: list[RowError] = []
    has_conf = "confidence" in raw.columns
    has_model = "asr_model" in raw.columns
    records: dict[str, list] = {c: [] for c in UTTERANCE_COLUMNS}
    lines_kept: list[int] = []

    cols = {c: raw[c].tolist() for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in raw.columns}
    for i, line in enumerate(line_numbers.tolist()):
        unusable = _unusable_fields({c: v[i] for c, v in cols.items()})
        if unusable:
            problems.append(RowError(source, line, f"{unusable}; row dropped"))
            continue
        session_id = _as_text(cols["session_id"][i]).strip()
        if not session_id:
            problems.append(RowError(source, line, "empty session_id; row dropped"))
            continue
        speaker_raw = _as_text(cols["speaker"][i])
        speaker = speaker_raw.strip().lower()
        if speaker not in TRACKS:
            problems.append(
                RowError(
                    source,
                    line,
                    f"speaker {speaker_raw!r} is not 'teacher' or 'student'; row dropped",
                    key=session_id,
                )
            )
            continue
        times = {}
        bad_times = []
        for col in ("start_s", "end_s"):
            t, ok = _parse_time(cols[col][i])
            times[col] = t
            if not ok:
                bad_times.append(f"{col}={_as_text(cols[col][i])!r}")
        start, end = times["start_s"], times["end_s"]
        if not math.isnan(start) and start < 0:
            problems.append(
                RowError(source, line, f"start_s={start} is negative; row dropped", key=session_id)
            )
            continue
        if not math.isnan(start) and not math.isnan(end) and end < start:
            problems.append(
                RowError(
                    source,
                    line,
                    f"end_s={end} is before start_s={start}; row dropped",
                    key=session_id,
                )
            )
            continue
        text = _as_text(cols["text"][i])
        if not text.strip():
            continue  # no words: dropped silently (documented)
        if bad_times:
            problems.append(
                RowError(
                    source,
                    line,
                    f"non-numeric time(s) {', '.join(bad_times)} set to NaN; row kept, the "
                    "time-based counters of this session/speaker will be empty",
                    key=session_id,
                )
            )
        records["session_id"].append(session_id)
        records["speaker"].append(speaker)
        records["start_s"].append(start)
        records["end_s"].append(end)
        records["text"].append(text)
        if has_conf:
            c, _ = _parse_time(cols["confidence"][i])
            records["confidence"].append(c)
        if has_model:
            m = _as_text(cols["asr_model"][i])
            records["asr_model"].append(m if m else None)
        lines_kept.append(line)

    out_cols = REQUIRED_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in raw.columns]
    out_cols = [c for c in UTTERANCE_COLUMNS if c in out_cols]
    df = pd.DataFrame({c: records[c] for c in out_cols})
    for col in ("session_id", "speaker", "text"):
        df[col] = df[col].astype(str)
    for col in ("start_s", "end_s") + (("confidence",) if has_conf else ()):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    if has_model:
        df["asr_model"] = df["asr_model"].astype(object)
    df = df.sort_values(
        ["session_id", "start_s"], kind="mergesort", na_position="last"
    ).reset_index(drop=True)
    return df, problems
