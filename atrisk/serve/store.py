"""The service's DuckDB store: students, sessions, events, risk lists, jobs, access log.

One DuckDB file holds the service's data; API keys live beside it in a SQLite file
(:mod:`atrisk.serve.keys`) so that they can change while the service runs.  DuckDB lets
one process open a file for writing; :class:`Store` turns the lock conflict into a
:class:`StoreLockedError` that names the file and, where DuckDB reports it, the process
holding it.  Inside the process, each thread gets its own cursor on the one connection
(DuckDB cursors are safe to use from different threads).

Every row belongs to an organisation (``org_id``, a school or district): every method
that reads or writes student data takes ``org`` and touches that organisation's rows
only, and ids are unique per organisation.  Tables (all times naive UTC ``TIMESTAMP``):

- ``students(org_id, student_id, enrolled_at, grade, created_at)``
- ``orders(org_id, order_id, student_id, ordered_at, n_courses, discount_ratio,
  n_sales_conversations, received_at)``
- ``outcomes(org_id, student_id, status, status_time, received_at)``
- ``sessions(org_id, session_id, student_id, teacher_id, start_time, teacher_path,
  student_path, created_at, extracted_at, purged_at)``: track paths relative to the
  organisation's folder of the data root.
- ``events(org_id, event_id, student_id, time, kind, teacher_id, session_id, words, value,
  received_at)``
- ``risk(org_id, date, horizon, student_id, probability, rank, flagged, top_reasons,
  written_at)``, key ``(org_id, date, horizon, student_id)``; writing a day replaces it.
- ``jobs(job_id, org_id, kind, state, params, result, error, attempts, created_at,
  updated_at)``, ``state`` ∈ queued | running | done | failed.
- ``access_log(time, key_id, org_id, method, endpoint, status, student_ids)``: who
  (key id, never the key) called what and which students' data it touched
  (comma-joined ids).

Reads of a day's risk list are served from memory: the first query of an
``(org, date, horizon)`` loads the whole ranked list once (rows JSON-encoded once),
later pages are slices of it.  The cache is exact because the process that holds the
store open for writing is the only one that can change it, and every write of risk rows
drops the entries it changes.

A store made by atrisk 0.1 (schema 1: no organisations, keys inside) is migrated when it
is opened for writing: its rows go to the organisation ``default`` and its keys to the
key file.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from atrisk.errors import AtriskError, ConfigError
from atrisk.serve.keys import KeyStore, keystore_path

JOB_STATES = ("queued", "running", "done", "failed")
SCHEMA_VERSION = 2
#: The organisation that rows of a schema-1 store (and ``atrisk predict --db``) belong to.
DEFAULT_ORG = "default"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS students (
    org_id VARCHAR NOT NULL, student_id VARCHAR NOT NULL, enrolled_at TIMESTAMP,
    grade INTEGER, created_at TIMESTAMP NOT NULL, PRIMARY KEY (org_id, student_id));
CREATE TABLE IF NOT EXISTS orders (
    org_id VARCHAR NOT NULL, order_id VARCHAR NOT NULL, student_id VARCHAR NOT NULL,
    ordered_at TIMESTAMP NOT NULL, n_courses INTEGER NOT NULL, discount_ratio DOUBLE NOT NULL,
    n_sales_conversations INTEGER NOT NULL, received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, order_id));
CREATE TABLE IF NOT EXISTS outcomes (
    org_id VARCHAR NOT NULL, student_id VARCHAR NOT NULL, status VARCHAR NOT NULL,
    status_time TIMESTAMP NOT NULL, received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, student_id));
CREATE TABLE IF NOT EXISTS sessions (
    org_id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, student_id VARCHAR NOT NULL,
    teacher_id VARCHAR NOT NULL, start_time TIMESTAMP NOT NULL, teacher_path VARCHAR,
    student_path VARCHAR, created_at TIMESTAMP NOT NULL, extracted_at TIMESTAMP,
    purged_at TIMESTAMP, PRIMARY KEY (org_id, session_id));
CREATE TABLE IF NOT EXISTS events (
    org_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, student_id VARCHAR NOT NULL,
    time TIMESTAMP NOT NULL, kind VARCHAR NOT NULL, teacher_id VARCHAR, session_id VARCHAR,
    words INTEGER, value DOUBLE, received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, event_id));
CREATE INDEX IF NOT EXISTS events_student ON events (org_id, student_id);
CREATE TABLE IF NOT EXISTS risk (
    org_id VARCHAR NOT NULL, date DATE NOT NULL, horizon INTEGER NOT NULL,
    student_id VARCHAR NOT NULL, probability DOUBLE NOT NULL, rank INTEGER NOT NULL,
    flagged BOOLEAN NOT NULL, top_reasons VARCHAR, written_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, date, horizon, student_id));
CREATE INDEX IF NOT EXISTS risk_student ON risk (org_id, student_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY, org_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    state VARCHAR NOT NULL, params VARCHAR NOT NULL, result VARCHAR, error VARCHAR,
    attempts INTEGER NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS access_log (
    time TIMESTAMP NOT NULL, key_id VARCHAR NOT NULL, org_id VARCHAR, method VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL, status INTEGER NOT NULL, student_ids VARCHAR NOT NULL);
"""

_EVENT_COLS = ("event_id", "student_id", "time", "kind", "teacher_id", "session_id", "words",
               "value")
_RISK_COLS = ("student_id", "probability", "rank", "flagged", "top_reasons")
_ORDER_COLS = ("order_id", "student_id", "ordered_at", "n_courses", "discount_ratio",
               "n_sales_conversations")
_ACCESS_COLS = ("time", "key_id", "org_id", "method", "endpoint", "status", "student_ids")
#: Tables holding a student's rows (``student_id`` column), erased by :meth:`Store.delete_student`.
STUDENT_TABLES = ("events", "orders", "outcomes", "sessions", "risk", "students")


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


class StoreError(AtriskError):
    """The store file cannot be opened or used."""


class StoreLockedError(StoreError):
    """Another process holds the DuckDB file open for writing."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)



@contextmanager
def _registered(cur, name: str, frame) -> Iterator[Any]:
    """Make ``frame`` (pandas or Arrow) queryable as ``name`` on ``cur`` for the block."""
    cur.register(name, frame)
    try:
        yield cur
    finally:
        cur.unregister(name)


def _refuse_duplicates(df: pd.DataFrame, column: str, message: str) -> None:
    """Raise ConfigError ``message.format(first duplicate)`` when ``column`` repeats."""
    dup = df.loc[df[column].duplicated(), column]
    if len(dup):
        raise ConfigError(message.format(repr(dup.iloc[0])))

def _utc_naive(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def _ids_list(ids: Iterable[Any]) -> list[str]:
    return sorted({str(i) for i in ids})


class Store:
    """The service's DuckDB store.

    Args:
        path: DuckDB file (created ``0600`` with its tables when absent).
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
        self._write_lock = threading.RLock()
        self._risk_cache: OrderedDict[tuple[str, date, int], RiskDay] = OrderedDict()
        self._risk_lock = threading.Lock()
        self._risk_generation = 0  # bumped on every risk write: a racing load is not cached
        # The service's queries are point lookups and small writes: one thread per query
        # spends less CPU than DuckDB's scheduling of a task over several threads.
        self._con.execute("SET threads = 1")
        if not read_only:
            self.path.chmod(0o600)
            version = self._schema_version()
            if version == 1:
                self._migrate_v1()
            self._con.execute(_SCHEMA)
            self._con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

    # ------------------------------------------------------------------ plumbing

    def _schema_version(self) -> int | None:
        try:
            row = self._con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except duckdb.CatalogException:
            return None
        return None if row is None else int(row[0])

    def _migrate_v1(self) -> None:
        """Migrate schema 1 to 2: rows to the organisation ``default``, keys to the key file."""
        con = self._con
        keys = con.execute("SELECT key_id, key_hash, scope FROM api_keys").fetchall()
        KeyStore(keystore_path(self.path)).import_hashed(keys, DEFAULT_ORG)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DROP INDEX IF EXISTS events_student")
            con.execute("DROP INDEX IF EXISTS risk_student")
            for table in ("students", "sessions", "events", "risk", "jobs"):
                con.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
            con.execute(_SCHEMA)
            d = f"'{DEFAULT_ORG}'"
            con.execute(f"INSERT INTO students SELECT {d}, * FROM students_v1")
            con.execute(f"INSERT INTO sessions SELECT {d}, *, NULL, NULL FROM sessions_v1")
            con.execute(f"INSERT INTO events SELECT {d}, * FROM events_v1")
            con.execute(f"INSERT INTO risk SELECT {d}, * FROM risk_v1")
            con.execute(f"INSERT INTO jobs SELECT job_id, {d}, kind, state, params, result, "
                        "error, attempts, created_at, updated_at FROM jobs_v1")
            for table in ("students", "sessions", "events", "risk", "jobs", "api_keys"):
                con.execute(f"DROP TABLE {table}_v1" if table != "api_keys"
                            else "DROP TABLE api_keys")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '2')")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

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

    def get_meta(self, key: str) -> str | None:
        """Return a value of the ``meta`` table (``None`` when unset)."""
        row = self.cursor().execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    # ------------------------------------------------------------------ students

    def upsert_students(self, rows: Iterable[dict], *, org: str) -> int:
        """Insert or update students (``student_id``, optional ``enrolled_at``, ``grade``).

        One bulk statement; a value left out keeps the stored one.

        Args:
            rows: The students (ids unique within the batch).
            org: Their organisation.

        Returns:
            Rows written.

        Raises:
            ConfigError: A student id twice in ``rows``.
        """
        rows = list(rows)
        if not rows:
            return 0
        df = pd.DataFrame({
            "org_id": org,
            "student_id": [str(r["student_id"]) for r in rows],
            "enrolled_at": pd.Series([_utc_naive(r.get("enrolled_at")) for r in rows],
                                     dtype="datetime64[us]"),
            "grade": pd.array([r.get("grade") for r in rows], dtype="Int32"),
            "created_at": pd.Timestamp(_now()),
        })
        _refuse_duplicates(df, "student_id", "student {} is twice in the batch")
        with self.transaction() as cur, _registered(cur, "_students_in", df):
            cur.execute(
                "INSERT INTO students SELECT * FROM _students_in "
                "ON CONFLICT (org_id, student_id) DO UPDATE "
                "SET enrolled_at = COALESCE(excluded.enrolled_at, students.enrolled_at), "
                "grade = COALESCE(excluded.grade, students.grade)")
        return len(df)

    def known_students(self, ids: Iterable[str], *, org: str) -> set[str]:
        """Return the subset of ``ids`` that are students of ``org``."""
        ids = _ids_list(ids)
        if not ids:
            return set()
        got = self.cursor().execute(
            "SELECT student_id FROM students WHERE org_id = ? AND student_id IN "
            "(SELECT unnest(?::VARCHAR[]))", [org, ids]).fetchall()
        return {r[0] for r in got}

    def student_ids(self, *, org: str) -> set[str]:
        """Return every student id of ``org``."""
        return {r[0] for r in self.cursor().execute(
            "SELECT student_id FROM students WHERE org_id = ?", [org]).fetchall()}

    def import_students(self, logs_dir: Path | str, *, org: str) -> int:
        """Load ``students.csv`` of a logs folder into ``org`` (valid rows only).

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
        return self.upsert_students(rows, org=org)

    def org_ids(self) -> list[str]:
        """Return the organisations that have students, sorted."""
        return [r[0] for r in self.cursor().execute(
            "SELECT DISTINCT org_id FROM students ORDER BY org_id").fetchall()]

    # ------------------------------------------------------------------ orders, outcomes

    def upsert_orders(self, rows: Sequence[dict], *, org: str) -> int:
        """Insert or replace orders (the ``orders.csv`` columns), by ``order_id``.

        Raises:
            ConfigError: An order id twice in ``rows``.
        """
        if not rows:
            return 0
        df = pd.DataFrame([{c: r[c] for c in _ORDER_COLS} for r in rows])
        _refuse_duplicates(df, "order_id", "order {} is twice in the batch")
        df["ordered_at"] = pd.Series([_utc_naive(t) for t in df["ordered_at"]],
                                     dtype="datetime64[us]")
        df.insert(0, "org_id", org)
        df["received_at"] = pd.Timestamp(_now())
        with self.transaction() as cur, _registered(cur, "_orders_in", df):
            cur.execute("INSERT OR REPLACE INTO orders SELECT org_id, order_id, student_id, "
                        "ordered_at, n_courses, discount_ratio, n_sales_conversations, "
                        "received_at FROM _orders_in")
        return len(df)

    def upsert_outcomes(self, rows: Sequence[dict], *, org: str) -> int:
        """Insert or replace students' outcomes (``student_id, status, status_time``).

        Raises:
            ConfigError: A student twice in ``rows``.
        """
        if not rows:
            return 0
        df = pd.DataFrame({
            "org_id": org,
            "student_id": [str(r["student_id"]) for r in rows],
            "status": [str(r["status"]) for r in rows],
            "status_time": pd.Series([_utc_naive(r["status_time"]) for r in rows],
                                     dtype="datetime64[us]"),
            "received_at": pd.Timestamp(_now()),
        })
        _refuse_duplicates(df, "student_id", "student {} has two outcomes in the batch")
        with self.transaction() as cur, _registered(cur, "_outcomes_in", df):
            cur.execute("INSERT OR REPLACE INTO outcomes SELECT * FROM _outcomes_in")
        return len(df)

    # ------------------------------------------------------------------ sessions

    def upsert_session(self, row: dict, *, org: str) -> None:
        """Insert or replace one session's metadata (columns of ``sessions.csv``).

        Track paths are relative to the organisation's folder of the data root.
        """
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                [
                    org, row["session_id"], str(row["student_id"]), str(row["teacher_id"]),
                    _utc_naive(row["start_time"]), row.get("teacher_path"),
                    row.get("student_path"), _now(),
                ],
            )

    def set_track_path(self, session_id: str, track: str, path: str | None, *,
                       org: str) -> bool:
        """Point a session's ``track`` at ``path``; ``False`` when the session is unknown."""
        if track not in ("teacher", "student"):
            raise ConfigError(f"track must be teacher or student, got {track!r}")
        with self.transaction() as cur:
            n = cur.execute(
                f"UPDATE sessions SET {track}_path = ?, purged_at = NULL "
                "WHERE org_id = ? AND session_id = ? RETURNING 1",
                [path, org, session_id],
            ).fetchall()
        return bool(n)

    def session(self, session_id: str, *, org: str) -> dict | None:
        """Return one session of ``org`` as a dict, or ``None``."""
        cur = self.cursor().execute(
            "SELECT session_id, student_id, teacher_id, start_time, teacher_path, student_path, "
            "created_at, extracted_at, purged_at FROM sessions WHERE org_id = ? AND "
            "session_id = ?", [org, session_id])
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row,
                                                 strict=True))

    def sessions_frame(self, *, org: str, purged: bool | None = False) -> pd.DataFrame:
        """Return ``org``'s sessions in ``sessions.csv`` column order (by start time).

        Args:
            org: The organisation.
            purged: ``False``: sessions whose recordings are kept; ``True``: those whose
                recordings were purged; ``None``: all.
        """
        where = {False: "AND purged_at IS NULL", True: "AND purged_at IS NOT NULL",
                 None: ""}[purged]
        return self.cursor().execute(
            "SELECT session_id, student_id, teacher_id, start_time, teacher_path, student_path "
            f"FROM sessions WHERE org_id = ? {where} ORDER BY start_time, session_id", [org]
        ).df()

    def mark_extracted(self, session_ids: Iterable[str], *, org: str,
                       when: datetime | None = None) -> None:
        """Record that the sessions' recordings were extracted (first time only)."""
        ids = _ids_list(session_ids)
        if not ids:
            return
        with self.transaction() as cur:
            cur.execute("UPDATE sessions SET extracted_at = ? WHERE org_id = ? AND "
                        "extracted_at IS NULL AND session_id IN (SELECT unnest(?::VARCHAR[]))",
                        [_utc_naive(when) or _now(), org, ids])

    def sessions_to_purge(self, before: datetime) -> list[dict]:
        """Return sessions extracted before ``before`` whose recordings are still kept."""
        cur = self.cursor().execute(
            "SELECT org_id, session_id, teacher_path, student_path FROM sessions "
            "WHERE extracted_at < ? AND purged_at IS NULL ORDER BY org_id, session_id",
            [_utc_naive(before)])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def mark_purged(self, session_id: str, *, org: str) -> None:
        """Record that a session's recordings were deleted (its tracks' paths cleared)."""
        with self.transaction() as cur:
            cur.execute("UPDATE sessions SET purged_at = ?, teacher_path = NULL, "
                        "student_path = NULL WHERE org_id = ? AND session_id = ?",
                        [_now(), org, session_id])

    # ------------------------------------------------------------------ events

    def add_events(self, events: Sequence[dict], *, org: str) -> list[str]:
        """Store events, idempotent by ``event_id`` (one lookup and one insert per batch).

        Args:
            events: Dicts with the ``events.csv`` columns (``time`` any parsable time).
            org: Their organisation.

        Returns:
            Per event: ``"stored"``, ``"duplicate"`` (same id and content already
            stored, or earlier in the batch: nothing written) or ``"conflict"`` (same id,
            other content: nothing written).
        """
        rows = [
            (str(ev["event_id"]), str(ev["student_id"]), _utc_naive(ev["time"]),
             str(ev["kind"]), ev.get("teacher_id"), ev.get("session_id"),
             None if ev.get("words") is None else int(ev["words"]),
             None if ev.get("value") is None else float(ev["value"]))
            for ev in events
        ]
        if not rows:
            return []
        out: list[str] = []
        with self.transaction() as cur:
            old = {r[0]: tuple(r) for r in cur.execute(
                f"SELECT {', '.join(_EVENT_COLS)} FROM events WHERE org_id = ? AND event_id IN "
                "(SELECT unnest(?::VARCHAR[]))", [org, _ids_list(r[0] for r in rows)]
            ).fetchall()}
            new: list[tuple] = []
            for row in rows:
                seen = old.get(row[0])
                if seen is not None:
                    out.append("duplicate" if seen == row else "conflict")
                    continue
                old[row[0]] = row
                new.append(row)
                out.append("stored")
            if new:
                df = pd.DataFrame(new, columns=list(_EVENT_COLS))
                df["time"] = df["time"].astype("datetime64[us]")
                df["words"] = df["words"].astype("Int32")
                df["value"] = df["value"].astype("float64")
                df.insert(0, "org_id", org)
                df["received_at"] = pd.Timestamp(_now())
                with _registered(cur, "_events_in", df):
                    cur.execute("INSERT INTO events SELECT * FROM _events_in")
        return out

    # ------------------------------------------------------------------ logs

    def logs_frames(self, *, org: str) -> dict[str, pd.DataFrame]:
        """Return ``org``'s students, orders, events and outcomes as log tables.

        The frames have the columns of the log files (docs/data.md), for
        :meth:`atrisk.ingest.logs.Logs.from_frames`.
        """
        cur = self.cursor()
        return {
            "students": cur.execute("SELECT student_id, enrolled_at, grade FROM students "
                                    "WHERE org_id = ? ORDER BY student_id", [org]).df(),
            "orders": cur.execute(f"SELECT {', '.join(_ORDER_COLS)} FROM orders "
                                  "WHERE org_id = ? ORDER BY order_id", [org]).df(),
            "events": cur.execute(f"SELECT {', '.join(_EVENT_COLS)} FROM events "
                                  "WHERE org_id = ? ORDER BY time, event_id", [org]).df(),
            "outcomes": cur.execute("SELECT student_id, status, status_time FROM outcomes "
                                    "WHERE org_id = ? ORDER BY student_id", [org]).df(),
        }

    # ------------------------------------------------------------------ risk

    def write_risk(self, risk: pd.DataFrame, day: Any, horizon: int, *, org: str,
                   create_students: bool = True) -> int:
        """Replace the risk list of ``(org, day, horizon)`` with ``risk`` in one transaction.

        Args:
            risk: The list from :func:`atrisk.training.predict.predict_risk`
                (``student_id``, ``probability``, ``rank``, ``flagged``, ``top_reasons``).
            day: The day (anything pandas parses; a UTC day).
            horizon: Δ in days.
            org: The organisation.
            create_students: Add the students of the list that ``org`` does not know
                (``atrisk predict --db``); otherwise an unknown student is an error.

        Returns:
            Rows written.

        Raises:
            ConfigError: Missing columns, bad date or horizon, a student twice, or an
                unknown student (``create_students=False``).
        """
        missing = [c for c in _RISK_COLS if c not in risk.columns]
        if missing:
            raise ConfigError(f"risk list lacks column(s) {', '.join(missing)}")
        d = _as_day(day)
        if int(horizon) < 1:
            raise ConfigError(f"horizon must be ≥ 1, got {horizon}")
        df = pd.DataFrame({
            "org_id": org,
            "date": pd.Timestamp(d),
            "horizon": int(horizon),
            "student_id": risk["student_id"].astype(str).to_numpy(),
            "probability": risk["probability"].astype(float).to_numpy(),
            "rank": risk["rank"].astype(int).to_numpy(),
            "flagged": risk["flagged"].astype(bool).to_numpy(),
            "top_reasons": risk["top_reasons"].astype(str).to_numpy(),
            "written_at": pd.Timestamp(_now()),
        })
        _refuse_duplicates(df, "student_id", "risk list names student {} twice")
        now = _now()
        with self.transaction() as cur:
            if not create_students:
                known = self.known_students(df["student_id"], org=org)
                unknown = [s for s in df["student_id"] if s not in known]
                if unknown:
                    raise ConfigError(f"unknown student {unknown[0]!r}")
            with _registered(cur, "_risk_in", df):
                cur.execute("DELETE FROM risk WHERE org_id = ? AND date = ? AND horizon = ?",
                            [org, d, int(horizon)])
                cur.execute(
                    "INSERT INTO risk SELECT org_id, CAST(date AS DATE), horizon, student_id, "
                    "probability, rank, flagged, top_reasons, written_at FROM _risk_in"
                )
                if create_students:
                    cur.execute(
                        "INSERT INTO students SELECT DISTINCT org_id, student_id, NULL, NULL, ? "
                        "FROM _risk_in ON CONFLICT DO NOTHING", [now]
                    )
            self._forget_risk(org, (d, int(horizon)))  # still under the write lock
        return len(df)

    def _forget_risk(self, org: str, day: tuple[date, int] | None = None) -> None:
        """Drop cached lists of ``org`` (one day, or all); later loads are not cached early."""
        with self._risk_lock:
            self._risk_generation += 1
            if day is not None:
                self._risk_cache.pop((org, *day), None)
            else:
                for k in [k for k in self._risk_cache if k[0] == org]:
                    del self._risk_cache[k]

    RISK_CACHE_DAYS = 16
    """How many ``(org, date, horizon)`` lists :meth:`risk_day` keeps in memory (LRU)."""

    def risk_day(self, day: Any, horizon: int, *, org: str,
                 cached_only: bool = False) -> RiskDay | None:
        """Return a day's whole ranked list, loaded once and then served from memory.

        Args:
            day: The day (anything pandas parses).
            horizon: Δ in days.
            org: The organisation.
            cached_only: Return ``None`` instead of querying when it is not in memory.

        Returns:
            The list (empty when none was written for that day and horizon).

        Raises:
            ConfigError: Not a date.
        """
        key = (org, _as_day(day), int(horizon))
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
            "WHERE org_id = ? AND date = ? AND horizon = ? ORDER BY rank, student_id", list(key)
        ).fetchall()
        got = RiskDay.from_rows(rows)
        with self._risk_lock:
            if generation == self._risk_generation:
                self._risk_cache[key] = got
                while len(self._risk_cache) > self.RISK_CACHE_DAYS:
                    self._risk_cache.popitem(last=False)
        return got

    def risk_page(self, day: Any, horizon: int, limit: int = 100, offset: int = 0,
                  flagged_only: bool = False, *, org: str) -> tuple[int, list[dict]]:
        """Return ``(total, rows)`` of a day's ranked list, best-ranked first (cached)."""
        risk = self.risk_day(day, horizon, org=org)
        total, idx = risk.page(limit, offset, flagged_only)
        return total, [dict(zip(_RISK_COLS, risk.rows[i], strict=True)) for i in idx]

    def student(self, student_id: str, *, org: str, events_limit: int = 100,
                events_offset: int = 0) -> dict | None:
        """Return a student's record: risk history, a page of events, counts; or ``None``.

        One query (lookups by ``(org_id, student_id)``).

        Args:
            student_id: The student.
            org: The organisation.
            events_limit: Events in the page (by time).
            events_offset: Events skipped before the page.
        """
        risk_cols = ("date", "horizon", "probability", "rank", "flagged", "top_reasons")
        # Four point lookups in one statement; the events are sorted, counted and paged
        # here (DuckDB's sorted list + slice per request cost more than the lookups).
        row = self.cursor().execute(
            "SELECT student_id, enrolled_at, grade, "
            "(SELECT count(*) FROM sessions WHERE org_id = $1 AND student_id = $2), "
            f"(SELECT list(({', '.join(risk_cols)})) FROM risk "
            "WHERE org_id = $1 AND student_id = $2), "
            f"(SELECT list(({', '.join(_EVENT_COLS)})) FROM events "
            "WHERE org_id = $1 AND student_id = $2) "
            "FROM students WHERE org_id = $1 AND student_id = $2", [org, student_id]
        ).fetchone()
        if row is None:
            return None
        risk = sorted((dict(zip(risk_cols, r, strict=True)) for r in row[4] or []),
                      key=lambda r: (r["date"], r["horizon"]))
        all_events = sorted(row[5] or [], key=lambda e: (e[2], e[0]))  # time, event_id
        kinds: dict[str, int] = {}
        for e in all_events:
            kinds[e[3]] = kinds.get(e[3], 0) + 1
        page = all_events[int(events_offset):int(events_offset) + int(events_limit)]
        events = [dict(zip(_EVENT_COLS, e, strict=True)) for e in page]
        return {
            "student_id": row[0],
            "enrolled_at": row[1],
            "grade": row[2],
            "risk": risk,
            "n_sessions": int(row[3]),
            "n_events": len(all_events),
            "events_by_kind": kinds,
            "events_offset": int(events_offset),
            "events_limit": int(events_limit),
            "events": events,
        }

    def delete_student(self, student_id: str, *, org: str) -> dict | None:
        """Erase a student of ``org`` from every table, in one transaction.

        Returns:
            ``{"rows": {table: rows removed}, "sessions": [{session_id, teacher_path,
            student_path}, ...]}`` (the sessions removed, for their files), or ``None``
            when ``org`` has no such student.
        """
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM students WHERE org_id = ? AND student_id = ?",
                           [org, student_id]).fetchone() is None:
                return None
            sess = cur.execute(
                "SELECT session_id, teacher_path, student_path FROM sessions "
                "WHERE org_id = ? AND student_id = ? ORDER BY session_id",
                [org, student_id]).fetchall()
            counts = {}
            for table in STUDENT_TABLES:
                counts[table] = len(cur.execute(
                    f"DELETE FROM {table} WHERE org_id = ? AND student_id = ? RETURNING 1",
                    [org, student_id]).fetchall())
            self._forget_risk(org)
        return {"rows": counts,
                "sessions": [dict(zip(("session_id", "teacher_path", "student_path"), s,
                                      strict=True)) for s in sess]}

    # ------------------------------------------------------------------ jobs

    def create_job(self, kind: str, params: dict, *, org: str) -> str:
        """Queue a job of ``org``; return its id."""
        job_id = "j_" + uuid.uuid4().hex[:12]
        now = _now()
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, 'queued', ?, NULL, NULL, 0, ?, ?)",
                [job_id, org, kind, json.dumps(params, default=str), now, now],
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

    def job(self, job_id: str, *, org: str | None = None) -> dict | None:
        """Return one job (``params`` and ``result`` decoded), or ``None``.

        Args:
            job_id: The job.
            org: When given, a job of another organisation is ``None``.
        """
        cur = self.cursor().execute("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([d[0] for d in cur.description], row, strict=True))
        if org is not None and out["org_id"] != org:
            return None
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

    # ------------------------------------------------------------------ access log

    def append_access(self, rows: Sequence[tuple]) -> int:
        """Append access-log rows in one insert; return how many.

        Args:
            rows: ``(time, key_id, org_id, method, endpoint, status, student_ids)`` with
                ``student_ids`` comma-joined.
        """
        if not rows:
            return 0
        import pyarrow as pa

        cols = list(zip(*rows, strict=True))
        table = pa.table({
            "time": pa.array(cols[0], pa.timestamp("us")),
            "key_id": pa.array(cols[1], pa.string()),
            "org_id": pa.array(cols[2], pa.string()),
            "method": pa.array(cols[3], pa.string()),
            "endpoint": pa.array(cols[4], pa.string()),
            "status": pa.array(cols[5], pa.int32()),
            "student_ids": pa.array(cols[6], pa.string()),
        })
        with self.transaction() as cur, _registered(cur, "_access_in", table):
            cur.execute("INSERT INTO access_log SELECT * FROM _access_in")
        return len(rows)

    def access_log(self, *, org: str | None = None, student_id: str | None = None,
                   key_id: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, limit: int = 100,
                   offset: int = 0) -> tuple[int, list[dict]]:
        """Return ``(total, rows)`` of the access log, newest first, filtered.

        Args:
            org: Only this organisation's entries (``None``: all).
            student_id: Only requests that touched this student.
            key_id: Only this key's requests.
            since: From this time (UTC).
            until: Before this time (UTC).
            limit: Page size.
            offset: Rows skipped.

        Returns:
            The number of matching rows and one page (``student_ids`` as a list).
        """
        where, args = ["TRUE"], []
        if org is not None:
            where.append("org_id = ?")
            args.append(org)
        if student_id is not None:
            where.append("list_contains(string_split(student_ids, ','), ?)")
            args.append(student_id)
        if key_id is not None:
            where.append("key_id = ?")
            args.append(key_id)
        if since is not None:
            where.append("time >= ?")
            args.append(_utc_naive(since))
        if until is not None:
            where.append("time < ?")
            args.append(_utc_naive(until))
        cond = " AND ".join(where)
        cur = self.cursor()
        total = cur.execute(f"SELECT count(*) FROM access_log WHERE {cond}", args).fetchone()[0]
        rows = cur.execute(
            f"SELECT {', '.join(_ACCESS_COLS)} FROM access_log WHERE {cond} "
            "ORDER BY time DESC LIMIT ? OFFSET ?", [*args, int(limit), int(offset)]).fetchall()
        out = []
        for r in rows:
            d = dict(zip(_ACCESS_COLS, r, strict=True))
            d["student_ids"] = d["student_ids"].split(",") if d["student_ids"] else []
            out.append(d)
        return int(total), out


def _as_day(day: Any) -> date:
    if type(day) is date:  # the API's parsed query: nothing to convert
        return day
    try:
        ts = pd.Timestamp(day)
    except (ValueError, TypeError):
        raise ConfigError(f"{day!r} is not a date (use YYYY-MM-DD)") from None
    if pd.isna(ts):
        raise ConfigError(f"{day!r} is not a date (use YYYY-MM-DD)")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.date()


def write_risk(db: Path | str | Store, risk_df: pd.DataFrame, date: Any, horizon: int,
               org: str = DEFAULT_ORG) -> int:
    """Write a day's risk list into the store file ``db``, replacing that day's rows.

    This is what ``atrisk predict --db FILE.duckdb`` calls after scoring a day.
    Re-running a day replaces its rows (one transaction); it never duplicates them.

    Args:
        db: DuckDB file (created when absent) or an open :class:`Store`.
        risk_df: The ranked list (``student_id, probability, rank, flagged, top_reasons``).
        date: The scored day.
        horizon: Δ in days.
        org: The organisation the list belongs to (its unknown students are added).

    Returns:
        Rows written.

    Raises:
        StoreLockedError: The service (or another process) has the file open; the
            message names it.
        ConfigError: Bad list, date or horizon.
    """
    if isinstance(db, Store):
        return db.write_risk(risk_df, date, horizon, org=org)
    with Store(db) as store:
        return store.write_risk(risk_df, date, horizon, org=org)
