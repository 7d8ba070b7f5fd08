"""``<student, t>`` pairs: one row per student and day, features from data before ``t``.

``t`` is a UTC midnight.  A student has a pair for every day from the day after their
first class up to the day that holds the end of observation (the dropout/completion
``status_time``, or ``as_of`` for ongoing students); a dropout's pairs also need
``t < status_time``.  Every feature of ``<student, t>`` uses only rows whose time is
strictly before ``t`` (tests/features/test_leakage.py checks this).

Example:
    >>> logs = load_logs("logs")                                  # doctest: +SKIP
    >>> pairs = build_pairs(logs)                                  # doctest: +SKIP
    >>> today = pd.DataFrame({"student_id": ids, "t": pd.Timestamp("2024-05-02", tz="UTC")})
    >>> risk_pairs = build_pairs(logs, keys=today)                # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atrisk.config import FeatureConfig
from atrisk.errors import AtriskError
from atrisk.features.in_class import in_class_at
from atrisk.features.logs import DAY, Logs, out_of_class_features, to_utc
from atrisk.features.time_variant import class_table, time_variant_features

#: Prefixes of feature columns (everything else in a pairs table is a key or label).
FEATURE_PREFIXES = ("in_", "out_", "time_")
#: Key columns of a pairs table.
KEY_COLUMNS = ["student_id", "t"]


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Return the feature columns of a pairs table (prefixes ``in_``, ``out_``, ``time_``).

    Args:
        df: A pairs table.

    Returns:
        Column names in table order.
    """
    return [c for c in df.columns if str(c).startswith(FEATURE_PREFIXES)]


def _as_day(values: pd.Series) -> pd.Series:
    return to_utc(values).dt.floor("D")


def pair_keys(logs: Logs, sessions: pd.DataFrame | None = None,
              as_of: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Return every ``<student, t>`` key of the observation period.

    Args:
        logs: The loaded logs.
        sessions: Optional sessions table; its classes count for "first class".
        as_of: End of observation of ongoing students (and a cap for the others);
            default: the latest time in the logs.

    Returns:
        DataFrame ``student_id`` (str), ``t`` (UTC midnight), sorted by student and day.
    """
    classes = class_table(logs, sessions)
    first = classes.groupby("student_id")["time"].min()
    first = first[first.index.isin(logs.students["student_id"])]
    if as_of is None:
        latest = logs.latest_time()
        if sessions is not None and len(sessions):
            s_latest = to_utc(sessions["start_time"]).max()
            latest = s_latest if latest is None or (pd.notna(s_latest) and s_latest > latest) \
                else latest
        cap = None
        as_of_ts = latest
    else:
        as_of_ts = to_utc(as_of).iloc[0]
        if pd.isna(as_of_ts):
            raise AtriskError(f"as_of {as_of!r} is not a date/time")
        cap = as_of_ts
    if as_of_ts is None or first.empty:
        return pd.DataFrame({"student_id": pd.Series(dtype=str),
                             "t": pd.Series(dtype="datetime64[ns, UTC]")})
    oc = logs.outcomes.set_index("student_id")
    status = first.index.to_series().map(oc["status"])
    stime = first.index.to_series().map(oc["status_time"])
    finished = status.isin(["dropout", "completion"])
    end = stime.where(finished, as_of_ts)
    if cap is not None:
        end = end.where(end <= cap, cap)
    start_day = first.dt.floor("D") + DAY
    end_day = end.dt.floor("D")
    is_drop = status == "dropout"
    end_day = end_day.where(~(is_drop & (end_day >= stime)), end_day - DAY)
    n = ((end_day - start_day) / DAY + 1).fillna(0).clip(lower=0).astype(int)
    sid = np.repeat(first.index.to_numpy(), n.to_numpy())
    offset = np.concatenate([np.arange(k) for k in n.to_numpy()]) if len(n) else np.array([])
    t = pd.DatetimeIndex(start_day).repeat(n.to_numpy()) + pd.to_timedelta(offset, unit="D")
    keys = pd.DataFrame({"student_id": pd.Series(sid, dtype=str),
                         "t": pd.Series(t).dt.as_unit("ns")})
    return keys.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def build_pairs(logs: Logs, in_class: pd.DataFrame | None = None,
                sessions: pd.DataFrame | None = None,
                config: FeatureConfig | None = None,
                keys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Build the pairs table: keys, every feature, and ``dropout_time``.

    Args:
        logs: The loaded logs.
        in_class: The in-class table (:func:`~atrisk.features.in_class.build_in_class`);
            needs ``sessions`` too.  Without it there are no ``in_`` columns.
        sessions: The sessions table (classes, and session times for in-class features).
        config: Windows and number of in-class sessions averaged.
        keys: ``student_id`` and ``t`` (dates are floored to UTC midnight); default
            :func:`pair_keys`.  Pass one date for all active students to score that day.

    Returns:
        DataFrame with ``student_id``, ``t``, the feature columns (see
        :func:`feature_columns`) and ``dropout_time`` (UTC; NaT for non-dropouts; a label
        column, never a feature).

    Raises:
        AtriskError: When ``keys`` lacks ``student_id`` or ``t`` or has a bad date.
    """
    config = config or FeatureConfig()
    if keys is None:
        keys = pair_keys(logs, sessions)
    missing = [c for c in KEY_COLUMNS if c not in keys.columns]
    if missing:
        raise AtriskError(f"pair keys need columns student_id and t; missing {missing}")
    k = pd.DataFrame({"student_id": keys["student_id"].astype(str).to_numpy(),
                      "t": _as_day(keys["t"].reset_index(drop=True)).to_numpy()})
    k["t"] = k["t"].dt.as_unit("ns") if hasattr(k["t"], "dt") else k["t"]
    if k["t"].isna().any():
        raise AtriskError("pair keys have a missing or unparsable t")
    classes = class_table(logs, sessions)
    parts = [k]
    if in_class is not None and sessions is not None:
        parts.append(in_class_at(in_class, sessions, k, config.in_class_sessions))
    parts.append(out_of_class_features(logs, k, classes))
    parts.append(time_variant_features(logs, k, classes, config.windows_days))
    out = pd.concat(parts, axis=1)
    oc = logs.outcomes
    drop = oc[oc["status"] == "dropout"].set_index("student_id")["status_time"]
    drop = to_utc(drop[~drop.index.duplicated(keep="last")])
    out["dropout_time"] = pd.Series(drop.reindex(pd.Index(out["student_id"])).array,
                                    index=out.index)
    return out
