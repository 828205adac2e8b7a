"""Idempotency keys of submits (``Idempotency-Key``): per user, the key's request hash and the
task it made, kept beside the task state (embedded: a table in the state's SQLite file;
distributed: ``stores.postgres.idempotency`` on the state's PostgreSQL pool, in the intake
transaction). A key older than ``ttl_s`` is forgotten (and reusable)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

DEFAULT_TTL_S = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (user, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created);
"""


class IdempotencyKeys(Protocol):
    """Call ``find`` and ``put`` inside the intake lock: a lookup and the submit it guards are
    one step, so concurrent retries of one key make one task."""

    def find(self, user: str, key: str) -> tuple[str, str] | None:
        """``(body_hash, task_id)`` of an unexpired key, else None."""
        ...

    def put(self, user: str, key: str, body_hash: str, task_id: str) -> None:
        """Remember a key (replacing an expired or stale one); drops expired keys."""
        ...

    def forget(self, user: str, key: str) -> None:
        """Drop a key (its submit failed)."""
        ...

    def close(self) -> None: ...


class SqliteIdempotencyKeys:
    """Embedded: a table in the state's SQLite file (its own connection, WAL)."""

    def __init__(self, path: Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def find(self, user: str, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT body_hash, task_id FROM idempotency_keys "
                "WHERE user = ? AND key = ? AND created > ?",
                (user, key, time.time() - self.ttl_s),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def put(self, user: str, key: str, body_hash: str, task_id: str) -> None:
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "DELETE FROM idempotency_keys WHERE created <= ?", (now - self.ttl_s,)
                )
                self._conn.execute(
                    "INSERT OR REPLACE INTO idempotency_keys "
                    "(user, key, body_hash, task_id, created) VALUES (?, ?, ?, ?, ?)",
                    (user, key, body_hash, task_id, now),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def forget(self, user: str, key: str) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM idempotency_keys WHERE user = ? AND key = ?", (user, key)
            )


def open_keys(state: object, ttl_s: float = DEFAULT_TTL_S) -> IdempotencyKeys:
    """The key table of a runtime's deployment, by its task state."""
    from stores.sqlite_state import SqliteState

    if isinstance(state, SqliteState):
        return SqliteIdempotencyKeys(state.path, ttl_s)
    from stores.postgres.idempotency import PostgresIdempotencyKeys  # psycopg: distributed only
    from stores.postgres.state import PostgresState

    assert isinstance(state, PostgresState), type(state)
    return PostgresIdempotencyKeys(state, ttl_s)
