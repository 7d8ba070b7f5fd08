"""CLI of the MOOC part: ``atrisk mooc train`` and ``atrisk mooc evaluate``.

Wired into :mod:`atrisk.cli` with ``app.add_typer(mooc_app, name="mooc")``.  Each
command parses its options and calls one function of :mod:`atrisk.mooc.model`.
Exit codes: 0 all good; 1 some rows/files were dropped (listed on stderr, the rest
was used); 2 usage, data or model error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import Device, JsonOpt, QuietOpt, print_failures, run_or_exit
from atrisk.progress import console, progress_bar

mooc_app = typer.Typer(help="MOOC dropout (KDD Cup 2015 layout): CFIN, CFIN-en and baselines.",
                       no_args_is_help=True)


DataOpt = Annotated[Path, typer.Option(
    "--data", help="Folder with trainCourse<ID>.csv[.gz] files and truth.csv.")]
DeviceOpt = Annotated[Device, typer.Option(
    "--device", help="CFIN device: auto = CUDA when available, else CPU.")]




@mooc_app.command("train")
def mooc_train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    folds: Annotated[int, typer.Option("--folds", min=2,
                                       help="CV folds of the baselines' grid search.")] = 5,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="CFIN's maximum epochs.")] = 15,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    device: DeviceOpt = Device.auto,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train LR, SVM, RF, GBDT, DNN (grid search with --folds CV), CFIN and CFIN-en."""
    from atrisk.mooc.cfin import CFINConfig
    from atrisk.mooc.model import MODELS, MoocConfig, train_mooc

    cfg = MoocConfig(folds=folds, seed=seed, cfin=CFINConfig(epochs=epochs, seed=seed))
    show = not (quiet or as_json)
    with progress_bar("training MOOC models", total=len(MODELS), enabled=show) as bar:
        res = run_or_exit(train_mooc, data, out, cfg, device.value,
                    on_step=lambda name: bar.advance(1))
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "problems"},
                                    indent=2) + "\n")
    elif not quiet:
        console.print(f"[green]trained[/] on {res['n_enrollments']} enrollments "
                      f"(dropout rate {res['dropout_rate']:.3f}) → {out}")
    print_failures(res["problems"], quiet)
    raise typer.Exit(1 if res["problems"] else 0)


@mooc_app.command("evaluate")
def mooc_evaluate(
    model: Annotated[Path, typer.Option("--model", help="Folder written by `atrisk mooc train`.")],
    data: DataOpt,
    device: DeviceOpt = Device.auto,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """AUC and F1 of every model on a folder (its courses may be unseen in training)."""
    from atrisk.mooc.model import evaluate_mooc

    res = run_or_exit(evaluate_mooc, model, data, device.value)
    out = {k: res[k] for k in ("n_enrollments", "dropout_rate", "models")}
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    elif not quiet:
        console.print(f"{out['n_enrollments']} enrollments, dropout rate "
                      f"{out['dropout_rate']:.3f}")
        for name, m in out["models"].items():
            console.print(f"  {name:8s} AUC {m['auc']:.4f}  F1 {m['f1']:.4f}")
    print_failures(res["problems"], quiet)
    raise typer.Exit(1 if res["problems"] else 0)
