"""Reproduce the CFIN paper's KDD Cup comparison (Table 4) on the shared KDD Cup 2015 data.

Two splits: by course (train on 80 % of the courses, test on the other courses, whose
context statistics come from their own data) and by enrollment (stratified 80/20).
Every model (LR, SVM, RF, GBDT, DNN tuned by 5-fold CV on the training rows; CFIN;
CFIN-en) is trained on the training part and scored on the test part.  Also runs the
temporal-code clustering (Table 3 style) on all enrollments.

Usage:
    python scripts/recipes/reproduce_cfin.py [--data ../shared/data/kddcup2015] [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from atrisk.mooc.clustering import cluster_temporal_codes
from atrisk.mooc.kddcup import load_kddcup
from atrisk.mooc.model import MODELS, MoocConfig, MoocModel
from atrisk.workspace import git_commit

#: Table 4 of Feng et al. (AAAI 2019), KDD Cup 2015, AUC (%) (their features and split).
SEED_TABLE4_AUC = {"lr": 86.78, "svm": 88.56, "rf": 88.82, "dnn": 88.94, "gbdt": 89.12,
                   "cfin": 90.07, "cfin_en": 90.93}
NAMES = {"lr": "LR", "svm": "SVM (linear)", "rf": "RF", "gbdt": "GBDT (LightGBM)",
         "dnn": "DNN (3 layers)", "cfin": "CFIN", "cfin_en": "CFIN-en"}


def run_split(data, train_mask, cfg: MoocConfig, log) -> dict:
    t0 = time.perf_counter()
    model = MoocModel(cfg, device="auto").fit(data.subset(train_mask), on_step=log)
    fit_s = time.perf_counter() - t0
    res = model.evaluate(data.subset(~train_mask))
    res.update({"n_train": int(train_mask.sum()), "fit_seconds": fit_s,
                "train_seconds": model.timings_, "cv": model.cv_,
                "cfin_epochs": len(model.cfin_.history_) if model.cfin_ else None})
    return res


def markdown(result: dict) -> str:
    cs, es = result["splits"]["course"], result["splits"]["enrollment"]
    lines = [
        "# CFIN on KDD Cup 2015 (shared copy): our numbers beside the seed's Table 4",
        "",
        f"Data: {result['n_enrollments']} enrollments, {result['n_courses']} courses, "
        f"dropout rate {result['dropout_rate']:.3f}. Course split: train on "
        f"{len(result['train_courses'])} courses ({cs['n_train']} enrollments), test on "
        f"{len(result['test_courses'])} unseen courses ({cs['n_enrollments']} enrollments, "
        f"dropout rate {cs['dropout_rate']:.3f}): {', '.join(result['test_courses'])}. "
        f"Enrollment split: stratified 80/20 ({es['n_train']} / {es['n_enrollments']}).",
        "",
        "| model | seed AUC (Table 4) | course split AUC | course split F1 "
        "| enrollment split AUC | enrollment split F1 |",
        "|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        c, e = cs["models"][m], es["models"][m]
        lines.append(f"| {NAMES[m]} | {SEED_TABLE4_AUC[m]:.2f} | {100 * c['auc']:.2f} | "
                     f"{100 * c['f1']:.2f} | {100 * e['auc']:.2f} | {100 * e['f1']:.2f} |")
    lines += ["", "AUC and F1 in %. The seed's numbers come from its own features (raw click "
              "logs with user and object tables) and its own split; ours from the daily counts "
              "of the shared copy (see docs/mooc.md, 'What differs from the seed').", "",
              "## Temporal-code clusters (weekly visit bits, K-means, k by silhouette)", "",
              f"k = {result['clusters']['k']} (silhouette: "
              + ", ".join(f"k={k}: {v:.3f}" for k, v in result["clusters"]["silhouette"].items())
              + ")", ""]
    rows = result["clusters"]["summary"]
    cols = list(rows[0])
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v)
                                       for v in r.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/kddcup2015"))
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["course", "enrollment", "all", "merge"], default="all",
                    help="run one split (writes <out>/cfin_<split>.part.json, so the two can "
                    "run as two processes), both, or only merge finished parts")
    args = ap.parse_args()

    def log(msg) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    data = load_kddcup(args.data)
    log(f"loaded {len(data)} enrollments")
    cfg = MoocConfig(seed=args.seed)
    courses = np.array(sorted(set(data.course_id)))
    rng = np.random.default_rng(args.seed)
    rng.shuffle(courses)
    n_test = int(round(0.2 * len(courses)))
    test_courses = sorted(courses[:n_test].tolist())
    course_train = ~np.isin(data.course_id, test_courses)
    idx_tr, _ = train_test_split(np.arange(len(data)), test_size=0.2, random_state=args.seed,
                                 stratify=data.labels)
    enroll_train = np.zeros(len(data), bool)
    enroll_train[idx_tr] = True
    args.out.mkdir(parents=True, exist_ok=True)
    todo = {"course": course_train, "enrollment": enroll_train}
    if args.split in todo:
        todo = {args.split: todo[args.split]}
    elif args.split == "merge":
        todo = {}
    for name, mask in todo.items():
        log(f"split {name}")
        res = run_split(data, mask, cfg, lambda m, s=name: log(f"  {s}: {m} done"))
        (args.out / f"cfin_{name}.part.json").write_text(json.dumps(res, indent=2, default=float))
        log(json.dumps(res["models"]))
    if args.split in ("course", "enrollment"):
        return
    splits = {name: json.loads((args.out / f"cfin_{name}.part.json").read_text())
              for name in ("course", "enrollment")}
    clusters = cluster_temporal_codes(data, seed=args.seed)
    result = {
        "data": str(args.data), "n_enrollments": len(data),
        "n_courses": len(courses), "dropout_rate": float(np.mean(data.labels)),
        "train_courses": sorted(set(courses.tolist()) - set(test_courses)),
        "test_courses": test_courses, "seed_table4_auc": SEED_TABLE4_AUC,
        "splits": splits,
        "clusters": {"k": clusters.k, "silhouette": clusters.silhouette,
                     "summary": clusters.summary.to_dict(orient="records")},
        "git_commit": git_commit(),
    }
    (args.out / "cfin.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.out / "cfin.md").write_text(markdown(result))
    for name in splits:
        (args.out / f"cfin_{name}.part.json").unlink()
    log(f"wrote {args.out / 'cfin.json'} and {args.out / 'cfin.md'}")


if __name__ == "__main__":
    main()
