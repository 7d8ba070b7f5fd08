"""The seed's experiment grid (K-12 label augmentation), with intervals, on two data sets.

Usage:
    python scripts/recipes/reproduce_k12.py --dataset synthetic --work WORK \\
        --out docs/results/k12_synthetic [--voiced 600] [--stages ...]
    python scripts/recipes/reproduce_k12.py --dataset kddcup --data ../shared/data/kddcup2015 \\
        --work WORK --out docs/results/k12_kddcup [--max-train 10000 --max-test 2500]

Data (prepared once into ``--work`` and reused by every rerun):

* ``synthetic``: the paper-scale cohort (``atrisk.synthetic``, ``PAPER_PARAMS``, 3,926
  students, logs only) plus the first ``--voiced`` students generated again *with audio*
  (same seed and teachers, so the same students; checked): their recorded classes (the
  generator's rule: the first class, then each later one with probability
  ``record_share``) are voiced with espeak-ng and run through ``atrisk extract``
  (prosody: openSMILE; text: the generator's true transcripts).  Those students' pairs
  have extracted in-class features; every other student's have none (NaN), as for an
  unrecorded class.  Split: 20 % of the students held out (``GroupShuffleSplit``, seed).
* ``kddcup``: the KDD Cup 2015 daily pairs (:mod:`atrisk.mooc.daily_pairs`, one
  observation rule for every enrollment, ``--dropout-day``); train = the enrollments
  outside :func:`~atrisk.mooc.daily_pairs.holdout_mask` (``sha256`` of the id, 20 %),
  test = those inside: no id on both sides; ``--max-train`` / ``--max-test`` random
  enrollments of each side (seeded).

Stages (``--stages``, comma list; each finished cell is appended to
``OUT/cells.jsonl`` at once, and a rerun skips the cells already there, so the grid
runs in pieces that resume):

* ``grid``: {seed, horizon} labels × Λ {none, 3, 7, 14} × G {linear, convex, concave,
  constant} (one G for Λ = none) × {oversample, reweight}, LightGBM with the default
  parameters (no tuning), scored at Δ ∈ ``--deltas`` on the test students: AUC with a
  95 % student-bootstrap interval, positive pairs and students behind it, recall when
  flagging the top 30 % each day (interval), Brier after Platt scaling cross-fitted on
  two halves of the test students, and the AUC difference to Λ = none of the same
  labels and balance on the same resamples (paired interval).
* ``baselines``: LR, DT, RF and LightGBM (horizon labels, Λ = none), same scores.
* ``fine``: Λ ∈ {1, 2, 4, 5, 10} for the best augmented (labels, G, balance) of the grid.
* ``temporal``: a temporal hold-out (train on ``t + Δ ≤ cut`` with outcomes known at
  the cut, test on ``t ≥ cut``; cut = the day before which 70 % of the pairs lie) for
  Λ = none and the best augmented cell of each label construction.
* ``groups``: (synthetic) feature groups in / out / time / all on the voiced students
  only (the only ones with in-class features), 30 % of them held out.
* ``calibration``: the default model (horizon labels, Λ = none, reweight) with no
  calibration, Platt or isotonic, each fitted as ``RiskModel`` does (3 folds of the
  training students, out-of-fold scores): Brier with its interval, mean probability vs
  observed rate, and the calibration error of the reliability curve, on the test set.

Writes ``OUT/cells.jsonl``, ``OUT/results.json`` (every cell, the data, the command,
the machine load) and ``OUT/results.md`` (the tables of ``docs/method.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# spinning OpenMP threads (LightGBM) waste the CPU share on an oversubscribed machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from atrisk.config import Config, TrainingConfig
from atrisk.features.pairs import feature_columns
from atrisk.training import fit as fit_module
from atrisk.training.calibration import Calibrator
from atrisk.training.fit import fit_baselines, fit_construction, split_columns
from atrisk.training.labels import add_labels, label_column
from atrisk.training.temporal import after, censor, known_by, resolve_cut
from atrisk.training.uncertainty import (
    bootstrap_auc,
    brier_score,
    paired_auc_difference,
    recall_at_top,
)

LABELS = ("seed", "horizon")
LOOKBACKS = (0, 3, 7, 14)
FINE_LOOKBACKS = (1, 2, 4, 5, 10)
WEIGHTINGS = ("linear", "convex", "concave", "constant")
BALANCES = ("oversample", "reweight")
BASELINES = ("lr", "dt", "rf", "gbdt_none")
GROUPS = {"in": ("in_",), "out": ("out_",), "time": ("time_",),
          "all": ("in_", "out_", "time_")}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def cell_key(cell: dict) -> str:
    """Stable name of a cell, e.g. ``grid/seed/L7/convex/oversample``."""
    g = cell.get("weighting") if cell.get("lookback") else "-"
    return "/".join(str(x) for x in (cell["stage"], cell.get("labels", cell.get("model")),
                                     f"L{cell.get('lookback', 0)}", g,
                                     cell.get("balance", "-"), cell.get("group", "")))


# ----------------------------------------------------------------------------- data
def prepare_synthetic(work: Path, voiced: int, seed: int,
                      workers: int) -> tuple[pd.DataFrame, dict]:
    """The paper-scale cohort's pairs, in-class features extracted for the voiced students."""
    from atrisk import workflows
    from atrisk.features.in_class import InClassData, in_class_at
    from atrisk.features.pairs import build_pairs
    from atrisk.ingest.logs import load_logs
    from atrisk.synthetic import PAPER_N_STUDENTS, PAPER_PARAMS, generate_cohort

    cached = work / "pairs.parquet"
    if cached.is_file():
        return pd.read_parquet(cached), json.loads((work / "data.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    n_teachers = max(2, PAPER_N_STUDENTS // 8)
    cohort = work / "cohort"
    if not (cohort / "ground_truth.json").is_file():
        log(f"generating the paper-scale cohort ({PAPER_N_STUDENTS} students, logs)")
        generate_cohort(cohort, n_students=PAPER_N_STUDENTS, seed=seed, audio=False,
                        params=PAPER_PARAMS)
    info: dict = {"cohort": str(cohort), "n_students_cohort": PAPER_N_STUDENTS}
    in_class = sessions = None
    if voiced:
        vdir, ws = work / "voiced", work / "voiced_ws"
        if not (vdir / "utterances.csv").is_file():
            log(f"voicing the first {voiced} students' recorded classes (espeak-ng)")
            t = time.perf_counter()
            generate_cohort(vdir, n_students=voiced, seed=seed, audio=True,
                            n_teachers=n_teachers, params=PAPER_PARAMS)
            info["voice_wall_s"] = round(time.perf_counter() - t, 1)
        paper = json.loads((cohort / "ground_truth.json").read_text())["students"]
        ours = json.loads((vdir / "ground_truth.json").read_text())["students"]
        info["voiced_students_equal_cohort"] = all(s == paper[i] for i, s in enumerate(ours))
        if not info["voiced_students_equal_cohort"]:
            raise SystemExit("the voiced students differ from the cohort's: not the same model")
        log("extracting in-class features (openSMILE prosody, true transcripts)")
        t = time.perf_counter()
        cfg = Config().override({"asr.backend": "transcripts"})
        res = workflows.extract_folder(vdir / "recordings", ws, cfg, device="cpu",
                                       workers=workers, transcripts=vdir / "utterances.csv",
                                       progress=False)
        info.update({"voiced_students": voiced, "voiced_sessions": res.n_sessions,
                     "voiced_sessions_ok": res.n_ok, "voiced_sessions_failed": res.n_failed,
                     "extract_wall_s": round(time.perf_counter() - t, 1)})
        data = InClassData.from_workspace(ws)
        in_class, sessions = data.table, data.sessions
    logs = load_logs(cohort / "logs")
    pairs = build_pairs(logs)
    if in_class is not None:
        pairs = pd.concat([pairs, in_class_at(in_class, sessions, pairs[["student_id", "t"]],
                                              3)], axis=1)
    students = pairs["student_id"].astype(str)
    split = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    _, te = next(split.split(pairs, groups=students))
    pairs["is_test"] = False
    pairs.loc[pairs.index[te], "is_test"] = True
    oc = logs.outcomes
    info.update({
        "n_students_with_pairs": int(students.nunique()),
        "dropout_rate": float((oc["status"] == "dropout").mean()),
        "in_class_features": (f"extracted from voiced audio for the first {voiced} students "
                              "(S0001…); none for the others") if voiced else "none",
        "split": "20 % of the students held out (GroupShuffleSplit, by student)",
    })
    pairs.to_parquet(cached)
    (work / "data.json").write_text(json.dumps(info, indent=1) + "\n")
    return pairs, info


def prepare_kddcup(work: Path, data: Path, max_train: int | None, max_test: int | None,
                   seed: int, dropout_day: str) -> tuple[pd.DataFrame, dict]:
    """KDD Cup daily pairs: the id-hash split, subsampled on each side."""
    from atrisk.mooc.daily_pairs import SPLIT_SALT, load_kddcup_pairs

    cached = work / f"pairs_{dropout_day}.parquet"
    meta = work / f"data_{dropout_day}.json"
    if cached.is_file():
        return pd.read_parquet(cached), json.loads(meta.read_text())
    work.mkdir(parents=True, exist_ok=True)
    train, ti = load_kddcup_pairs(data, max_train, seed, dropout_day, part="train")
    test, si = load_kddcup_pairs(data, max_test, seed, dropout_day, part="test")
    shared = set(train["student_id"]) & set(test["student_id"])
    if shared:
        raise SystemExit(f"{len(shared)} enrollment ids on both sides: the split is broken")
    pairs = pd.concat([train.assign(is_test=False), test.assign(is_test=True)],
                      ignore_index=True)
    info = {"source": str(data), "dropout_day": dropout_day, "train": ti, "test": si,
            "split": f"test = enrollments whose sha256('{SPLIT_SALT}:<id>') falls in the "
                     "lowest 20 % (atrisk.mooc.daily_pairs.holdout_mask); "
                     f"{max_train} train / {max_test} test enrollments drawn at random "
                     f"(seed {seed}) from each side",
            "shared_ids": 0, "in_class_features": "none (no recordings in KDD Cup 2015)"}
    pairs.to_parquet(cached)
    meta.write_text(json.dumps(info, indent=1, default=str) + "\n")
    return pairs, info


# ----------------------------------------------------------------------------- scoring
def _platt_cross_fit(y: np.ndarray, s: np.ndarray, sid: np.ndarray, seed: int) -> np.ndarray:
    """Probabilities by Platt scaling fitted on one half of the students, applied to the other."""
    ids = np.unique(sid)
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(ids)[: len(ids) // 2])
    a = np.array([x in half for x in sid])
    out = np.full(len(y), np.nan)
    for fit_on, apply_to in ((a, ~a), (~a, a)):
        if len(np.unique(y[fit_on])) < 2 or not apply_to.any():
            return np.full(len(y), np.nan)
        out[apply_to] = Calibrator("platt").fit(s[fit_on], y[fit_on]).transform(s[apply_to])
    return out


def score_cell(test: pd.DataFrame, scores: dict[int, np.ndarray], deltas: list[int],
               n_boot: int, seed: int, share: float = 0.3) -> dict:
    """AUC / recall / Brier with intervals per Δ (shared resamples)."""
    sid = test["student_id"].astype(str).to_numpy()
    day = test["t"].to_numpy()
    out = {}
    for d in deltas:
        y = test[label_column(d)].to_numpy()
        s = scores[d]
        auc = bootstrap_auc(y, s, sid, n_boot, seed)
        rec = recall_at_top(y, s, day, sid, share, n_boot, seed)
        p = _platt_cross_fit(y, s, sid, seed)
        br = (brier_score(y, p, sid, n_boot, seed) if np.isfinite(p).all() else None)
        r = float(y.mean())
        out[str(d)] = {
            "auc": auc.value, "auc_ci": auc.to_dict()["ci"], "n_pos": auc.n_pos,
            "n_pairs": auc.n_pairs, "n_students": auc.n_students,
            "recall_at_top30": rec.value, "recall_at_top30_ci": rec.to_dict()["ci"],
            "brier": None if br is None else br.value,
            "brier_ci": None if br is None else br.to_dict()["ci"],
            "brier_base_rate": r * (1 - r),
        }
    return out


def fit_scores(train: pd.DataFrame, test: pd.DataFrame, cfg: TrainingConfig,
               deltas: list[int], cols: list[str] | None = None,
               cut: pd.Timestamp | None = None) -> tuple[dict[int, np.ndarray], dict]:
    """Fit the configured construction (one model for seed, one per Δ for horizon)."""
    in_cols, other, _ = split_columns(train)
    if cols is not None:
        in_cols = [c for c in in_cols if c in cols]
        other = [c for c in other if c in cols]
    scores, infos, seed_pipe = {}, {}, None
    for d in deltas:
        part = train if cut is None else known_by(train, cut, 1 if cfg.labels == "seed" else d)
        if cfg.labels == "seed" and seed_pipe is not None:
            pipe = seed_pipe
        else:
            pipe, info = fit_construction(part, d, in_cols, other, cfg)
            infos[str(d)] = {k: v for k, v in info.items() if not isinstance(v, float)
                             or np.isfinite(v)}
            seed_pipe = pipe if cfg.labels == "seed" else None
        if pipe is None:
            raise RuntimeError(f"no model for Δ={d}: {infos.get(str(d))}")
        scores[d] = pipe.predict_proba(test[in_cols + other].astype(float))[:, 1]
    return scores, infos


# ----------------------------------------------------------------------------- runner
class Runner:
    """Runs cells, appends each to ``cells.jsonl`` and keeps their test scores."""

    def __init__(self, pairs: pd.DataFrame, args: argparse.Namespace, out: Path, work: Path):
        self.args, self.out, self.work = args, out, work
        self.deltas = [int(d) for d in args.deltas.split(",")]
        pairs = add_labels(pairs, sorted(set(self.deltas) | {1}))
        self.train = pairs[~pairs["is_test"].to_numpy(bool)].drop(columns="is_test")
        self.test = pairs[pairs["is_test"].to_numpy(bool)].drop(columns="is_test")
        self.base = TrainingConfig(seed=args.seed, horizons=self.deltas, oversample=0.3,
                                   n_boot=args.n_boot)
        self.cells_path = out / "cells.jsonl"
        self.done = {}
        if self.cells_path.is_file():
            for line in self.cells_path.read_text().splitlines():
                c = json.loads(line)
                self.done[c["key"]] = c
        self.score_dir = work / "scores" / args.dataset
        self.score_dir.mkdir(parents=True, exist_ok=True)

    def run(self, cell: dict, fn) -> dict:
        key = cell_key(cell)
        if key in self.done:
            return self.done[key]
        t, c = time.perf_counter(), time.process_time()
        scores, test, extra = fn()
        np.save(self.score_dir / (key.replace("/", "__") + ".npy"),
                np.column_stack([scores[d] for d in self.deltas]).astype(np.float32))
        cell = {**cell, "key": key, "metrics": score_cell(test, scores, self.deltas,
                                                          self.args.n_boot, self.args.seed),
                **extra, "wall_s": round(time.perf_counter() - t, 1),
                "cpu_s": round(time.process_time() - c, 1),
                "load_avg": round(os.getloadavg()[0], 2)}
        with self.cells_path.open("a") as fh:
            fh.write(json.dumps(cell, default=str) + "\n")
        self.done[key] = cell
        m = cell["metrics"]
        log(f"{key}: " + ", ".join(f"Δ{d} {m[str(d)]['auc']:.4f}" for d in self.deltas
                                   if m[str(d)]["auc"] is not None)
            + f" ({cell['wall_s']} s)")
        return cell

    def config_cell(self, stage: str, labels: str, lookback: int, weighting: str,
                    balance: str) -> dict:
        cfg = self.base.model_copy(update={"labels": labels, "lookback": lookback,
                                           "weighting": weighting, "balance": balance})
        cell = {"stage": stage, "labels": labels, "lookback": lookback,
                "weighting": weighting, "balance": balance}

        def fn():
            scores, infos = fit_scores(self.train, self.test, cfg, self.deltas)
            return scores, self.test, {"fit": infos}
        return self.run(cell, fn)

    def grid(self) -> None:
        lookbacks = [int(x) for x in self.args.lookbacks.split(",")]
        for labels in LABELS:
            for balance in self.args.balances.split(","):
                if 0 in lookbacks:
                    self.config_cell("grid", labels, 0, "convex", balance)
                for lam in (x for x in lookbacks if x > 0):
                    for g in self.args.weightings.split(","):
                        self.config_cell("grid", labels, lam, g, balance)

    def best_augmented(self, labels: str | None = None) -> dict | None:
        cells = [c for c in self.done.values() if c["stage"] in ("grid", "fine")
                 and c["lookback"] > 0 and (labels is None or c["labels"] == labels)]
        if not cells:
            return None
        return max(cells, key=lambda c: np.nanmean([
            c["metrics"][str(d)]["auc"] or np.nan for d in self.deltas]))

    def fine(self) -> None:
        best = self.best_augmented()
        if best is None:
            log("fine: no augmented grid cell yet")
            return
        for lam in FINE_LOOKBACKS:
            self.config_cell("fine", best["labels"], lam, best["weighting"], best["balance"])

    def baselines(self) -> None:
        fitted_by_delta: dict[int, dict] = {}  # every baseline of a Δ is fitted at once

        def fitted(d: int) -> dict:
            if d not in fitted_by_delta:
                fitted_by_delta[d] = fit_baselines(self.train, d, self.base)
            return fitted_by_delta[d]

        for name in BASELINES:
            cell = {"stage": "baselines", "model": name}

            def fn(name=name):
                scores = {}
                for d in self.deltas:
                    pipe = fitted(d)[name]
                    cols = list(pipe.feature_names_in_)
                    scores[d] = pipe.predict_proba(
                        self.test.reindex(columns=cols).astype(float))[:, 1]
                return scores, self.test, {}
            self.run(cell, fn)

    def temporal(self) -> None:
        both = pd.concat([self.train, self.test], ignore_index=True)
        cut = resolve_cut(both, "auto")
        train, test = censor(both, cut), after(both, cut)
        train = add_labels(train, self.deltas)
        todo = [("seed", 0, "convex", "reweight"), ("horizon", 0, "convex", "reweight")]
        for labels in LABELS:
            best = self.best_augmented(labels)
            if best is not None:
                todo.append((labels, best["lookback"], best["weighting"], best["balance"]))
        for labels, lam, g, bal in dict.fromkeys(todo):
            cfg = self.base.model_copy(update={"labels": labels, "lookback": lam,
                                               "weighting": g, "balance": bal})
            cell = {"stage": "temporal", "labels": labels, "lookback": lam, "weighting": g,
                    "balance": bal, "cut": str(cut.date())}

            def fn(cfg=cfg):
                scores, infos = fit_scores(train, test, cfg, self.deltas, cut=cut)
                seen = set(train["student_id"].astype(str))
                ids = test["student_id"].astype(str)
                return scores, test, {"fit": infos, "n_train_pairs": int(len(train)),
                                      "n_test_students_also_in_training":
                                          int(ids[ids.isin(seen)].nunique())}
            self.run(cell, fn)

    def groups(self) -> None:
        inc = [c for c in feature_columns(self.train) if c.startswith("in_")]
        if not inc:
            log("groups: no in-class features")
            return
        both = pd.concat([self.train, self.test], ignore_index=True)
        voiced = both[both[inc].notna().any(axis=1)]
        ids = voiced["student_id"].astype(str)
        split = GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=self.args.seed)
        tr, te = next(split.split(voiced, groups=ids))
        train, test = voiced.iloc[tr], voiced.iloc[te]
        cfg = self.base.model_copy(update={"labels": "horizon", "lookback": 0})
        feats = feature_columns(train)
        for name, prefixes in GROUPS.items():
            cell = {"stage": "groups", "labels": "horizon", "lookback": 0,
                    "weighting": "convex", "balance": "reweight", "group": name}

            def fn(prefixes=prefixes):
                cols = [c for c in feats if c.startswith(prefixes)]
                scores, infos = fit_scores(train, test, cfg, self.deltas, cols=cols)
                return scores, test, {"n_voiced_students": int(ids.nunique()),
                                      "split": "voiced students only, 30 % held out"}
            self.run(cell, fn)

    def calibration(self) -> None:
        """Platt vs isotonic vs none, fitted as RiskModel does (3 out-of-fold folds)."""
        from atrisk.training.calibration import out_of_fold
        from atrisk.training.fit import fit_horizon
        from atrisk.training.uncertainty import calibration_error, reliability_curve

        cfg = self.base.model_copy(update={"labels": "horizon", "lookback": 0,
                                           "balance": "reweight"})
        in_cols, other, _ = split_columns(self.train)
        cols = in_cols + other
        sid_tr = self.train["student_id"].astype(str).to_numpy()
        sid_te = self.test["student_id"].astype(str).to_numpy()
        cache: dict = {}

        def raw(d: int):
            if d not in cache:
                pipe, _ = fit_horizon(self.train, d, in_cols, other, cfg)

                def fit_predict(tr, te, d=d):
                    p, _ = fit_horizon(self.train.iloc[tr], d, in_cols, other, cfg)
                    return p.predict_proba(self.train.iloc[te][cols].astype(float))[:, 1]
                cache[d] = (pipe.predict_proba(self.test[cols].astype(float))[:, 1],
                            out_of_fold(fit_predict, len(self.train), sid_tr,
                                        cfg.calibration_folds))
            return cache[d]

        for method in ("none", "platt", "isotonic"):
            cell = {"stage": "calibration", "labels": "horizon", "lookback": 0,
                    "weighting": "convex", "balance": "reweight", "group": method}

            def fn(method=method):
                scores, calibrated = {}, {}
                for d in self.deltas:
                    test_raw, oof = raw(d)
                    y_tr = self.train[label_column(d)].to_numpy()
                    y = self.test[label_column(d)].to_numpy()
                    p = test_raw if method == "none" else Calibrator(method).fit(
                        oof, y_tr).transform(test_raw)
                    br = brier_score(y, p, sid_te, self.args.n_boot, self.args.seed)
                    curve = reliability_curve(y, p)
                    calibrated[str(d)] = {
                        "brier": br.value, "brier_ci": br.to_dict()["ci"],
                        "mean_p": float(p.mean()), "observed_rate": float(y.mean()),
                        "calibration_error": calibration_error(curve)}
                    scores[d] = test_raw
                return scores, self.test, {"calibrated": calibrated}
            self.run(cell, fn)

    def paired(self) -> None:
        """AUC differences on the same resampled students: vs Λ = none, and the baselines."""
        y = {d: self.test[label_column(d)].to_numpy() for d in self.deltas}
        sid = self.test["student_id"].astype(str).to_numpy()

        def load(key):
            path = self.score_dir / (key.replace("/", "__") + ".npy")
            return np.load(path) if path.is_file() else None

        out = getattr(self, "paired_", {})
        for key, c in self.done.items():
            if c["stage"] not in ("grid", "fine") or c["lookback"] == 0 or key in out:
                continue
            ref = cell_key({"stage": "grid", "labels": c["labels"], "lookback": 0,
                            "balance": c["balance"]})
            a, b = load(key), load(ref)
            if a is None or b is None:
                continue
            out[key] = {"vs": ref, "diff": {str(d): paired_auc_difference(
                y[d], a[:, k], b[:, k], sid, self.args.n_boot, self.args.seed).to_dict()
                for k, d in enumerate(self.deltas)}}
        names = {m: cell_key({"stage": "baselines", "model": m}) for m in BASELINES}
        for a_name, b_name in (("gbdt_none", "rf"), ("rf", "lr"), ("lr", "dt"),
                               ("gbdt_none", "lr")):
            if f"{a_name}-{b_name}" in out:
                continue
            a, b = load(names[a_name]), load(names[b_name])
            if a is None or b is None:
                continue
            out[f"{a_name}-{b_name}"] = {"diff": {str(d): paired_auc_difference(
                y[d], a[:, k], b[:, k], sid, self.args.n_boot, self.args.seed).to_dict()
                for k, d in enumerate(self.deltas)}}
        self.paired_ = out


# ----------------------------------------------------------------------------- output
def _ci(v, ci, digits=3) -> str:
    if v is None:
        return "–"
    if not ci:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def write_results(runner: Runner, info: dict, out: Path, args) -> dict:
    cells = list(runner.done.values())
    command = " ".join(["python", *sys.argv])
    old = out / "results.json"
    prev = json.loads(old.read_text()) if old.is_file() else {}
    commands = prev.get("commands") or ([prev["command"]] if prev.get("command") else [])
    if command not in commands:
        commands.append(command)
    res = {
        "dataset": args.dataset, "command": command, "commands": commands,
        "data": info, "deltas": runner.deltas, "n_boot": args.n_boot, "seed": args.seed,
        "n_train_pairs": int(len(runner.train)), "n_test_pairs": int(len(runner.test)),
        "n_train_students": int(runner.train["student_id"].nunique()),
        "n_test_students": int(runner.test["student_id"].nunique()),
        "lightgbm": {k: getattr(runner.base, k) for k in
                     ("n_estimators", "learning_rate", "num_leaves", "min_child_samples",
                      "oversample")},
        "cells": cells, "paired": getattr(runner, "paired_", {}),
        "cpu_s_total": round(sum(c.get("cpu_s", 0) for c in cells), 1),
        "notes": list(args.note or []),
    }
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    lines = [f"# K-12 grid: {args.dataset}", "",
             "Commands (in order; finished cells are kept, so they add up): "
             + "; ".join(f"`{c}`" for c in commands), "",
             f"Data: {json.dumps(info, default=str)}", "",
             f"Train {res['n_train_pairs']} pairs of {res['n_train_students']} students; test "
             f"{res['n_test_pairs']} pairs of {res['n_test_students']} students. "
             f"Intervals: 95 % percentile bootstrap, {args.n_boot} resamples by student. "
             "Brier: after Platt scaling cross-fitted on two halves of the test students "
             "(base rate r(1−r) beside it).", ""]
    head = "| stage | labels | Λ | G | balance | " + " | ".join(
        f"AUC Δ={d} [CI]" for d in runner.deltas) + " | n_pos (Δ) | vs Λ=none ΔAUC [CI] |"
    lines += [head, "|" + "---|" * (6 + len(runner.deltas) + 1)]
    for c in sorted(cells, key=lambda c: c["key"]):
        m = c["metrics"]
        diff = res["paired"].get(c["key"], {}).get("diff", {})
        vs = "; ".join(f"Δ{d} {_ci(diff[str(d)]['value'], diff[str(d)]['ci'])}"
                       for d in runner.deltas if str(d) in diff)
        lines.append(
            f"| {c['stage']} | {c.get('labels', c.get('model'))} | {c.get('lookback', '')} | "
            f"{c.get('weighting', '') if c.get('lookback') else '–'} | "
            f"{c.get('balance', '')}{' ' + c['group'] if c.get('group') else ''} | "
            + " | ".join(_ci(m[str(d)]["auc"], m[str(d)]["auc_ci"]) for d in runner.deltas)
            + " | " + ", ".join(str(m[str(d)]["n_pos"]) for d in runner.deltas)
            + f" | {vs or '–'} |")
    lines += ["", "Recall of the top 30 % per day and Brier:", "",
              "| key | " + " | ".join(f"recall Δ={d} [CI]" for d in runner.deltas)
              + " | " + " | ".join(f"Brier Δ={d} (base)" for d in runner.deltas) + " |",
              "|" + "---|" * (1 + 2 * len(runner.deltas))]
    for c in sorted(cells, key=lambda c: c["key"]):
        m = c["metrics"]
        lines.append(f"| {c['key']} | " + " | ".join(
            _ci(m[str(d)]["recall_at_top30"], m[str(d)]["recall_at_top30_ci"])
            for d in runner.deltas) + " | " + " | ".join(
            f"{_ci(m[str(d)]['brier'], None, 4)} ({m[str(d)]['brier_base_rate']:.4f})"
            for d in runner.deltas) + " |")
    if any(k for k in res["paired"] if "-" in k and "/" not in k):
        lines += ["", "Model comparisons (paired ΔAUC [CI]):", ""]
        for k, v in res["paired"].items():
            if "/" in k:
                continue
            lines.append(f"- {k}: " + "; ".join(
                f"Δ{d} {_ci(v['diff'][str(d)]['value'], v['diff'][str(d)]['ci'])}"
                for d in runner.deltas))
    if res["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["synthetic", "kddcup"], required=True)
    ap.add_argument("--data", help="kddcup: the data folder")
    ap.add_argument("--work", required=True, help="folder for the prepared data and the "
                    "test scores (reused by reruns)")
    ap.add_argument("--out", required=True, help="results folder")
    ap.add_argument("--stages", default="grid,baselines,temporal,fine,groups",
                    help="comma list of grid, baselines, temporal, fine, groups, calibration "
                    "('none': only rewrite the results from the finished cells)")
    ap.add_argument("--deltas", default="1,3,7,14")
    ap.add_argument("--lookbacks", default=",".join(map(str, LOOKBACKS)),
                    help="grid: Λ values (0 = none)")
    ap.add_argument("--weightings", default=",".join(WEIGHTINGS), help="grid: G values")
    ap.add_argument("--balances", default=",".join(BALANCES), help="grid: balance methods")
    ap.add_argument("--voiced", type=int, default=600, help="synthetic: voiced students")
    ap.add_argument("--max-train", type=int, default=10000,
                    help="kddcup: train enrollments drawn")
    ap.add_argument("--max-test", type=int, default=2500, help="kddcup: test enrollments drawn")
    ap.add_argument("--dropout-day", default="last_active",
                    choices=["last_active", "window_end"], help="kddcup: observation rule")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="LightGBM/RF threads")
    ap.add_argument("--workers", type=int, default=2, help="synthetic: extraction workers")
    ap.add_argument("--note", action="append", help="a note for results.md (repeatable)")
    args = ap.parse_args()
    fit_module.N_JOBS = args.jobs
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "synthetic":
        pairs, info = prepare_synthetic(work, args.voiced, args.seed, args.workers)
    else:
        if not args.data:
            raise SystemExit("--data is required for --dataset kddcup")
        pairs, info = prepare_kddcup(work, Path(args.data), args.max_train, args.max_test,
                                     args.seed, args.dropout_day)
    log(f"pairs: {len(pairs)} ({int(pairs['is_test'].sum())} test) of "
        f"{pairs['student_id'].nunique()} students, {len(feature_columns(pairs))} features")
    runner = Runner(pairs, args, out, work)
    stages = [s for s in args.stages.split(",") if s and s != "none"]
    for stage in stages:
        getattr(runner, stage)()
        runner.paired()
        write_results(runner, info, out, args)
    runner.paired()
    write_results(runner, info, out, args)
    log(f"done: {out / 'results.json'}")


if __name__ == "__main__":
    main()
