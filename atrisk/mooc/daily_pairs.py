"""KDD Cup 2015 (XuetangX) daily logs seen as ``<student, day>`` pairs.

The files are read and validated by :func:`atrisk.mooc.kddcup.load_kddcup` (course
files ``trainCourse<ID>.csv(.gz)``: one row per enrollment per day of the course's
30-day window with seven daily event counts; ``truth.csv``: 1 = no activity in the 10
days after the window).  This module only maps its :class:`~atrisk.mooc.kddcup.MoocData`
(``counts``: enrollments × 30 days × 7 event types) onto the K-12 method:

- a *student* is an enrollment; its *observations* are its active days (any event);
- time is the course day: day ``i`` of a course (day 0 = the earliest date in its
  file) is the UTC midnight :data:`EPOCH` ``+ i`` days (``MoocData`` keeps no calendar
  dates; only differences of days matter to the labels and features);
- pairs must not exist, or be missing, because of the outcome: every enrollment,
  dropout or not, follows **one observation rule** (``dropout_day``);
- ``dropout_day = "last_active"`` (default): every enrollment is observed from the day
  after its first active day to its last active day in the window (pairs ``<e, t>``
  with ``first < t ≤ last``, whatever its label); a dropout drops out at the midnight
  after its last active day.  Assumption: KDD Cup gives no dropout day (the label
  says "no activity in the 10 days after the window"), and we take the last activity
  as the moment a dropout left — the seed's dropout pair is its last record.  Idle
  days after the last activity are no pair for anyone (a non-dropout's next activity
  lies after the window, unseen);
- ``dropout_day = "window_end"``: every enrollment is observed from the day after its
  first active day to the last day of the window; a dropout drops out at the end of
  the window (the 10 silent days start then), so its positives at Δ are its last Δ
  window days, idle or not;
- every feature uses days strictly before ``t``; features (no recordings exist, so no
  ``in_`` group): ``out_`` = cumulative activity since the enrollment's first day;
  ``time_`` = look-back windows, gaps and recency.

The earlier mapping mixed the two (dropouts stopped at their last activity,
non-dropouts ran to the window end), so a dropout's idle days never existed as pairs
while a non-dropout's idle weeks were all negatives: "days since the last activity"
then told the outcome apart by construction.

Limits: enrollments without any activity, and enrollments active on a single day
(``last_active``), have no pair; there are no teacher or order tables (no teacher
history, no pre-class features).

Example:
    >>> pairs, info = load_kddcup_pairs(Path("../shared/data/kddcup2015"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.mooc.kddcup import EVENT_TYPES, MoocData, load_kddcup

#: Day 0 of every course, as a UTC timestamp (``t = EPOCH + course day``).
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
#: Look-back windows (days) of the ``time_`` features.
WINDOWS_DAYS = (7, 14, 21)
#: Window (days) of the mean gap between active days.
GAP_WINDOW_DAYS = 30
#: Observation rules of :func:`daily_pairs` (the same for dropouts and the others).
DROPOUT_DAYS = ("last_active", "window_end")
#: Salt of the test split (:func:`holdout_mask`); changing it changes the split.
SPLIT_SALT = "atrisk-kddcup-test-v1"


def holdout_mask(enrollment_ids, share: float = 0.2, salt: str = SPLIT_SALT) -> np.ndarray:
    """Mark the test enrollments: a split that depends on the id only, never on the data.

    An enrollment is in the test set when the first 8 hex digits of
    ``sha256(f"{salt}:{id}")``, read as a fraction of 16⁸, are below ``share``.  The same
    id is always on the same side, whatever subset or order of the data is loaded, so
    no id is ever on both sides and any subsample of either side is reproducible.

    Args:
        enrollment_ids: Ids (anything ``str`` turns into the id's text).
        share: Wanted test share, in (0, 1).
        salt: Changes the split.

    Returns:
        Boolean array, ``True`` for test enrollments.

    Raises:
        ValueError: When ``share`` is not in (0, 1).
    """
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    cut = int(share * 16**8)
    return np.array([int(hashlib.sha256(f"{salt}:{e}".encode()).hexdigest()[:8], 16) < cut
                     for e in np.asarray(enrollment_ids).astype(str)], dtype=bool)


def _sample(data: MoocData, max_enrollments: int | None, seed: int) -> MoocData:
    if max_enrollments is None or len(data) <= max_enrollments:
        return data
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(data), size=max_enrollments, replace=False))
    sub = data.subset(keep)
    sub.problems, sub.n_missing_truth = data.problems, data.n_missing_truth
    return sub


def daily_pairs(data: MoocData, dropout_day: str = "last_active") -> pd.DataFrame:
    """Turn a :class:`~atrisk.mooc.kddcup.MoocData` into the pairs table.

    See the module docstring for the mapping.

    Args:
        data: Labelled enrollments (``labels`` 0/1; NaN counts as 0).
        dropout_day: The observation rule, the same for every enrollment:
            ``last_active`` or ``window_end`` (:data:`DROPOUT_DAYS`).

    Returns:
        A pairs table: ``student_id`` (the enrollment id as str), ``t`` (UTC midnight,
        :data:`EPOCH` + course day), ``out_*`` and ``time_*`` features (days strictly
        before ``t``) and ``dropout_time`` (NaT for non-dropouts).

    Raises:
        ValueError: For an unknown ``dropout_day``.
    """
    if dropout_day not in DROPOUT_DAYS:
        raise ValueError(f"dropout_day must be one of {DROPOUT_DAYS}, got {dropout_day!r}")
    ids = np.asarray(data.enrollment_id)
    counts = np.asarray(data.counts, dtype=np.float32)
    n_ids, n_days, n_ev = counts.shape
    active = counts.sum(axis=2) > 0
    # cumulative sums over days strictly before position j: S[:, j] = sum_{i<j}
    cum = np.concatenate([np.zeros((n_ids, 1, n_ev), np.float32), np.cumsum(counts, axis=1)],
                         axis=1)
    act_cum = np.concatenate([np.zeros((n_ids, 1)), np.cumsum(active, axis=1)], axis=1)
    idx = np.where(active, np.arange(n_days)[None, :], -1)
    last_active_upto = np.maximum.accumulate(idx, axis=1)  # latest active index <= j
    has_act = active.any(axis=1)
    first_active = np.where(has_act, active.argmax(axis=1), -1)
    last_active = np.where(has_act, n_days - 1 - active[:, ::-1].argmax(axis=1), -1)
    y = np.nan_to_num(np.asarray(data.labels, dtype=float)).astype(int)
    # pair positions j (t = day j): first_active+1 .. end, the same rule for every label
    end = last_active if dropout_day == "last_active" else np.full(n_ids, n_days - 1)
    lo = first_active + 1
    n = np.where(has_act, np.maximum(end - lo + 1, 0), 0)
    e_rep = np.repeat(np.arange(n_ids), n)
    j = (np.concatenate([np.arange(a, a + k) for a, k in zip(lo, n, strict=True)])
         if n.sum() else np.zeros(0, dtype=int))
    out = pd.DataFrame({
        "student_id": ids[e_rep].astype(str),
        "t": (EPOCH + pd.to_timedelta(j, unit="D")).as_unit("ns"),
    })
    c_now = cum[e_rep, j]
    for k, name in enumerate(EVENT_TYPES):
        out[f"out_{name}_total"] = c_now[:, k]
    out["out_events_total"] = c_now.sum(axis=1)
    out["out_active_days_total"] = act_cum[e_rep, j]
    out["out_days_since_first_activity"] = (j - first_active[e_rep]).astype(float)
    for w in WINDOWS_DAYS:
        jw = np.maximum(j - w, 0)
        out[f"time_active_days_{w}d"] = act_cum[e_rep, j] - act_cum[e_rep, jw]
        win = cum[e_rep, j] - cum[e_rep, jw]
        out[f"time_events_{w}d"] = win.sum(axis=1)
        if w == WINDOWS_DAYS[0]:
            for k, name in enumerate(EVENT_TYPES):
                out[f"time_{name}_{w}d"] = win[:, k]
    last_before = last_active_upto[e_rep, j - 1]
    out["time_days_since_last_active"] = (j - last_before).astype(float)
    # mean gap between active days in [t - 30 d, t)
    jg = np.maximum(j - GAP_WINDOW_DAYS, 0)
    n_win = act_cum[e_rep, j] - act_cum[e_rep, jg]
    act_pos = np.cumsum(active, axis=1)  # k-th active day → index lookup
    first_in_win = np.full(len(j), np.nan)
    need = n_win >= 2
    if need.any():
        target = act_cum[e_rep, jg][need] + 1  # rank of the first active day in the window
        first_in_win[need] = [int(np.searchsorted(act_pos[r], tk)) for r, tk
                              in zip(e_rep[need], target, strict=True)]
    gap = (last_before - first_in_win) / np.maximum(n_win - 1, 1)
    out[f"time_mean_active_gap_{GAP_WINDOW_DAYS}d"] = np.where(need, gap, np.nan)
    drop_day = EPOCH + pd.to_timedelta(
        last_active + 1 if dropout_day == "last_active" else np.full(n_ids, n_days), unit="D")
    dt = pd.Series(drop_day.as_unit("ns")).where(y == 1)
    out["dropout_time"] = pd.to_datetime(dt.to_numpy()[e_rep], utc=True).as_unit("ns")
    return out


def load_kddcup_pairs(data_dir: Path | str, max_enrollments: int | None = None,
                      seed: int = 0, dropout_day: str = "last_active",
                      part: str | None = None,
                      test_share: float = 0.2) -> tuple[pd.DataFrame, dict]:
    """Read a KDD Cup 2015 folder and return its pairs table and a summary.

    Args:
        data_dir: Folder with ``trainCourse*.csv(.gz)`` and ``truth.csv``.
        max_enrollments: Random subset of this many labelled enrollments (``None``: all),
            drawn after the ``part`` is taken.
        seed: Seed of the subset.
        dropout_day: The observation rule (:func:`daily_pairs`).
        part: ``"train"`` or ``"test"``: only that side of :func:`holdout_mask`
            (``None``: every enrollment).
        test_share: Test share of :func:`holdout_mask`.

    Returns:
        ``(pairs, info)``; ``info`` has ``n_enrollments``, ``dropout_rate``,
        ``n_enrollments_with_pairs``, ``n_pairs``, ``n_errors`` and ``errors`` (the
        first 20 problems reported by :func:`~atrisk.mooc.kddcup.load_kddcup`).

    Raises:
        LogValidationError: When the folder layout is wrong (from ``load_kddcup``).
    """
    data = load_kddcup(data_dir)
    if part is not None:
        if part not in ("train", "test"):
            raise ValueError(f"part must be 'train', 'test' or None, got {part!r}")
        is_test = holdout_mask(data.enrollment_id, test_share)
        sub = data.subset(is_test if part == "test" else ~is_test)
        sub.problems, sub.n_missing_truth = data.problems, data.n_missing_truth
        data = sub
    data = _sample(data, max_enrollments, seed)
    pairs = daily_pairs(data, dropout_day)
    problems = data.problems
    info = {
        "n_enrollments": len(data),
        "dropout_day": dropout_day,
        "part": part,
        "dropout_rate": float(np.nanmean(data.labels)) if len(data) else None,
        "n_enrollments_with_pairs": int(pairs["student_id"].nunique()),
        "n_pairs": int(len(pairs)),
        "n_errors": len(problems),
        "errors": [f"{p['source']}:{p['row']}: {p['reason']}" if p["row"] is not None
                   else f"{p['source']}: {p['reason']}" for p in problems[:20]],
    }
    return pairs, info
