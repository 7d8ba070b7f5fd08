"""``atrisk asr``: measure (WER) and fine-tune speech recognition."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import (
    ConfigOpt,
    Device,
    JsonOpt,
    QuietOpt,
    asr_overrides,
    cli_config,
    emit_json,
    print_asr_choice,
    print_failures,
    run_or_exit,
)
from atrisk.config import AUTO_BACKEND
from atrisk.progress import console
from atrisk.registry import ASR_BACKENDS

asr_app = typer.Typer(help="Measure and fine-tune speech recognition.", no_args_is_help=True)


#: Backends that transcribe audio (from the registry), and auto.
EvalBackend = StrEnum("EvalBackend", [(n, n) for n in (
    AUTO_BACKEND, *(n for n, target in ASR_BACKENDS.items() if target))])


ManifestHelp = "TSV with a header: path, text (optionally speaker); relative paths from its folder."


@asr_app.command("evaluate")
def asr_evaluate(
    manifest: Annotated[Path, typer.Option("--manifest", help=ManifestHelp)],
    asr_backend: Annotated[
        EvalBackend | None,
        typer.Option("--asr-backend",
                     help="auto (as atrisk extract: a Wav2Vec2 checkpoint that is here, else "
                     "Whisper, else pocketsphinx), wav2vec2, whisper or pocketsphinx (default: "
                     "auto, or asr.backend in --config)."),
    ] = None,
    asr_model: Annotated[
        str | None,
        typer.Option("--asr-model", help="Wav2Vec2ForCTC hub id or local folder; with "
                     "--asr-backend whisper a CTranslate2 Whisper folder or a faster-whisper "
                     "model name, the bundled tiny.en when not given (default: "
                     "facebook/wav2vec2-base-960h, or asr.model in --config)."),
    ] = None,
    device: Annotated[
        Device, typer.Option(help="Where the ASR model runs; auto = CUDA when available, else CPU.")
    ] = Device.auto,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """WER and CER (after atrisk.asr.normalize) overall and per speaker, and the RTF."""
    from atrisk.asr.auto import resolve_backend
    from atrisk.asr.evaluate import evaluate_manifest

    cfg = cli_config(config, asr_overrides(config, asr_backend.value if asr_backend else None,
                                           asr_model))
    requested = cfg.asr.backend
    choice = run_or_exit(resolve_backend, cfg.asr)
    if requested == AUTO_BACKEND:
        print_asr_choice(choice.backend, f"auto: {choice.reason}", quiet)
    res = run_or_exit(evaluate_manifest, manifest, backend=choice.backend, model=None,
                      device=device.value, config=choice.config,
                      progress=not (quiet or as_json))
    if as_json:
        emit_json(res)
    elif not quiet:
        console.print(f"{res['asr_model']} on {res['evaluated']} utterances "
                      f"({res['audio_s']:.0f} s): WER {res['wer']:.4f}  CER {res['cer']:.4f}  "
                      f"RTF {res['rtf']:.3f}", highlight=False)
        for spk, s in res["per_speaker"].items():
            console.print(f"  {spk}: WER {s['wer']:.4f}  CER {s['cer']:.4f}  ({s['n']} utt.)",
                          highlight=False)
    print_failures(res["failures"], quiet or as_json)
    raise typer.Exit(1 if res["failures"] else 0)


@asr_app.command("finetune")
def asr_finetune(
    train: Annotated[Path, typer.Option("--train", help="Training " + ManifestHelp)],
    eval_: Annotated[Path, typer.Option("--eval", help="Evaluation " + ManifestHelp)],
    base: Annotated[
        str,
        typer.Option("--base", help="whisper (the bundled tiny.en) or a CTranslate2 Whisper "
                     "folder; or a Wav2Vec2 hub id or folder (a folder with only a config.json "
                     "gives a randomly initialised model of that geometry)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (model, log, checkpoints).")],
    device: Annotated[
        Device, typer.Option(help="Where training runs; auto = CUDA when available, else CPU.")
    ] = Device.auto,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")
    ] = False,
    learning_rate: Annotated[float | None, typer.Option(
        help="Peak AdamW learning rate (default: 1e-4 for a Wav2Vec2 base, 2e-5 for a Whisper "
        "base, or asr_finetune.learning_rate in --config).")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Passes over the training set (default: 30, or asr_finetune.epochs in "
        "--config).")] = None,
    max_steps: Annotated[int | None, typer.Option(
        help="Optimizer steps in all; overrides --epochs when > 0 (default: 0, or "
        "asr_finetune.max_steps in --config).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Utterances per forward pass (default: 8, or asr_finetune.batch_size in "
        "--config).")] = None,
    grad_accum: Annotated[int | None, typer.Option(
        help="Forward passes per optimizer step (default: 1, or asr_finetune.grad_accum in "
        "--config).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        help="Optimizer steps between checkpoints (default: 500, or "
        "asr_finetune.checkpoint_every in --config).")] = None,
    stop_after_steps: Annotated[
        int | None,
        typer.Option(help="Stop at this optimizer step, with a checkpoint (then --resume)."),
    ] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a Whisper or Wav2Vec2 CTC model on TSV manifests; load it with --asr-model OUT."""
    from atrisk.asr.finetune import finetune

    cfg = cli_config(config, {
        "asr_finetune.learning_rate": learning_rate, "asr_finetune.epochs": epochs,
        "asr_finetune.max_steps": max_steps, "asr_finetune.batch_size": batch_size,
        "asr_finetune.grad_accum": grad_accum, "asr_finetune.checkpoint_every": checkpoint_every,
    })
    res = run_or_exit(finetune, train, eval_, base, out, config=cfg.asr_finetune,
                      device=device.value, resume=resume, stop_after_steps=stop_after_steps,
                      progress=not (quiet or as_json))
    if as_json:
        emit_json(res)
    elif not quiet:
        for e in res["epochs"]:
            console.print(f"epoch {e['epoch']} step {e['step']}: train loss "
                          f"{e['train_loss']:.3f}  eval WER {e.get('eval_wer', float('nan')):.4f}",
                          highlight=False)
        state = "done" if res["finished"] else "stopped (continue with --resume)"
        console.print(f"[green]{state}[/] at step {res['step']}/{res['total_steps']} → {out}")
    print_failures(res["failures"], quiet or as_json)
    raise typer.Exit(1 if res["failures"] else 0)


