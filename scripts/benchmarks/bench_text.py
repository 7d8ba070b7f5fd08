"""Benchmark the text counters: utterances per second on one core, with and without POS.

Runs :func:`atrisk.extractors.text.text_features` on real tutoring transcripts
(the 35 AMBER sessions, ``../shared/data/amber``; a synthetic dialogue when the
data are absent) with

* ``spacy``: the default English pipeline (tokenizer, tok2vec, tagger,
  attribute_ruler + sentencizer; every counter, POS shares included);
* ``no_parse``: ``text.spacy_model = "blank:en"`` (tokenizer + sentencizer only,
  no statistical model: every counter except the POS shares, which are NaN);

and one 10,000-word utterance through the default pipeline.  Prints one JSON
object.  BLAS/OpenMP threads are pinned to 1 so the figures are per core:
``utterances_per_s`` is wall-clock (slowed by whatever else the machine runs),
``utterances_per_cpu_s`` divides by the CPU time of this process (one thread),
which other load changes much less; the load average is recorded around the run.

Usage (repository root)::

    .venv/bin/python scripts/benchmarks/bench_text.py [--repeat 3] [--data ../shared/data]

The committed figures (``docs/results/text_bench.json``) were made with
``.venv/bin/python scripts/benchmarks/bench_text.py --repeat 3 > docs/results/text_bench.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from atrisk.config import TextConfig  # noqa: E402
from atrisk.extractors.text import TextFeaturizer  # noqa: E402


def _amber(data: Path) -> pd.DataFrame | None:
    folder = data / "amber"
    if not folder.is_dir():
        return None

    def sec(v: str) -> float:
        m, s = str(v).split(":")[-2:]
        return float(m) * 60 + float(s)

    rows = []
    for f in sorted(folder.glob("*.json")):
        for u in json.loads(f.read_text(encoding="utf-8")):
            spk = {"tutor": "teacher", "student": "student"}.get(str(u["speaker"]).lower())
            if spk:
                rows.append((f.stem, spk, sec(u["start"]), sec(u["stop"]), u["dialogue"] or ""))
    return pd.DataFrame(rows, columns=["session_id", "speaker", "start_s", "end_s", "text"])


def _synthetic(n: int = 10000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lines = ["What is two plus two?", "Um, I think it is four.", "Right, write that down.",
             "Can you say that again?", "so we take the numerator and divide it by three"]
    t = np.cumsum(rng.uniform(0.5, 4.0, n))
    return pd.DataFrame({"session_id": [f"s{i // 400}" for i in range(n)],
                         "speaker": np.where(np.arange(n) % 2, "student", "teacher"),
                         "start_s": t, "end_s": t + 1.5,
                         "text": [lines[i % len(lines)] for i in range(n)]})


def _time(featurizer: TextFeaturizer, utts: pd.DataFrame, repeat: int) -> dict[str, float]:
    featurizer.transform(utts.head(50))  # load the model, warm up
    best = best_cpu = np.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        featurizer.transform(utts)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    words = int(utts["text"].str.split().str.len().sum())
    return {"seconds_best": round(best, 3), "utterances_per_s": round(len(utts) / best, 1),
            "words_per_s": round(words / best, 1), "cpu_seconds_best": round(best_cpu, 3),
            "utterances_per_cpu_s": round(len(utts) / best_cpu, 1),
            "words_per_cpu_s": round(words / best_cpu, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    here = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    utts = _amber(args.data)
    source = "amber (35 real tutoring sessions)"
    if utts is None:
        utts, source = _synthetic(), "synthetic dialogue (AMBER not found)"
    out: dict[str, object] = {
        "command": " ".join(["python", "scripts/benchmarks/bench_text.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "input": source, "utterances": len(utts), "sessions": int(utts["session_id"].nunique()),
        "threads": 1, "python": sys.version.split()[0], "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "note": "best of --repeat runs; measured on whatever load the machine had",
        "loadavg_1min_before": round(os.getloadavg()[0], 2),
    }
    out["spacy"] = _time(TextFeaturizer(TextConfig()), utts, args.repeat)
    out["no_parse"] = _time(TextFeaturizer(TextConfig(spacy_model="blank:en")), utts, args.repeat)
    long_utt = pd.DataFrame({"session_id": ["long"], "speaker": ["teacher"], "start_s": [0.0],
                             "end_s": [3600.0],
                             "text": [" ".join(["so we add the two numbers"] * 1667)[:60000]]})
    n_words = len(long_utt.loc[0, "text"].split())
    feat = TextFeaturizer(TextConfig())
    feat.transform(long_utt.assign(text="warm up"))  # load the model first
    t0, c0 = time.perf_counter(), time.process_time()
    feat.transform(long_utt)
    out["long_utterance"] = {"words": n_words, "seconds": round(time.perf_counter() - t0, 3),
                             "cpu_seconds": round(time.process_time() - c0, 3)}
    out["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
