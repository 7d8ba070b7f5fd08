"""``atrisk extract``: recordings → workspace tables."""

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
from atrisk.extract import Extractor
from atrisk.extract.engines import ENGINES
from atrisk.ingest.logs import Logs
from atrisk.progress import console
from atrisk.registry import ASR_BACKENDS, PROSODY_BACKENDS

#: Choices of the options, from the registries (one place to add a backend).
Engine = StrEnum("Engine", [(n, n) for n in ENGINES])
ASRBackend = StrEnum("ASRBackend", [(n, n) for n in (AUTO_BACKEND, *ASR_BACKENDS)])
ProsodyBackend = StrEnum("ProsodyBackend", [(n, n) for n in PROSODY_BACKENDS])


def extract(
    recordings: Annotated[
        Path,
        typer.Argument(help="Folder with sessions.csv and one sub-folder of tracks per session."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Workspace folder for the tables (earlier results there are reused: resume).",
        ),
    ],
    device: Annotated[
        Device,
        typer.Option(
            help="Where the ASR model and the torch prosody backend run (--engine ray: "
            "prosody on the CPU); auto = CUDA when available, else CPU. Not part of the "
            "resume key.",
        ),
    ] = Device.auto,
    engine: Annotated[
        Engine,
        typer.Option(
            help="Scheduler: local = process pool on this machine; ray = Ray Data pipeline "
            "(local Ray with --workers CPUs, or the cluster at --address).",
        ),
    ] = Engine.local,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster address (HOST:PORT of a cluster started with `ray start`; "
            "set-up: docs/architecture.md) for --engine ray; default: start Ray on this "
            "machine.",
        ),
    ] = None,
    asr_backend: Annotated[
        ASRBackend | None,
        typer.Option(
            "--asr-backend",
            help="auto (a Wav2Vec2 checkpoint named by --asr-model or in the Hugging Face "
            "cache, else the bundled Whisper, else pocketsphinx; the choice is printed and "
            "saved in run.json), wav2vec2 (transformers CTC model), whisper (faster-whisper, "
            "bundled offline tiny.en), pocketsphinx (offline, bundled English model) or "
            "transcripts (RECORDINGS/utterances.csv or .parquet, or --transcripts) "
            "(default: auto, or asr.backend in --config).",
        ),
    ] = None,
    asr_model: Annotated[
        str | None,
        typer.Option(
            "--asr-model",
            help="Wav2Vec2ForCTC hub id or local folder; with --asr-backend whisper a "
            "CTranslate2 Whisper folder or a faster-whisper model name, the bundled tiny.en "
            "when not given (asr.whisper_model); with auto a Whisper folder or name picks "
            "Whisper (default: facebook/wav2vec2-base-960h, or asr.model in --config).",
        ),
    ] = None,
    asr_quantize: Annotated[
        bool,
        typer.Option(
            "--asr-quantize",
            help="wav2vec2 on CPU: int8 dynamic quantisation (less CPU time, slightly "
            "different output; check the WER). With --device auto on CUDA it is ignored "
            "(warning); with --device cuda it is an error.",
        ),
    ] = False,
    prosody_backend: Annotated[
        ProsodyBackend | None,
        typer.Option(
            "--prosody-backend",
            help="Prosody extractor: opensmile (eGeMAPSv02) or torch (licence-clean "
            "eGeMAPSv02, CPU or CUDA) (default: opensmile, or prosody.backend in --config).",
        ),
    ] = None,
    transcripts: Annotated[
        Path | None,
        typer.Option(
            "--transcripts",
            help="Utterance file (CSV/Parquet: session_id, speaker, start_s, "
            "end_s, text) for --asr-backend transcripts.",
        ),
    ] = None,
    logs: Annotated[
        Path | None,
        typer.Option(
            "--logs",
            help="Logs folder; when given, sessions of students missing from "
            "students.csv are rejected.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (--engine local, at most one per session) or CPUs of the "
            "local Ray (--engine ray) (default: the CPUs this process may use).",
            min=1,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="torch threads per worker process, --workers 1 included (--engine local; "
            "default: usable CPUs / workers); the torch prosody backend on the CPU uses 1.",
            min=1,
        ),
    ] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Decode the recordings; write sessions, prosody, utterances, prosody_utterances, in_class."""
    cfg = cli_config(
        config,
        {
            **asr_overrides(config, asr_backend.value if asr_backend else None, asr_model),
            "asr.quantize": True if asr_quantize else None,
            "prosody.backend": prosody_backend.value if prosody_backend else None,
        },
    )
    known = None
    if logs is not None:
        known = set(run_or_exit(Logs.read, logs).students["student_id"].astype(str))
    extractor = run_or_exit(Extractor, cfg, device=device.value, engine=engine.value,
                            workers=workers, address=address, threads=threads)
    choice = run_or_exit(extractor.resolve_asr)
    print_asr_choice(choice.backend, choice.reason, quiet)
    res = run_or_exit(extractor.extract, recordings, out, known_students=known,
                      transcripts=transcripts, progress=not (quiet or as_json))
    if as_json:
        emit_json(res.__dict__)
    elif not quiet:
        console.print(
            f"[green]extracted[/] {res.n_sessions} sessions ({res.n_ok} ok, {res.n_partial} "
            f"partial, {res.n_failed} failed, {res.n_resumed} reused), {res.n_utterances} "
            f"utterances with {res.asr_model or res.asr_backend} → {res.workspace}",
            highlight=False,
        )
        print_failures(res.failures, quiet)
    raise typer.Exit(res.exit_code)


