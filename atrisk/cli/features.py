"""``atrisk features``: feature tables from given inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import ConfigOpt, QuietOpt, cli_config, print_failures, run_or_exit
from atrisk.extractors.text import text_features
from atrisk.ingest.utterances import load_utterances
from atrisk.progress import console
from atrisk.workspace import write_parquet

features_app = typer.Typer(help="Compute feature tables from given inputs.", no_args_is_help=True)


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
    cfg = cli_config(config, {})
    df, errors = run_or_exit(load_utterances, utterances)
    feats = run_or_exit(text_features, df, cfg.text)
    write_parquet(feats, out)
    if not quiet:
        console.print(f"[green]text features[/] for {len(feats)} sessions → {out}")
        print_failures([e.to_dict() for e in errors], quiet)
    raise typer.Exit(1 if errors else 0)


