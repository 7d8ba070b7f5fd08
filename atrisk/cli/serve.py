"""CLI of the service: ``atrisk serve`` and ``atrisk keys create|list|revoke``."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from atrisk.cli.common import JsonOpt, emit_json, fail, run_or_exit
from atrisk.extras import require
from atrisk.progress import console

keys_app = typer.Typer(help="Manage the service's API keys (also while it runs).",
                       no_args_is_help=True)

DbOpt = Annotated[Path, typer.Option("--db", help="The service's DuckDB file; the keys "
                                     "live beside it in DB.keys.sqlite (changes take "
                                     "effect at once, also while the service runs).")]


class Scope(StrEnum):
    """What a key may do."""

    read = "read"
    write = "write"
    admin = "admin"


def _private() -> None:
    """Make every file this process creates owner-only (0600 files, 0700 folders)."""
    os.umask(0o077)


def _open_store(db: Path):
    run_or_exit(require, "duckdb", feature="the service's store")
    from atrisk.serve.store import Store, StoreError

    try:
        return Store(db)
    except StoreError as exc:
        fail(str(exc), 2)


def _keystore(db: Path):
    from atrisk.errors import AtriskError
    from atrisk.serve.keys import KeyStore, keystore_path

    _private()
    if db.is_file():  # an older store keeps its keys inside: migrate it first
        from atrisk.serve.store import Store, StoreError

        try:
            with Store(db, read_only=True) as st:
                old = st.cursor().execute(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name = 'api_keys'").fetchone()[0]
        except StoreError:
            old = 0
        if old:
            _open_store(db).close()
    try:
        return KeyStore(keystore_path(db))
    except AtriskError as exc:
        fail(str(exc), 2)


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    t = text.strip()
    if t[:-1].isdigit() and t[-1:] in ("d", "h"):
        n = int(t[:-1])
        return datetime.now(UTC) + (timedelta(days=n) if t[-1] == "d" else timedelta(hours=n))
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        fail(f"--expires {text!r}: use a number of days or hours (30d, 12h) or an ISO date "
             "(2025-07-01, 2025-07-01T12:00:00+02:00)")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@keys_app.command("create")
def keys_create(
    db: DbOpt,
    scope: Annotated[Scope, typer.Option("--scope", help="read = GET endpoints; write = also "
                                         "posts data, uploads tracks, runs jobs; admin = "
                                         "also erases students and manages keys (without "
                                         "--org: every organisation's keys and access log, "
                                         "no student data).")],
    org: Annotated[str | None, typer.Option("--org", help="The organisation (school or "
                                            "district) the key belongs to; created when new. "
                                            "Required but for admin keys.")] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="When the key stops "
                                                "working: 30d, 12h or an ISO date/time "
                                                "(UTC when no offset). Default: never.")] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note kept with the key "
                                              "(e.g. who holds it).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an API key; it is printed once (last token of the last line) and stored hashed."""
    from atrisk.errors import AtriskError

    keys = _keystore(db)
    try:
        new = keys.create_key(scope.value, org, _expiry(expires), label)
    except AtriskError as exc:
        fail(str(exc), 2)
    finally:
        keys.close()
    if as_json:
        emit_json({"key_id": new.key_id, "org_id": new.org_id, "scope": new.scope,
                   "expires_at": new.expires_at, "key": new.key})
        return
    where = f"organisation {new.org_id}" if new.org_id else "every organisation"
    until = f", expires {new.expires_at.isoformat()}" if new.expires_at else ""
    console.print(f"created {new.scope} key {new.key_id} of {where}{until}; it is shown only "
                  "now:", highlight=False, soft_wrap=True)
    print(f"X-API-Key: {new.key}", flush=True)


@keys_app.command("list")
def keys_list(
    db: DbOpt,
    org: Annotated[str | None, typer.Option("--org", help="Only this organisation's keys.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """List the keys: id, organisation, scope, state (active, expired, revoked), dates."""
    keys = _keystore(db)
    try:
        rows = keys.list_keys(org)
    finally:
        keys.close()
    if as_json:
        emit_json(rows)
        return
    for k in rows:
        expires = (k["expires_at"] or "never")[:19]
        console.print(f"{k['key_id']}  {k['org_id'] or '*'}  {k['scope']}  {k['state']}  "
                      f"created {k['created_at'][:19]}  expires {expires}"
                      + (f"  {k['label']}" if k["label"] else ""), highlight=False,
                      soft_wrap=True)
    if not rows:
        console.print("no keys", highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    db: DbOpt,
    key_id: Annotated[str, typer.Argument(help="The key's id (from `atrisk keys list`).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key; a running service refuses it within 50 ms, without a restart."""
    keys = _keystore(db)
    try:
        ok = keys.revoke(key_id)
    finally:
        keys.close()
    if not ok:
        fail(f"no active key {key_id!r} in {db} (see `atrisk keys list`)", 2)
    if as_json:
        emit_json({"key_id": key_id, "revoked": True})
        return
    console.print(f"revoked {key_id}", highlight=False)


def serve(
    model: Annotated[Path, typer.Option("--model", help="Model folder made by `atrisk train` "
                                        "(loaded once; its horizons are the ones served and "
                                        "scored). Models load from here only.")],
    db: Annotated[Path, typer.Option("--db", help="DuckDB store (created when absent).")],
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder holding every "
                                                   "file the API reads or writes (uploads, "
                                                   "workspaces, recordings), one folder per "
                                                   "organisation; clients name paths relative "
                                                   "to it. Default: DB.data/ beside --db.")]
    = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    logs: Annotated[Path | None, typer.Option("--logs", help="Logs folder whose students.csv "
                                              "is loaded into the store at start.")] = None,
    logs_org: Annotated[str, typer.Option("--logs-org", help="The organisation --logs "
                                          "belongs to.")] = "default",
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest "
                                               "JSON request body (MB); 413 past it.")] = 10.0,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest "
                                                 "uploaded track (MB); 413 past it.")] = 256.0,
    rate_limit: Annotated[float, typer.Option("--rate-limit", min=0, help="Requests a second "
                                              "per key (bursts of twice that); 429 with "
                                              "Retry-After past it; 0 = no limit.")] = 100.0,
    retain_days: Annotated[int | None, typer.Option("--retain-days", min=0, help="Delete "
                                                    "uploaded recordings (and part files) N "
                                                    "days after their extraction; features "
                                                    "are kept. Default: keep.")] = None,
    predict_at: Annotated[str | None, typer.Option("--predict-at", help="HH:MM (UTC): every "
                                                   "day, run an extract job and a predict job "
                                                   "of that day for each organisation.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP service (FastAPI, OpenAPI docs at /docs) over the store."""
    for module in ("fastapi", "uvicorn", "duckdb"):
        run_or_exit(require, module, feature="atrisk serve")
    import uvicorn

    from atrisk.errors import AtriskError
    from atrisk.serve.api import create_app
    from atrisk.serve.jobs import JobRunner, Scheduler, parse_hhmm
    from atrisk.serve.paths import DataRoot
    from atrisk.training.model import RiskModel

    _private()
    at = None
    if predict_at is not None:
        try:
            at = parse_hhmm(predict_at)
        except ValueError as exc:
            fail(f"--predict-at: {exc}", 2)
    try:
        risk_model = RiskModel.load(model)
    except AtriskError as exc:
        fail(str(exc), 2)
    keys = _keystore(db)
    store = _open_store(db)
    try:
        root = DataRoot(data_root or db.with_suffix(".data"))
        root.root.chmod(0o700)
    except (AtriskError, OSError) as exc:
        fail(f"--data-root: {exc}", 2)
    if logs is not None:
        try:
            n = store.import_students(logs, org=logs_org)
        except AtriskError as exc:
            fail(str(exc), 2)
        console.print(f"loaded {n} students from {logs}/students.csv into {logs_org}",
                      highlight=False)
    runner = JobRunner(store, root, risk_model)
    clock = Scheduler(runner, at, retain_days)
    app = create_app(store, keys, root, model=risk_model, runner=runner,
                     max_body_mb=max_body_mb, max_upload_mb=max_upload_mb,
                     rate_limit=rate_limit, scheduler=clock)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
    finally:
        store.close()
