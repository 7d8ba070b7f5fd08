"""``atrisk demo``: a synthetic cohort through the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import JsonOpt, QuietOpt, emit_json, run_or_exit
from atrisk.demo import run_demo


def demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the synthetic data, workspace, model, report and risk list."
        ),
    ] = Path("atrisk-demo"),
    students: Annotated[
        int, typer.Option("--students", min=10,
                          help="Synthetic students (45 % of them with a recorded class).")
    ] = 200,
    recorded: Annotated[
        int | None,
        typer.Option(
            "--recorded",
            help="Voiced classes per student, at most: the first ones the generator "
            "records (the first class, then each later one with probability record_share); "
            "the rest are log-only.",
            min=1,
        ),
    ] = 1,
    seed: Annotated[int, typer.Option(help="Random seed of the generator and the models.")] = 0,
    asr_model: Annotated[
        str | None,
        typer.Option(
            "--asr-model",
            help="Wav2Vec2ForCTC id/folder (default: facebook/wav2vec2-base-960h); used when it "
            "is a local folder or in the Hugging Face cache, else the demo runs the bundled "
            "offline Whisper (pocketsphinx when Whisper is not installed) and says so; when "
            "the chosen model cannot be loaded it falls back to pocketsphinx with a warning.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Synthetic cohort (logs + espeak-ng voiced classes) → extract → train → evaluate → predict."""
    res = run_or_exit(
        run_demo,
        out,
        n_students=students,
        seed=seed,
        recorded_per_student=recorded,
        asr_model=asr_model,
        quiet=quiet or as_json,
    )
    if as_json:
        emit_json(res)


