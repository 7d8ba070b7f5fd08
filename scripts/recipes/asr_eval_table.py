"""Gather the per-set ASR evaluations into one JSON and print the table of docs/asr.md.

Reads, from ``docs/results/`` (``--results``), the ``atrisk asr evaluate --json`` outputs
``asr_eval_<set>_<backend>.json`` and, for the speechocean762 children with Whisper, the
``whisper-vad-b5`` entry of ``asr_whisper_sets.json`` (made by
``scripts/benchmarks/asr_whisper.py sets``: the same transcriber with the default
settings, the same normalisation and corpus-level scoring as ``asr evaluate``, so it is
not run a second time).  Writes ``asr_eval_summary.json``: per set and backend the
utterances, reference words, WER, CER, CPU-RTF, a 95 % interval, and per speaker the WER
of both backends with the count of speakers whose WER Whisper lowers (and a two-sided
sign-test p-value).

Usage::

    python scripts/recipes/asr_eval_table.py --results docs/results
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

SETS = {
    "speechbrain": "speechbrain test samples: read sentences, 2 adult speakers",
    "speechocean762_kids": "speechocean762 kids: read sentences, 12 children aged 6–12, "
    "Mandarin L1",
}


def load(results: Path, name: str, backend: str) -> dict | None:
    """One set's evaluation (``asr evaluate`` JSON, or the whisper benchmark's entry)."""
    path = results / f"asr_eval_{name}_{backend}.json"
    if path.is_file():
        d = json.loads(path.read_text())
        d["source"] = path.name
        return d
    if backend == "whisper":
        sets = json.loads((results / "asr_whisper_sets.json").read_text())["sets"]
        key = {"speechocean762_kids": "kids"}.get(name, name)
        if key in sets:
            d = dict(sets[key]["whisper-vad-b5"])
            d["source"] = "asr_whisper_sets.json (whisper-vad-b5)"
            return d
    return None


def sign_test(wins: int, n: int) -> float:
    """Two-sided sign-test p-value of ``wins`` out of ``n`` (no ties)."""
    k = min(wins, n - wins)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * p)


def main(argv: list[str] | None = None) -> int:
    """Write the summary JSON and print the Markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("docs/results"))
    args = ap.parse_args(argv)
    out: dict[str, dict] = {}
    rows = ["| data | backend | utterances (words) | WER | CER | CPU-RTF | per speaker WER |",
            "|---|---|---|---|---|---|---|"]
    for name, what in SETS.items():
        out[name] = {"description": what}
        per: dict[str, dict[str, float]] = {}
        for backend in ("whisper", "pocketsphinx"):
            d = load(args.results, name, backend)
            if d is None:
                continue
            spk = {s: round(v["wer"], 4) for s, v in d.get("per_speaker", {}).items()}
            for s, v in spk.items():
                per.setdefault(s, {})[backend] = v
            out[name][backend] = {
                "source": d["source"], "n": d["n"], "words": d["words"],
                "wer": round(d["wer"], 4), "cer": round(d["cer"], 4),
                "cpu_rtf": round(d["cpu_rtf"], 4),
                "wer_ci95_utterances": d.get("wer_ci95_utterances"),
                "wer_ci95_speakers": d.get("wer_ci95_speakers"),
                "per_speaker_wer": spk,
            }
            lo, hi = (min(spk.values()), max(spk.values())) if spk else (math.nan, math.nan)
            ci = d.get("wer_ci95_speakers") or d.get("wer_ci95_utterances")
            rows.append(f"| {what} | {backend} | {d['n']} ({d['words']}) | {d['wer']:.1%}"
                        f"{f' [{ci[0]:.1%}, {ci[1]:.1%}]' if ci else ''} | {d['cer']:.1%} | "
                        f"{d['cpu_rtf']:.2f} | {lo:.1%}–{hi:.1%} ({len(spk)} speakers) |")
        both = {s: v for s, v in per.items() if len(v) == 2}
        wins = sum(v["whisper"] < v["pocketsphinx"] for v in both.values())
        ties = sum(v["whisper"] == v["pocketsphinx"] for v in both.values())
        out[name]["per_speaker"] = per
        out[name]["speakers_whisper_lower"] = {
            "wins": wins, "ties": ties, "speakers": len(both),
            "sign_test_p": round(sign_test(wins, len(both) - ties), 5) if len(both) > ties
            else None,
        }
    (args.results / "asr_eval_summary.json").write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(rows))
    for name in SETS:
        w = out[name]["speakers_whisper_lower"]
        print(f"\n{name}: Whisper's WER is lower for {w['wins']} of {w['speakers']} speakers "
              f"(ties {w['ties']}, sign test p = {w['sign_test_p']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
