"""Platform logs: the :class:`Logs` record, loaded and validated row by row.

Logs come from a folder of four CSV files (``students.csv``, ``orders.csv``,
``events.csv``, ``outcomes.csv``; :meth:`Logs.read`) or from tables a program holds
(:meth:`Logs.from_frames`); the exact schema is in ``docs/data.md``.  Every invalid row
is reported as a :class:`~atrisk.errors.RowError` (file or table, row, reason, student
id) and the valid rows are kept.  The out-of-class features computed from them live in
:mod:`atrisk.features.logs`.

Example:
    >>> logs = Logs.read("logs/")               # doctest: +SKIP
    >>> [e.to_dict() for e in logs.errors]      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.errors import LogValidationError, RowError

#: Event kinds the features use; other kinds are kept and ignored.
EVENT_KINDS = ("class", "follow_up", "reschedule", "satisfaction")
#: Outcome statuses.
STATUSES = ("dropout", "completion", "ongoing")
#: Required and optional columns per file.
SCHEMA: dict[str, dict[str, list[str]]] = {
    "students.csv": {"required": ["student_id", "enrolled_at"], "optional": ["grade"]},
    "orders.csv": {
        "required": [
            "order_id", "student_id", "ordered_at", "n_courses", "discount_ratio",
            "n_sales_conversations",
        ],
        "optional": [],
    },
    "events.csv": {
        "required": ["event_id", "student_id", "time", "kind"],
        "optional": ["teacher_id", "session_id", "words", "value"],
    },
    "outcomes.csv": {"required": ["student_id", "status", "status_time"], "optional": []},
}


@dataclass
class Logs:
    """The validated platform logs.

    Attributes:
        students: ``student_id`` (str), ``enrolled_at`` (UTC), ``grade`` (Int64, may be NA),
            and any other ``students.csv`` column as text (student attributes, e.g. for
            the fairness table; ``None`` when empty).
        orders: ``order_id``, ``student_id``, ``ordered_at`` (UTC), ``n_courses`` (int),
            ``discount_ratio`` (float in [0, 1]), ``n_sales_conversations`` (int).
        events: ``event_id``, ``student_id``, ``time`` (UTC), ``kind`` (lower case),
            ``teacher_id`` (str, ``""`` when empty), ``session_id`` (str, ``""`` when
            empty), ``words`` (float, NaN when empty), ``value`` (float, NaN when empty).
        outcomes: ``student_id``, ``status`` (``dropout``/``completion``/``ongoing``),
            ``status_time`` (UTC); at most one row per student.
        errors: The rows that were dropped, one :class:`RowError` each.

    Build it with :meth:`read` (a folder of CSV files) or :meth:`from_frames` (tables a
    program already holds); both validate the same way.

    Example:
        >>> logs = Logs.read("logs/")                     # doctest: +SKIP
        >>> [e.to_dict() for e in logs.errors]             # doctest: +SKIP
    """

    students: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame
    outcomes: pd.DataFrame
    errors: list[RowError] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path | str) -> Logs:
        """Load and validate the four log files of ``folder``.

        Invalid rows are dropped and reported; the other rows are kept.  A row is invalid
        when a time cannot be parsed, a count or ratio is negative, ``discount_ratio`` is
        above 1, an id is empty or repeated, the student is not in ``students.csv``, or
        the outcome status is not one of ``dropout``, ``completion``, ``ongoing``.  Events
        of an unknown ``kind`` are kept (the features ignore them).

        Args:
            folder: Folder with ``students.csv``, ``orders.csv``, ``events.csv`` and
                ``outcomes.csv`` (columns: :data:`SCHEMA`, ``docs/data.md``).

        Returns:
            The logs, times as ``datetime64[ns, UTC]``, with ``errors`` listing the dropped
            rows (``source`` is the file, ``row`` its line number; the header is line 1).

        Raises:
            LogValidationError: When a file is missing, unreadable, or lacks required
                columns.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise LogValidationError(f"{folder}: logs folder does not exist")
        raw = {name: _read(folder, name) for name in SCHEMA}
        return _validate(raw, {name: str(folder / name) for name in SCHEMA})

    @classmethod
    def from_frames(cls, students: pd.DataFrame, orders: pd.DataFrame | None = None,
                    events: pd.DataFrame | None = None,
                    outcomes: pd.DataFrame | None = None) -> Logs:
        """Validate log tables held in memory (e.g. read from a tutoring backend's database).

        The frames have the columns of the CSV files (:data:`SCHEMA`); values may be
        strings or typed (numbers, datetimes; naive times are UTC).  Validation and the
        kept rows are those of :meth:`read` on the same data.

        Args:
            students: ``student_id``, ``enrolled_at`` (+ ``grade``).
            orders: ``order_id``, ``student_id``, ``ordered_at``, ``n_courses``,
                ``discount_ratio``, ``n_sales_conversations``; ``None``: no orders.
            events: ``event_id``, ``student_id``, ``time``, ``kind`` (+ ``teacher_id``,
                ``session_id``, ``words``, ``value``); ``None``: no events.
            outcomes: ``student_id``, ``status``, ``status_time``; ``None``: none known.

        Returns:
            The logs; ``errors`` names each dropped row by table (``"events frame"``) and
            0-based position in that frame (``row``).

        Raises:
            LogValidationError: When a frame is not a DataFrame or lacks required columns.
        """
        given = {"students.csv": students, "orders.csv": orders, "events.csv": events,
                 "outcomes.csv": outcomes}
        raw = {name: _frame_text(frame, name) for name, frame in given.items()}
        return _validate(raw, {name: f"{name[:-4]} frame" for name in SCHEMA})

    def latest_time(self) -> pd.Timestamp | None:
        """Return the latest time found in orders, events and outcomes (``None`` when empty)."""
        times = [
            self.orders["ordered_at"].max() if len(self.orders) else pd.NaT,
            self.events["time"].max() if len(self.events) else pd.NaT,
            self.outcomes["status_time"].max() if len(self.outcomes) else pd.NaT,
        ]
        times = [t for t in times if not pd.isna(t)]
        return max(times) if times else None


def to_utc(values: pd.Series | pd.Index | list | str | pd.Timestamp) -> pd.Series:
    """Parse times to timezone-aware UTC (nanosecond) timestamps; bad values become NaT.

    Naive times are taken as UTC; times with an offset are converted to UTC.

    Args:
        values: Strings, datetimes or timestamps.

    Returns:
        A ``datetime64[ns, UTC]`` Series (same index as ``values`` when it is a Series).
    """
    if isinstance(values, (str, pd.Timestamp)) or np.isscalar(values):
        values = [values]
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        out = s.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(s.dtype):
        out = s.dt.tz_localize("UTC")
    else:
        out = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
    return out.dt.as_unit("ns")


def _read(logs_dir: Path, name: str) -> pd.DataFrame:
    path = logs_dir / name
    if not path.is_file():
        raise LogValidationError(
            f"{path}: file is missing; the logs folder needs {', '.join(SCHEMA)} "
            f"(see docs/data.md#logs)"
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LogValidationError(f"{path}: file is empty (it needs a header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LogValidationError(f"{path}: cannot parse as CSV: {exc}") from None
    df.columns = _checked_columns(df, name, str(path))
    for col in SCHEMA[name]["optional"]:
        if col not in df.columns:
            df[col] = ""
    keep = _kept_columns(name, list(df.columns))
    df = df[keep].apply(lambda s: s.str.strip())
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")  # header is line 1
    return df


def _kept_columns(name: str, columns: list[str]) -> list[str]:
    """Return the schema columns of ``name``, plus, for ``students.csv``, its other columns.

    Extra ``students.csv`` columns are student attributes (kept as text), e.g. for the
    fairness table of the evaluation (``training.group_columns``).
    """
    keep = SCHEMA[name]["required"] + SCHEMA[name]["optional"]
    if name == "students.csv":
        keep = keep + [c for c in columns if c not in keep and c]
    return list(dict.fromkeys(keep))


def _checked_columns(df: pd.DataFrame, name: str, source: str) -> list[str]:
    """Return the stripped column names of log table ``name``; raise when one is missing."""
    columns = [str(c).strip() for c in df.columns]
    missing = [c for c in SCHEMA[name]["required"] if c not in columns]
    if missing:
        raise LogValidationError(
            f"{source}: missing column(s) {', '.join(missing)}; required columns are "
            f"{', '.join(SCHEMA[name]['required'])}"
        )
    return columns


def _frame_text(frame: pd.DataFrame | None, name: str) -> pd.DataFrame:
    """Return a log table given as a DataFrame as the stripped text :func:`_read` gives.

    Times become ISO 8601 text (naive ones are taken as UTC later), missing values ``""``;
    rows are numbered by their 0-based position.
    """
    source = f"{name[:-4]} frame"
    if frame is None:
        frame = pd.DataFrame(columns=SCHEMA[name]["required"])
    if not isinstance(frame, pd.DataFrame):
        raise LogValidationError(f"{source}: expected a pandas DataFrame, got "
                                 f"{type(frame).__name__}")
    frame = frame.reset_index(drop=True)
    frame.columns = _checked_columns(frame, name, source)
    out = {}
    for col in _kept_columns(name, list(frame.columns)):
        if col not in frame.columns:
            out[col] = pd.Series("", index=frame.index, dtype=object)
            continue
        s = frame[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
            text = s.map(lambda v: "" if pd.isna(v) else v.isoformat())
        else:
            text = s.map(lambda v: "" if v is None or (not isinstance(v, str) and pd.isna(v))
                         else str(v))
        out[col] = text.astype(object).str.strip()
    df = pd.DataFrame(out, index=pd.RangeIndex(len(frame), name="row"))
    return df



class _Checker:
    """Collect the first reason each row is invalid (vectorised masks).

    A reason is a string or a function of the offending rows (called on those rows
    only, so that building messages costs nothing for valid rows).
    """

    def __init__(self, df: pd.DataFrame, source: str):
        self.df = df
        self.source = source
        self.reason = pd.Series(pd.NA, index=df.index, dtype=object)

    def flag(self, mask: pd.Series, reason) -> None:
        mask = mask.fillna(False).astype(bool) & self.reason.isna()
        if not mask.any():
            return
        if callable(reason):
            self.reason[mask] = reason(self.df.loc[mask]).astype(object)
        else:
            self.reason[mask] = reason

    def time(self, col: str) -> pd.Series:
        parsed = to_utc(self.df[col])
        raw = self.df[col]
        self.flag(parsed.isna() & (raw == ""), f"{col} is empty")
        self.flag(parsed.isna(), lambda d: f"bad timestamp in {col}: " + d[col].map(repr))
        return parsed

    def number(self, col: str, *, integer: bool, optional: bool = False,
               low: float | None = 0.0, high: float | None = None) -> pd.Series:
        raw = self.df[col]
        num = pd.to_numeric(raw, errors="coerce")
        empty = raw == ""
        if not optional:
            self.flag(empty, f"{col} is empty")
        self.flag(num.isna() & ~empty, lambda d: f"{col} is not a number: " + d[col].map(repr))
        if integer:
            self.flag(num.notna() & (num % 1 != 0),
                      lambda d: f"{col} is not a whole number: " + d[col])
        if low is not None:
            word = "negative" if low == 0 else f"below {low:g}"
            self.flag(num < low, lambda d: f"{col} is {word}: " + d[col])
        if high is not None:
            self.flag(num > high, lambda d: f"{col} is above {high:g}: " + d[col])
        return num.astype(float)

    def nonempty(self, col: str) -> None:
        self.flag(self.df[col] == "", f"{col} is empty")

    def known_student(self, known: pd.Index) -> None:
        self.flag(~self.df["student_id"].isin(known),
                  lambda d: "unknown student " + d["student_id"].map(repr)
                  + " (not in students.csv)")

    def unique(self, col: str) -> None:
        valid = self.reason.isna()
        ids = self.df[col].where(valid)
        dup = ids.duplicated(keep="first") & valid
        if not dup.any():
            return
        first = ids[valid & ids.isin(ids[dup])]
        first_line = pd.Series(first.index, index=first.to_numpy())
        first_line = first_line[~first_line.index.duplicated(keep="first")]
        self.flag(dup, lambda d: "duplicate " + col + " " + d[col].map(repr)
                  + " (first on line " + d[col].map(first_line).astype(str) + ")")

    def finish(self, errors: list[RowError]) -> pd.DataFrame:
        bad = self.reason.notna()
        sids = self.df["student_id"] if "student_id" in self.df else None
        for line, reason in self.reason[bad].items():
            key = sids.at[line] if sids is not None else None
            errors.append(RowError(self.source, int(line), str(reason), key=key or None))
        return self.df.loc[~bad]


def _validate(raw: dict[str, pd.DataFrame], sources: dict[str, str]) -> Logs:
    """Check the text tables of :data:`SCHEMA` row by row and return the typed :class:`Logs`.

    Args:
        raw: Stripped text per file name, indexed by the row reference (line or position).
        sources: How errors name each table (a file path or ``"<table> frame"``).
    """
    errors: list[RowError] = []

    # students
    c = _Checker(raw["students.csv"], sources["students.csv"])
    c.nonempty("student_id")
    enrolled = c.time("enrolled_at")
    grade = c.number("grade", integer=True, optional=True, low=1, high=12)
    c.unique("student_id")
    df = c.finish(errors)
    students = pd.DataFrame({
        "student_id": df["student_id"].astype(str),
        "enrolled_at": enrolled.loc[df.index],
        "grade": grade.loc[df.index].astype("Int64"),
    })
    for col in df.columns:  # other students.csv columns: attributes, as text (NA when empty)
        if col not in students.columns:
            students[col] = df[col].astype(object).where(df[col] != "", None)
    students = students.reset_index(drop=True)
    known = pd.Index(students["student_id"])

    # orders
    c = _Checker(raw["orders.csv"], sources["orders.csv"])
    c.nonempty("order_id")
    c.known_student(known)
    ordered = c.time("ordered_at")
    n_courses = c.number("n_courses", integer=True)
    discount = c.number("discount_ratio", integer=False, high=1.0)
    n_sales = c.number("n_sales_conversations", integer=True)
    c.unique("order_id")
    df = c.finish(errors)
    orders = pd.DataFrame({
        "order_id": df["order_id"].astype(str),
        "student_id": df["student_id"].astype(str),
        "ordered_at": ordered.loc[df.index],
        "n_courses": n_courses.loc[df.index].astype("int64"),
        "discount_ratio": discount.loc[df.index],
        "n_sales_conversations": n_sales.loc[df.index].astype("int64"),
    }).reset_index(drop=True)

    # events
    c = _Checker(raw["events.csv"], sources["events.csv"])
    c.nonempty("event_id")
    c.known_student(known)
    etime = c.time("time")
    c.nonempty("kind")
    words = c.number("words", integer=True, optional=True)
    value = c.number("value", integer=False, optional=True, low=None)
    c.unique("event_id")
    df = c.finish(errors)
    events = pd.DataFrame({
        "event_id": df["event_id"].astype(str),
        "student_id": df["student_id"].astype(str),
        "time": etime.loc[df.index],
        "kind": df["kind"].str.lower().astype(str),
        "teacher_id": df["teacher_id"].astype(str),
        "session_id": df["session_id"].astype(str),
        "words": words.loc[df.index],
        "value": value.loc[df.index],
    }).reset_index(drop=True)

    # outcomes
    c = _Checker(raw["outcomes.csv"], sources["outcomes.csv"])
    c.known_student(known)
    status = c.df["status"].str.lower()
    c.flag(~status.isin(STATUSES), lambda d: "bad status " + d["status"].map(repr)
           + " (use dropout, completion or ongoing)")
    stime = c.time("status_time")
    c.unique("student_id")
    df = c.finish(errors)
    outcomes = pd.DataFrame({
        "student_id": df["student_id"].astype(str),
        "status": status.loc[df.index].astype(str),
        "status_time": stime.loc[df.index],
    }).reset_index(drop=True)

    return Logs(students, orders, events, outcomes, errors)


def load_logs(logs_dir: Path | str) -> Logs:
    """Load and validate the four log files of ``logs_dir`` (:meth:`Logs.read`).

    Args:
        logs_dir: Folder with ``students.csv``, ``orders.csv``, ``events.csv`` and
            ``outcomes.csv``.

    Returns:
        The validated :class:`Logs`.

    Raises:
        LogValidationError: When a file is missing, unreadable, or lacks required columns.
    """
    return Logs.read(logs_dir)
