"""Fine-tune the bundled Whisper tiny.en on speechocean762 children, score held-out speakers.

The 12 speakers are split by sorted id (even positions train, odd positions held out;
no utterance text is shared between the halves).  ``atrisk.asr.finetune.finetune`` runs
with ``--base whisper`` (decoder only, encoder outputs cached); then the untuned and the
tuned model are both run through the Whisper backend as a user runs it
(``WhisperTranscriber``: VAD, batched, beam 5, int8 on the CPU) on the held-out
speakers, and WER/CER are reported with 95 % speaker-bootstrap intervals, a paired
bootstrap of the difference, and the WER with numbers spelled out on both sides
(Whisper writes "6 7 8 9" where the references say "SIX SEVEN EIGHT NINE").

Usage:
    python scripts/recipes/whisper_finetune_kids.py \
        --out docs/results/asr_finetune_whisper_speechocean762.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))
from asr_whisper import spell_numbers  # noqa: E402

N_BOOT = 2000


def split(data: Path, folder: Path, log_speakers: int) -> tuple[Path, Path, dict]:
    """Write train / held-out manifests (absolute paths) split by speaker."""
    from atrisk.asr.evaluate import read_manifest

    rows, errors = read_manifest(data / "speech" / "speechocean762_kids" / "transcripts.tsv")
    if errors:
        raise SystemExit(f"manifest errors: {errors[:3]}")
    speakers = sorted({r.speaker for r in rows})
    train_spk, eval_spk = speakers[0::2], speakers[1::2]
    out = {}
    for name, spk in (("train", train_spk), ("eval", eval_spk)):
        lines = ["path\ttext\tspeaker"] + [f"{r.path}\t{r.text}\t{r.speaker}"
                                           for r in rows if r.speaker in spk]
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n")
        out[name] = {"speakers": spk, "utterances": len(lines) - 1}
    # the per-epoch log scores the first held-out speakers only (the CPU cost of greedy
    # decoding every epoch); the before/after comparison uses all held-out speakers
    lines = ["path\ttext\tspeaker"] + [f"{r.path}\t{r.text}\t{r.speaker}" for r in rows
                                       if r.speaker in eval_spk[:log_speakers]]
    (folder / "eval_log.tsv").write_text("\n".join(lines) + "\n")
    out["epoch_log_speakers"] = eval_spk[:log_speakers]
    texts = {n: {r.text for r in rows if r.speaker in s}
             for n, s in (("train", train_spk), ("eval", eval_spk))}
    out["shared_texts"] = len(texts["train"] & texts["eval"])
    return folder / "train.tsv", folder / "eval.tsv", out


def transcribe(model: str | None, manifest: Path) -> tuple[list[str], list[str], list[str], float]:
    """References, hypotheses, speakers and CPU seconds of the Whisper backend on a manifest."""
    from atrisk.asr.evaluate import read_manifest
    from atrisk.asr.whisper import WhisperTranscriber

    rows, _ = read_manifest(manifest)
    t = WhisperTranscriber.from_pretrained(model, device="cpu")
    c0 = time.process_time()
    hyps = [" ".join(s.text for s in t.transcribe_file(r.path)) for r in rows]
    return [r.text for r in rows], hyps, [r.speaker for r in rows], time.process_time() - c0


def paired(refs: list[str], a: list[str], b: list[str], speakers: list[str]) -> dict:
    """WER of a and b, their speaker-bootstrap intervals and that of b - a."""
    from atrisk.asr.evaluate import score

    def errs(hyps: list[str]) -> np.ndarray:
        out = []
        for r, h in zip(refs, hyps, strict=True):
            s = score([r], [h])
            out.append(s["substitutions"] + s["deletions"] + s["insertions"])
        return np.array(out, float)

    words = np.array([score([r], [r])["words"] for r in refs], float)
    ea, eb = errs(a), errs(b)
    spk = np.array(speakers)
    keys = np.unique(spk)
    sa = np.array([ea[spk == k].sum() for k in keys])
    sb = np.array([eb[spk == k].sum() for k in keys])
    sw = np.array([words[spk == k].sum() for k in keys])
    idx = np.random.default_rng(0).integers(0, keys.size, size=(N_BOOT, keys.size))
    ra, rb = sa[idx].sum(1) / sw[idx].sum(1), sb[idx].sum(1) / sw[idx].sum(1)

    def ci(x: np.ndarray) -> list[float]:
        return [round(float(np.percentile(x, 2.5)), 4), round(float(np.percentile(x, 97.5)), 4)]

    return {"words": int(words.sum()), "speakers": int(keys.size),
            "wer_base": round(float(ea.sum() / words.sum()), 4), "wer_base_ci95": ci(ra),
            "wer_tuned": round(float(eb.sum() / words.sum()), 4), "wer_tuned_ci95": ci(rb),
            "difference": round(float((eb.sum() - ea.sum()) / words.sum()), 4),
            "difference_ci95": ci(rb - ra),
            "utterances_better": int((eb < ea).sum()), "utterances_worse": int((eb > ea).sum())}


def main(argv: list[str] | None = None) -> None:
    """Run the recipe and write the JSON."""
    import torch

    from atrisk.asr.evaluate import score
    from atrisk.asr.finetune import finetune
    from atrisk.config import AsrFinetuneConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None, help="keep the model here")
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--log-speakers", type=int, default=2,
                   help="held-out speakers scored after every epoch (all are scored at the end)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="whisper-ft-"))
    work.mkdir(parents=True, exist_ok=True)
    train, held_out, split_info = split(args.data, work, args.log_speakers)
    cfg = AsrFinetuneConfig(learning_rate=args.learning_rate, epochs=args.epochs,
                            batch_size=args.batch_size, warmup_ratio=0.1, log_every=5)
    t0, c0 = time.perf_counter(), time.process_time()
    res = finetune(train, work / "eval_log.tsv", "whisper", work / "model", cfg, device="cpu",
                   progress=False)
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    refs, base_hyps, speakers, base_cpu = transcribe(None, held_out)
    _, tuned_hyps, _, tuned_cpu = transcribe(str(work / "model"), held_out)
    result = {
        "what": "Whisper tiny.en (bundled) fine-tuned on speechocean762 children, decoder only; "
                "held-out speakers scored with the Whisper backend (VAD, batched, beam 5, int8)",
        "command": "python scripts/recipes/whisper_finetune_kids.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "split": split_info,
        "config": cfg.model_dump(),
        "training": {"wall_s": round(train_wall, 1), "cpu_s": round(train_cpu, 1),
                     "threads": args.threads, "steps": res["step"],
                     "baseline_greedy": res["baseline"],
                     "epochs": [{k: e[k] for k in e if k != "eval_example"}
                                for e in res["epochs"]]},
        "backend": {
            "as_written": paired(refs, base_hyps, tuned_hyps, speakers),
            "numbers_spelled": paired([spell_numbers(r) for r in refs],
                                      [spell_numbers(h) for h in base_hyps],
                                      [spell_numbers(h) for h in tuned_hyps], speakers),
            "cer_base": round(score(refs, base_hyps)["cer"], 4),
            "cer_tuned": round(score(refs, tuned_hyps)["cer"], 4),
            "cpu_s_base": round(base_cpu, 1), "cpu_s_tuned": round(tuned_cpu, 1),
        },
        "examples": [{"reference": r, "base": a, "tuned": b}
                     for r, a, b in list(zip(refs, base_hyps, tuned_hyps, strict=True))[:8]],
        "machine": {"cpus": os.cpu_count(), "load_1min_start": round(load_start, 2),
                    "load_1min_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["backend"], indent=1))


if __name__ == "__main__":
    main()
