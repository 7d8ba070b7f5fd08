"""Benchmark: one small LightGBM fit (the demo's size) with 1 or 2 threads, spinning or not.

Usage:
    python scripts/benchmarks/bench_train_threads.py > docs/results/train_threads.json

A pairs table like the demo's (``--students`` of the demo preset, logs only, plus 268
random in-class columns for the PCA block) is fitted for Δ = 1 (``fit_horizon``) three
times in each setting, in a fresh process each (``OMP_WAIT_POLICY`` is read when
OpenMP starts): LightGBM threads 1 or 2 × ``OMP_WAIT_POLICY`` ``ACTIVE`` (spinning,
OpenMP's default) or ``PASSIVE``; BLAS on 1 thread (as ``fit_rows`` sets it) or on the
library's default.  Reported: mean wall and CPU seconds per fit and the load average,
since the differences are largest on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd
from threadpoolctl import threadpool_limits
from atrisk.config import TrainingConfig
from atrisk.features.pairs import build_pairs
from atrisk.ingest.logs import load_logs
from atrisk.synthetic import generate_cohort
import atrisk.training.fit as F
from atrisk.training.labels import add_labels
n, threads, blas1 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
with tempfile.TemporaryDirectory() as tmp:
    generate_cohort(Path(tmp), n_students=n, seed=0, audio=False)
    pairs = build_pairs(load_logs(Path(tmp) / "logs"))
rng = np.random.default_rng(0)
extra = pd.DataFrame(rng.normal(size=(len(pairs), 268)), index=pairs.index,
                     columns=[f"in_x{i}" for i in range(268)])
pairs = add_labels(pd.concat([pairs, extra], axis=1), [1])
in_cols, other, _ = F.split_columns(pairs)
F.SMALL_ROWS = 0                     # use F.N_JOBS whatever the size
F.N_JOBS = threads
cfg = TrainingConfig()
if not blas1:                        # undo fit_rows' one-thread BLAS limit
    F.threadpool_limits = lambda **k: threadpool_limits(limits=None)
walls, cpus = [], []
for _ in range(3):
    t, c = time.perf_counter(), time.process_time()
    F.fit_horizon(pairs, 1, in_cols, other, cfg)
    walls.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
print(json.dumps({"n_pairs": len(pairs), "n_features": len(in_cols + other),
                  "wall_s": round(float(np.mean(walls)), 3),
                  "cpu_s": round(float(np.mean(cpus)), 3)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=80)
    args = ap.parse_args()
    out = {"command": " ".join(["python", *sys.argv]), "cpu_count": os.cpu_count(),
           "load_avg_start": [round(v, 2) for v in os.getloadavg()], "runs": []}
    for policy in ("ACTIVE", "PASSIVE"):
        for threads in (1, 2):
            for blas1 in ("1", "0"):
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", CHILD, str(args.students),
                                       str(threads), blas1], env=env, capture_output=True,
                                      text=True, check=True)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res.update({"omp_wait_policy": policy, "lightgbm_threads": threads,
                            "blas_one_thread": blas1 == "1",
                            "load_avg": round(os.getloadavg()[0], 2),
                            "process_s": round(time.perf_counter() - t, 1)})
                out["runs"].append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
