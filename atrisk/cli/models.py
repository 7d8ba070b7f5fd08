"""``atrisk train``, ``atrisk evaluate``, ``atrisk predict``: the risk model on folders."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import (
    ConfigOpt,
    JsonOpt,
    QuietOpt,
    cli_config,
    emit_json,
    parse_horizons,
    print_failures,
    run_or_exit,
)
from atrisk.config import TrainingConfig
from atrisk.progress import console, print_evaluation
from atrisk.workflows import evaluate_folder, predict_folder, train_folder

#: The built-in training defaults, named in --help.
_DEFAULT = TrainingConfig()


class Labels(StrEnum):
    """Label construction (docs/method.md)."""

    seed = "seed"
    horizon = "horizon"


class Balance(StrEnum):
    """Class balance."""

    oversample = "oversample"
    reweight = "reweight"


class Calibration(StrEnum):
    """Calibration of the probabilities."""

    isotonic = "isotonic"
    platt = "platt"
    none = "none"


class Weighting(StrEnum):
    """Decay G of pseudo-positive weights."""

    linear = "linear"
    convex = "convex"
    concave = "concave"
    constant = "constant"


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
            f"augmentation) (default: {_DEFAULT.lookback}, or training.lookback in --config).",
            min=0,
        ),
    ] = None,
    weighting: Annotated[
        Weighting | None,
        typer.Option(
            "--weighting",
            help="G: decay of pseudo-positive weights (default: "
            f"{_DEFAULT.weighting}, or training.weighting in --config).",
        ),
    ] = None,
    labels: Annotated[
        Labels | None,
        typer.Option(
            "--labels",
            help="seed: the seed paper's P/N/P̃ construction, one model for every Δ; "
            "horizon: 'dropout within Δ' labels, one model per Δ (default: "
            f"{_DEFAULT.labels}, or training.labels in --config).",
        ),
    ] = None,
    balance: Annotated[
        Balance | None,
        typer.Option(
            "--balance",
            help="oversample: seeded draws of positive copies, probability ∝ weight; "
            "reweight: scale the positives' weights (default: "
            f"{_DEFAULT.balance}, or training.balance in --config).",
        ),
    ] = None,
    calibration: Annotated[
        Calibration | None,
        typer.Option(
            "--calibration",
            help="Map scores to the chance of dropping out within Δ days, fitted on "
            f"out-of-fold scores (default: {_DEFAULT.calibration}, or training.calibration "
            "in --config).",
        ),
    ] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build <student, day> pairs, fit LightGBM (labels, balance, calibration) and save it."""
    cfg = cli_config(
        config,
        {
            "training.lookback": lookback,
            "training.weighting": weighting.value if weighting else None,
            "training.labels": labels.value if labels else None,
            "training.balance": balance.value if balance else None,
            "training.calibration": calibration.value if calibration else None,
        },
    )
    res = run_or_exit(train_folder, workspace, logs, out, cfg)
    if as_json:
        emit_json(res.__dict__)
    elif not quiet:
        console.print(
            f"[green]trained[/] on {res.n_pairs} pairs of {res.n_students} students, "
            f"horizons {res.horizons} → {res.model_dir}",
            highlight=False,
        )
        print_failures(res.failures, quiet)
    raise typer.Exit(res.exit_code)


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
    """Per Δ on held-out students: AUC with its interval, positives, recall, Brier; report."""
    report = run_or_exit(
        evaluate_folder,
        model,
        workspace,
        logs,
        out,
        horizons=parse_horizons(horizons),
        baselines=baselines,
    )
    res = report.to_dict()
    if as_json:
        emit_json(res)
    elif not quiet:
        print_evaluation(res)
        console.print(f"report → {out}/report.html")
        print_failures(report.failures, quiet)
    raise typer.Exit(1 if report.failures else 0)


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
    risk, failures = run_or_exit(
        predict_folder, model, workspace, logs, date, out, horizon=horizon, db=db
    )
    if as_json:
        emit_json(
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
        print_failures(failures, quiet)
    raise typer.Exit(1 if failures else 0)


