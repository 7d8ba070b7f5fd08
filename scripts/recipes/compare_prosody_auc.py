"""The dropout model's AUC with either prosody backend (openSMILE vs torch), same audio.

Usage:
    python scripts/recipes/compare_prosody_auc.py --out docs/results/prosody_auc \
        [--students 200] [--deltas 1-14] [--folds 5] [--work DIR]

What is real and what is simulated:

* The cohort is students ``S0001 … S<N>`` of the paper-scale cohort of
  ``scripts/recipes/reproduce_k12.py`` (same generator, ``PAPER_PARAMS``, seed, and the paper
  cohort's 490 teachers, so each of these students is simulated exactly as there; the
  script checks this against a log-only paper-scale cohort).  Their logs and their
  latent engagement are simulated by :mod:`atrisk.synthetic`.
* Unlike ``reproduce_k12.py`` (whose in-class features are simulated numbers), their
  recorded classes (the generator's rule: the first class, then each later one with
  probability ``record_share``; at most ``--recorded`` per student) are **voiced**
  with espeak-ng from the dialogue the generator plans from the class's engagement, and
  every in-class feature is **extracted** from those WAVs by ``atrisk extract``
  (``pipeline.extract``): prosody with each backend in turn, text features from the
  given transcripts (``--asr-backend transcripts``, the generator's true utterances,
  identical for both backends).  The dropout signal in the audio is what the generator
  puts there: a disengaged student answers later, shorter or not at all (more
  silence on the student track), and speaks slower (espeak-ng 120–160 wpm); pitch and
  voice are fixed per student and carry no signal.
* The model is the one ``atrisk train`` fits (augmentation Λ/G, over-sampling, in-class
  PCA, LightGBM), on the same folds grouped by student for both backends: ``--folds 5``
  (default) holds every student out once; ``--folds 1`` is ``atrisk train``'s single
  80/20 split.  Feature sets: ``all`` (what ``atrisk train`` uses: prosody + text +
  logs), ``prosody_only`` (the 2 × 88 eGeMAPS columns and the 2 × 7 per-utterance means
  alone: isolates the backend) and
  ``no_prosody`` (text + logs, the same for both backends: what prosody adds).

Prints and writes ``OUT/results.json`` (both AUC series per Δ, the difference
opensmile − torch, its bootstrap CI over students, cohort size, audio seconds,
extraction CPU seconds, the command) and ``OUT/results.md``.

Extraction resumes per session through the pipeline's cache when ``--work`` is
reused; the resume key holds a fingerprint of the backend's code and package versions
(:mod:`atrisk.fingerprint`), so after a backend change its sessions are extracted again
(the default ``--work`` is a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

# spinning OpenMP threads (LightGBM, torch) waste the CPU share on a shared machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import soundfile as sf

from atrisk import workflows
from atrisk.config import Config, TrainingConfig
from atrisk.features.pairs import feature_columns
from atrisk.training import fit as fit_module
from atrisk.training.compare import (
    auc_difference,
    horizon_labels,
    oof_predictions,
    student_folds,
)
from atrisk.training.model import RiskModel
from atrisk.workspace import Workspace, git_commit

BACKENDS = ("opensmile", "torch")
VARIANTS = ("all", "prosody_only", "no_prosody")
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (workers, espeak-ng)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def parse_deltas(text: str) -> list[int]:
    """``"1-14"`` or ``"1,7,14"`` → sorted list of Δ."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    if not out or min(out) < 1:
        raise SystemExit(f"--deltas {text!r}: need positive days")
    return sorted(out)


# ----------------------------------------------------------------------------- cohort
def make_cohort(folder: Path, args: argparse.Namespace) -> dict:
    """Generate (or reuse) the voiced cohort; return its description."""
    from atrisk.synthetic import PAPER_N_STUDENTS, PAPER_PARAMS, generate_cohort

    params = replace(PAPER_PARAMS, max_track_s=args.max_track_s)
    n_teachers = max(2, PAPER_N_STUDENTS // 8)  # the paper cohort's teachers
    spec = json.loads(json.dumps({  # as stored (tuples become lists), to compare with it
        "n_students": args.students, "seed": args.seed, "recorded": args.recorded,
        "n_teachers": n_teachers, "params": asdict(params)}))
    marker = folder / "compare_cohort.json"
    if marker.is_file() and json.loads(marker.read_text())["spec"] == spec:
        log(f"reusing the cohort in {folder}")
        return json.loads(marker.read_text())
    log(f"voicing {args.students} students (paper-scale preset, {args.recorded} recorded "
        f"classes each, tracks ≤ {args.max_track_s} s) in {folder}")
    t, c = time.perf_counter(), cpu_seconds()
    summary = generate_cohort(folder, n_students=args.students, seed=args.seed, audio=True,
                              max_recorded_per_student=args.recorded, n_teachers=n_teachers,
                              params=params)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    tracks = sorted((folder / "recordings").glob("*/*.wav"))
    info = {
        "spec": spec,
        "n_students": summary.n_students, "n_dropouts": summary.n_dropouts,
        "dropout_rate": summary.dropout_rate, "n_classes": summary.n_classes,
        "n_sessions": summary.n_sessions, "n_tracks": len(tracks),
        "audio_seconds": round(sum(sf.info(p).duration for p in tracks), 1),
        "mean_span_days": summary.mean_span_days,
        "generate_wall_s": round(wall, 1), "generate_cpu_s": round(cpu, 1),
        "same_students_as_paper_scale": same_as_paper_scale(folder, args.seed),
    }
    marker.write_text(json.dumps(info, indent=1) + "\n")
    return info


def same_as_paper_scale(folder: Path, seed: int) -> bool:
    """True when every student of ``folder`` equals that student of the paper-scale cohort."""
    from atrisk.synthetic import PAPER_N_STUDENTS, PAPER_PARAMS, generate_cohort

    with tempfile.TemporaryDirectory(prefix="paper_cohort_") as tmp:
        generate_cohort(Path(tmp), n_students=PAPER_N_STUDENTS, seed=seed, audio=False,
                        params=PAPER_PARAMS)
        paper = json.loads((Path(tmp) / "ground_truth.json").read_text())["students"]
    ours = json.loads((folder / "ground_truth.json").read_text())["students"]
    return all(s == paper[i] for i, s in enumerate(ours))


# ----------------------------------------------------------------------------- extract
def extract(cohort: Path, ws: Path, backend: str, workers: int) -> dict:
    """Run ``atrisk extract`` with one prosody backend; return its cost and status."""
    cost_file = ws / "compare_extract.json"
    config = Config().override({"asr.backend": "transcripts", "prosody.backend": backend})
    t, c, load = time.perf_counter(), cpu_seconds(), os.getloadavg()
    res = workflows.extract_folder(cohort / "recordings", ws, config, device="cpu", workers=workers,
                           transcripts=cohort / "utterances.csv", progress=False)
    run = json.loads((ws / "run.json").read_text()) if (ws / "run.json").is_file() else {}
    info = {
        "prosody_backend": run.get("prosody_backend", backend),
        "n_sessions": res.n_sessions, "n_ok": res.n_ok, "n_partial": res.n_partial,
        "n_failed": res.n_failed, "n_resumed": res.n_resumed,
        "failures": res.failures[:20],
    }
    if res.n_resumed < res.n_sessions or not cost_file.is_file():
        info.update({
            "wall_s": round(time.perf_counter() - t, 1),
            "cpu_s": round(cpu_seconds() - c, 1),
            "stage_cpu_s": {k: round(v, 1) for k, v in res.stage_seconds.items()
                            if k.endswith("cpu_s")},
            "load_avg_before": [round(x, 2) for x in load],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "workers": workers,
        })
        cost_file.write_text(json.dumps(info, indent=1) + "\n")
    else:  # every session resumed: the cost is that of the run that extracted them
        cost = json.loads(cost_file.read_text())
        info.update({k: v for k, v in cost.items() if k not in info})
        info["cost_run_n_resumed"] = cost["n_resumed"]  # sessions that run did not extract
        info["cost_from_earlier_run"] = True
    return info


# ----------------------------------------------------------------------------- compare
def _f(x: float | None, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def prosody_columns(ws: Path) -> list[str]:
    """The pairs' prosody columns.

    ``in_teacher_<f>`` / ``in_student_<f>`` (per-track functionals) and the means
    over each speaker's utterances, ``in_<speaker>_utt_<f>`` (per-utterance prosody).
    """
    from atrisk.features.in_class import UTTERANCE_FEATURES

    pros = Workspace(ws).read("prosody")  # indexed (session_id, track)
    # the functionals: numeric columns, as build_in_class keeps them (not prosody_backend)
    names = list(pros.select_dtypes(include="number").columns)
    per_track = [f"in_{track}_{c}" for track in ("teacher", "student") for c in names]
    per_utt = [f"in_{track}_utt_{c}" for track in ("teacher", "student")
               for c in UTTERANCE_FEATURES if c in names]
    return per_track + per_utt


def compare(cohort: Path, wss: dict[str, Path], args: argparse.Namespace) -> dict:
    """Fit and score the model on both backends' pairs; return the AUC tables."""
    from atrisk.ingest.logs import load_logs

    cfg = TrainingConfig(seed=args.seed)
    config = Config().model_copy(update={"training": cfg})
    logs = load_logs(cohort / "logs")
    model = RiskModel(config)  # builds the pairs with this config's features and labels
    pairs = {b: model.pairs(logs, ws) for b, ws in wss.items()}
    a, b = BACKENDS
    pa, pb = pairs[a], pairs[b]
    if not pa[["student_id", "t"]].equals(pb[["student_id", "t"]]):
        raise SystemExit("the two workspaces give different <student, t> pairs")
    pros = prosody_columns(wss[a])
    if pros != prosody_columns(wss[b]):
        raise SystemExit("the two backends name their prosody columns differently")
    feats = feature_columns(pa)
    rest = [c for c in feats if c not in pros]
    same_rest = pa[rest].equals(pb[rest])
    columns = {"all": feats, "prosody_only": [c for c in feats if c in pros],
               "no_prosody": rest}
    splits = student_folds(pa["student_id"], args.folds, cfg)
    students = pa["student_id"].astype(str).to_numpy()
    held_out = np.zeros(len(pa), dtype=bool)
    for _, te in splits:
        held_out[te] = True
    deltas = parse_deltas(args.deltas)
    auc: dict = {v: {b_: {} for b_ in BACKENDS} for v in VARIANTS}
    diff: dict = {v: {} for v in VARIANTS if v != "no_prosody"}
    ci: dict = {v: {} for v in diff}
    positives: dict = {}
    for delta in deltas:
        key = str(delta)
        y = horizon_labels(pa, delta)
        positives[key] = int(y[held_out].sum())
        ref = oof_predictions(pa, delta, columns["no_prosody"], cfg, splits)
        if not same_rest:  # text/log columns differ between workspaces: score both
            ref_b = oof_predictions(pb, delta, columns["no_prosody"], cfg, splits)
        for v in diff:
            p = {be: oof_predictions(pairs[be], delta, columns[v], cfg, splits)
                 for be in BACKENDS}
            r = auc_difference(y[held_out], p[a][held_out], p[b][held_out],
                               students[held_out], n_boot=args.bootstrap, seed=args.seed)
            auc[v][a][key], auc[v][b][key] = r["a"], r["b"]
            diff[v][key], ci[v][key] = r["diff"], r["ci"]
        r = auc_difference(y[held_out], ref[held_out],
                           (ref if same_rest else ref_b)[held_out], students[held_out], 0)
        auc["no_prosody"][a][key], auc["no_prosody"][b][key] = r["a"], r["b"]
        log(f"Δ={delta}: all {_f(auc['all'][a][key])} vs {_f(auc['all'][b][key])} "
            f"(diff {_f(diff['all'][key], '+.4f')}, CI {ci['all'][key]}), prosody only "
            f"{_f(auc['prosody_only'][a][key])} vs {_f(auc['prosody_only'][b][key])}, "
            f"no prosody {_f(r['a'])}")
    return {
        "n_pairs": int(len(pa)), "n_students_with_pairs": int(pa["student_id"].nunique()),
        "n_held_out_pairs": int(held_out.sum()),
        "positives_held_out": positives,
        "folds": args.folds,
        "fold_kind": ("GroupShuffleSplit 80/20 by student (atrisk train's split)"
                      if args.folds == 1 else f"GroupKFold({args.folds}) by student: "
                      "every student held out once; AUC over the pooled held-out "
                      "predictions"),
        "n_features": {v: len(c) for v, c in columns.items()},
        "non_prosody_columns_identical": bool(same_rest),
        "config": cfg.model_dump(mode="json"),
        "auc": auc, "difference": diff, "difference_ci": ci,
    }


def write_markdown(res: dict, path: Path) -> None:
    a, b = BACKENDS
    lines = [f"# Dropout-model AUC: prosody backend {a} vs {b}", "",
             f"Command: `{res['command']}`", "",
             f"Branch `{res['git'].get('branch')}` at `{res['git'].get('commit')}`. "
             f"{res['what_is_real']}", "",
             f"Cohort: {res['cohort']['n_students']} students "
             f"({res['cohort']['n_dropouts']} dropouts), {res['cohort']['n_sessions']} "
             f"voiced classes, {res['cohort']['audio_seconds']:.0f} s of audio; "
             f"{res['compare']['n_pairs']} pairs; {res['compare']['fold_kind']}. "
             f"Difference = {a} − {b}; 95 % CI: bootstrap over students "
             f"({res['bootstrap']} resamples).", ""]
    for v in ("all", "prosody_only"):
        lines += [f"## Features: {v}", "",
                  f"| Δ | {a} | {b} | difference | 95 % CI | no prosody |",
                  "|---:|---:|---:|---:|---|---:|"]
        for k, va in res["compare"]["auc"][v][a].items():
            vb = res["compare"]["auc"][v][b][k]
            d = res["compare"]["difference"][v][k]
            c = res["compare"]["difference_ci"][v][k]
            ref = res["compare"]["auc"]["no_prosody"][a][k]
            cs = "–" if not c else f"[{c[0]:+.4f}, {c[1]:+.4f}]"
            lines.append(f"| {k} | {_f(va)} | {_f(vb)} | {_f(d, '+.4f')} | {cs} | {_f(ref)} |")
        lines.append("")
    lines += ["## Extraction cost", "", "| backend | wall s | CPU s | prosody CPU s |",
              "|---|---:|---:|---:|"]
    for e in res["extract"].values():
        lines.append(f"| {e['prosody_backend']} | {e.get('wall_s')} | {e.get('cpu_s')} | "
                     f"{e.get('stage_cpu_s', {}).get('prosody_cpu_s')} |")
    path.write_text("\n".join(lines) + "\n")


def _git() -> dict:
    root = Path(__file__).resolve().parents[2]
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=root,
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=root, capture_output=True, text=True,
                           check=False).stdout.strip()
    return {"commit": git_commit(), "branch": branch or None, "dirty": bool(dirty)}


def run(args: argparse.Namespace) -> dict:
    fit_module.N_JOBS = args.jobs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fresh = args.work is None
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="prosody_auc_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cohort_dir = work / "cohort"
        cohort = make_cohort(cohort_dir, args)
        log(f"cohort: {cohort['n_students']} students, {cohort['n_dropouts']} dropouts, "
            f"{cohort['n_sessions']} sessions, {cohort['audio_seconds']:.0f} s of audio")
        wss = {b: work / f"ws_{b}" for b in BACKENDS}
        ext = {}
        for b in BACKENDS:
            log(f"extracting with prosody backend {b}")
            ext[b] = extract(cohort_dir, wss[b], b, args.workers)
            log(f"{b}: {json.dumps({k: v for k, v in ext[b].items() if k != 'failures'})}")
        cmp_t, cmp_c = time.perf_counter(), cpu_seconds()
        comparison = compare(cohort_dir, wss, args)
        res = {
            "command": args.command,
            "git": _git(),
            "what_is_real": (
                "Logs and latent engagement: simulated (atrisk.synthetic, paper-scale "
                "preset). Class audio: voiced with espeak-ng from dialogues planned from "
                "each class's engagement. In-class features: extracted from that audio by "
                "atrisk extract (prosody: each backend; text: the generator's true "
                "transcripts, same for both). Model, folds and seed: identical for both."),
            "cohort": {k: v for k, v in cohort.items() if k != "spec"},
            "cohort_spec": cohort["spec"],
            "extract": ext,
            "bootstrap": args.bootstrap,
            "compare": comparison,
            "compare_wall_s": round(time.perf_counter() - cmp_t, 1),
            "compare_cpu_s": round(cpu_seconds() - cmp_c, 1),
            "seconds": round(time.perf_counter() - T0, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        }
    finally:
        if fresh and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    write_markdown(res, out / "results.md")
    print(json.dumps({"auc": comparison["auc"], "difference": comparison["difference"],
                      "difference_ci": comparison["difference_ci"],
                      "n_students": cohort["n_students"],
                      "audio_seconds": cohort["audio_seconds"],
                      "command": res["command"]}, indent=1))
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for results.json and results.md")
    ap.add_argument("--students", type=int, default=200,
                    help="students S0001… of the paper-scale cohort to voice (default 200: "
                    "≈ 14,000 s of audio, ≈ 5 CPU-minutes of extraction for both backends)")
    ap.add_argument("--recorded", type=int, default=2,
                    help="at most this many recorded classes per student: the first ones the "
                    "generator's rule records (first class, then each later one with "
                    "probability record_share) (default 2)")
    ap.add_argument("--max-track-s", type=float, default=20.0,
                    help="longest class dialogue in seconds (default 20)")
    ap.add_argument("--folds", type=int, default=5, help="GroupKFold folds by student "
                    "(default 5); 1 = atrisk train's single 80/20 split")
    ap.add_argument("--deltas", default="1-14", help="Δ to score, e.g. 1-14 or 1,7,14")
    ap.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples of students for the CI (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="seed of cohort, folds and models")
    ap.add_argument("--workers", type=int, default=2, help="extraction processes")
    ap.add_argument("--jobs", type=int, default=1, help="LightGBM threads (default 1)")
    ap.add_argument("--work", help="folder for the cohort and the two workspaces, reused "
                    "when given again (default: a new temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary --work folder")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.command = shlex.join(["python", "scripts/recipes/compare_prosody_auc.py", *argv])
    return run(args)


if __name__ == "__main__":
    main()
