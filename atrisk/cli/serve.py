"""CLI of the service: ``atrisk serve`` and ``atrisk keys create``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import emit_json, fail, run_or_exit
from atrisk.extras import require
from atrisk.progress import console

keys_app = typer.Typer(help="Manage the service's API keys.", no_args_is_help=True)


class Scope(StrEnum):
    """What a key may do."""

    read = "read"
    write = "write"


def _open_store(db: Path):
    run_or_exit(require, "duckdb", feature="the service's store")
    from atrisk.serve.store import Store, StoreError

    try:
        return Store(db)
    except StoreError as exc:
        fail(str(exc), 2)


@keys_app.command("create")
def keys_create(
    db: Annotated[Path, typer.Option("--db", help="The service's DuckDB file (created when "
                                     "absent; the service must not be running on it).")],
    scope: Annotated[Scope, typer.Option("--scope", help="read = GET endpoints; write = "
                                         "everything (events, sessions, jobs, risk).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print key_id, scope and key as "
                                          "JSON.")] = False,
) -> None:
    """Make an API key; it is printed once (last token of the last line) and stored hashed."""
    store = _open_store(db)
    try:
        new = store.create_key(scope.value)
    finally:
        store.close()
    if as_json:
        emit_json({"key_id": new.key_id, "scope": new.scope, "key": new.key})
        return
    console.print(f"created {new.scope} key {new.key_id} in {db}; it is shown only now:",
                  highlight=False)
    print(f"X-API-Key: {new.key}", flush=True)


def serve(
    model: Annotated[Path, typer.Option("--model", help="Model folder made by `atrisk train` "
                                        "(loaded once; its horizons are the ones served).")],
    db: Annotated[Path, typer.Option("--db", help="DuckDB store (created when absent).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    logs: Annotated[Path | None, typer.Option("--logs", help="Logs folder whose students.csv "
                                              "is loaded into the store at start.")] = None,
    upload_dir: Annotated[Path | None, typer.Option("--upload-dir", help="Where uploaded "
                                                    "tracks go (default: the folder DB.files/ "
                                                    "beside --db).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP service (FastAPI, OpenAPI docs at /docs) over the store."""
    for module in ("fastapi", "uvicorn", "duckdb"):
        run_or_exit(require, module, feature="atrisk serve")
    import uvicorn

    from atrisk.errors import AtriskError
    from atrisk.serve.api import create_app
    from atrisk.training.model import RiskModel

    try:
        risk_model = RiskModel.load(model)
    except AtriskError as exc:
        fail(str(exc), 2)
    store = _open_store(db)
    if logs is not None:
        try:
            n = store.import_students(logs)
        except AtriskError as exc:
            fail(str(exc), 2)
        console.print(f"loaded {n} students from {logs}/students.csv", highlight=False)
    app = create_app(store, model=risk_model, upload_dir=upload_dir)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
    finally:
        store.close()
