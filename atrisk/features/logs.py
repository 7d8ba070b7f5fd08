"""Platform logs: loading with row-level validation, and out-of-class features.

The ``logs/`` folder holds four CSV files (``students.csv``, ``orders.csv``,
``events.csv``, ``outcomes.csv``); see ``docs/data_logs.md`` for the exact schema.
:func:`load_logs` parses them with vectorised pandas code, reports every invalid row
as a :class:`~atrisk.errors.RowError` (file, 1-based line number with the header on
line 1, reason, student id) and keeps the valid rows.

:func:`out_of_class_features` computes, for each ``<student, t>`` key, the pre-class
(orders) and post-class (follow-ups, reschedules, satisfaction) features from rows
whose time is strictly before ``t`` (prefix ``out_``).

Example:
    >>> logs = load_logs(Path("logs"))          # doctest: +SKIP
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
#: One day, the unit of every ``days`` feature.
DAY = pd.Timedelta(days=1)

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
        students: ``student_id`` (str), ``enrolled_at`` (UTC), ``grade`` (Int64, may be NA).
        orders: ``order_id``, ``student_id``, ``ordered_at`` (UTC), ``n_courses`` (int),
            ``discount_ratio`` (float in [0, 1]), ``n_sales_conversations`` (int).
        events: ``event_id``, ``student_id``, ``time`` (UTC), ``kind`` (lower case),
            ``teacher_id`` (str, ``""`` when empty), ``session_id`` (str, ``""`` when
            empty), ``words`` (float, NaN when empty), ``value`` (float, NaN when empty).
        outcomes: ``student_id``, ``status`` (``dropout``/``completion``/``ongoing``),
            ``status_time`` (UTC); at most one row per student.
        errors: The rows that were dropped, one :class:`RowError` each.
    """

    students: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame
    outcomes: pd.DataFrame
    errors: list[RowError] = field(default_factory=list)

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
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in SCHEMA[name]["required"] if c not in df.columns]
    if missing:
        raise LogValidationError(
            f"{path}: missing column(s) {', '.join(missing)}; required columns are "
            f"{', '.join(SCHEMA[name]['required'])}"
        )
    for col in SCHEMA[name]["optional"]:
        if col not in df.columns:
            df[col] = ""
    keep = SCHEMA[name]["required"] + SCHEMA[name]["optional"]
    df = df[keep].apply(lambda s: s.str.strip())
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")  # header is line 1
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


def load_logs(logs_dir: Path | str) -> Logs:
    """Load and validate the four log files of ``logs_dir``.

    Invalid rows are dropped and reported; the other rows are kept.  A row is invalid
    when a time cannot be parsed, a count or ratio is negative, ``discount_ratio`` is
    above 1, an id is empty or repeated, the student is not in ``students.csv``, or the
    outcome status is not one of ``dropout``, ``completion``, ``ongoing``.  Events of an
    unknown ``kind`` are kept (the features ignore them).

    Args:
        logs_dir: Folder with ``students.csv``, ``orders.csv``, ``events.csv`` and
            ``outcomes.csv``.

    Returns:
        The :class:`Logs`, times as ``datetime64[ns, UTC]``, with ``errors`` listing the
        dropped rows (line numbers count the header as line 1).

    Raises:
        LogValidationError: When a file is missing, unreadable, or lacks required columns.
    """
    logs_dir = Path(logs_dir)
    if not logs_dir.is_dir():
        raise LogValidationError(f"{logs_dir}: logs folder does not exist")
    raw = {name: _read(logs_dir, name) for name in SCHEMA}
    errors: list[RowError] = []

    # students
    c = _Checker(raw["students.csv"], str(logs_dir / "students.csv"))
    c.nonempty("student_id")
    enrolled = c.time("enrolled_at")
    grade = c.number("grade", integer=True, optional=True, low=1, high=12)
    c.unique("student_id")
    df = c.finish(errors)
    students = pd.DataFrame({
        "student_id": df["student_id"].astype(str),
        "enrolled_at": enrolled.loc[df.index],
        "grade": grade.loc[df.index].astype("Int64"),
    }).reset_index(drop=True)
    known = pd.Index(students["student_id"])

    # orders
    c = _Checker(raw["orders.csv"], str(logs_dir / "orders.csv"))
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
    c = _Checker(raw["events.csv"], str(logs_dir / "events.csv"))
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
    c = _Checker(raw["outcomes.csv"], str(logs_dir / "outcomes.csv"))
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


# ----------------------------------------------------------------------------- helpers


def asof(left: pd.DataFrame, left_by: str, left_time: str, right: pd.DataFrame,
         right_by: str, right_time: str, values: list[str]) -> pd.DataFrame:
    """For each left row, take ``values`` of the latest right row with time < left time.

    A vectorised "as of" lookup (``pandas.merge_asof`` with strict inequality) within
    groups (``left_by`` = ``right_by``).  Left rows with a missing key or time get NaN.

    Args:
        left: Query rows; their index is kept in the result.
        left_by: Group column of ``left`` (e.g. ``student_id``).
        left_time: Time column of ``left`` (UTC).
        right: Table to look up.
        right_by: Group column of ``right``.
        right_time: Time column of ``right`` (UTC).
        values: Columns of ``right`` to return.

    Returns:
        A DataFrame with index ``left.index`` and columns ``values`` (NaN when no right
        row of the group is strictly earlier).
    """
    q = left[[left_by, left_time]].copy()
    q["_row"] = np.arange(len(q))
    q = q[q[left_by].notna() & q[left_time].notna()]
    if q.empty or right.empty:
        return pd.DataFrame(
            {v: pd.Series(index=left.index, dtype=right[v].dtype) for v in values},
            index=left.index,
        )
    q = q.rename(columns={left_by: "_by", left_time: "_t"})
    q["_by"] = q["_by"].astype(str)
    q["_t"] = q["_t"].dt.as_unit("ns")
    r = pd.DataFrame({"_by": right[right_by].astype(str), "_t": right[right_time]})
    names = [f"_v{i}" for i in range(len(values))]
    for name, v in zip(names, values, strict=True):
        r[name] = right[v]
    r = r[r["_t"].notna()]
    r["_t"] = r["_t"].dt.as_unit("ns")
    r = r.sort_values("_t", kind="stable")
    merged = pd.merge_asof(
        q.sort_values("_t", kind="stable"), r, on="_t", by="_by", allow_exact_matches=False,
    )
    merged = merged.set_index("_row").reindex(np.arange(len(left)))
    result = merged[names]
    result.columns = values
    result.index = left.index
    return result


def cumulative(table: pd.DataFrame, by: str, time: str, weights: str | None = None,
               name: str = "_cum") -> pd.DataFrame:
    """Sort ``table`` by (``by``, ``time``) and add a running count (or sum of ``weights``).

    Combined with :func:`asof`, ``count_before(t)`` is the running value of the latest
    row strictly before ``t``; counts in a window ``[a, t)`` are differences of two lookups.

    Args:
        table: Rows with a group column ``by`` and a UTC time column ``time``.
        by: Group column.
        time: Time column.
        weights: Optional column summed instead of counting rows.
        name: Name of the running column.

    Returns:
        A sorted copy with the running column ``name``.
    """
    t = table.sort_values([by, time], kind="stable").copy()
    if weights is None:
        t[name] = t.groupby(by, sort=False).cumcount().astype(float) + 1.0
    else:
        t[name] = t[weights].astype(float).fillna(0.0).groupby(t[by], sort=False).cumsum()
    return t


def count_before(keys: pd.DataFrame, table: pd.DataFrame, time_col: str = "t",
                 by: str = "student_id", table_time: str = "time",
                 weights: str | None = None) -> pd.Series:
    """Count rows of ``table`` (same ``by``) with time strictly before ``keys[time_col]``.

    Args:
        keys: Query rows with columns ``by`` and ``time_col``.
        table: Rows to count, with ``by`` and ``table_time``.
        time_col: Time column of ``keys``.
        by: Group column present in both.
        table_time: Time column of ``table``.
        weights: Optional column of ``table`` summed instead of counting rows.

    Returns:
        Float counts aligned with ``keys.index`` (0 where none).
    """
    cum = cumulative(table, by, table_time, weights)
    return asof(keys, by, time_col, cum, by, table_time, ["_cum"])["_cum"].fillna(0.0)


def days_between(later: pd.Series, earlier: pd.Series) -> pd.Series:
    """Return ``(later - earlier)`` in (fractional) days as floats (NaN where missing)."""
    return (later - earlier) / DAY


# ----------------------------------------------------------------------------- features


def out_of_class_features(logs: Logs, keys: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """Pre-class and post-class features for each ``<student, t>`` key (prefix ``out_``).

    Only rows with time strictly before ``t`` are used.

    Columns:
        - ``out_days_since_order``: days from the latest order before ``t`` to ``t``.
        - ``out_order_n_courses``, ``out_order_n_sales_conversations``,
          ``out_order_discount_ratio``: of that order (NaN when none).
        - ``out_courses_ordered``: total courses ordered before ``t``.
        - ``out_grade``: the student's grade (students.csv).
        - ``out_days_since_enrolment``: days from ``enrolled_at`` to ``t``.
        - ``out_follow_ups``: follow-ups since the student's first class (and before ``t``).
        - ``out_last_follow_up_words``: words of the latest follow-up report before ``t``.
        - ``out_reschedules``: reschedules before ``t``.
        - ``out_follow_up_ratio``: ``out_follow_ups`` / classes before ``t`` (NaN when 0).
        - ``out_satisfaction``: the latest satisfaction value before ``t``.

    Args:
        logs: The loaded logs.
        keys: ``student_id`` and ``t`` (UTC) columns.
        classes: The class table (``student_id``, ``time``, ``teacher_id``), see
            :func:`atrisk.features.time_variant.class_table`.

    Returns:
        A float DataFrame aligned with ``keys.index``.
    """
    t = keys["t"]
    out = pd.DataFrame(index=keys.index)
    # pre-class: orders
    last = asof(keys, "student_id", "t", logs.orders, "student_id", "ordered_at",
                ["ordered_at", "n_courses", "n_sales_conversations", "discount_ratio"])
    out["out_days_since_order"] = days_between(t, last["ordered_at"])
    out["out_order_n_courses"] = last["n_courses"].astype(float)
    out["out_order_n_sales_conversations"] = last["n_sales_conversations"].astype(float)
    out["out_order_discount_ratio"] = last["discount_ratio"].astype(float)
    out["out_courses_ordered"] = count_before(keys, logs.orders, table_time="ordered_at",
                                              weights="n_courses")
    st = logs.students.set_index("student_id")
    out["out_grade"] = keys["student_id"].map(st["grade"]).astype(float)
    out["out_days_since_enrolment"] = days_between(t, keys["student_id"].map(st["enrolled_at"]))

    # post-class
    ev = logs.events
    fu = ev[ev["kind"] == "follow_up"]
    first_class = keys["student_id"].map(classes.groupby("student_id")["time"].min())
    fu_now = count_before(keys, fu)
    k2 = pd.DataFrame({"student_id": keys["student_id"], "t": first_class}, index=keys.index)
    fu_at_first = count_before(k2, fu)
    follow_ups = (fu_now - fu_at_first).where(first_class < t, 0.0)
    out["out_follow_ups"] = follow_ups
    out["out_last_follow_up_words"] = asof(keys, "student_id", "t", fu, "student_id", "time",
                                           ["words"])["words"].astype(float)
    out["out_reschedules"] = count_before(keys, ev[ev["kind"] == "reschedule"])
    n_classes = count_before(keys, classes)
    out["out_follow_up_ratio"] = (follow_ups / n_classes).where(n_classes > 0)
    sat = ev[(ev["kind"] == "satisfaction") & ev["value"].notna()]
    out["out_satisfaction"] = asof(keys, "student_id", "t", sat, "student_id", "time",
                                   ["value"])["value"].astype(float)
    return out.astype(float)
