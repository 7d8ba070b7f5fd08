"""Time-variant features: look-back windows and teacher history (prefix ``time_``).

Every value for a ``<student, t>`` key uses rows whose time is strictly before ``t``.
All lookups are vectorised (``merge_asof`` on running counts), so the cost grows with
the number of keys plus the number of events, not their product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atrisk.features.logs import DAY, Logs, asof, count_before, cumulative, days_between, to_utc

#: Window (days) of the mean gap between classes.
GAP_WINDOW_DAYS = 30


def class_table(logs: Logs, sessions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return every class: ``class`` events plus recorded sessions not linked to one.

    A session whose ``session_id`` appears on a ``class`` event is the same class and
    is counted once.

    Args:
        logs: The loaded logs.
        sessions: Optional sessions table (``session_id``, ``student_id``,
            ``teacher_id``, ``start_time``).

    Returns:
        DataFrame with ``student_id`` (str), ``time`` (UTC) and ``teacher_id`` (str or
        NaN when unknown), sorted by student and time.
    """
    ev = logs.events[logs.events["kind"] == "class"]
    parts = [ev[["student_id", "time", "teacher_id"]]]
    if sessions is not None and len(sessions):
        linked = set(ev["session_id"][ev["session_id"] != ""])
        s = sessions[~sessions["session_id"].astype(str).isin(linked)]
        teacher = s["teacher_id"] if "teacher_id" in s else pd.Series("", index=s.index)
        start = to_utc(s["start_time"])
        start.index = s.index
        parts.append(pd.DataFrame({
            "student_id": s["student_id"].astype(str),
            "time": start,
            "teacher_id": teacher.astype(str),
        }, index=s.index))
    out = pd.concat(parts, ignore_index=True)
    out["time"] = to_utc(out["time"])
    out["teacher_id"] = out["teacher_id"].where(
        out["teacher_id"].notna() & (out["teacher_id"].astype(str).str.strip() != ""))
    out = out[out["time"].notna()]
    return out.sort_values(["student_id", "time"], kind="stable").reset_index(drop=True)


def _shifted(keys: pd.DataFrame, days: float) -> pd.DataFrame:
    return pd.DataFrame({"student_id": keys["student_id"], "t": keys["t"] - days * DAY},
                        index=keys.index)


def time_variant_features(logs: Logs, keys: pd.DataFrame, classes: pd.DataFrame,
                          windows_days: list[int]) -> pd.DataFrame:
    """Look-back window counts and teacher history for each ``<student, t>`` key.

    Columns (``w`` in ``windows_days``):
        - ``time_classes_{w}d``, ``time_follow_ups_{w}d``, ``time_reschedules_{w}d``:
          counts in ``[t - w days, t)``.
        - ``time_mean_class_gap_30d``: mean gap (days) between consecutive classes in
          ``[t - 30 days, t)`` (NaN with fewer than two).
        - ``time_days_since_last_class``: days from the latest class before ``t``.
        - ``time_classes_total``: classes before ``t``.
        - ``time_teacher_students``, ``time_teacher_classes``: distinct students and
          classes taught before ``t`` by the teacher of the student's latest class.
        - ``time_teacher_dropout_rate``: among that teacher's students (a class with the
          teacher before ``t``) whose outcome ``status_time`` is before ``t``, the share
          with status ``dropout`` (NaN when none).

    Args:
        logs: The loaded logs.
        keys: ``student_id`` and ``t`` (UTC) columns.
        classes: The class table from :func:`class_table`.
        windows_days: Look-back windows in days.

    Returns:
        A float DataFrame aligned with ``keys.index``.
    """
    t = keys["t"]
    out = pd.DataFrame(index=keys.index)
    ev = logs.events
    tables = {
        "classes": classes,
        "follow_ups": ev[ev["kind"] == "follow_up"],
        "reschedules": ev[ev["kind"] == "reschedule"],
    }
    cums = {name: cumulative(tab, "student_id", "time") for name, tab in tables.items()}

    def before(k: pd.DataFrame, name: str) -> pd.Series:
        return asof(k, "student_id", "t", cums[name], "student_id", "time",
                    ["_cum"])["_cum"].fillna(0.0)

    cls_cum = cums["classes"]
    now = asof(keys, "student_id", "t", cls_cum, "student_id", "time", ["_cum", "time"])
    n_now = now["_cum"].fillna(0.0)
    now_counts = {name: (n_now if name == "classes" else before(keys, name)) for name in tables}
    for w in windows_days:
        shifted = _shifted(keys, w)
        for name in tables:
            out[f"time_{name}_{w}d"] = now_counts[name] - before(shifted, name)

    # mean gap between classes in [t - 30 d, t): (last - first) / (n - 1)
    n_before_window = before(_shifted(keys, GAP_WINDOW_DAYS), "classes")
    n_window = n_now - n_before_window
    lookup = cls_cum.set_index(["student_id", "_cum"])["time"]
    first_idx = pd.MultiIndex.from_arrays(
        [keys["student_id"].astype(str), n_before_window + 1.0])
    first_time = pd.Series(lookup.reindex(first_idx).to_numpy(), index=keys.index)
    gap = days_between(now["time"], first_time) / (n_window - 1.0)
    out[f"time_mean_class_gap_{GAP_WINDOW_DAYS}d"] = gap.where(n_window >= 2)
    out["time_days_since_last_class"] = days_between(t, now["time"])
    out["time_classes_total"] = n_now

    out = out.join(teacher_history(logs, keys, classes))
    return out.astype(float)


def teacher_history(logs: Logs, keys: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """Teacher features for the teacher of each student's latest class before ``t``.

    See :func:`time_variant_features` for the definitions.

    Args:
        logs: The loaded logs (outcomes are used).
        keys: ``student_id`` and ``t`` columns.
        classes: The class table from :func:`class_table`.

    Returns:
        ``time_teacher_students``, ``time_teacher_classes``, ``time_teacher_dropout_rate``
        aligned with ``keys.index``.
    """
    out = pd.DataFrame(index=keys.index)
    taught = classes[classes["teacher_id"].notna()]
    teacher = asof(keys, "student_id", "t", taught, "student_id", "time", ["teacher_id"])
    q = pd.DataFrame({"teacher_id": teacher["teacher_id"], "t": keys["t"]}, index=keys.index)
    out["time_teacher_students"] = np.nan
    out["time_teacher_classes"] = np.nan
    out["time_teacher_dropout_rate"] = np.nan
    has = q["teacher_id"].notna()
    if not has.any():
        return out
    q = q[has]
    out.loc[has, "time_teacher_classes"] = count_before(q, taught, by="teacher_id")
    first = taught.groupby(["teacher_id", "student_id"], as_index=False)["time"].min()
    out.loc[has, "time_teacher_students"] = count_before(q, first, by="teacher_id")
    # a (teacher, student) counts for the dropout rate at t once both the first class
    # with the teacher and the student's outcome are before t
    oc = logs.outcomes[["student_id", "status", "status_time"]]
    known = first.merge(oc, on="student_id", how="inner")
    known["known_at"] = known[["time", "status_time"]].max(axis=1)
    known["is_dropout"] = (known["status"] == "dropout").astype(float)
    n = count_before(q, known, by="teacher_id", table_time="known_at")
    d = count_before(q, known, by="teacher_id", table_time="known_at", weights="is_dropout")
    out.loc[has, "time_teacher_dropout_rate"] = (d / n).where(n > 0)
    return out
