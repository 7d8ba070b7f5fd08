"""The ``atrisk`` command line (Typer): thin commands over the Python API.

Each command parses its options and calls one function of the API
(:class:`~atrisk.extract.Extractor`, :mod:`atrisk.workflows`, …); see
:mod:`atrisk.cli.common` for the exit codes.
"""

from __future__ import annotations

import typer

from atrisk.cli.asr import asr_app
from atrisk.cli.demo import demo
from atrisk.cli.extract import extract
from atrisk.cli.features import features_app
from atrisk.cli.models import evaluate, predict, train
from atrisk.cli.mooc import mooc_app
from atrisk.cli.serve import keys_app, serve

app = typer.Typer(
    name="atrisk",
    help="Find K-12 students at risk of dropping out of online tutoring, from class "
    "recordings (teacher and student tracks) and platform logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (extract, train, evaluate, predict, demo):
    app.command()(command)
app.add_typer(features_app, name="features")
app.add_typer(asr_app, name="asr")
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(mooc_app, name="mooc")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
