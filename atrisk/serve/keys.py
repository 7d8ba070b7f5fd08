"""API keys and organisations of the service, in a small SQLite file beside the store.

DuckDB lets one process open the store for writing, and the running service is that
process; the keys therefore live in their own SQLite file (``<store>.keys.sqlite``,
WAL mode), which ``atrisk keys create|list|revoke`` can change while the service runs.
The service keeps its lookups in memory and a thread (:meth:`KeyStore.watch`) notices
a commit to the file within 50 ms, so a new or revoked key takes effect without a
restart; an expiry is checked on every request.

A key has a scope and, but for the operator's admin keys, an organisation (a school or
district):

- ``read``: the GET endpoints of its organisation's data;
- ``write``: also posts data, uploads tracks, runs jobs, replaces risk lists;
- ``admin``: with an organisation, also erases students and manages that
  organisation's keys and reads its access log; without one (the operator's key), it
  manages every organisation's keys and reads the whole access log, and cannot read or
  write student data.

Only the SHA-256 of a key is stored; the key is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from atrisk.errors import ConfigError

#: Scopes, weakest first: a key may do what any weaker scope may.
SCOPES = ("read", "write", "admin")
#: Ids of organisations (and of students, sessions, events… in the API).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (org_id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, org_id TEXT, scope TEXT NOT NULL,
    label TEXT, created_at TEXT NOT NULL, expires_at REAL, revoked_at TEXT);
"""


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


def keystore_path(db: Path | str) -> Path:
    """Return the key file of the store ``db`` (``s.duckdb`` → ``s.keys.sqlite``)."""
    return Path(db).with_suffix(".keys.sqlite")


def check_id(value: str, what: str) -> str:
    """Return ``value`` when it is a valid id (``[A-Za-z0-9_-]{1,64}``).

    Raises:
        ConfigError: Naming ``what`` and the pattern.
    """
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigError(f"{what} {value!r} is not a valid id: use 1 to 64 letters, digits, "
                          "'_' or '-'")
    return value


@dataclass(frozen=True)
class Principal:
    """Who a request's key is: its id, organisation (``None``: operator) and scope."""

    key_id: str
    org_id: str | None
    scope: str

    def allows(self, scope: str) -> bool:
        """Whether this key's scope covers ``scope`` (read < write < admin)."""
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``key`` is shown once and never stored."""

    key_id: str
    key: str
    scope: str
    org_id: str | None
    expires_at: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class KeyStore:
    """The SQLite file of organisations and API keys (safe to share between processes).

    Args:
        path: The file (created ``0600`` with its tables when absent).

    Raises:
        ConfigError: The file cannot be opened as a key store.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._local = threading.local()
        self._generation = 0  # bumped on every change of the file seen
        self._seen_version: int | None = None
        self._cache: dict[str, tuple] = {}
        self._cache_generation = -1
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            con = self._con()
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: not a key store ({exc})") from None

    def _changed(self) -> None:
        """Forget remembered lookups (a connection's own commits leave its data_version)."""
        self._generation += 1

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self._local.con = con
        return con

    # ------------------------------------------------------------------ orgs

    def create_org(self, org_id: str) -> bool:
        """Add an organisation (idempotent); ``True`` when it is new.

        Raises:
            ConfigError: Not a valid id.
        """
        check_id(org_id, "organisation")
        cur = self._con().execute("INSERT OR IGNORE INTO orgs VALUES (?, ?)",
                                  [org_id, _now().isoformat()])
        return cur.rowcount == 1

    def orgs(self) -> list[str]:
        """Return every organisation id, sorted."""
        return [r[0] for r in self._con().execute("SELECT org_id FROM orgs ORDER BY org_id")]

    # ------------------------------------------------------------------ keys

    def create_key(self, scope: str, org_id: str | None = None,
                   expires_at: datetime | None = None, label: str | None = None) -> NewKey:
        """Make a key and store its hash; its organisation is created when new.

        Args:
            scope: ``read``, ``write`` or ``admin``.
            org_id: Its organisation; required for read and write keys (``None`` with
                ``admin``: the operator's key over every organisation).
            expires_at: When it stops working (aware, or naive UTC); ``None``: never.
            label: A note shown by ``keys list`` (e.g. who holds it).

        Returns:
            The key (shown once; only its hash is kept).

        Raises:
            ConfigError: Unknown scope, missing or invalid organisation, or an
                expiry in the past.
        """
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
        if org_id is None and scope != "admin":
            raise ConfigError(f"a {scope} key belongs to an organisation: name it "
                              "(--org, or org_id in the API)")
        exp = None
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            if expires_at <= _now():
                raise ConfigError(f"expiry {expires_at.isoformat()} is in the past")
            exp = expires_at.timestamp()
        if label is not None and len(label) > 200:
            raise ConfigError("a key's label has at most 200 characters")
        if org_id is not None:
            self.create_org(org_id)
        key = secrets.token_urlsafe(32)
        key_id = "k_" + secrets.token_hex(6)
        self._con().execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                            [key_id, hash_key(key), org_id, scope, label,
                             _now().isoformat(), exp])
        self._changed()
        return NewKey(key_id, key, scope, org_id,
                      None if exp is None else datetime.fromtimestamp(exp, UTC))

    def lookup(self, key: str | None) -> Principal | None:
        """Return who ``key`` is, or ``None`` (unknown, revoked or expired key).

        Answers are remembered until the key file changes.  Without :meth:`watch`, each
        call asks SQLite whether the file changed (``data_version``: a commit by any
        other connection, of any process); with it, a thread asks every ``interval``
        seconds and a call only reads memory (the service's event loop then makes no
        call that releases the GIL, which would let other threads hold it for up to a
        switch interval).  Commits through this object count at once.
        """
        if not key or len(key) > 256:
            return None
        digest = hash_key(key)
        if self._watcher is None:
            version = self._con().execute("PRAGMA data_version").fetchone()[0]
            if version != self._seen_version:
                self._seen_version = version
                self._generation += 1
        if self._cache_generation != self._generation:
            self._cache = {}
            self._cache_generation = self._generation
        hit = self._cache.get(digest)
        if hit is None:
            row = self._con().execute(
                "SELECT key_id, key_hash, org_id, scope, expires_at, revoked_at FROM keys "
                "WHERE key_hash = ?", [digest]).fetchone()
            if row is None or not hmac.compare_digest(row[1], digest) or row[5] is not None:
                hit = (None, None)
            else:
                hit = (Principal(row[0], row[2], row[3]), row[4])
            if len(self._cache) >= 10_000:
                self._cache = {}
            self._cache[digest] = hit
        who, expires = hit
        if who is None or (expires is not None and expires <= time.time()):
            return None
        return who

    def watch(self, interval: float = 0.05) -> None:
        """Check for changes of the key file every ``interval`` seconds in a daemon thread."""
        if self._watcher is not None:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, args=(interval,),
                                         name="atrisk-keys", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the :meth:`watch` thread."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self._watcher = None

    def _watch(self, interval: float) -> None:
        con = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        seen = None
        try:
            while not self._stop.is_set():
                version = con.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    self._generation += 1
                self._stop.wait(interval)
        finally:
            con.close()

    def list_keys(self, org_id: str | None = None) -> list[dict]:
        """Return the keys (never their hash), oldest first; only ``org_id``'s when given."""
        sql = ("SELECT key_id, org_id, scope, label, created_at, expires_at, revoked_at "
               "FROM keys")
        args: list = []
        if org_id is not None:
            sql += " WHERE org_id = ?"
            args.append(org_id)
        now = _now().timestamp()
        out = []
        for kid, org, scope, label, created, exp, revoked in self._con().execute(
                sql + " ORDER BY created_at, key_id", args):
            state = ("revoked" if revoked else "expired" if exp is not None and exp <= now
                     else "active")
            out.append({"key_id": kid, "org_id": org, "scope": scope, "label": label,
                        "created_at": created, "expires_at": _iso(exp),
                        "revoked_at": revoked, "state": state})
        return out

    def key(self, key_id: str) -> dict | None:
        """Return one key's row (as in :meth:`list_keys`), or ``None``."""
        return next((k for k in self.list_keys() if k["key_id"] == key_id), None)

    def revoke(self, key_id: str, org_id: str | None = None) -> bool:
        """Revoke a key at once; ``False`` when no such (unrevoked) key exists.

        Args:
            key_id: The key's id (``keys list`` shows it).
            org_id: When given, only a key of this organisation is revoked.
        """
        sql = "UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"
        args = [_now().isoformat(), key_id]
        if org_id is not None:
            sql += " AND org_id = ?"
            args.append(org_id)
        done = self._con().execute(sql, args).rowcount == 1
        self._changed()
        return done

    def import_hashed(self, rows: list[tuple[str, str, str]], org_id: str) -> int:
        """Add keys known only by their hash (``key_id, key_hash, scope``) to ``org_id``.

        Used when a store of an older version (keys in the store, no organisations) is
        opened: its keys keep working, in the organisation ``org_id``.

        Returns:
            Keys added.
        """
        if not rows:
            return 0
        self.create_org(org_id)
        n = 0
        for key_id, key_hash, scope in rows:
            cur = self._con().execute(
                "INSERT OR IGNORE INTO keys VALUES (?, ?, ?, ?, 'from the older store', ?, "
                "NULL, NULL)", [key_id, key_hash, org_id, scope, _now().isoformat()])
            n += cur.rowcount
        self._changed()
        return n

    def close(self) -> None:
        """Close this thread's connection."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
