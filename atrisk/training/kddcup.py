"""KDD Cup 2015 (XuetangX) daily logs seen as ``<student, day>`` pairs.

The shared copy holds per-course files ``trainCourse<ID>.csv.gz`` (one row per
enrollment per day of the course's 30-day window: ``enrollment_id, time`` and seven
daily event counts) and ``truth.csv`` (``enrollment_id, label``; 1 = no activity in
the 10 days after the window).  The mapping to the K-12 method:

- a *student* is an enrollment; its *observations* are its active days (any event);
- a dropout's *dropout time* is the midnight after its last active day in the window;
  a non-dropout has none;
- pairs ``<e, t>`` exist for every day ``t`` from the day after the first active day
  up to the last window day (non-dropouts) or up to the last active day (dropouts, so
  that ``t < dropout_time``); every feature uses days strictly before ``t``;
- features (no recordings exist, so no ``in_`` group): ``out_`` = cumulative
  activity since the enrollment's first day; ``time_`` = look-back windows, gaps and
  recency.

Limits: the dropout day is inferred (the label only says "no activity in the next 10
days"), so a dropout that was merely idle near the end of the window is labelled at
its last activity; non-dropouts idle for weeks are all negatives; enrollments without
any activity, and dropouts active on a single day, have no pair; there are no teacher
or order tables (no teacher history, no pre-class features).

Example:
    >>> pairs, info = load_kddcup_pairs(Path("../shared/data/kddcup2015"))  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.errors import AtriskError, RowError

#: The seven daily event counts.
EVENT_TYPES = ("access", "discussion", "navigate", "page_close", "problem", "video", "wiki")
#: Columns of a course file.
COURSE_COLUMNS = ["enrollment_id", "time"] + [f"event_{k}" for k in EVENT_TYPES]
#: Look-back windows (days) of the ``time_`` features.
WINDOWS_DAYS = (7, 14, 21)
#: Window (days) of the mean gap between active days.
GAP_WINDOW_DAYS = 30


def _course_files(data_dir: Path) -> list[Path]:
    files = sorted(p for p in data_dir.iterdir()
                   if p.name.startswith("trainCourse") and p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise AtriskError(f"{data_dir}: no trainCourse<ID>.csv(.gz) files (KDD Cup 2015 layout)")
    return files


def _read_course(path: Path, errors: list[RowError]) -> pd.DataFrame:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            df = pd.read_csv(fh, dtype=str, keep_default_na=False)
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        errors.append(RowError(str(path), None, f"cannot read the file: {exc}"))
        return pd.DataFrame(columns=COURSE_COLUMNS)
    missing = [c for c in COURSE_COLUMNS if c not in df.columns]
    if missing:
        errors.append(RowError(str(path), 1, f"missing column(s) {missing}"))
        return pd.DataFrame(columns=COURSE_COLUMNS)
    df = df[COURSE_COLUMNS].copy()
    df.index = pd.RangeIndex(2, len(df) + 2)
    eid = pd.to_numeric(df["enrollment_id"], errors="coerce")
    day = pd.to_datetime(df["time"], errors="coerce", format="ISO8601", utc=True)
    counts = df[COURSE_COLUMNS[2:]].apply(pd.to_numeric, errors="coerce")
    bad_count = counts.isna().any(axis=1) | (counts < 0).any(axis=1)
    bad = eid.isna() | day.isna() | bad_count
    for line in df.index[bad][:1000]:
        why = ("enrollment_id is not a number" if pd.isna(eid[line]) else
               "time is not a date" if pd.isna(day[line]) else
               "an event count is missing, not a number or negative")
        errors.append(RowError(str(path), int(line), why, str(df.at[line, "enrollment_id"])))
    out = counts[~bad].astype(np.float32)
    out.insert(0, "day", day[~bad].dt.floor("D"))
    out.insert(0, "enrollment_id", eid[~bad].astype(np.int64))
    out["course"] = path.name.split(".")[0].removeprefix("trainCourse")
    return out


def read_kddcup(data_dir: Path | str, max_enrollments: int | None = None,
                seed: int = 0) -> tuple[pd.DataFrame, pd.Series, list[RowError]]:
    """Read the daily rows and labels of a KDD Cup 2015 folder.

    Args:
        data_dir: Folder with ``trainCourse*.csv(.gz)`` and ``truth.csv``.
        max_enrollments: Keep a random subset of this many labelled enrollments
            (``None``: all).
        seed: Seed of the subset.

    Returns:
        ``(daily, labels, errors)``: ``daily`` has ``enrollment_id``, ``day`` (UTC
        midnight), ``course`` and the seven ``event_*`` counts; ``labels`` maps
        ``enrollment_id`` to 0/1; ``errors`` lists dropped rows (bad values, duplicate
        enrollments across files, enrollments without a label).

    Raises:
        AtriskError: When the folder, its course files or ``truth.csv`` are missing.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise AtriskError(f"{data_dir}: not a folder")
    truth = data_dir / "truth.csv"
    if not truth.is_file():
        raise AtriskError(f"{truth}: missing; it gives each enrollment's dropout label")
    errors: list[RowError] = []
    lab = pd.read_csv(truth, dtype=str, keep_default_na=False)
    if not {"enrollment_id", "label"} <= set(lab.columns):
        raise AtriskError(f"{truth}: needs columns enrollment_id,label")
    lab.index = pd.RangeIndex(2, len(lab) + 2)
    eid = pd.to_numeric(lab["enrollment_id"], errors="coerce")
    y = pd.to_numeric(lab["label"], errors="coerce")
    ok = eid.notna() & y.isin([0, 1])
    for line in lab.index[~ok][:1000]:
        errors.append(RowError(str(truth), int(line), "enrollment_id or label (0/1) invalid"))
    labels = pd.Series(y[ok].astype(int).to_numpy(), index=eid[ok].astype(np.int64).to_numpy())
    labels = labels[~labels.index.duplicated(keep="first")]
    parts = []
    seen: set[int] = set()
    for path in _course_files(data_dir):
        part = _read_course(path, errors)
        ids = set(part["enrollment_id"].unique().tolist())
        dup = ids & seen
        if dup:
            errors.append(RowError(str(path), None,
                                   f"{len(dup)} enrollment(s) already read from another file; "
                                   "their rows here are ignored"))
            part = part[~part["enrollment_id"].isin(dup)]
        seen |= ids
        parts.append(part)
    daily = pd.concat(parts, ignore_index=True)
    unlabelled = ~daily["enrollment_id"].isin(labels.index)
    if unlabelled.any():
        n = daily.loc[unlabelled, "enrollment_id"].nunique()
        errors.append(RowError(str(truth), None, f"{n} enrollment(s) have no label; ignored"))
        daily = daily[~unlabelled]
    ids = np.sort(daily["enrollment_id"].unique())
    if max_enrollments is not None and len(ids) > max_enrollments:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(ids, size=max_enrollments, replace=False))
        daily = daily[daily["enrollment_id"].isin(keep)]
    daily = daily.reset_index(drop=True)
    return daily, labels.reindex(np.sort(daily["enrollment_id"].unique())), errors


def daily_pairs(daily: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Turn daily rows into the pairs table (see the module docstring for the mapping).

    Args:
        daily: From :func:`read_kddcup`.
        labels: ``enrollment_id`` → 0/1.

    Returns:
        A pairs table: ``student_id`` (the enrollment id as str), ``t`` (UTC midnight),
        ``out_*`` and ``time_*`` features (days strictly before ``t``) and
        ``dropout_time`` (NaT for non-dropouts).
    """
    ev_cols = [f"event_{k}" for k in EVENT_TYPES]
    d = daily.groupby(["enrollment_id", "day"], as_index=False)[ev_cols].sum()
    first_day = d.groupby("enrollment_id")["day"].transform("min")
    d["i"] = ((d["day"] - first_day) / pd.Timedelta(days=1)).astype(int)
    ids, e_idx = np.unique(d["enrollment_id"].to_numpy(), return_inverse=True)
    n_days = int(d["i"].max()) + 1 if len(d) else 0
    counts = np.zeros((len(ids), n_days, len(ev_cols)), dtype=np.float32)
    counts[e_idx, d["i"].to_numpy()] = d[ev_cols].to_numpy(dtype=np.float32)
    present = np.zeros((len(ids), n_days), dtype=bool)
    present[e_idx, d["i"].to_numpy()] = True
    start = d.groupby("enrollment_id")["day"].min().reindex(ids).to_numpy()
    last_row = d.groupby("enrollment_id")["i"].max().reindex(ids).to_numpy()
    active = counts.sum(axis=2) > 0
    # cumulative sums over days strictly before position j: S[:, j] = sum_{i<j}
    zeros = np.zeros((len(ids), 1, len(ev_cols)), dtype=np.float32)
    cum = np.concatenate([zeros, np.cumsum(counts, axis=1)], axis=1)
    act_cum = np.concatenate([np.zeros((len(ids), 1)), np.cumsum(active, axis=1)], axis=1)
    idx = np.where(active, np.arange(n_days)[None, :], -1)
    last_active_upto = np.maximum.accumulate(idx, axis=1)  # latest active index <= j
    has_act = active.any(axis=1)
    first_active = np.where(has_act, active.argmax(axis=1), -1)
    last_active = np.where(has_act, n_days - 1 - active[:, ::-1].argmax(axis=1), -1)
    y = labels.reindex(ids).fillna(0).to_numpy().astype(int)
    # pair positions j (t = start + j days): first_active+1 .. end
    end = np.where(y == 1, last_active, last_row)
    lo = first_active + 1
    n = np.where(has_act, np.maximum(end - lo + 1, 0), 0)
    e_rep = np.repeat(np.arange(len(ids)), n)
    j = np.concatenate([np.arange(a, a + k) for a, k in zip(lo, n, strict=True)]) \
        if n.sum() else np.zeros(0, dtype=int)
    out = pd.DataFrame({
        "student_id": ids[e_rep].astype(str),
        "t": pd.DatetimeIndex(start[e_rep]) + pd.to_timedelta(j, unit="D"),
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
        rows = e_rep[need]
        first_in_win[need] = [int(np.searchsorted(act_pos[r], tk)) for r, tk
                              in zip(rows, target, strict=True)]
    gap = (last_before - first_in_win) / np.maximum(n_win - 1, 1)
    out[f"time_mean_active_gap_{GAP_WINDOW_DAYS}d"] = np.where(need, gap, np.nan)
    drop_day = pd.DatetimeIndex(start) + pd.to_timedelta(last_active + 1, unit="D")
    dt = pd.Series(drop_day, dtype="datetime64[ns, UTC]").where(y == 1)
    out["dropout_time"] = dt.to_numpy()[e_rep]
    out["t"] = out["t"].dt.as_unit("ns")
    out["dropout_time"] = pd.to_datetime(out["dropout_time"], utc=True).dt.as_unit("ns")
    return out


def load_kddcup_pairs(data_dir: Path | str, max_enrollments: int | None = None,
                      seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Read a KDD Cup 2015 folder and return its pairs table and a summary.

    Args:
        data_dir: Folder with ``trainCourse*.csv(.gz)`` and ``truth.csv``.
        max_enrollments: Random subset of enrollments (``None``: all).
        seed: Seed of the subset.

    Returns:
        ``(pairs, info)``; ``info`` has ``n_enrollments``, ``dropout_rate``,
        ``n_enrollments_with_pairs``, ``n_pairs`` and ``errors`` (first 20 messages)
        and ``n_errors``.

    Raises:
        AtriskError: When the folder layout is wrong.
    """
    daily, labels, errors = read_kddcup(data_dir, max_enrollments, seed)
    pairs = daily_pairs(daily, labels)
    info = {
        "n_enrollments": int(len(labels)),
        "dropout_rate": float(labels.mean()) if len(labels) else None,
        "n_enrollments_with_pairs": int(pairs["student_id"].nunique()),
        "n_pairs": int(len(pairs)),
        "n_errors": len(errors),
        "errors": [str(e) for e in errors[:20]],
    }
    return pairs, info
