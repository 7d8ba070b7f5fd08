"""Erasing a student everywhere, purging old recordings, and moving workspace rows.

- :func:`erase_student` (``DELETE /v1/students/{id}``): the student's rows in every
  store table (students, sessions, events, orders, outcomes, risk history), the tracks
  uploaded for their sessions, their rows in every workspace table of the organisation
  (``sessions``, ``prosody``, ``utterances``, ``prosody_utterances``, ``in_class``,
  ``pairs``), their part files (per-session results with transcripts), their lines of
  ``failures.jsonl`` and of the service's generated ``sessions.csv``.  The access log
  keeps its entries (the audit trail of who read the student, the erasure included).
- :func:`purge_recordings` (``--retain-days``): the uploaded tracks and part files of
  sessions extracted more than N days ago; their features stay in the tables.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from atrisk.extract.plan import part_path
from atrisk.serve.paths import DataRoot
from atrisk.serve.store import Store
from atrisk.workspace import TABLES, Workspace, atomic_path

#: Folder of the ``sessions.csv`` that extract jobs generate from the store's sessions.
SERVICE_RECORDINGS = "service_recordings"


def org_workspaces(root: DataRoot, org: str, max_depth: int = 3) -> list[Path]:
    """Return the workspaces in an organisation's folder (folders with tables or parts).

    Args:
        root: The data root.
        org: The organisation.
        max_depth: How deep below the organisation's folder to look.
    """
    base = root.org_dir(org)
    found = []
    for folder, dirs, files in os.walk(base):
        rel = Path(folder).relative_to(base)
        depth = len(rel.parts)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (depth == 0 and
                                                                     d == "uploads")]
        if depth >= max_depth:
            dirs[:] = []
        if "run.json" in files or "sessions.parquet" in files or "parts" in dirs:
            found.append(Path(folder))
    return sorted(found)


def _id_mask(df: pd.DataFrame, column: str, ids: set[str]) -> pd.Series:
    """Rows whose ``column`` (an index level or a column) is one of ``ids``."""
    if column in (df.index.names or []):
        values = df.index.get_level_values(column)
    elif column in df.columns:
        values = df[column]
    else:
        return pd.Series(False, index=df.index)
    return pd.Series(pd.Index(values).astype(str).isin(ids), index=df.index)


def _session_mask(df: pd.DataFrame, session_ids: set[str]) -> pd.Series:
    return _id_mask(df, "session_id", session_ids)


def _student_mask(df: pd.DataFrame, student_id: str) -> pd.Series:
    return _id_mask(df, "student_id", {student_id})


def workspace_rows(workspace: Path, session_ids: Iterable[str]) -> dict[str, pd.DataFrame]:
    """Return the rows of ``session_ids`` in each table of a workspace (tables that have any)."""
    ids = {str(s) for s in session_ids}
    ws = Workspace(workspace)
    out = {}
    for name in TABLES:
        if name != "pairs" and ws.has(name):
            df = ws.read(name)
            rows = df[_session_mask(df, ids).to_numpy()]
            if len(rows):
                out[name] = rows
    return out


def append_rows(workspace: Path, rows: dict[str, pd.DataFrame]) -> None:
    """Add rows to a workspace's tables (rows of the same sessions there are replaced).

    Written through the workspace's staging folder, so a failure changes nothing.
    """
    ws = Workspace(workspace)
    with ws.staging() as stage:
        for name, extra in rows.items():
            ids = set(pd.Index(extra.index.get_level_values("session_id")
                               if "session_id" in (extra.index.names or [])
                               else extra["session_id"]).astype(str))
            old = ws.read(name) if ws.has(name) else extra.iloc[:0]
            old = old[~_session_mask(old, ids).to_numpy()]
            stage.write(name, pd.concat([old, extra]))


def remove_from_workspace(workspace: Path, session_ids: Iterable[str],
                          student_id: str | None = None) -> dict[str, int]:
    """Remove the rows of ``session_ids`` (and of ``student_id``) from a workspace.

    Tables, part files, ``failures.jsonl`` and the generated ``sessions.csv``.

    Returns:
        Rows (or files, for ``part_files``) removed, by table or file.
    """
    ids = {str(s) for s in session_ids}
    ws = Workspace(workspace)
    removed: dict[str, int] = {}
    kept: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        if not ws.has(name):
            continue
        df = ws.read(name)
        mask = _session_mask(df, ids)
        if student_id is not None:
            mask |= _student_mask(df, student_id)
        if mask.any():
            removed[name] = int(mask.sum())
            kept[name] = df[~mask.to_numpy()]
    if kept:
        with ws.staging() as stage:
            for name, df in kept.items():
                stage.write(name, df)
    n_parts = 0
    for sid in ids:
        folder = part_path(workspace, sid, "x").parent
        if folder.is_dir():
            n_parts += sum(1 for p in folder.iterdir() if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    if n_parts:
        removed["part_files"] = n_parts
    n = _filter_lines(ws.failures_path, lambda line: json.loads(line).get("key") in ids)
    if n:
        removed["failures.jsonl"] = n
    n = _filter_csv(Path(workspace) / SERVICE_RECORDINGS / "sessions.csv",
                    lambda row: row.get("session_id") in ids or row.get("student_id") == student_id)
    if n:
        removed[f"{SERVICE_RECORDINGS}/sessions.csv"] = n
    return removed


def _filter_lines(path: Path, drop) -> int:
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [line for line in lines if not (line.strip() and drop(line))]
    if len(keep) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(keep), encoding="utf-8")
    return len(lines) - len(keep)


def _filter_csv(path: Path, drop) -> int:
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
        fields = list(rows[0].keys()) if rows else []
    keep = [r for r in rows if not drop(r)]
    if len(keep) != len(rows):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)
    return len(rows) - len(keep)


def _remove_upload(root: DataRoot, org: str, rel: str | None) -> int:
    """Delete an uploaded track (a path under ``uploads/``); 1 when a file went."""
    if not rel or not rel.startswith("uploads/"):
        return 0
    try:
        path = root.resolve(org, rel, "track")
    except Exception:  # noqa: BLE001 - a path we would not touch
        return 0
    if path.is_file() and path.is_relative_to(root.uploads(org).resolve()):
        path.unlink()
        return 1
    return 0


def erase_student(store: Store, root: DataRoot, org: str, student_id: str) -> dict | None:
    """Erase a student of ``org`` everywhere; return what was removed (``None``: unknown).

    Returns:
        ``{"student_id", "store": {table: rows}, "uploaded_files": n, "sessions": [...],
        "workspaces": {relative folder: {table or file: rows}}, "kept": ...}``.
    """
    gone = store.delete_student(student_id, org=org)
    if gone is None:
        return None
    session_ids = [s["session_id"] for s in gone["sessions"]]
    n_files = 0
    for s in gone["sessions"]:
        for track in ("teacher", "student"):
            n_files += _remove_upload(root, org, s[f"{track}_path"])
        folder = root.uploads(org, s["session_id"])
        if folder.is_dir():
            n_files += sum(1 for p in folder.iterdir() if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    workspaces = {}
    for ws in org_workspaces(root, org):
        removed = remove_from_workspace(ws, session_ids, student_id)
        if removed:
            workspaces[root.relative(org, ws) or "."] = removed
    return {
        "student_id": student_id,
        "store": gone["rows"],
        "sessions": session_ids,
        "uploaded_files": n_files,
        "workspaces": workspaces,
        "kept": "access-log entries naming the student (the audit trail, this erasure "
                "included); recordings the operator placed in the data root (not uploads)",
    }


def purge_recordings(store: Store, root: DataRoot, before: datetime) -> dict:
    """Delete uploaded tracks and part files of sessions extracted before ``before``.

    The sessions' features stay in the workspace tables (extract jobs carry them over);
    the sessions are marked purged in the store.

    Returns:
        ``{"sessions": n, "files": n}``.
    """
    n_sessions = n_files = 0
    workspaces: dict[str, list[Path]] = {}
    for s in store.sessions_to_purge(before):
        org, sid = s["org_id"], s["session_id"]
        for track in ("teacher", "student"):
            n_files += _remove_upload(root, org, s[f"{track}_path"])
        folder = root.uploads(org, sid)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        if org not in workspaces:
            workspaces[org] = org_workspaces(root, org)
        for ws in workspaces[org]:
            parts = part_path(ws, sid, "x").parent
            if parts.is_dir():
                n_files += sum(1 for p in parts.iterdir() if p.is_file())
                shutil.rmtree(parts, ignore_errors=True)
        store.mark_purged(sid, org=org)
        n_sessions += 1
    return {"sessions": n_sessions, "files": n_files}
