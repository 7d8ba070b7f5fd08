"""Peak memory of openSMILE's eGeMAPSv02 functionals on one long streamed track.

Each ``(mode, minutes)`` runs in a fresh child process: real speech (every WAV/FLAC
under ``--speech``, default ``../shared/data/speech``, at 16 kHz, joined and tiled to
``minutes``) is streamed in 60 s blocks through
:meth:`atrisk.extractors.prosody.OpenSmileProsody.process_stream` (never held whole),
and the child reports its peak RSS (``VmHWM``) above its baseline just before the
track and its CPU seconds.  Modes:

* ``shipped``: opensmile-python's eGeMAPSv02 config as shipped, no duration given
  (the whole-track levels grow from 1000 frames by doubling);
* ``sized``: the shipped config, the whole-track levels sized from the duration;
* ``sized_pruned``: sized, and the config generated without the GeMAPSv01b components
  no eGeMAPSv02 functional reads (``process_stream(..., bounded=False)``: what
  ``atrisk extract`` did for long tracks before the bounded path);
* ``bounded``: what ``atrisk extract`` does for long (streamed) tracks: openSMILE computes
  only the contours the functionals read, with ring buffers, the frames are kept in
  float32 and the functionals computed from them (``process_stream`` default).

The 88 values of every mode are compared with ``shipped`` (``identical``) and with the
first mode run (``max_rel_diff_vs_first``, NaN on both counts as equal).  Prints one
JSON object.  Usage::

    nice -n 5 python scripts/benchmarks/bench_opensmile_memory.py --minutes 11 30 60
    nice -n 5 python scripts/benchmarks/bench_opensmile_memory.py --minutes 60 180 \
        --modes sized_pruned bounded
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("shipped", "sized", "sized_pruned", "bounded")
SR = 16000


def _hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _speech(folder: Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".wav", ".flac")):
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)
        x = x.mean(axis=1)
        parts.append(x if sr == SR else resample_poly(x, SR, sr))
    if not parts:
        raise SystemExit(f"no speech under {folder}")
    return np.concatenate(parts)


def _child(mode: str, minutes: float, folder: Path, out: Path) -> dict:
    import opensmile

    from atrisk.extractors.prosody.opensmile_backend import OpenSmileProsody

    base = _speech(folder)
    n = int(minutes * 60 * SR)

    def blocks():
        for start in range(0, n, 60 * SR):
            idx = np.arange(start, min(n, start + 60 * SR)) % base.size
            yield base[idx]

    ex = OpenSmileProsody()
    if mode in ("shipped", "sized"):  # the shipped config instead of the generated one
        ex._smiles["functionals"] = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals)
    ex.feature_names  # noqa: B018 (creates openSMILE's Smile before the baseline)
    h0, c0 = _hwm_mb(), time.process_time()
    row = ex.process_stream(blocks(), SR, "s", "teacher",
                            duration_s=None if mode == "shipped" else n / SR,
                            bounded=mode == "bounded")
    np.save(out, row.to_numpy()[0])
    return {"mode": mode, "minutes": minutes, "frames": n // 160,
            "peak_above_baseline_mb": round(_hwm_mb() - h0, 1),
            "baseline_mb": round(h0, 1), "cpu_s": round(time.process_time() - c0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[11.0, 30.0])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--speech", type=Path,
                    default=Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
                    / "speech")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "MINUTES", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        mode, minutes, out = args.child
        print(json.dumps(_child(mode, float(minutes), args.speech, Path(out))))
        return 0
    import tempfile

    runs = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            values = {}
            for mode in args.modes:
                out = Path(tmp) / f"{mode}-{minutes}.npy"
                proc = subprocess.run(
                    [sys.executable, __file__, "--speech", str(args.speech), "--child", mode,
                     str(minutes), str(out)], capture_output=True, text=True, check=True)
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                values[mode] = np.load(out)
                if "shipped" in values:
                    run["identical"] = bool(np.array_equal(values[mode], values["shipped"],
                                                           equal_nan=True))
                first = values[args.modes[0]]
                rel = np.abs(values[mode] - first) / np.where(first == 0, 1.0, np.abs(first))
                rel[np.isnan(values[mode]) & np.isnan(first)] = 0.0
                run["max_rel_diff_vs_first"] = float(np.max(rel))
                runs.append(run)
    print(json.dumps({"benchmark": "openSMILE eGeMAPSv02 functionals, one streamed track",
                      "load_average_1m_start_end": [round(load0, 2),
                                                    round(os.getloadavg()[0], 2)],
                      "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
