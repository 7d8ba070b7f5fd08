"""Reproduce the seed's experiment grid (K-12 time-aware augmented GBDT).

Usage:
    python scripts/recipes/reproduce_k12.py --dataset synthetic --out docs/results/k12_synthetic
    python scripts/recipes/reproduce_k12.py --dataset kddcup --data ../shared/data/kddcup2015 \\
        --out docs/results/k12_kddcup [--test-data OTHER_DIR]

Writes ``OUT/results.json`` (rewritten after every stage, so an interrupted run keeps
what it finished) and ``OUT/report.html`` (figures embedded).  Without ``--test-data``
the students (enrollments) are split 80/20; with it, the model is trained on all of
``--data`` and evaluated on every pair of ``--test-data``.

Grid: AUC per Δ = 1…14 for gbdt_aug (LightGBM, Λ and G from the config, parameters
chosen by 3-fold cross-validation grouped by student), gbdt_none (Λ = 0), lr, dt, rf on
the same features and training students; Λ ∈ {none, 3, 7, 14} and G ∈ {linear, convex,
concave, constant} at Δ ∈ {1, 3, 7, 14}; feature groups at Δ = 7 and 14; recall when
flagging the top 30 % each day; a reliability curve at Δ = 7.

``--max-delta N`` shrinks the grid to Δ ≤ N (quick checks and tests only);
``--jobs`` sets the threads of LightGBM and the random forest (``--jobs 1`` on a
shared, oversubscribed machine; seeds are fixed, but LightGBM sums in another order
with another thread count, so AUCs can move in the last digits).  The script sets
``OMP_WAIT_POLICY=PASSIVE`` unless given: spinning OpenMP threads otherwise burn the
CPU share the fits need.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# spinning OpenMP threads (LightGBM) waste the CPU share on an oversubscribed machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from atrisk.config import TrainingConfig
from atrisk.features.pairs import feature_columns
from atrisk.training import fit as fit_module
from atrisk.training.evaluate import recall_at_top
from atrisk.training.fit import fit_baselines, fit_horizon, split_columns, tune_params
from atrisk.training.labels import add_labels, augment, label_column, oversample

HORIZONS = list(range(1, 15))
STUDY_HORIZONS = [1, 3, 7, 14]
GROUP_DELTAS = [7, 14]
LOOKBACKS = {"none": 0, "3": 3, "7": 7, "14": 14}
WEIGHTINGS = ["linear", "convex", "concave", "constant"]
GROUP_PREFIX = {"in": "in_", "out": "out_", "time": "time_"}
MODELS = ["gbdt_aug", "gbdt_none", "lr", "dt", "rf"]
T0 = time.perf_counter()
#: The seed's reported statistics (§5.1, Table 2, Fig. 4) to compare with.
SEED_TARGETS = {"synthetic": {
    "n_students": 3926, "dropout_rate": 0.1639, "mean_span_days": 17, "n_pairs": 66742,
    "positive_ratio_before": 0.0096, "positive_ratio_after": 0.10,
    "auc_gbdt_aug": {"1": 0.8262, "14": 0.7430}, "recall_at_top30_next_day": "> 0.70"}}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------- data
def synthetic_pairs(data: Path | None, seed: int) -> tuple[pd.DataFrame, dict]:
    from atrisk.features.in_class import in_class_at
    from atrisk.features.pairs import build_pairs
    from atrisk.ingest.logs import load_logs
    from atrisk.synthetic import (
        PAPER_N_STUDENTS,
        PAPER_PARAMS,
        generate_cohort,
        simulate_in_class,
    )

    if data is None:
        data = Path(tempfile.mkdtemp(prefix="k12_cohort_"))
        log(f"generating the paper-scale cohort ({PAPER_N_STUDENTS} students, no audio) "
            f"in {data}")
        generate_cohort(data, n_students=PAPER_N_STUDENTS, seed=seed, audio=False,
                        params=PAPER_PARAMS)
    logs = load_logs(data / "logs")
    pairs = build_pairs(logs)
    sessions, in_class = simulate_in_class(data, seed)
    keys = pairs[["student_id", "t"]]
    pairs = pd.concat([pairs, in_class_at(in_class, sessions, keys, 3)], axis=1)
    oc = logs.outcomes
    span = (oc.set_index("student_id")["status_time"]
            - logs.students.set_index("student_id")["enrolled_at"]) / pd.Timedelta(days=1)
    info = {
        "source": str(data),
        "n_students_cohort": int(len(logs.students)),
        "dropout_rate": float((oc["status"] == "dropout").mean()),
        "mean_span_days": float(span.mean()),
        "in_class_features": "SIMULATED: per-class values from the generator's model of "
                             "extracted features (no audio at this size)",
        "n_log_errors": len(logs.errors),
    }
    return pairs, info


def kddcup_pairs(data: Path, max_enrollments: int | None, seed: int) -> tuple[pd.DataFrame, dict]:
    from atrisk.mooc.daily_pairs import load_kddcup_pairs

    pairs, info = load_kddcup_pairs(data, max_enrollments, seed)
    info["source"] = str(data)
    info["in_class_features"] = "none (no recordings in KDD Cup 2015)"
    return pairs, info


# ----------------------------------------------------------------------------- models
def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _gbdt_auc(train, test, delta, cfg, lookback, weighting, cols=None):
    in_cols, other, _ = split_columns(train)
    if cols is not None:
        in_cols = [c for c in in_cols if c in cols]
        other = [c for c in other if c in cols]
    c = cfg.model_copy(update={"weighting": weighting})
    pipe, info = fit_horizon(train, delta, in_cols, other, c, lookback)
    if pipe is None:
        return None, None, info
    p = pipe.predict_proba(test[in_cols + other].astype(float))[:, 1]
    return _auc(test[label_column(delta)].to_numpy(), p), p, info


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _lines(title: str, series: dict, xlabel: str = "Δ (days)") -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for name, values in series.items():
        xs = sorted(int(k) for k in values)
        ys = [np.nan if values[str(x)] is None else values[str(x)] for x in xs]
        ax.plot(xs, ys, marker="o", label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _bars(title: str, groups: dict) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    names = list(groups)
    for k, d in enumerate(str(x) for x in GROUP_DELTAS):
        vals = [np.nan if groups[g].get(d) is None else groups[g][d] for g in names]
        ax.bar(np.arange(len(names)) + 0.4 * k, vals, width=0.4, label=f"Δ = {d}")
    ax.set_xticks(np.arange(len(names)) + 0.2, names, rotation=20, fontsize=8)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("AUC")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def _reliability(rel: dict) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.plot(rel["predicted"], rel["observed"], marker="o")
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("observed dropout share")
    ax.set_title(f"Reliability, gbdt_aug, Δ = {rel['delta']}")
    return _png(fig)


def _table(rows: dict, cols: list[str], label: str) -> str:
    def cell(v):
        return "–" if v is None else f"{v:.4f}"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(str(r))}</td>"
        + "".join(f"<td>{cell(vals.get(c))}</td>" for c in cols) + "</tr>"
        for r, vals in rows.items())
    return f"<table><tr><th>{html.escape(label)}</th>{head}</tr>{body}</table>"


def write_report(res: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    hs = [str(h) for h in HORIZONS]
    parts = [f"<h1>K-12 time-aware augmented GBDT — {html.escape(res['dataset'])}</h1>",
             f"<p>{res['n_students']} students, {res['n_pairs']} pairs; positive ratio "
             f"(Δ = 1) {res['positive_ratio']['before']:.4f} before and "
             f"{(res['positive_ratio'].get('after') or 0):.4f} after augmentation (Λ = 7). "
             f"In-class features: {html.escape(res['info'].get('in_class_features', ''))}. "
             f"Evaluated on: {html.escape(res['evaluated_on'])}. "
             f"{res.get('seconds', 0):.0f} s.</p>",
             "<p>Command: <code>" + html.escape(res["command"]) + "</code></p>"]
    if res.get("auc"):
        parts += ["<h2>AUC per Δ (seed Fig. 4)</h2>",
                  _table(res["auc"], hs, "model"),
                  f'<img src="data:image/png;base64,{_lines("AUC vs Δ", res["auc"])}">']
    if res.get("recall_at_top30"):
        parts += ["<h2>Recall when flagging the top 30 % each day (gbdt_aug)</h2>",
                  _table({"recall": res["recall_at_top30"]}, hs, "")]
    if res.get("lookback"):
        parts += ["<h2>Lookback Λ (seed Fig. 5)</h2>",
                  _table(res["lookback"], [str(d) for d in STUDY_HORIZONS], "Λ"),
                  f'<img src="data:image/png;base64,{_lines("Λ", res["lookback"])}">']
    if res.get("weighting"):
        parts += ["<h2>Weighting G (seed Fig. 6)</h2>",
                  _table(res["weighting"], [str(d) for d in STUDY_HORIZONS], "G"),
                  f'<img src="data:image/png;base64,{_lines("G", res["weighting"])}">']
    if res.get("feature_groups"):
        parts += ["<h2>Feature groups (seed Table 2)</h2>",
                  _table(res["feature_groups"], [str(d) for d in GROUP_DELTAS], "features"),
                  f'<img src="data:image/png;base64,'
                  f'{_bars("Feature groups", res["feature_groups"])}">']
    if res.get("reliability"):
        parts += ["<h2>Reliability curve</h2>",
                  f'<img src="data:image/png;base64,{_reliability(res["reliability"])}">']
    parts.append("<h2>Notes</h2><ul>" + "".join(
        f"<li>{html.escape(n)}</li>" for n in res.get("notes", [])) + "</ul>")
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>k12 "
            "reproduction</title><style>body{font-family:sans-serif;margin:2em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
            "padding:3px 6px;text-align:right;font-size:90%}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    (out / "report.html").write_text(page)


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    global HORIZONS, STUDY_HORIZONS, GROUP_DELTAS
    if args.max_delta < 14:  # a quick run (tests): fewer horizons, same layout
        HORIZONS = list(range(1, args.max_delta + 1))
        STUDY_HORIZONS = [d for d in STUDY_HORIZONS if d <= args.max_delta]
        GROUP_DELTAS = [d for d in GROUP_DELTAS if d <= args.max_delta] or [args.max_delta]
    fit_module.N_JOBS = args.jobs
    out = Path(args.out)
    if args.merge:
        return merge(args.merge, out, tuple(args.note or ()))
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainingConfig(seed=args.seed)
    if args.dataset == "synthetic":
        pairs, info = synthetic_pairs(Path(args.data) if args.data else None, args.seed)
    else:
        if not args.data:
            raise SystemExit("--data is required for --dataset kddcup")
        pairs, info = kddcup_pairs(Path(args.data), args.max_students, args.seed)
    log(f"pairs: {len(pairs)} from {pairs['student_id'].nunique()} students, "
        f"{len(feature_columns(pairs))} features")
    notes: list[str] = []
    if args.test_data:
        train = pairs
        if args.dataset == "synthetic":
            test, tinfo = synthetic_pairs(Path(args.test_data), args.seed)
        else:
            test, tinfo = kddcup_pairs(Path(args.test_data), None, args.seed)
        test = test.reindex(columns=list(dict.fromkeys([*train.columns, *test.columns])))
        evaluated_on = f"every pair of {args.test_data}"
        info["test"] = tinfo
        shared = set(train["student_id"]) & set(test["student_id"])
        if shared:
            notes.append(f"{len(shared)} student id(s) of --test-data also occur in --data")
    else:
        split = GroupShuffleSplit(n_splits=1, test_size=cfg.test_size, random_state=cfg.seed)
        tr, te = next(split.split(pairs, groups=pairs["student_id"].astype(str)))
        train, test = pairs.iloc[tr], pairs.iloc[te]
        evaluated_on = "held-out 20 % of students (split by student, seed 0)"
    train = add_labels(train, HORIZONS)
    test = add_labels(test, HORIZONS)
    # positive ratio at Δ = 1 over all pairs: before = P / all; after = (P ∪ P̃) / all
    # with Λ = cfg.lookback (pseudo-positives counted as positive rows); the weight
    # share after weighted over-sampling is reported too (it is what the model sees)
    lab_all = add_labels(pairs, [1])
    y1 = lab_all[label_column(1)]
    aug = augment(pairs, 1, cfg.lookback, cfg.weighting)
    after = float(aug["label"].mean())
    ov = oversample(aug, cfg.oversample)
    w_after = float(ov.loc[ov["label"] == 1, "weight"].sum() / ov["weight"].sum())
    res: dict = {
        "dataset": args.dataset,
        "command": " ".join(["python", *sys.argv]),
        "n_students": int(pairs["student_id"].nunique()),
        "n_pairs": int(len(pairs)),
        "n_train_pairs": int(len(train)), "n_test_pairs": int(len(test)),
        "positive_ratio": {"before": float(y1.mean()), "after": after,
                           "after_definition": f"share of pairs labelled 1 at Δ = 1 after "
                           f"adding the pseudo-positives of Λ = {cfg.lookback} (P ∪ P̃)",
                           "after_weight_share": w_after,
                           "train_before": float(train[label_column(1)].mean())},
        "seed_targets": SEED_TARGETS.get(args.dataset, {}),
        "max_students": args.max_students,
        "evaluated_on": evaluated_on, "info": info,
        "auc": {m: {} for m in MODELS}, "lookback": {}, "weighting": {},
        "feature_groups": {}, "recall_at_top30": {}, "notes": notes,
    }
    log(f"statistics: students with pairs {res['n_students']}, pairs {res['n_pairs']}, "
        f"positive ratio Δ=1 before {res['positive_ratio']['before']:.4%}, after Λ="
        f"{cfg.lookback} augmentation {after:.4%} (P ∪ P̃ rows; weight share after "
        f"over-sampling {w_after:.1%}); "
        + ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("errors", "test")))
    write_report(res, out)

    if args.tune:
        tuning = tune_params(train, cfg)
        res["tuning"] = tuning
        if tuning["best"]:
            cfg = cfg.model_copy(update=tuning["best"])
        log(f"tuned (3-fold CV grouped by student, Δ={tuning['horizon']}): {tuning['best']} "
            f"scores {[round(s['auc'], 4) for s in tuning['scores']]}")
        write_report(res, out)
    if args.params:
        cfg = cfg.model_copy(update=json.loads(args.params))
        log(f"LightGBM parameters given: {args.params}")
    res["config"] = cfg.model_dump(mode="json")
    stages = set(args.stages.split(","))
    res["stages"] = sorted(stages)

    rel = None
    deltas = [int(d) for d in args.deltas.split(",")] if args.deltas else HORIZONS
    for delta in (deltas if "auc" in stages else []):
        key = str(delta)
        y = test[label_column(delta)].to_numpy()
        auc, p, _ = _gbdt_auc(train, test, delta, cfg, cfg.lookback, cfg.weighting)
        res["auc"]["gbdt_aug"][key] = auc
        res["recall_at_top30"][key] = (recall_at_top(test, p, label_column(delta),
                                                     cfg.flag_share) if p is not None else None)
        if delta == min(7, HORIZONS[-1]) and p is not None:
            obs, pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
            rel = {"delta": delta, "predicted": pred.tolist(), "observed": obs.tolist()}
        fitted = fit_baselines(train, delta, cfg)
        for name, pipe in fitted.items():
            cols = list(pipe.feature_names_in_)
            res["auc"][name][key] = _auc(y, pipe.predict_proba(
                test.reindex(columns=cols).astype(float))[:, 1])
        log(f"Δ={delta}: " + ", ".join(f"{m} {res['auc'][m].get(key) or float('nan'):.4f}"
                                       for m in MODELS)
            + f", recall@30% {res['recall_at_top30'][key] or float('nan'):.3f}")
        res["reliability"] = rel
        write_report(res, out)

    for name, lb in (LOOKBACKS.items() if "lookback" in stages else []):
        res["lookback"][name] = {}
        for delta in STUDY_HORIZONS:
            res["lookback"][name][str(delta)] = _gbdt_auc(train, test, delta, cfg, lb,
                                                          cfg.weighting)[0]
        log(f"Λ={name}: {res['lookback'][name]}")
        write_report(res, out)
    for g in (WEIGHTINGS if "weighting" in stages else []):
        res["weighting"][g] = {}
        for delta in STUDY_HORIZONS:
            res["weighting"][g][str(delta)] = _gbdt_auc(train, test, delta, cfg,
                                                        cfg.lookback, g)[0]
        log(f"G={g}: {res['weighting'][g]}")
        write_report(res, out)

    feats = feature_columns(train)
    present = [g for g, pre in GROUP_PREFIX.items()
               if any(c.startswith(pre) and train[c].notna().any() for c in feats)]
    if len(present) < len(GROUP_PREFIX):
        notes.append("feature groups absent in this data set: "
                     + ", ".join(sorted(set(GROUP_PREFIX) - set(present))))
    for r in range(1, len(present) + 1 if "groups" in stages else 1):
        for combo in itertools.combinations(present, r):
            name = "+".join(combo)
            cols = [c for c in feats if c.startswith(tuple(GROUP_PREFIX[g] for g in combo))]
            res["feature_groups"][name] = {
                str(dl): _gbdt_auc(train, test, dl, cfg, cfg.lookback, cfg.weighting, cols)[0]
                for dl in GROUP_DELTAS}
            log(f"features {name}: {res['feature_groups'][name]}")
            write_report(res, out)
    res["seconds"] = round(time.perf_counter() - T0, 1)
    write_report(res, out)
    log(f"done: {out / 'results.json'}, {out / 'report.html'}")
    return res


def merge(dirs: list[str], out: Path, notes: tuple[str, ...] = ()) -> dict:
    """Merge partial runs of one data set (``--stages``/``--deltas`` parts) into ``out``."""
    parts = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    res = dict(parts[0])
    keys = ("n_students", "n_pairs", "n_train_pairs", "n_test_pairs", "dataset")
    for part in parts[1:]:
        if any(part[k] != res[k] for k in keys):
            raise SystemExit(f"--merge: runs differ in {keys}; not the same data")
    res["command"] = " && ".join(p["command"] for p in parts)
    res["parts"] = [{"dir": d, "command": p["command"], "stages": p.get("stages"),
                     "seconds": p.get("seconds"), "config": p.get("config"),
                     "tuning": p.get("tuning")} for d, p in zip(dirs, parts, strict=True)]
    for sec in ("auc", "lookback", "weighting", "feature_groups", "recall_at_top30"):
        merged: dict = {}
        for p in parts:
            for k, v in p.get(sec, {}).items():
                merged[k] = {**merged.get(k, {}), **v} if isinstance(v, dict) else v
        res[sec] = merged
    res["auc"] = {m: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
                  for m, v in res["auc"].items()}
    res["recall_at_top30"] = dict(sorted(res["recall_at_top30"].items(),
                                         key=lambda kv: int(kv[0])))
    res["reliability"] = next((p["reliability"] for p in parts if p.get("reliability")), None)
    res["notes"] = sorted({n for p in parts for n in p.get("notes", [])}) + list(notes)
    missing = [str(d) for d in range(1, 15) if d not in {int(k) for k in res["auc"].get(
        "gbdt_aug", {})}]
    if missing:
        res["notes"].append("Δ without results (their part did not finish): "
                            + ", ".join(missing))
    res["seconds"] = sum(p.get("seconds") or 0 for p in parts)
    res["seconds_note"] = "sum of the parts' wall times (they ran at the same time)"
    out.mkdir(parents=True, exist_ok=True)
    write_report(res, out)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["synthetic", "kddcup"], required=True,
                    help="synthetic: paper-scale generated cohort; kddcup: KDD Cup 2015 logs")
    ap.add_argument("--data", help="synthetic: an existing generated cohort folder (default: "
                    "generate one in a temporary folder); kddcup: the data folder")
    ap.add_argument("--test-data", help="evaluate on every pair of this folder (same layout) "
                    "instead of a held-out 20 %% of students")
    ap.add_argument("--out", required=True, help="output folder for results.json/report.html")
    ap.add_argument("--max-students", type=int, default=None,
                    help="kddcup: random subset of this many enrollments (default all)")
    ap.add_argument("--no-tune", dest="tune", action="store_false",
                    help="skip the grouped cross-validation of LightGBM parameters")
    ap.add_argument("--seed", type=int, default=0, help="seed of data, split and models")
    ap.add_argument("--max-delta", type=int, default=14, choices=range(1, 15),
                    metavar="{1..14}", help="largest Δ (default 14; smaller only for quick "
                    "checks: the grid then covers Δ ≤ this)")
    ap.add_argument("--stages", default="auc,lookback,weighting,groups",
                    help="comma list of stages to run (default all): auc (Δ = 1…14, all "
                    "models, recall, reliability), lookback, weighting, groups")
    ap.add_argument("--params", help="LightGBM parameters as JSON (e.g. the tuned "
                    "'{\"num_leaves\": 7}' of another run), applied after tuning")
    ap.add_argument("--deltas", help="auc stage: only these Δ (comma list), to split the "
                    "grid over processes; merge the parts with --merge")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="merge the results.json of "
                    "runs of the same data (parts of the grid) into --out and exit")
    ap.add_argument("--note", action="append", help="--merge: a note to add (repeatable)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="threads of LightGBM and the random forest (default 2)")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
