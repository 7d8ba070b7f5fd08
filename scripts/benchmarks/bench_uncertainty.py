"""Benchmark: cluster-bootstrap intervals on ~50k pairs, and the seed labels at paper scale.

Usage:
    python scripts/benchmarks/bench_uncertainty.py [--n-boot 1000] [--skip-seed] > out.json

1. ``bootstrap``: a synthetic held-out set of 50,000 pairs of 3,000 students (daily
   pairs, 1 % positive, scores with signal): time of :func:`bootstrap_auc`,
   :func:`brier_score`, :func:`recall_at_top` (``--n-boot`` resamples by student each),
   the pair-level AUC bootstrap for comparison, :func:`evaluation_summary` and a
   two-group :func:`group_report`.  Target: about 1 s for the AUC.
2. ``seed_labels``: the paper-scale cohort (3,926 students, no audio) → pairs →
   :func:`seed_labels` (Λ = 7, convex, ``t_{n−1}`` = last class) with the lookup builder
   and with ``build_pairs`` recomputing the pseudo pairs (and ``t_{n−1}`` recovered from
   the pairs by :func:`records_from_pairs`), then :func:`balance` both ways.

Timings on a machine shared with other jobs are pessimistic: ``load_avg`` is recorded
at the start and the end, and ``*_cpu_s`` is the process CPU time of the same step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - w0, 3), round(time.process_time() - c0, 3)


def bench_bootstrap(n_boot: int) -> dict:
    from atrisk.training.uncertainty import (
        bootstrap_auc,
        brier_score,
        evaluation_summary,
        group_report,
        recall_at_top,
    )

    rng = np.random.default_rng(0)
    n_students, n_pairs = 3000, 50_000
    sid = np.sort(rng.integers(0, n_students, n_pairs))
    # each student's pairs are consecutive days from a random start
    first = pd.Series(np.arange(n_pairs)).groupby(sid).transform("min").to_numpy()
    start = rng.integers(0, 60, n_students)
    t = start[sid] + (np.arange(n_pairs) - first)
    risk = rng.normal(size=n_students)[sid]
    y = rng.uniform(size=n_pairs) < 1 / (1 + np.exp(-(-5.3 + 1.2 * risk)))
    p = 1 / (1 + np.exp(-(-4.5 + risk + rng.normal(0, 1, n_pairs) + 1.5 * y)))
    out: dict = {"n_pairs": n_pairs, "n_students": int(len(np.unique(sid))),
                 "n_pos": int(y.sum()), "n_boot": n_boot}
    res, out["auc_s"], out["auc_cpu_s"] = _timed(bootstrap_auc, y, p, sid, n_boot)
    out["auc"], out["auc_ci"] = res.value, list(res.ci)
    res, out["auc_pairs_s"], _ = _timed(bootstrap_auc, y, p, None, n_boot)
    out["auc_ci_pair_level"] = list(res.ci)
    res, out["brier_s"], _ = _timed(brier_score, y, p, sid, n_boot)
    out["brier"], out["brier_ci"] = res.value, list(res.ci)
    res, out["recall_s"], out["recall_cpu_s"] = _timed(recall_at_top, y, p, t, sid, 0.3,
                                                       n_boot)
    out["recall_at_top30"], out["recall_ci"] = res.value, list(res.ci)
    _, out["summary_s"], _ = _timed(evaluation_summary, y, p, sid, t, 0.3, n_boot)
    frame = pd.DataFrame({"student_id": sid, "t": t, "y": y.astype(int), "p": p,
                          "grade": np.where(sid % 2 == 0, "5", "8")})
    _, out["group_report_2_groups_s"], _ = _timed(group_report, frame, "grade",
                                                  n_boot=n_boot)
    out["target_auc_s"] = 1.0
    return out


def bench_seed() -> dict:
    from atrisk.features.pairs import build_pairs
    from atrisk.features.time_variant import class_table
    from atrisk.ingest.logs import load_logs
    from atrisk.synthetic import PAPER_N_STUDENTS, PAPER_PARAMS, generate_cohort
    from atrisk.training.seed_labels import (
        balance,
        lookup_builder,
        records_from_pairs,
        seed_labels,
    )

    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(Path(tmp), n_students=PAPER_N_STUDENTS, seed=0, audio=False,
                        params=PAPER_PARAMS)
        logs = load_logs(Path(tmp) / "logs")
    pairs, pairs_s, _ = _timed(build_pairs, logs)
    records = class_table(logs)
    out: dict = {"n_pairs": int(len(pairs)), "pairs_s": pairs_s}
    rows, out["seed_labels_lookup_s"], _ = _timed(
        seed_labels, pairs, lookup_builder(pairs), 7, "convex", records)
    rows2, out["seed_labels_recompute_s"], _ = _timed(
        seed_labels, pairs, lambda k: build_pairs(logs, keys=k), 7, "convex", records)
    feats = [c for c in pairs.columns if c.startswith(("out_", "time_"))]
    pseudo = rows[rows["is_pseudo"]]
    out["recompute_equals_lookup"] = bool(np.allclose(
        rows2.loc[rows2["is_pseudo"], feats].to_numpy(float), pseudo[feats].to_numpy(float),
        equal_nan=True))
    rows3 = seed_labels(pairs, lookup_builder(pairs), 7, "convex", records_from_pairs(pairs))
    out["records_from_pairs_equal"] = bool(rows3.equals(rows))
    out["n_dropout_pairs"] = int(rows["is_dropout_pair"].sum())
    out["n_pseudo"] = int(len(pseudo))
    out["n_dropouts_with_pseudo"] = int(pseudo["student_id"].nunique())
    out["positive_share_rows_before"] = float(rows["label"].mean())
    over, out["oversample_s"], _ = _timed(balance, rows, "oversample", 0.3, 0)
    out["n_rows_oversampled"] = int(len(over))
    _, out["reweight_s"], _ = _timed(balance, rows, "reweight", 0.3, 0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--skip-seed", action="store_true")
    args = ap.parse_args(argv)
    result: dict = {"cpu_count": os.cpu_count(), "load_avg_start": list(os.getloadavg())}
    result["bootstrap"] = bench_bootstrap(args.n_boot)
    if not args.skip_seed:
        result["seed_labels"] = bench_seed()
    result["load_avg_end"] = list(os.getloadavg())
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
