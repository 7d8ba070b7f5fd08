"""Compare the torch prosody backend with openSMILE eGeMAPSv02 on real speech.

For every speech file under ``--data`` (WAV/FLAC/SPH; children's read speech,
read adult speech, two-speaker recordings) both backends compute the 88
functionals; per feature the script reports Spearman's rho across files and the
median relative difference ``|torch - opensmile| / |opensmile|`` over files.
Writes ``<out>.md`` (table) and ``<out>.json`` and prints a JSON summary.

Usage:
    .venv/bin/python scripts/benchmarks/compare_prosody.py \
        --data ../shared/data/speech --out docs/results/prosody_agreement
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from atrisk.errors import AudioDecodeError
from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody
from atrisk.extractors.prosody.torch_backend import TorchProsody
from atrisk.ingest.audio import load_audio

SUFFIXES = {".wav", ".flac", ".sph"}


def speech_files(root: Path) -> list[Path]:
    """Return the audio files under ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def agreement(ref: pd.DataFrame, new: pd.DataFrame, threshold: float = 0.9) -> pd.DataFrame:
    """Return per-feature Spearman rho and median relative difference of ``new`` vs ``ref``.

    Args:
        ref: Reference features (rows: files, columns: features).
        new: Same shape and labels, from the backend under test.
        threshold: rho at or above which a feature counts as agreeing.

    Returns:
        One row per feature: ``rho``, ``median_rel_diff``, ``n_files`` (files where
        both are finite), ``ok`` (rho >= threshold).
    """
    rows = []
    for col in ref.columns:
        a, b = ref[col].to_numpy(float), new[col].to_numpy(float)
        m = np.isfinite(a) & np.isfinite(b)
        rho = math.nan
        if m.sum() >= 3 and np.ptp(a[m]) > 0 and np.ptp(b[m]) > 0:
            rho = float(spearmanr(a[m], b[m])[0])
        rel = np.abs(b[m] - a[m]) / np.maximum(np.abs(a[m]), 1e-12)
        rows.append({"feature": col, "rho": rho,
                     "median_rel_diff": float(np.median(rel)) if rel.size else math.nan,
                     "n_files": int(m.sum()), "ok": bool(rho >= threshold)})
    return pd.DataFrame(rows).set_index("feature")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/speech"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/prosody_agreement"))
    ap.add_argument("--limit", type=int, default=0, help="Use the first N files only.")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    files = speech_files(args.data)
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"no speech files under {args.data}", file=sys.stderr)
        return 2
    names, signals, failed = [], [], []
    for f in files:
        try:
            signals.append(load_audio(f, 16000))
            names.append(str(f.relative_to(args.data)))
        except AudioDecodeError as exc:
            failed.append(f"{f}: {exc}")
    smile, torch_ex = OpenSmileProsody(), TorchProsody(device=args.device)
    t0 = time.perf_counter()
    ref = pd.DataFrame([smile.process_signal(s, 16000) for s in signals], index=names)
    t_smile = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = pd.DataFrame(torch_ex.functionals(signals, 16000)[0], index=names,
                       columns=torch_ex.feature_names)
    t_torch = time.perf_counter() - t0
    ref = ref[torch_ex.feature_names]
    table = agreement(ref, new)
    seconds = sum(len(s) for s in signals) / 16000
    summary = {
        "command": "python scripts/benchmarks/compare_prosody.py " + " ".join(argv or sys.argv[1:]),
        "files": len(names), "audio_seconds": round(seconds, 1), "failed": failed,
        "n_features": len(table), "n_rho_ge_0.9": int(table["ok"].sum()),
        "median_rho": float(table["rho"].median()),
        "worst": table["rho"].sort_values().head(10).round(3).to_dict(),
        "opensmile_seconds": round(t_smile, 2), "torch_seconds": round(t_torch, 2),
        "torch_backend": torch_ex.backend_name, "opensmile_backend": smile.backend_name,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"summary": summary,
               "features": table.reset_index().round(6).to_dict(orient="records")}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Prosody agreement: torch backend vs openSMILE eGeMAPSv02",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"{summary['files']} files, {summary['audio_seconds']} s of speech "
        f"(speechocean762 children, speechbrain read adult speech, jfk.flac, pyannote "
        f"two-speaker clips). Spearman rho across files; median relative difference "
        f"`|torch - openSMILE| / |openSMILE|` over files.",
        "",
        f"**{summary['n_rho_ge_0.9']} of {summary['n_features']} functionals have rho >= 0.9** "
        f"(median rho {summary['median_rho']:.3f}).",
        "",
        "| feature | rho | median rel. diff | files |",
        "|---|---:|---:|---:|",
    ]
    for feat, r in table.iterrows():
        mark = "" if r["ok"] else " ✗"
        lines.append(f"| `{feat}`{mark} | {r['rho']:.3f} | {r['median_rel_diff']:.3f} | "
                     f"{r['n_files']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
