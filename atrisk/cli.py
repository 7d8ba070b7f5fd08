"""The ``atrisk`` command line (Typer).

Each command parses its options and calls one library function in
:mod:`atrisk.pipeline` (or :mod:`atrisk.demo`).  Exit codes: 0 all good; 1 some
sessions/rows failed (they are listed, the rest is done); 2 usage or
configuration error.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli_output import print_auc_table
from atrisk.errors import AtriskError, ConfigError, ManifestError, ModelLoadError, TranscriptError
from atrisk.progress import console

app = typer.Typer(
    name="atrisk",
    help="Find K-12 students at risk of dropping out of online tutoring, from class "
    "recordings (teacher and student tracks) and platform logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="Compute feature tables from given inputs.", no_args_is_help=True)
app.add_typer(features_app, name="features")


class Device(StrEnum):
    """Where models run."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Engine(StrEnum):
    """How sessions are scheduled."""

    local = "local"
    ray = "ray"


class ASRBackend(StrEnum):
    """Speech recognisers."""

    wav2vec2 = "wav2vec2"
    pocketsphinx = "pocketsphinx"
    transcripts = "transcripts"


class ProsodyBackend(StrEnum):
    """Prosody extractors."""

    opensmile = "opensmile"
    torch = "torch"


class Weighting(StrEnum):
    """Decay G of pseudo-positive weights."""

    linear = "linear"
    convex = "convex"
    concave = "concave"
    constant = "constant"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML or YAML file with settings (see docs/cli.md); command-line options override it.",
        exists=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _config(path: Path | None, overrides: dict):
    from atrisk.config import load_config

    return load_config(path).override(overrides)


def _run(fn, *args, **kwargs):
    """Call a library function, turning package errors into exit code 2 with the message."""
    try:
        return fn(*args, **kwargs)
    except (ConfigError, ManifestError, ModelLoadError, TranscriptError) as exc:
        _fail(str(exc), 2)
    except AtriskError as exc:
        _fail(str(exc), 2)


def _print_failures(failures: list[dict], quiet: bool, limit: int = 20) -> None:
    if quiet or not failures:
        return
    console.print(f"[yellow]{len(failures)} problem(s):[/]")
    for f in failures[:limit]:
        where = f.get("source", "")
        if f.get("row") is not None:
            where = f"{where}:{f['row']}"
        console.print(f"  - {where}: {f.get('reason', '')}", highlight=False, soft_wrap=True)
    if len(failures) > limit:
        console.print(f"  … and {len(failures) - limit} more (see failures.jsonl)")


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
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
            help="Ray cluster address (HOST:PORT or ray://HOST:PORT) for --engine ray; "
            "default: start Ray on this machine.",
        ),
    ] = None,
    asr_backend: Annotated[
        ASRBackend | None,
        typer.Option(
            "--asr-backend",
            help="wav2vec2 (transformers CTC model), pocketsphinx (offline, bundled English "
            "model) or transcripts (RECORDINGS/utterances.csv or .parquet, or --transcripts) "
            "(default: wav2vec2, or asr.backend in --config).",
        ),
    ] = None,
    asr_model: Annotated[
        str | None,
        typer.Option(
            "--asr-model",
            help="Wav2Vec2ForCTC hub id or local folder (default: "
            "facebook/wav2vec2-base-960h, or asr.model in --config).",
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
    from atrisk import pipeline

    cfg = _run(
        _config,
        config,
        {
            "asr.backend": asr_backend.value if asr_backend else None,
            "asr.model": asr_model,
            "asr.quantize": True if asr_quantize else None,
            "prosody.backend": prosody_backend.value if prosody_backend else None,
        },
    )
    known = None
    if logs is not None:
        from atrisk.features.logs import load_logs

        known = set(_run(load_logs, logs).students["student_id"].astype(str))
    res = _run(
        pipeline.extract,
        recordings,
        out,
        cfg,
        device=device.value,
        engine=engine.value,
        workers=workers,
        known_students=known,
        transcripts=transcripts,
        progress=not (quiet or as_json),
        address=address,
        threads=threads,
    )
    if as_json:
        _emit_json(res.__dict__)
    elif not quiet:
        console.print(
            f"[green]extracted[/] {res.n_sessions} sessions ({res.n_ok} ok, {res.n_partial} "
            f"partial, {res.n_failed} failed, {res.n_resumed} reused), {res.n_utterances} "
            f"utterances with {res.asr_backend} → {res.workspace}",
            highlight=False,
        )
        _print_failures(res.failures, quiet)
    raise typer.Exit(res.exit_code)


@app.command()
def train(
    workspace: Annotated[
        Path, typer.Option("--workspace", help="Workspace made by `atrisk extract`.")
    ],
    logs: Annotated[
        Path,
        typer.Option(
            "--logs",
            help="Folder with students.csv, orders.csv, events.csv, outcomes.csv (docs/data.md).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the model artifact.")],
    lookback: Annotated[
        int | None,
        typer.Option(
            "--lookback",
            help="Λ: days of pseudo-positive pairs before each dropout (0 = no "
            "augmentation) (default: 7, or training.lookback in --config).",
            min=0,
        ),
    ] = None,
    weighting: Annotated[
        Weighting | None,
        typer.Option(
            "--weighting",
            help="G: decay of pseudo-positive weights (default: convex, or "
            "training.weighting in --config).",
        ),
    ] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build <student, day> pairs, fit the time-aware augmented LightGBM and save it."""
    from atrisk import pipeline

    cfg = _run(
        _config,
        config,
        {
            "training.lookback": lookback,
            "training.weighting": weighting.value if weighting else None,
        },
    )
    res = _run(pipeline.train, workspace, logs, out, cfg)
    if as_json:
        _emit_json(res.__dict__)
    elif not quiet:
        console.print(
            f"[green]trained[/] on {res.n_pairs} pairs of {res.n_students} students, "
            f"horizons {res.horizons} → {res.model_dir}",
            highlight=False,
        )
        _print_failures(res.failures, quiet)
    raise typer.Exit(res.exit_code)


def _parse_horizons(text: str | None) -> list[int] | None:
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        _fail(f"--horizons {text!r} is not a list like 1-14 or 1,7,14")
    if not out or min(out) < 1:
        _fail(f"--horizons {text!r} must name positive days")
    return sorted(set(out))


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Model folder made by `atrisk train`.")],
    workspace: Annotated[Path, typer.Option("--workspace", help="Workspace with in-class tables.")],
    logs: Annotated[Path, typer.Option("--logs", help="Logs folder.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder (metrics.json, report.html).")],
    horizons: Annotated[
        str | None,
        typer.Option(
            "--horizons", help="Δ values, e.g. 1-14 or 1,7,14 (default: the model's horizons)."
        ),
    ] = None,
    baselines: Annotated[
        bool, typer.Option(help="Also fit and score LR / DT / RF / un-augmented LightGBM.")
    ] = True,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """AUC per horizon Δ on the held-out students, against baselines; writes a report."""
    from atrisk import pipeline

    res = _run(
        pipeline.evaluate,
        model,
        workspace,
        logs,
        out,
        horizons=_parse_horizons(horizons),
        baselines=baselines,
    )
    if as_json:
        _emit_json(res)
    elif not quiet:
        print_auc_table(res.get("auc", {}), res.get("n_students"))
        console.print(f"report → {out}/report.html")
        _print_failures(res.get("failures", []), quiet)
    raise typer.Exit(1 if res.get("failures") else 0)


@app.command()
def predict(
    model: Annotated[Path, typer.Option("--model", help="Model folder made by `atrisk train`.")],
    workspace: Annotated[Path, typer.Option("--workspace", help="Workspace with in-class tables.")],
    logs: Annotated[Path, typer.Option("--logs", help="Logs folder (data before --date is used).")],
    date: Annotated[str, typer.Option("--date", help="Day to score, YYYY-MM-DD (UTC).")],
    out: Annotated[Path, typer.Option("--out", help="CSV risk list to write.")],
    horizon: Annotated[
        int, typer.Option("--horizon", help="Δ: risk of dropping out within this many days.", min=1)
    ] = 1,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="Also write the day's list into this service store (DuckDB; replaces "
            "that day's rows).",
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the day's ranked risk list: probability, rank, flagged (top share), top reasons."""
    from atrisk import pipeline

    risk, failures = _run(
        pipeline.predict, model, workspace, logs, date, out, horizon=horizon, db=db
    )
    if as_json:
        _emit_json(
            {
                "out": str(out),
                "n_students": len(risk),
                "n_flagged": int(risk["flagged"].sum()),
                "failures": failures,
            }
        )
    elif not quiet:
        console.print(
            f"[green]risk list[/] for {len(risk)} students "
            f"({int(risk['flagged'].sum())} flagged) → {out}",
            highlight=False,
        )
        _print_failures(failures, quiet)
    raise typer.Exit(1 if failures else 0)


@app.command()
def demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the synthetic data, workspace, model, report and risk list."
        ),
    ] = Path("atrisk-demo"),
    students: Annotated[int, typer.Option("--students", help="Synthetic students.", min=10)] = 80,
    recorded: Annotated[
        int,
        typer.Option(
            "--recorded",
            help="Voiced classes per student, at most (the rest are log-only).",
            min=1,
        ),
    ] = 1,
    seed: Annotated[int, typer.Option(help="Random seed of the generator and the models.")] = 0,
    asr_model: Annotated[
        str | None,
        typer.Option(
            "--asr-model",
            help="Wav2Vec2ForCTC id/folder (default: facebook/wav2vec2-base-960h); when it "
            "cannot be loaded the demo falls back to pocketsphinx with a warning.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Synthetic cohort (logs + espeak-ng voiced classes) → extract → train → evaluate → predict."""
    from atrisk.demo import run_demo

    res = _run(
        run_demo,
        out,
        n_students=students,
        seed=seed,
        recorded_per_student=recorded,
        asr_model=asr_model,
        quiet=quiet or as_json,
    )
    if as_json:
        _emit_json(res)


@features_app.command("text")
def features_text(
    utterances: Annotated[
        Path,
        typer.Option(
            "--utterances", help="CSV or Parquet with session_id, speaker, start_s, end_s, text."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Parquet file, one row per session.")],
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Linguistic and interaction counters from a transcript file (one row per session)."""
    from atrisk.extractors.text import text_features
    from atrisk.ingest.utterances import load_utterances
    from atrisk.workspace import write_parquet

    cfg = _run(_config, config, {})
    df, errors = _run(load_utterances, utterances)
    feats = _run(text_features, df, cfg.text)
    write_parquet(feats, out)
    if not quiet:
        console.print(f"[green]text features[/] for {len(feats)} sessions → {out}")
        _print_failures([e.to_dict() for e in errors], quiet)
    raise typer.Exit(1 if errors else 0)


asr_app = typer.Typer(help="Measure and fine-tune speech recognition.", no_args_is_help=True)
app.add_typer(asr_app, name="asr")


class EvalBackend(StrEnum):
    """Speech recognisers that transcribe audio."""

    wav2vec2 = "wav2vec2"
    pocketsphinx = "pocketsphinx"


ManifestHelp = "TSV with a header: path, text (optionally speaker); relative paths from its folder."


@asr_app.command("evaluate")
def asr_evaluate(
    manifest: Annotated[Path, typer.Option("--manifest", help=ManifestHelp)],
    asr_backend: Annotated[
        EvalBackend | None,
        typer.Option("--asr-backend",
                     help="wav2vec2 or pocketsphinx (default: wav2vec2, or asr.backend in "
                     "--config)."),
    ] = None,
    asr_model: Annotated[
        str | None,
        typer.Option("--asr-model", help="Wav2Vec2ForCTC hub id or local folder, for wav2vec2 "
                     "(default: facebook/wav2vec2-base-960h, or asr.model in --config)."),
    ] = None,
    device: Annotated[
        Device, typer.Option(help="Where the ASR model runs; auto = CUDA when available, else CPU.")
    ] = Device.auto,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """WER and CER (after atrisk.asr.normalize) overall and per speaker, and the RTF."""
    from atrisk.asr.evaluate import evaluate_manifest

    cfg = _run(_config, config, {})
    backend = asr_backend.value if asr_backend else cfg.asr.backend
    res = _run(evaluate_manifest, manifest, backend=backend, model=asr_model,
               device=device.value, config=cfg.asr, progress=not (quiet or as_json))
    if as_json:
        _emit_json(res)
    elif not quiet:
        console.print(f"{res['asr_model']} on {res['evaluated']} utterances "
                      f"({res['audio_s']:.0f} s): WER {res['wer']:.4f}  CER {res['cer']:.4f}  "
                      f"RTF {res['rtf']:.3f}", highlight=False)
        for spk, s in res["per_speaker"].items():
            console.print(f"  {spk}: WER {s['wer']:.4f}  CER {s['cer']:.4f}  ({s['n']} utt.)",
                          highlight=False)
    _print_failures(res["failures"], quiet or as_json)
    raise typer.Exit(1 if res["failures"] else 0)


@asr_app.command("finetune")
def asr_finetune(
    train: Annotated[Path, typer.Option("--train", help="Training " + ManifestHelp)],
    eval_: Annotated[Path, typer.Option("--eval", help="Evaluation " + ManifestHelp)],
    base: Annotated[
        str,
        typer.Option("--base", help="Wav2Vec2 hub id or folder to start from; a folder with only "
                     "a config.json gives a randomly initialised model of that geometry."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (model, log, checkpoints).")],
    device: Annotated[
        Device, typer.Option(help="Where training runs; auto = CUDA when available, else CPU.")
    ] = Device.auto,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")
    ] = False,
    learning_rate: Annotated[float | None, typer.Option(
        help="Peak AdamW learning rate (default: 0.0001, or asr_finetune.learning_rate in "
        "--config).")] = None,
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
    """Fine-tune a Wav2Vec2 CTC model on TSV manifests; the result loads with --asr-model OUT."""
    from atrisk.asr.finetune import finetune

    cfg = _run(_config, config, {
        "asr_finetune.learning_rate": learning_rate, "asr_finetune.epochs": epochs,
        "asr_finetune.max_steps": max_steps, "asr_finetune.batch_size": batch_size,
        "asr_finetune.grad_accum": grad_accum, "asr_finetune.checkpoint_every": checkpoint_every,
    })
    res = _run(finetune, train, eval_, base, out, config=cfg.asr_finetune, device=device.value,
               resume=resume, stop_after_steps=stop_after_steps,
               progress=not (quiet or as_json))
    if as_json:
        _emit_json(res)
    elif not quiet:
        for e in res["epochs"]:
            console.print(f"epoch {e['epoch']} step {e['step']}: train loss "
                          f"{e['train_loss']:.3f}  eval WER {e.get('eval_wer', float('nan')):.4f}",
                          highlight=False)
        state = "done" if res["finished"] else "stopped (continue with --resume)"
        console.print(f"[green]{state}[/] at step {res['step']}/{res['total_steps']} → {out}")
    _print_failures(res["failures"], quiet or as_json)
    raise typer.Exit(1 if res["failures"] else 0)


from atrisk.cli_serve import keys_app, serve  # noqa: E402  (after the app exists)

app.command("serve")(serve)
app.add_typer(keys_app, name="keys")

from atrisk.cli_mooc import mooc_app  # noqa: E402  (after the app exists)

app.add_typer(mooc_app, name="mooc")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
