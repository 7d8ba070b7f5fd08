"""Out-of-class features from the platform logs, and the time helpers the features share.

:func:`out_of_class_features` computes, for each ``<student, t>`` key, the pre-class
(orders) and post-class (follow-ups, reschedules, satisfaction) features from rows
whose time is strictly before ``t`` (prefix ``out_``).  The logs are loaded and
validated by :class:`atrisk.ingest.logs.Logs`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atrisk.ingest.logs import Logs, to_utc

#: One day, the unit of every ``days`` feature.
DAY = pd.Timedelta(days=1)

__all__ = ["DAY", "Logs", "asof", "count_before", "cumulative", "days_between",
           "out_of_class_features", "to_utc"]


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
