"""The service's DuckDB store: API keys, students, sessions, events, risk lists, jobs.

One DuckDB file holds everything the service needs.  DuckDB lets one process
open a file for writing; :class:`Store` turns the lock conflict into a
:class:`StoreLockedError` that names the file and, where DuckDB reports it, the
process holding it.  Inside the process, each thread gets its own cursor on the
one connection (DuckDB cursors are safe to use from different threads).

Tables (all times are naive UTC ``TIMESTAMP``):

- ``api_keys(key_id, key_hash, scope, created_at)``: SHA-256 of the key only.
- ``students(student_id, enrolled_at, grade, created_at)``
- ``sessions(session_id, student_id, teacher_id, start_time, teacher_path, student_path,
  created_at)``
- ``events(event_id, student_id, time, kind, teacher_id, session_id, words, value, received_at)``
- ``risk(date, horizon, student_id, probability, rank, flagged, top_reasons, written_at)``,
  key ``(date, horizon, student_id)``; writing a day replaces that day's rows.
- ``jobs(job_id, kind, state, params, result, error, attempts, created_at, updated_at)``,
  ``state`` ∈ queued | running | done | failed.

Reads of a day's risk list are served from memory: the first query of a
``(date, horizon)`` loads the whole ranked list once (rows JSON-encoded once),
later pages are slices of it.  The cache is exact because the process that
holds the store open for writing is the only one that can change it, and
:meth:`Store.write_risk` drops the day's entry when it commits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from atrisk.errors import AtriskError, ConfigError

SCOPES = ("read", "write")
JOB_STATES = ("queued", "running", "done", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, key_hash VARCHAR NOT NULL UNIQUE,
    scope VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS students (
    student_id VARCHAR PRIMARY KEY, enrolled_at TIMESTAMP, grade INTEGER,
    created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id VARCHAR PRIMARY KEY, student_id VARCHAR NOT NULL, teacher_id VARCHAR NOT NULL,
    start_time TIMESTAMP NOT NULL, teacher_path VARCHAR, student_path VARCHAR,
    created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR PRIMARY KEY, student_id VARCHAR NOT NULL, time TIMESTAMP NOT NULL,
    kind VARCHAR NOT NULL, teacher_id VARCHAR, session_id VARCHAR, words INTEGER,
    value DOUBLE, received_at TIMESTAMP NOT NULL);
CREATE INDEX IF NOT EXISTS events_student ON events (student_id);
CREATE TABLE IF NOT EXISTS risk (
    date DATE NOT NULL, horizon INTEGER NOT NULL, student_id VARCHAR NOT NULL,
    probability DOUBLE NOT NULL, rank INTEGER NOT NULL, flagged BOOLEAN NOT NULL,
    top_reasons VARCHAR, written_at TIMESTAMP NOT NULL,
    PRIMARY KEY (date, horizon, student_id));
CREATE INDEX IF NOT EXISTS risk_student ON risk (student_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, state VARCHAR NOT NULL,
    params VARCHAR NOT NULL, result VARCHAR, error VARCHAR, attempts INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
"""

_EVENT_COLS = ("event_id", "student_id", "time", "kind", "teacher_id", "session_id", "words",
               "value")
_RISK_COLS = ("student_id", "probability", "rank", "flagged", "top_reasons")


@dataclass(frozen=True)
class RiskDay:
    """One day's ranked list held in memory (best-ranked first).

    Attributes:
        rows: Per student ``(student_id, probability, rank, flagged, top_reasons)``.
        encoded: The same rows as JSON objects (UTF-8 bytes), encoded once.
        flagged: Indices into ``rows`` of the flagged students, in rank order.
    """

    rows: list[tuple]
    encoded: list[bytes] = field(repr=False)
    flagged: list[int] = field(repr=False)

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> RiskDay:
        """Build from ``(student_id, probability, rank, flagged, top_reasons)`` in rank order."""
        encoded = [json.dumps(dict(zip(_RISK_COLS, r, strict=True))).encode() for r in rows]
        return cls(rows, encoded, [i for i, r in enumerate(rows) if r[3]])

    def page(self, limit: int, offset: int, flagged_only: bool = False) -> tuple[int, list[int]]:
        """Return ``(total, indices into rows)`` of one page."""
        if flagged_only:
            return len(self.flagged), self.flagged[offset:offset + limit]
        n = len(self.rows)
        return n, list(range(min(offset, n), min(offset + limit, n)))


class StoreError(AtriskError):
    """The store file cannot be opened or used."""


class StoreLockedError(StoreError):
    """Another process holds the DuckDB file open for writing."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _utc_naive(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest stored for an API key.

    Keys are 256-bit random tokens, so a plain SHA-256 (no salt, no stretching)
    cannot be brute-forced; it lets a request's key be found by its hash.

    Args:
        key: The key as the client sends it in ``X-API-Key``.

    Returns:
        64 hex characters.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``key`` is shown once and never stored."""

    key_id: str
    key: str
    scope: str


def _lock_message(path: Path, exc: Exception) -> str:
    text = str(exc)
    pid = re.search(r"PID (\d+)", text)
    who = f"process {pid.group(1)}" if pid else "another process"
    holder = re.search(r"held in (\S+)", text)
    if holder:
        who += f" ({holder.group(1)})"
    return (
        f"{path}: the store is locked by {who}; DuckDB allows one writing process. "
        "Stop that process (e.g. the running `atrisk serve`) and retry, or send the "
        "data through the service's API."
    )


class Store:
    """The service's DuckDB store.

    Args:
        path: DuckDB file (created with its tables when absent).
        read_only: Open without writing (several read-only processes may share a file
            that no process has open for writing).

    Raises:
        StoreLockedError: Another process has the file open for writing.
        StoreError: The file is not a DuckDB database or cannot be created.
    """

    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise StoreError(f"{self.path}: no such store file")
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLockedError(_lock_message(self.path, exc)) from None
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from None
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from None
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._risk_cache: OrderedDict[tuple[date, int], RiskDay] = OrderedDict()
        self._risk_lock = threading.Lock()
        self._risk_generation = 0  # bumped on every risk write: a racing load is not cached
        if not read_only:
            self._con.execute(_SCHEMA)
            self._con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                [str(SCHEMA_VERSION)],
            )

    # ------------------------------------------------------------------ plumbing

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor on the store connection."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
        return cur

    @contextmanager
    def transaction(self):
        """Run a block in one transaction (rolled back on error); writes are serialised."""
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        """Checkpoint and close the file."""
        try:
            self._con.close()
        except duckdb.Error:  # already closed
            pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ keys

    def create_key(self, scope: str) -> NewKey:
        """Make an API key with ``scope`` and store its hash.

        Args:
            scope: ``read`` (GET endpoints) or ``write`` (everything).

        Returns:
            The key (shown once; only its hash is kept).

        Raises:
            ConfigError: Unknown scope.
        """
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; choose {' or '.join(SCOPES)}")
        key = secrets.token_urlsafe(32)
        key_id = "k_" + secrets.token_hex(4)
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?)", [key_id, hash_key(key), scope, _now()]
            )
        return NewKey(key_id=key_id, key=key, scope=scope)

    def key_scopes(self) -> dict[str, str]:
        """Return ``{key hash: scope}`` of every key (the service caches it)."""
        return dict(self.cursor().execute("SELECT key_hash, scope FROM api_keys").fetchall())

    def check_key(self, key: str | None) -> str | None:
        """Return the scope of ``key``, or ``None`` when it is not a stored key."""
        if not key:
            return None
        digest = hash_key(key)
        for stored, scope in self.key_scopes().items():
            if hmac.compare_digest(stored, digest):
                return scope
        return None

    # ------------------------------------------------------------------ students

    def upsert_students(self, rows: Iterable[dict]) -> int:
        """Insert or update students (``student_id``, optional ``enrolled_at``, ``grade``).

        Returns:
            Rows written.
        """
        rows = list(rows)
        now = _now()
        with self.transaction() as cur:
            for r in rows:
                cur.execute(
                    "INSERT INTO students VALUES (?, ?, ?, ?) ON CONFLICT (student_id) DO UPDATE "
                    "SET enrolled_at = COALESCE(excluded.enrolled_at, students.enrolled_at), "
                    "grade = COALESCE(excluded.grade, students.grade)",
                    [str(r["student_id"]), _utc_naive(r.get("enrolled_at")), r.get("grade"), now],
                )
        return len(rows)

    def known_students(self, ids: Iterable[str]) -> set[str]:
        """Return the subset of ``ids`` that are in the ``students`` table."""
        ids = sorted({str(i) for i in ids})
        if not ids:
            return set()
        got = self.cursor().execute(
            "SELECT student_id FROM students WHERE list_contains(?, student_id)", [ids]
        ).fetchall()
        return {r[0] for r in got}

    def import_students(self, logs_dir: Path | str) -> int:
        """Load ``students.csv`` of a logs folder into the store (valid rows only).

        Returns:
            Students written.

        Raises:
            LogValidationError: The file is unusable (see docs/data.md).
        """
        from atrisk.ingest.logs import load_logs

        students = load_logs(Path(logs_dir)).students
        rows = []
        for r in students.to_dict("records"):
            grade = r.get("grade")
            rows.append({
                "student_id": str(r["student_id"]),
                "enrolled_at": r.get("enrolled_at"),
                "grade": None if grade is None or pd.isna(grade) else int(grade),
            })
        return self.upsert_students(rows)

    # ------------------------------------------------------------------ sessions

    def upsert_session(self, row: dict) -> None:
        """Insert or replace one session's metadata (columns of ``sessions.csv``)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    row["session_id"], str(row["student_id"]), str(row["teacher_id"]),
                    _utc_naive(row["start_time"]), row.get("teacher_path"),
                    row.get("student_path"), _now(),
                ],
            )

    def set_track_path(self, session_id: str, track: str, path: str) -> bool:
        """Point a session's ``track`` at ``path``; ``False`` when the session is unknown."""
        if track not in ("teacher", "student"):
            raise ConfigError(f"track must be teacher or student, got {track!r}")
        with self.transaction() as cur:
            n = cur.execute(
                f"UPDATE sessions SET {track}_path = ? WHERE session_id = ? RETURNING 1",
                [path, session_id],
            ).fetchall()
        return bool(n)

    def session(self, session_id: str) -> dict | None:
        """Return one session as a dict, or ``None``."""
        cur = self.cursor().execute("SELECT * FROM sessions WHERE session_id = ?", [session_id])
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row,
                                                 strict=True))

    def sessions_frame(self) -> pd.DataFrame:
        """Return the ``sessions`` table in ``sessions.csv`` column order."""
        return self.cursor().execute(
            "SELECT session_id, student_id, teacher_id, start_time, teacher_path, student_path "
            "FROM sessions ORDER BY start_time, session_id"
        ).df()

    # ------------------------------------------------------------------ events

    def add_events(self, events: Sequence[dict]) -> list[str]:
        """Store events, idempotent by ``event_id``.

        Args:
            events: Dicts with the ``events.csv`` columns (``time`` any parsable time).

        Returns:
            Per event: ``"stored"``, ``"duplicate"`` (same id and content already
            stored: nothing written) or ``"conflict"`` (same id, other content:
            nothing written).
        """
        out: list[str] = []
        now = _now()
        with self.transaction() as cur:
            for ev in events:
                values = [
                    str(ev["event_id"]), str(ev["student_id"]), _utc_naive(ev["time"]),
                    str(ev["kind"]), ev.get("teacher_id"), ev.get("session_id"),
                    ev.get("words"), ev.get("value"),
                ]
                old = cur.execute(
                    f"SELECT {', '.join(_EVENT_COLS)} FROM events WHERE event_id = ?",
                    [values[0]],
                ).fetchone()
                if old is not None:
                    same = list(old) == values
                    out.append("duplicate" if same else "conflict")
                    continue
                cur.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [*values, now])
                out.append("stored")
        return out

    # ------------------------------------------------------------------ risk

    def write_risk(self, risk: pd.DataFrame, day: Any, horizon: int) -> int:
        """Replace the risk list of ``(day, horizon)`` with ``risk`` in one transaction.

        Students in the list that the store does not know yet are added.

        Args:
            risk: The list from :func:`atrisk.training.predict.predict_risk`
                (``student_id``, ``probability``, ``rank``, ``flagged``, ``top_reasons``).
            day: The day (anything pandas parses; a UTC day).
            horizon: Δ in days.

        Returns:
            Rows written.

        Raises:
            ConfigError: Missing columns, bad date or horizon.
        """
        missing = [c for c in _RISK_COLS if c not in risk.columns]
        if missing:
            raise ConfigError(f"risk list lacks column(s) {', '.join(missing)}")
        d = _as_day(day)
        if int(horizon) < 1:
            raise ConfigError(f"horizon must be ≥ 1, got {horizon}")
        df = pd.DataFrame({
            "date": pd.Timestamp(d),
            "horizon": int(horizon),
            "student_id": risk["student_id"].astype(str).to_numpy(),
            "probability": risk["probability"].astype(float).to_numpy(),
            "rank": risk["rank"].astype(int).to_numpy(),
            "flagged": risk["flagged"].astype(bool).to_numpy(),
            "top_reasons": risk["top_reasons"].astype(str).to_numpy(),
            "written_at": pd.Timestamp(_now()),
        })
        if df["student_id"].duplicated().any():
            dup = df.loc[df["student_id"].duplicated(), "student_id"].iloc[0]
            raise ConfigError(f"risk list names student {dup!r} twice")
        now = _now()
        with self.transaction() as cur:
            cur.register("_risk_in", df)
            try:
                cur.execute("DELETE FROM risk WHERE date = ? AND horizon = ?", [d, int(horizon)])
                cur.execute(
                    "INSERT INTO risk SELECT CAST(date AS DATE), horizon, student_id, "
                    "probability, rank, flagged, top_reasons, written_at FROM _risk_in"
                )
                cur.execute(
                    "INSERT INTO students SELECT DISTINCT student_id, NULL, NULL, ? "
                    "FROM _risk_in ON CONFLICT DO NOTHING", [now]
                )
            finally:
                cur.unregister("_risk_in")
            with self._risk_lock:  # still under the write lock: no reader caches the old list
                self._risk_generation += 1
                self._risk_cache.pop((d, int(horizon)), None)
        return len(df)

    RISK_CACHE_DAYS = 16
    """How many ``(date, horizon)`` lists :meth:`risk_day` keeps in memory (LRU)."""

    def risk_day(self, day: Any, horizon: int, cached_only: bool = False) -> RiskDay | None:
        """Return a day's whole ranked list, loaded once and then served from memory.

        Args:
            day: The day (anything pandas parses).
            horizon: Δ in days.
            cached_only: Return ``None`` instead of querying when it is not in memory.

        Returns:
            The list (empty when none was written for that day and horizon).

        Raises:
            ConfigError: Not a date.
        """
        key = (_as_day(day), int(horizon))
        with self._risk_lock:
            hit = self._risk_cache.get(key)
            if hit is not None:
                self._risk_cache.move_to_end(key)
                return hit
            if cached_only:
                return None
            generation = self._risk_generation
        rows = self.cursor().execute(
            "SELECT student_id, probability, rank, flagged, top_reasons FROM risk "
            "WHERE date = ? AND horizon = ? ORDER BY rank, student_id", list(key)
        ).fetchall()
        got = RiskDay.from_rows(rows)
        with self._risk_lock:
            if generation == self._risk_generation:
                self._risk_cache[key] = got
                while len(self._risk_cache) > self.RISK_CACHE_DAYS:
                    self._risk_cache.popitem(last=False)
        return got

    def risk_page(self, day: Any, horizon: int, limit: int = 100, offset: int = 0,
                  flagged_only: bool = False) -> tuple[int, list[dict]]:
        """Return ``(total, rows)`` of a day's ranked list, best-ranked first (cached)."""
        risk = self.risk_day(day, horizon)
        total, idx = risk.page(limit, offset, flagged_only)
        return total, [dict(zip(_RISK_COLS, risk.rows[i], strict=True)) for i in idx]

    def student(self, student_id: str) -> dict | None:
        """Return a student's record with risk history and stored events/sessions, or None.

        One query (indexed lookups by ``student_id`` in ``risk`` and ``events``).
        """
        risk_cols = ("date", "horizon", "probability", "rank", "flagged", "top_reasons")
        row = self.cursor().execute(
            "SELECT student_id, enrolled_at, grade, "
            "(SELECT count(*) FROM sessions WHERE student_id = $1), "
            f"(SELECT list(({', '.join(risk_cols)}) ORDER BY date, horizon) FROM risk "
            "WHERE student_id = $1), "
            f"(SELECT list(({', '.join(_EVENT_COLS)}) ORDER BY time, event_id) FROM events "
            "WHERE student_id = $1) "
            "FROM students WHERE student_id = $1", [student_id]
        ).fetchone()
        if row is None:
            return None
        risk = [dict(zip(risk_cols, r, strict=True)) for r in row[4] or []]
        events = [dict(zip(_EVENT_COLS, e, strict=True)) for e in row[5] or []]
        kinds: dict[str, int] = {}
        for e in events:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        return {
            "student_id": row[0],
            "enrolled_at": row[1],
            "grade": row[2],
            "risk": risk,
            "n_sessions": int(row[3]),
            "n_events": len(events),
            "events_by_kind": kinds,
            "events": events,
        }

    # ------------------------------------------------------------------ jobs

    def create_job(self, kind: str, params: dict) -> str:
        """Queue a job; return its id."""
        job_id = "j_" + uuid.uuid4().hex[:12]
        now = _now()
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO jobs VALUES (?, ?, 'queued', ?, NULL, NULL, 0, ?, ?)",
                [job_id, kind, json.dumps(params, default=str), now, now],
            )
        return job_id

    def update_job(self, job_id: str, state: str, result: dict | None = None,
                   error: str | None = None, attempt: bool = False) -> None:
        """Set a job's state (and result or error); ``attempt`` counts one more try."""
        if state not in JOB_STATES:
            raise ConfigError(f"unknown job state {state!r}")
        with self.transaction() as cur:
            cur.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, updated_at = ?, "
                "attempts = attempts + ? WHERE job_id = ?",
                [state, None if result is None else json.dumps(result, default=str), error,
                 _now(), int(attempt), job_id],
            )

    def job(self, job_id: str) -> dict | None:
        """Return one job (``params`` and ``result`` decoded), or ``None``."""
        cur = self.cursor().execute("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([d[0] for d in cur.description], row, strict=True))
        out["params"] = json.loads(out["params"])
        out["result"] = None if out["result"] is None else json.loads(out["result"])
        return out

    def jobs_in(self, *states: str) -> list[dict]:
        """Return the jobs in any of ``states``, oldest first."""
        ids = self.cursor().execute(
            "SELECT job_id FROM jobs WHERE list_contains(?, state) ORDER BY created_at, job_id",
            [list(states)],
        ).fetchall()
        return [self.job(i[0]) for i in ids]


def _as_day(day: Any) -> date:
    try:
        ts = pd.Timestamp(day)
    except (ValueError, TypeError):
        raise ConfigError(f"{day!r} is not a date (use YYYY-MM-DD)") from None
    if pd.isna(ts):
        raise ConfigError(f"{day!r} is not a date (use YYYY-MM-DD)")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.date()


def write_risk(db: Path | str | Store, risk_df: pd.DataFrame, date: Any, horizon: int) -> int:
    """Write a day's risk list into the store file ``db``, replacing that day's rows.

    This is what ``atrisk predict --db FILE.duckdb`` calls after scoring a day.
    Re-running a day replaces its rows (one transaction); it never duplicates them.

    Args:
        db: DuckDB file (created when absent) or an open :class:`Store`.
        risk_df: The ranked list (``student_id, probability, rank, flagged, top_reasons``).
        date: The scored day.
        horizon: Δ in days.

    Returns:
        Rows written.

    Raises:
        StoreLockedError: The service (or another process) has the file open; the
            message names it.
        ConfigError: Bad list, date or horizon.
    """
    if isinstance(db, Store):
        return db.write_risk(risk_df, date, horizon)
    with Store(db) as store:
        return store.write_risk(risk_df, date, horizon)
