"""Agreement of the bounded-memory eGeMAPSv02 path with openSMILE's whole-track functionals.

For every speech file under ``--data`` (WAV/FLAC/SPH, :func:`compare_prosody.speech_files`)
and for long signals made by joining all of them and tiling to ``--minutes`` each,
:meth:`atrisk.extractors.prosody.OpenSmileProsody.process_stream` computes the 88
functionals twice from the same blocks: ``bounded=False`` (openSMILE's own functionals
over whole-track buffers, bit-identical to ``opensmile.Smile.process_signal``: tested)
and ``bounded=True`` (openSMILE computes the contours the functionals read with ring
buffers; the functionals are computed from those frames in numpy).  Per feature it
reports the largest relative difference ``|bounded - whole| / |whole|`` over the
signals, how many signals differ by more than ``--tol`` and how many are bit-identical,
and per long signal the CPU seconds of each path.  ``--tails F ...`` adds, per file F,
a signal of ``--tail-minutes`` made the same way whose last samples are F (a long track
ending like that recording).  Writes ``<out>.md`` and
``<out>.json`` and prints a JSON summary.

Usage:
    nice -n 5 .venv/bin/python scripts/benchmarks/compare_opensmile_stream.py \
        --data ../shared/data/speech --minutes 10 30 60 \
        --out docs/results/opensmile_stream_agreement
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_prosody import speech_files  # noqa: E402

from atrisk.errors import AudioDecodeError  # noqa: E402
from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody  # noqa: E402
from atrisk.ingest.audio import load_audio  # noqa: E402

SR = 16000


def rel_diff(new: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Return ``|new - ref| / |ref|`` per value (0 where equal, NaN on both; inf if one NaN).

    Args:
        new: Values under test.
        ref: Reference values (same shape).

    Returns:
        float64 array of relative differences (``|new - ref|`` where ``ref == 0``).
    """
    new, ref = np.asarray(new, float), np.asarray(ref, float)
    out = np.abs(new - ref) / np.where(ref == 0, 1.0, np.abs(ref))
    out[new == ref] = 0.0
    out[np.isnan(new) & np.isnan(ref)] = 0.0
    out[np.isnan(new) ^ np.isnan(ref)] = math.inf
    return out


def both_paths(ex: OpenSmileProsody, x: np.ndarray, block: int) -> dict:
    """Return the bounded and whole-track functionals of ``x`` and their CPU seconds."""
    def blocks():
        return (x[i:i + block] for i in range(0, x.size, block))

    c0 = time.process_time()
    whole = ex.process_stream(blocks(), SR, "s", "t", duration_s=x.size / SR, bounded=False)
    c1 = time.process_time()
    bounded = ex.process_stream(blocks(), SR, "s", "t", duration_s=x.size / SR)
    c2 = time.process_time()
    return {"whole": whole.to_numpy()[0], "bounded": bounded.to_numpy()[0],
            "cpu_whole_s": c1 - c0, "cpu_bounded_s": c2 - c1}


def table(names: list[str], diffs: np.ndarray, tol: float) -> list[dict]:
    """Return one row per feature: max relative difference, signals over ``tol``, identical."""
    return [{"feature": name, "max_rel_diff": float(np.max(diffs[:, j])),
             "n_over_tol": int(np.sum(diffs[:, j] > tol)),
             "n_identical": int(np.sum(diffs[:, j] == 0)), "n_signals": int(diffs.shape[0])}
            for j, name in enumerate(names)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--minutes", type=float, nargs="*", default=[10.0, 30.0, 60.0])
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--block-s", type=float, default=7.0,
                    help="block length for the files (long signals: 60 s blocks)")
    ap.add_argument("--tails", type=Path, nargs="*", default=[])
    ap.add_argument("--tail-minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    files = speech_files(args.data)
    if not files:
        print(f"no speech files under {args.data}", file=sys.stderr)
        return 1
    ex = OpenSmileProsody()
    names = ex.feature_names
    diffs, signals, parts, failed = [], [], [], []
    for path in files:
        try:
            x = load_audio(path, SR)
        except AudioDecodeError as exc:
            failed.append(f"{path}: {exc}")
            continue
        parts.append(x)
        res = both_paths(ex, x, int(args.block_s * SR))
        d = rel_diff(res["bounded"], res["whole"])
        diffs.append(d)
        signals.append({"signal": str(path.relative_to(args.data)), "seconds": x.size / SR,
                        "max_rel_diff": float(d.max())})
    base = np.concatenate(parts)
    long_runs = []
    longs = [(f"{m:g} min (all files joined, tiled)", m, None) for m in args.minutes]
    longs += [(f"{args.tail_minutes:g} min ending in {t.name}", args.tail_minutes, t)
              for t in args.tails]
    for label, minutes, tail in longs:
        n = int(minutes * 60 * SR)
        end = load_audio(tail, SR) if tail is not None else np.zeros(0)
        x = np.concatenate([np.tile(base, n // base.size + 1)[:n - end.size], end])
        res = both_paths(ex, x, 60 * SR)
        d = rel_diff(res["bounded"], res["whole"])
        diffs.append(d)
        worst = int(np.argmax(d))
        run = {"signal": label, "seconds": n / SR,
               "max_rel_diff": float(d.max()),
               "worst_feature": names[worst] if d.max() > 0 else None,
               "n_over_tol": int(np.sum(d > args.tol)),
               "cpu_whole_s": round(res["cpu_whole_s"], 1),
               "cpu_bounded_s": round(res["cpu_bounded_s"], 1)}
        long_runs.append(run)
        signals.append(run)
        print(json.dumps(run), file=sys.stderr)
    arr = np.vstack(diffs)
    rows = table(names, arr, args.tol)
    result = {
        "comparison": "process_stream bounded=True vs bounded=False (openSMILE's own "
                      "whole-track eGeMAPSv02 functionals)",
        "tol": args.tol, "n_files": len(parts), "failed": failed,
        "long_signals": long_runs, "max_rel_diff": float(arr.max()),
        "n_features_over_tol": sum(r["n_over_tol"] > 0 for r in rows),
        "n_features_identical_everywhere": sum(r["n_identical"] == r["n_signals"]
                                               for r in rows),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "features": rows, "signals": signals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Bounded-memory eGeMAPSv02 functionals vs openSMILE's whole-track functionals",
        "",
        f"{len(parts)} real recordings of `{args.data.name}` plus "
        f"{len(long_runs)} long signals made of them "
        f"(`scripts/benchmarks/compare_opensmile_stream.py`). Relative difference "
        "`|bounded - whole| / |whole|` per feature; tolerance "
        f"{args.tol:g}.",
        "",
        f"Largest difference over all features and signals: {result['max_rel_diff']:.3g}; "
        f"features over the tolerance on any signal: {result['n_features_over_tol']}; "
        f"bit-identical on every signal: {result['n_features_identical_everywhere']} of "
        f"{len(rows)}.",
        "",
        "| long signal | max rel. diff | worst feature | CPU s whole | CPU s bounded |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['signal']} | {r['max_rel_diff']:.3g} | {r['worst_feature'] or '—'} | "
              f"{r['cpu_whole_s']} | {r['cpu_bounded_s']} |" for r in long_runs]
    lines += ["", "| feature | max rel. diff | signals > tol | identical / signals |",
              "|---|---|---|---|"]
    lines += [f"| {r['feature']} | {r['max_rel_diff']:.3g} | {r['n_over_tol']} | "
              f"{r['n_identical']} / {r['n_signals']} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps({k: result[k] for k in ("n_files", "max_rel_diff",
                                             "n_features_over_tol",
                                             "n_features_identical_everywhere",
                                             "long_signals")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
