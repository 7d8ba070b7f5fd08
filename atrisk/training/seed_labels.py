"""The seed's label construction (Li et al., EDM 2020, eq. 1, §4.2–4.3, Alg. 1).

Next to the "horizon" construction of :mod:`atrisk.training.labels` (one label per Δ,
"dropout within Δ days", existing pairs relabelled as pseudo-positives), this module
builds the labels as the seed describes them; ``docs/method.md`` gives the reading
and the sections each choice rests on.

- **P** (eq. 1): the *dropout pair* of each dropout student only — the pair
  ``<s, t_n>`` at its dropout, i.e. its latest pair with ``0 < d − t_n ≤ 1`` day
  (``d`` = dropout time; on our daily grid the last pair before ``d``).
- **N**: every other pair (earlier pairs of dropouts included).
- **P̃** (§4.3): pseudo pairs ``<s, t̃>`` on whole days with
  ``max(t_{n−1}, t_n − Λ) < t̃ < t_n``, *added* to P ∪ N with label 1 and weight
  ``G((t_n − t̃) / Λ)``; ``t_{n−1}`` is the student's previous record before ``t_n``
  (by default: the latest class, see :func:`seed_anchors`).  Their features are
  recomputed at ``t̃`` by a caller-supplied builder, so they use only data before
  ``t̃``.
- Class balance (Alg. 1): weighted over-sampling — seeded draws with replacement from
  P ∪ P̃, probability ∝ weight (P at 1, P̃ at G), every row then at weight 1 — or
  importance weighting (:func:`atrisk.training.labels.oversample`), chosen by
  :func:`balance`.

Pseudo rows and over-sampled copies are training rows only: evaluate on the rows
where ``is_pseudo`` and ``is_copy`` are both false (:func:`evaluation_rows`).

Example:
    >>> from atrisk.features.pairs import build_pairs                  # doctest: +SKIP
    >>> from atrisk.features.time_variant import class_table           # doctest: +SKIP
    >>> rows = seed_labels(pairs, lambda k: build_pairs(logs, keys=k), lookback=7,
    ...                    records=class_table(logs))                  # doctest: +SKIP
    >>> train_rows = balance(rows, "oversample", target_share=0.3)      # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from atrisk.errors import AtriskError
from atrisk.ingest.logs import to_utc
from atrisk.training.labels import WEIGHTINGS, add_labels, oversample

#: Class-balance methods of :func:`balance`.
BALANCE_METHODS = ("oversample", "reweight")
#: Evaluation label rules of :func:`step_ahead_labels`.
STEP_RULES = ("within", "exactly")
DAY = pd.Timedelta(days=1)

FeatureBuilder = Callable[[pd.DataFrame], pd.DataFrame]


def _require(pairs: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in pairs.columns]
    if missing:
        raise AtriskError(f"{what} needs column(s) {missing} in the pairs table")


def _days_to_dropout(pairs: pd.DataFrame) -> np.ndarray:
    days = (to_utc(pairs["dropout_time"]) - to_utc(pairs["t"])) / DAY
    return days.to_numpy(dtype=float)


def dropout_pair_mask(pairs: pd.DataFrame, max_gap_days: float = 1.0) -> np.ndarray:
    """Mark the seed's P: per dropout student its latest pair ``t`` with ``0 < d − t ≤ gap``.

    Args:
        pairs: Pairs with ``student_id``, ``t`` and ``dropout_time`` (NaT for
            non-dropouts).
        max_gap_days: How close before the dropout time the pair must be (1 day on a
            daily grid: exactly the last pair of a dropout).

    Returns:
        Boolean array aligned with ``pairs``; at most one ``True`` per student.  A
        dropout whose pairs stop more than ``max_gap_days`` before its dropout has no
        dropout pair.

    Raises:
        AtriskError: When a column is missing.
    """
    _require(pairs, ("student_id", "t", "dropout_time"), "dropout_pair_mask")
    days = _days_to_dropout(pairs)
    with np.errstate(invalid="ignore"):
        near = (days > 0) & (days <= max_gap_days)
    mask = np.zeros(len(pairs), dtype=bool)
    if not near.any():
        return mask
    cand = pd.DataFrame({"sid": pairs["student_id"].astype(str).to_numpy(),
                         "t": to_utc(pairs["t"]).array, "i": np.arange(len(pairs))})[near]
    latest = cand.sort_values(["sid", "t", "i"]).groupby("sid", sort=False).tail(1)
    mask[latest["i"].to_numpy()] = True
    return mask


def seed_anchors(pairs: pd.DataFrame, records: pd.DataFrame | None = None,
                 max_gap_days: float = 1.0) -> pd.DataFrame:
    """Return ``t_n`` and ``t_{n−1}`` of every dropout student with a dropout pair.

    Args:
        pairs: Pairs with ``student_id``, ``t``, ``dropout_time``.
        records: The student's records that define ``t_{n−1}``: a table with
            ``student_id`` and ``time`` (e.g. ``class_table(logs, sessions)``: the
            latest class before ``t_n``).  ``None``: the student's previous *pair*
            before ``t_n`` (on a daily grid ``t_n − 1 day``, which leaves no whole day
            for a pseudo pair).
        max_gap_days: See :func:`dropout_pair_mask`.

    Returns:
        DataFrame ``student_id``, ``t_n`` (dropout pair time), ``dropout_time``,
        ``t_prev`` (``t_{n−1}``; NaT when the student has none before ``t_n``).

    Raises:
        AtriskError: When a column is missing.
    """
    mask = dropout_pair_mask(pairs, max_gap_days)
    anchors = pd.DataFrame({
        "student_id": pairs["student_id"].astype(str).to_numpy()[mask],
        "t_n": to_utc(pairs["t"]).array[mask],
        "dropout_time": to_utc(pairs["dropout_time"]).array[mask],
    })
    if records is None:
        prev = pd.DataFrame({"student_id": pairs["student_id"].astype(str).to_numpy(),
                             "time": to_utc(pairs["t"]).array})
    else:
        _require(records, ("student_id", "time"), "seed_anchors records")
        prev = pd.DataFrame({"student_id": records["student_id"].astype(str).to_numpy(),
                             "time": to_utc(records["time"]).array})
    prev = prev[prev["student_id"].isin(set(anchors["student_id"]))]
    merged = anchors.merge(prev, on="student_id", how="left")
    merged = merged[merged["time"] < merged["t_n"]]
    t_prev = merged.groupby("student_id")["time"].max()
    anchors["t_prev"] = pd.Series(t_prev.reindex(anchors["student_id"]).array,
                                  index=anchors.index)
    anchors["t_prev"] = to_utc(anchors["t_prev"])
    anchors.index = pd.RangeIndex(len(anchors))
    return anchors


def records_from_pairs(pairs: pd.DataFrame,
                       column: str = "time_days_since_last_class") -> pd.DataFrame:
    """Recover each dropout's last class before its dropout pair from the pairs alone.

    ``time_days_since_last_class`` of the dropout pair ``<s, t_n>`` is ``t_n`` minus the
    latest class before ``t_n``, so ``t_{n−1} = t_n − that many days`` (rounded to the
    second).  Use it as ``records`` of :func:`seed_labels` where the logs are not at
    hand (``RiskModel.fit`` gets only pairs).

    Args:
        pairs: Pairs with ``student_id``, ``t``, ``dropout_time`` and ``column``.
        column: Days since the latest class, per pair.

    Returns:
        DataFrame ``student_id``, ``time``: one row per dropout pair whose ``column``
        is known.

    Raises:
        AtriskError: When a column is missing.
    """
    _require(pairs, ("student_id", "t", "dropout_time", column), "records_from_pairs")
    mask = dropout_pair_mask(pairs)
    days = pairs[column].to_numpy(dtype=float)[mask]
    t_n = to_utc(pairs["t"]).reset_index(drop=True)[mask].reset_index(drop=True)
    time = (t_n - pd.to_timedelta(days, unit="D")).dt.round("s")
    out = pd.DataFrame({"student_id": pairs["student_id"].astype(str).to_numpy()[mask],
                        "time": time.array})
    return out[out["time"].notna()].reset_index(drop=True)


def pseudo_keys(anchors: pd.DataFrame, lookback: int, weighting: str = "convex") -> pd.DataFrame:
    """Return the pseudo pairs P̃: whole days ``t̃`` with ``max(t_{n−1}, t_n − Λ) < t̃ < t_n``.

    Args:
        anchors: Output of :func:`seed_anchors`.
        lookback: ``Λ`` in days (0: none).
        weighting: ``G``: ``linear``, ``convex``, ``concave`` or ``constant`` (the
            functions of :data:`atrisk.training.labels.WEIGHTINGS`).

    Returns:
        DataFrame ``student_id``, ``t`` (= ``t̃``), ``days_before`` (``t_n − t̃`` in days),
        ``weight`` (``G((t_n − t̃) / Λ)``), ``t_n``, ``t_prev``; sorted by student and t.

    Raises:
        AtriskError: For an unknown weighting or a negative lookback.
    """
    if weighting not in WEIGHTINGS:
        raise AtriskError(f"unknown weighting {weighting!r}; use one of {sorted(WEIGHTINGS)}")
    if lookback < 0:
        raise AtriskError(f"lookback must be >= 0, got {lookback}")
    cols = ["student_id", "t", "days_before", "weight", "t_n", "t_prev"]
    n_steps = max(0, math.ceil(lookback) - 1)
    if n_steps == 0 or anchors.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols}).astype(
            {"t": "datetime64[ns, UTC]", "days_before": float, "weight": float,
             "t_n": "datetime64[ns, UTC]", "t_prev": "datetime64[ns, UTC]"})
    k = np.tile(np.arange(1, n_steps + 1), len(anchors))
    rep = anchors.loc[anchors.index.repeat(n_steps)].reset_index(drop=True)
    t_tilde = to_utc(rep["t_n"]) - pd.to_timedelta(k, unit="D")
    lower = to_utc(rep["t_n"]) - pd.Timedelta(days=lookback)
    t_prev = to_utc(rep["t_prev"])
    lower = lower.where(t_prev.isna() | (t_prev < lower), t_prev)
    keep = (t_tilde > lower).to_numpy()
    x = k / float(lookback)
    out = pd.DataFrame({
        "student_id": rep["student_id"].to_numpy(),
        "t": t_tilde.array,
        "days_before": k.astype(float),
        "weight": np.asarray(WEIGHTINGS[weighting](x), dtype=float),
        "t_n": to_utc(rep["t_n"]).array,
        "t_prev": t_prev.array,
    })[keep]
    return out.sort_values(["student_id", "t"], kind="stable").reset_index(drop=True)


def lookup_builder(pairs: pd.DataFrame) -> FeatureBuilder:
    """Return a feature builder that looks keys up in an existing pairs table.

    On a complete daily grid (``build_pairs`` with the default keys) every pseudo day
    is already a pair, and its features are those ``build_pairs`` recomputes at ``t̃``
    (tests/training/test_seed_labels.py checks both).  Use this when the logs are not
    at hand (e.g. inside ``RiskModel.fit``).

    Args:
        pairs: Pairs with ``student_id``, ``t`` and features.

    Returns:
        ``build(keys) -> rows`` (one row per key, in key order).

    Raises:
        AtriskError: (from the returned function) when a key is not in ``pairs``.
    """
    _require(pairs, ("student_id", "t"), "lookup_builder")
    index = pd.MultiIndex.from_arrays([pairs["student_id"].astype(str).to_numpy(),
                                       to_utc(pairs["t"]).array])
    if index.has_duplicates:
        raise AtriskError("lookup_builder needs unique (student_id, t) keys in the pairs")
    table = pairs.reset_index(drop=True)

    def build(keys: pd.DataFrame) -> pd.DataFrame:
        want = pd.MultiIndex.from_arrays([keys["student_id"].astype(str).to_numpy(),
                                          to_utc(keys["t"]).array])
        pos = index.get_indexer(want)
        if (pos < 0).any():
            miss = want[pos < 0][0]
            raise AtriskError(
                f"pseudo pair ({miss[0]}, {miss[1]}) is not in the pairs table: the grid is "
                "not daily there; pass a builder that recomputes features (build_pairs)")
        return table.iloc[pos].reset_index(drop=True)

    return build


def seed_labels(pairs: pd.DataFrame, build_features: FeatureBuilder, lookback: int,
                weighting: str = "convex", records: pd.DataFrame | None = None,
                max_gap_days: float = 1.0) -> pd.DataFrame:
    """Return P ∪ N ∪ P̃ with ``label``, ``weight`` and flags, as the seed builds them.

    Args:
        pairs: Pairs with ``student_id``, ``t``, ``dropout_time`` and features (every
            pair becomes a P or N row, unchanged).
        build_features: ``build(keys) -> rows``: features of arbitrary ``<student, t̃>``
            keys (DataFrame ``student_id``, ``t``), one row per key in key order, each
            from data strictly before its ``t`` — e.g.
            ``lambda k: build_pairs(logs, in_class, sessions, config, keys=k)`` or
            :func:`lookup_builder`.
        lookback: ``Λ`` in days (0: no pseudo pairs).
        weighting: ``G`` (``linear``, ``convex``, ``concave``, ``constant``).
        records: Defines ``t_{n−1}`` (see :func:`seed_anchors`).
        max_gap_days: See :func:`dropout_pair_mask`.

    Returns:
        A new DataFrame: the input pairs (same order) then the pseudo pairs, with the
        pairs' columns plus ``label`` (1 for P and P̃), ``weight`` (1 for P and N,
        ``G`` for P̃), ``is_pseudo``, ``is_dropout_pair`` and ``days_before``
        (``t_n − t`` in days for P and P̃, NaN for N).

    Raises:
        AtriskError: On missing columns, bad parameters, or a builder that returns
            other keys or lacks a feature column.
    """
    _require(pairs, ("student_id", "t", "dropout_time"), "seed_labels")
    base = pairs.reset_index(drop=True).copy()
    is_p = dropout_pair_mask(base, max_gap_days)
    anchors = seed_anchors(base, records, max_gap_days)
    pseudo = pseudo_keys(anchors, lookback, weighting)
    base["label"] = is_p.astype("int8")
    base["weight"] = 1.0
    base["is_pseudo"] = False
    base["is_dropout_pair"] = is_p
    base["days_before"] = np.where(is_p, 0.0, np.nan)
    if pseudo.empty:
        return base
    keys = pseudo[["student_id", "t"]].reset_index(drop=True)
    built = build_features(keys.copy())
    if len(built) != len(keys):
        raise AtriskError(f"the feature builder returned {len(built)} rows for "
                          f"{len(keys)} pseudo keys")
    same = (built["student_id"].astype(str).to_numpy() == keys["student_id"].to_numpy()) & (
        to_utc(built["t"]).array == to_utc(keys["t"]).array)
    if not same.all():
        raise AtriskError("the feature builder must return one row per key, in key order")
    hard = [c for c in pairs.columns if str(c).startswith(("out_", "time_"))
            and c not in built.columns]  # in-class columns may be absent (NaN)
    if hard:
        raise AtriskError(f"the feature builder did not return feature column(s) {hard}")
    rows = built.reindex(columns=list(pairs.columns)).copy()
    rows["student_id"] = keys["student_id"].to_numpy()
    rows["t"] = to_utc(keys["t"]).array
    drop = anchors.set_index("student_id")["dropout_time"]
    rows["dropout_time"] = pd.Series(drop.reindex(keys["student_id"]).array, index=rows.index)
    rows["label"] = np.int8(1)
    rows["weight"] = pseudo["weight"].to_numpy()
    rows["is_pseudo"] = True
    rows["is_dropout_pair"] = False
    rows["days_before"] = pseudo["days_before"].to_numpy()
    for col in base.columns:  # keep the pairs' dtypes where the builder changed them
        if col in rows and rows[col].dtype != base[col].dtype and col != "dropout_time":
            try:
                rows[col] = rows[col].astype(base[col].dtype)
            except (TypeError, ValueError):
                pass
    out = pd.concat([base, rows], ignore_index=True)
    out["dropout_time"] = to_utc(out["dropout_time"])
    return out


def balance(rows: pd.DataFrame, method: str = "oversample", target_share: float = 0.3,
            seed: int = 0) -> pd.DataFrame:
    """Balance the classes: seeded weighted over-sampling, or importance weights.

    - ``oversample`` (Alg. 1 as written): draw ``n_c`` copies with replacement from the
      positive rows (P ∪ P̃), each with probability ∝ its ``weight`` (P at 1, P̃ at G),
      so that positives make ``target_share`` of the rows; every row (originals and
      copies) then has weight 1, and copies have ``is_copy = True``.
    - ``reweight``: :func:`atrisk.training.labels.oversample` — no copies; the positive
      weights are scaled so that positives carry ``target_share`` of the total weight.

    Args:
        rows: Rows with ``label`` and ``weight`` (from :func:`seed_labels` or
            :func:`atrisk.training.labels.augment`).
        method: ``oversample`` or ``reweight``.
        target_share: Wanted positive share, in [0, 1).
        seed: Seed of the draws (``oversample``).

    Returns:
        A new DataFrame with a fresh index and an ``is_copy`` column.  Nothing is
        drawn when the share is already reached, the target is 0, or a class is
        missing.

    Raises:
        AtriskError: For an unknown method, a share outside [0, 1), or missing columns.
    """
    if method not in BALANCE_METHODS:
        raise AtriskError(f"unknown balance method {method!r}; use one of "
                          f"{list(BALANCE_METHODS)}")
    if not 0 <= target_share < 1:
        raise AtriskError(f"target_share must be in [0, 1), got {target_share}")
    _require(rows, ("label", "weight"), "balance")
    if method == "reweight":
        out = oversample(rows, target_share)
        out["is_copy"] = False
        return out
    out = rows.reset_index(drop=True)
    pos = np.flatnonzero(out["label"].to_numpy() == 1)
    n, n_pos = len(out), len(pos)
    w = out["weight"].to_numpy(dtype=float)[pos]
    n_copies = math.ceil((target_share * n - n_pos) / (1 - target_share)) if n_pos else 0
    out = out.assign(weight=1.0, is_copy=False)
    if target_share == 0 or n_pos == 0 or n_pos == n or n_copies <= 0 or w.sum() <= 0:
        return out
    rng = np.random.default_rng(seed)
    drawn = rng.choice(pos, size=n_copies, replace=True, p=w / w.sum())
    copies = out.iloc[drawn].assign(is_copy=True)
    return pd.concat([out, copies], ignore_index=True)


def evaluation_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Return the original pairs of a labelled table (no pseudo pairs, no copies).

    Args:
        rows: Output of :func:`seed_labels` or :func:`balance`.

    Returns:
        The rows whose ``is_pseudo`` and ``is_copy`` are false (when present).
    """
    keep = np.ones(len(rows), dtype=bool)
    for col in ("is_pseudo", "is_copy"):
        if col in rows.columns:
            keep &= ~rows[col].to_numpy(dtype=bool)
    return rows[keep]


def step_ahead_labels(pairs: pd.DataFrame, deltas: list[int],
                      rule: str = "within") -> pd.DataFrame:
    """Add the evaluation labels of Δ-step-ahead prediction for each Δ.

    Args:
        pairs: Pairs with ``t`` and ``dropout_time``.
        deltas: Δ values in days.
        rule: ``within``: ``dropout_within_Δ`` = the dropout falls in ``(t, t + Δ]``
            (the default, what the risk list promises); ``exactly``:
            ``dropout_on_day_Δ`` = it falls in ``(t + Δ − 1, t + Δ]`` (the dropout pair,
            moved Δ − 1 days earlier).

    Returns:
        A copy of ``pairs`` with one 0/1 column per Δ.

    Raises:
        AtriskError: For an unknown rule or missing columns.
    """
    if rule not in STEP_RULES:
        raise AtriskError(f"unknown rule {rule!r}; use one of {list(STEP_RULES)}")
    if rule == "within":
        return add_labels(pairs, deltas)
    _require(pairs, ("t", "dropout_time"), "step_ahead_labels")
    days = _days_to_dropout(pairs)
    out = pairs.copy()
    with np.errstate(invalid="ignore"):
        for d in deltas:
            out[f"dropout_on_day_{int(d)}"] = ((days > d - 1) & (days <= d)).astype("int8")
    return out

