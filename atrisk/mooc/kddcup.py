"""KDD Cup 2015 (XuetangX) daily-count layout: loading, validation, features, context.

A data folder holds ``trainCourse<ID>.csv`` or ``.csv.gz`` files (one per course;
columns ``enrollment_id, time`` and the seven ``event_<type>`` daily counts; one row
per enrollment per day of the course's window) and, for training and evaluation,
``truth.csv`` (``enrollment_id, label``; 1 = dropout).  An optional ``user_id`` column
in the course files switches on user-context statistics (the shared copy has none).

``time`` holds calendar dates (``2014-05-25``); day 0 of a course is the earliest date
in its file.  Integer day indexes (0-based) are accepted too.

Public API (stable; :mod:`atrisk.mooc.daily_pairs` and :mod:`atrisk.mooc.model` use it):
    :func:`load_kddcup` → :class:`MoocData` (``enrollment_id``, ``course_id``,
    ``counts`` ``(n, 30, 7)``, ``labels``, ``user_id``, ``problems``,
    ``n_missing_truth``, ``files``), :func:`activity_features`,
    :func:`context_statistics`, :func:`augment`, :func:`context_groups`,
    :func:`weekly_visit_bits`, :data:`EVENT_TYPES`, :data:`COURSE_COLUMNS`.

Example:
    >>> data = load_kddcup(Path("../shared/data/kddcup2015"))  # doctest: +SKIP
    >>> feats = activity_features(data)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from atrisk.errors import LogValidationError, RowError

#: The seven daily event types, in file order.
EVENT_TYPES = ("access", "discussion", "navigate", "page_close", "problem", "video", "wiki")
#: Required columns of a course file.
COURSE_COLUMNS = ["enrollment_id", "time"] + [f"event_{k}" for k in EVENT_TYPES]
#: Optional known columns of a course file.
OPTIONAL_COLUMNS = ("user_id",)
#: Days in a course's history window.
WINDOW_DAYS = 30
#: Activity channels: the seven event types and ``all`` (their sum).
CHANNELS = (*EVENT_TYPES, "all")
#: Course-context statistics computed for every activity feature.
CONTEXT_STATS = ("mean", "max", "std", "q25", "q50", "q75")
#: How many row errors of one kind a file reports one by one (the rest are counted).
MAX_LISTED = 200


@dataclass
class MoocData:
    """Daily counts of a set of enrollments.

    Attributes:
        enrollment_id: ``(n,)`` int64 ids.
        course_id: ``(n,)`` course ids (str, from the file name).
        counts: ``(n, WINDOW_DAYS, 7)`` float32 daily counts per event type.
        labels: ``(n,)`` float labels (1 dropout, 0 not, NaN unknown).
        user_id: ``(n,)`` user ids (object) or ``None`` when the files have none.
        problems: dropped/ignored rows and files as ``RowError.to_dict()`` records.
        n_missing_truth: enrollments excluded because ``truth.csv`` has no label.
        files: course files read.
    """

    enrollment_id: np.ndarray
    course_id: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    user_id: np.ndarray | None = None
    problems: list[dict] = field(default_factory=list)
    n_missing_truth: int = 0
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        """Return the number of enrollments."""
        return len(self.enrollment_id)

    def subset(self, mask: np.ndarray) -> MoocData:
        """Return the enrollments selected by a boolean mask or index array.

        Args:
            mask: Boolean mask or integer indexes over enrollments.

        Returns:
            A new :class:`MoocData` (problems are not copied).
        """
        return MoocData(
            self.enrollment_id[mask], self.course_id[mask], self.counts[mask],
            self.labels[mask], None if self.user_id is None else self.user_id[mask],
            [], 0, list(self.files))


def course_files(data_dir: Path) -> list[Path]:
    """List the course files of a folder.

    Args:
        data_dir: Folder in the KDD Cup 2015 layout.

    Returns:
        Sorted ``trainCourse*.csv`` / ``.csv.gz`` paths.

    Raises:
        LogValidationError: When the folder is missing or has no course file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LogValidationError(f"{data_dir}: not a folder")
    files = sorted(p for p in data_dir.iterdir()
                   if p.name.startswith("trainCourse") and p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise LogValidationError(
            f"{data_dir}: no trainCourse<ID>.csv(.gz) files (KDD Cup 2015 layout expected)")
    return files


def _course_id(path: Path) -> str:
    return path.name.split(".")[0].removeprefix("trainCourse")


def _report(problems: list[RowError], src: str, lines, reason: str, keys=None) -> None:
    lines = list(lines)
    for i, line in enumerate(lines[:MAX_LISTED]):
        problems.append(RowError(src, int(line), reason, None if keys is None else str(keys[i])))
    if len(lines) > MAX_LISTED:
        problems.append(RowError(src, None, f"{len(lines) - MAX_LISTED} more row(s): {reason}"))


def read_course_file(path: Path, problems: list[RowError]) -> pd.DataFrame | None:
    """Read and validate one course file.

    Bad rows are dropped and reported in ``problems``: non-numeric ids or counts,
    negative counts, unparseable times, days outside the window, duplicate
    ``(enrollment, day)`` rows (the first is kept).  Unknown columns are reported
    and ignored.

    Args:
        path: A ``trainCourse<ID>.csv[.gz]`` file.
        problems: List the file's problems are appended to.

    Returns:
        Columns ``enrollment_id`` (int64), ``day`` (0..WINDOW_DAYS-1), the event
        counts, optionally ``user_id``; ``None`` when the file cannot be used at all
        (unreadable, empty, required columns missing).
    """
    src = str(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            df = pd.read_csv(fh, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        problems.append(RowError(src, None, "empty course file; skipped"))
        return None
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        problems.append(RowError(src, None, f"cannot read the file ({exc}); skipped"))
        return None
    missing = [c for c in COURSE_COLUMNS if c not in df.columns]
    if missing:
        problems.append(RowError(src, 1, f"missing column(s) {missing}; file skipped"))
        return None
    unknown = [c for c in df.columns if c not in COURSE_COLUMNS and c not in OPTIONAL_COLUMNS]
    if unknown:
        problems.append(RowError(src, 1, f"unknown column(s) {unknown} ignored"))
    if df.empty:
        problems.append(RowError(src, None, "course file has a header but no rows; skipped"))
        return None
    df.index = pd.RangeIndex(2, len(df) + 2)
    eid = pd.to_numeric(df["enrollment_id"], errors="coerce")
    t_num = pd.to_numeric(df["time"], errors="coerce")
    if t_num.notna().mean() > 0.5:  # integer day indexes (a few bad ones stay NaN)
        day = t_num
    else:
        dates = pd.to_datetime(df["time"], errors="coerce", format="ISO8601")
        dates = dates.dt.tz_localize(None) if dates.dt.tz is not None else dates
        day = (dates.dt.floor("D") - dates.min().floor("D")) / pd.Timedelta(days=1)
    counts = df[COURSE_COLUMNS[2:]].apply(pd.to_numeric, errors="coerce")
    checks = [
        (eid.isna() | (eid % 1 != 0), "enrollment_id is not an integer"),
        (day.isna(), "time is not a date or day index"),
        (counts.isna().any(axis=1), "an event count is missing or not a number"),
        ((counts < 0).any(axis=1), "negative event count"),
        (day.notna() & ((day < 0) | (day >= WINDOW_DAYS) | (day % 1 != 0)),
         f"day outside the {WINDOW_DAYS}-day window"),
    ]
    bad = pd.Series(False, index=df.index)
    for mask, reason in checks:
        mask = mask & ~bad
        if mask.any():
            _report(problems, src, df.index[mask], reason, df.loc[mask, "enrollment_id"].tolist())
        bad |= mask
    out = counts[~bad].astype(np.float32)
    out.insert(0, "day", day[~bad].astype(int))
    out.insert(0, "enrollment_id", eid[~bad].astype(np.int64))
    if "user_id" in df.columns:
        out["user_id"] = df.loc[~bad, "user_id"]
    dup = out.duplicated(["enrollment_id", "day"], keep="first")
    if dup.any():
        _report(problems, src, out.index[dup],
                "duplicate (enrollment_id, day) row; the first one is kept",
                out.loc[dup, "enrollment_id"].tolist())
        out = out[~dup]
    if out.empty:
        problems.append(RowError(src, None, "no valid rows; course skipped"))
        return None
    return out


def read_truth(path: Path, problems: list[RowError]) -> pd.Series:
    """Read ``truth.csv``.

    Args:
        path: The truth file (``enrollment_id,label``).
        problems: List bad rows are appended to.

    Returns:
        Labels (0/1) indexed by enrollment id.

    Raises:
        LogValidationError: When the file is missing or lacks the columns.
    """
    if not path.is_file():
        raise LogValidationError(f"{path}: missing; it gives each enrollment's dropout label")
    try:
        lab = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LogValidationError(f"{path}: cannot be read ({exc})") from exc
    if not {"enrollment_id", "label"} <= set(lab.columns):
        raise LogValidationError(f"{path}: needs columns enrollment_id,label")
    lab.index = pd.RangeIndex(2, len(lab) + 2)
    eid = pd.to_numeric(lab["enrollment_id"], errors="coerce")
    y = pd.to_numeric(lab["label"], errors="coerce")
    ok = eid.notna() & y.isin([0, 1])
    _report(problems, str(path), lab.index[~ok], "enrollment_id or label (0/1) invalid")
    labels = pd.Series(y[ok].astype(int).to_numpy(), index=eid[ok].astype(np.int64).to_numpy())
    dup = labels.index.duplicated(keep="first")
    if dup.any():
        problems.append(RowError(str(path), None,
                                 f"{int(dup.sum())} duplicate enrollment label(s); first kept"))
    return labels[~dup]


def load_kddcup(data_dir: Path | str, labels: bool = True,
                drop_unlabelled: bool = True) -> MoocData:
    """Load a folder in the KDD Cup 2015 layout.

    Args:
        data_dir: Folder with ``trainCourse*.csv[.gz]`` (and ``truth.csv``).
        labels: Read ``truth.csv`` and keep only labelled enrollments (the others are
            excluded and counted in ``n_missing_truth``).  With ``False`` all
            enrollments are kept with NaN labels.
        drop_unlabelled: With ``labels``, ``False`` keeps the unlabelled enrollments
            (NaN label; still counted in ``n_missing_truth``) so that course-context
            statistics can use every enrollment of a course.

    Returns:
        The enrollments as :class:`MoocData`; ``problems`` lists what was dropped.

    Raises:
        LogValidationError: When no course file is usable or (with labels) truth.csv
            is missing or no enrollment has a label.
    """
    data_dir = Path(data_dir)
    files = course_files(data_dir)
    problems: list[RowError] = []
    truth = read_truth(data_dir / "truth.csv", problems) if labels else None
    eids, courses, blocks, users = [], [], [], []
    seen: set[int] = set()
    has_users = False
    used = []
    for path in files:
        part = read_course_file(path, problems)
        if part is None:
            continue
        codes, uniq = pd.factorize(part["enrollment_id"], sort=True)
        uniq = np.asarray(uniq, dtype=np.int64)
        again = np.isin(uniq, np.fromiter(seen, dtype=np.int64, count=len(seen)))
        if again.any():
            problems.append(RowError(str(path), None, f"{int(again.sum())} enrollment(s) also "
                                     "in an earlier course file; ignored here"))
        arr = np.zeros((len(uniq), WINDOW_DAYS, len(EVENT_TYPES)), dtype=np.float32)
        arr[codes, part["day"].to_numpy()] = part[COURSE_COLUMNS[2:]].to_numpy(np.float32)
        keep = ~again
        seen.update(uniq[keep].tolist())
        eids.append(uniq[keep])
        blocks.append(arr[keep])
        courses.append(np.full(int(keep.sum()), _course_id(path), dtype=object))
        if "user_id" in part.columns:
            has_users = True
            first = part.groupby("enrollment_id")["user_id"].first()
            users.append(first.reindex(uniq[keep]).to_numpy(dtype=object))
        else:
            users.append(np.full(int(keep.sum()), None, dtype=object))
        used.append(str(path))
    if not blocks:
        raise LogValidationError(f"{data_dir}: no usable course file; problems: "
                                 + "; ".join(str(p) for p in problems[:5]))
    eid = np.concatenate(eids)
    data = MoocData(eid, np.concatenate(courses), np.concatenate(blocks),
                    np.full(len(eid), np.nan), np.concatenate(users) if has_users else None,
                    files=used)
    if truth is not None:
        y = truth.reindex(eid).to_numpy(dtype=float)
        known = ~np.isnan(y)
        n_missing = int((~known).sum())
        if n_missing:
            problems.append(RowError(str(data_dir / "truth.csv"), None,
                                     f"{n_missing} enrollment(s) have no label; excluded"
                                     + ("" if drop_unlabelled else " from the metrics")))
        data.labels = y
        if drop_unlabelled:
            data = data.subset(known)
        data.files = used
        data.n_missing_truth = n_missing
        if not known.any():
            raise LogValidationError(f"{data_dir}: no enrollment has a label in truth.csv")
    data.problems = [p.to_dict() for p in problems]
    return data


def _streaks(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest run of active days and the run that ends on the window's last day."""
    n, d = active.shape
    run = np.zeros(n, dtype=np.float32)
    best = np.zeros(n, dtype=np.float32)
    for j in range(d):
        run = np.where(active[:, j], run + 1, 0)
        best = np.maximum(best, run)
    return best, run


def activity_features(data: MoocData) -> pd.DataFrame:
    """Per-enrollment activity features from the daily counts.

    For each channel (the seven event types and ``all``): ``total``, ``w1``..``w5``
    (counts per 7-day week, the fifth covering days 28-29), ``active_days``,
    ``first_day`` / ``last_day`` (0-based; ``WINDOW_DAYS`` / ``-1`` when never
    active), ``trend`` (least-squares slope of the daily counts, per day),
    ``late_ratio`` (share of the activity in the last 10 days), ``max_streak`` and
    ``end_streak`` (consecutive active days, longest and ending on the last day).

    Args:
        data: Loaded enrollments.

    Returns:
        A float32 DataFrame indexed by ``enrollment_id`` with columns
        ``<channel>__<feature>`` (12 features × 8 channels).
    """
    c = np.concatenate([data.counts, data.counts.sum(axis=2, keepdims=True)], axis=2)
    n, d, k = c.shape
    days = np.arange(d, dtype=np.float32)
    cols: dict[str, np.ndarray] = {}
    t_centered = days - days.mean()
    for j, ch in enumerate(CHANNELS):
        x = c[:, :, j]
        act = x > 0
        total = x.sum(1)
        cols[f"{ch}__total"] = total
        for w in range(5):
            cols[f"{ch}__w{w + 1}"] = x[:, 7 * w:7 * (w + 1)].sum(1)
        cols[f"{ch}__active_days"] = act.sum(1).astype(np.float32)
        any_act = act.any(1)
        cols[f"{ch}__first_day"] = np.where(any_act, act.argmax(1), d).astype(np.float32)
        cols[f"{ch}__last_day"] = np.where(any_act, d - 1 - act[:, ::-1].argmax(1),
                                           -1).astype(np.float32)
        cols[f"{ch}__trend"] = (x @ t_centered) / float((t_centered ** 2).sum())
        cols[f"{ch}__late_ratio"] = np.where(total > 0, x[:, d - 10:].sum(1)
                                             / np.maximum(total, 1e-9), 0.0)
        best, end = _streaks(act)
        cols[f"{ch}__max_streak"] = best
        cols[f"{ch}__end_streak"] = end
    out = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in cols.items()})
    out.index = pd.Index(data.enrollment_id, name="enrollment_id")
    return out


def feature_names() -> list[str]:
    """Return the activity feature names in the order :func:`activity_features` makes them."""
    per = ["total", "w1", "w2", "w3", "w4", "w5", "active_days", "first_day", "last_day",
           "trend", "late_ratio", "max_streak", "end_streak"]
    return [f"{ch}__{f}" for ch in CHANNELS for f in per]


def signed_log(x: np.ndarray) -> np.ndarray:
    """Return ``sign(x) * log1p(|x|)`` (tames the heavy tails of click counts).

    Args:
        x: Any array.

    Returns:
        The transformed array (float32).
    """
    x = np.asarray(x, dtype=np.float32)
    return np.sign(x) * np.log1p(np.abs(x))


def context_statistics(features: pd.DataFrame, groups: np.ndarray) -> pd.DataFrame:
    """Context statistics of every feature over the enrollments of each group.

    Uses no labels, so it runs on unseen courses at prediction time.

    Args:
        features: Feature table (one row per enrollment).
        groups: ``(n,)`` group key per row (course id, or user id for user context).

    Returns:
        DataFrame indexed by group with columns ``<feature>#<stat>`` for each stat in
        :data:`CONTEXT_STATS` (std is the population std; 0 for one-member groups).
    """
    g = features.groupby(np.asarray(groups), sort=True)
    parts = {
        "mean": g.mean(), "max": g.max(), "std": g.std(ddof=0).fillna(0.0),
        "q25": g.quantile(0.25), "q50": g.quantile(0.5), "q75": g.quantile(0.75),
    }
    out = pd.concat({s: parts[s] for s in CONTEXT_STATS}, axis=1)
    out.columns = [f"{f}#{s}" for s, f in out.columns]
    return out


def augment(x: np.ndarray, features: pd.DataFrame, groups: np.ndarray,
            eps: float = 1.0) -> np.ndarray:
    """Context-smooth features: each x becomes its differences/ratios to group statistics.

    For every feature the group gets five values ``[x, x - mean, x / max,
    (x - mean) / std, (x - q50) / (q75 - q25)]``, each denominator plus ``eps``.

    ``eps`` is 1 by default, on the signed-log scale (≈ 1.7 clicks): click data are
    sparse, so a course's IQR or std of a feature is often 0 or tiny, and a small
    ``eps`` would turn one click into a value of thousands that differs wildly from
    course to course (it broke CFIN on unseen courses; docs/mooc.md).

    Args:
        x: ``(n, m)`` features already transformed (e.g. :func:`signed_log`).
        features: Same values as a DataFrame (columns = feature names).
        groups: ``(n,)`` group key per row.
        eps: Added to denominators (same scale as ``x``).

    Returns:
        ``(n, m, 5)`` float32 array.
    """
    stats = context_statistics(features, groups)
    idx = stats.index.get_indexer(np.asarray(groups))
    names = list(features.columns)

    def st(s: str) -> np.ndarray:
        return stats[[f"{f}#{s}" for f in names]].to_numpy(np.float32)[idx]

    mean, mx, std, q25, q50, q75 = (st(s) for s in CONTEXT_STATS)
    return np.stack([
        x, x - mean, x / (np.abs(mx) + eps), (x - mean) / (std + eps),
        (x - q50) / (q75 - q25 + eps)], axis=2).astype(np.float32)


def context_groups(data: MoocData, features: pd.DataFrame, use_user: bool = True) -> np.ndarray:
    """Build CFIN's context-smoothed feature groups for every enrollment.

    Course context is always used; user context (``[x - mean_u, x / max_u]`` over the
    user's enrollments) is added when ``data.user_id`` exists and ``use_user``.

    Args:
        data: The enrollments (course and optional user ids).
        features: :func:`activity_features` of the same enrollments.
        use_user: Include user context when user ids exist.

    Returns:
        ``(n, m, g)`` float32 array with ``g = 5`` (course only) or ``7``.
    """
    logged = pd.DataFrame(signed_log(features.to_numpy()), columns=features.columns)
    x = logged.to_numpy(np.float32)
    parts = [augment(x, logged, data.course_id)]
    if use_user and data.user_id is not None:
        users = np.asarray([str(u) for u in data.user_id], dtype=object)
        full = augment(x, logged, users)
        parts.append(full[:, :, 1:3])
    return np.concatenate(parts, axis=2)


def weekly_visit_bits(data: MoocData) -> np.ndarray:
    """Temporal code: 1 when the enrollment had any activity in that 7-day week.

    Args:
        data: The enrollments.

    Returns:
        ``(n, 5)`` int8 array (weeks 1-4 and the 2-day tail).
    """
    act = data.counts.sum(axis=2) > 0
    return np.stack([act[:, 7 * w:7 * (w + 1)].any(1) for w in range(5)], axis=1).astype(np.int8)
