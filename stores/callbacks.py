"""Completion callback deliveries (``callback_url``): one row per task with a callback, kept
beside the task state (embedded: a table in the state's SQLite file; distributed: PostgreSQL),
so a delivery that has not succeeded yet survives a restart. A row is written at submit; it is
due once its task has ended (the tasks table beside it says so) and its next attempt time has
come."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callback_deliveries (
    delivery_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    project_id TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    created REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS callback_deliveries_due ON callback_deliveries (state, next_attempt);
"""
_COLUMNS = (
    "delivery_id, task_id, url, project_id, state, attempts, next_attempt, last_error, "
    "last_status, created, delivered_at"
)


@dataclass(frozen=True)
class CallbackDelivery:
    """One task's callback: where it goes and how its delivery stands."""

    delivery_id: str
    task_id: str
    url: str
    project_id: str | None
    state: str  # pending | delivered | failed (gave up)
    attempts: int
    next_attempt: float
    last_error: str | None
    last_status: int | None
    created: float
    delivered_at: float | None


class CallbackDeliveries(Protocol):
    """Delivery rows. ``claim`` leases a due row to one sender (its next attempt moves to the
    lease's end), so a crash mid-delivery makes it due again: at least once."""

    def add(self, task_id: str, url: str, project_id: str | None) -> CallbackDelivery: ...

    def forget(self, task_id: str) -> None:
        """Drop a task's row (its submit was refused)."""
        ...

    def get(self, task_id: str) -> CallbackDelivery | None: ...

    def due(self, now: float, ended: Collection[str], limit: int = 50) -> list[CallbackDelivery]:
        """Pending rows whose task status is one of ``ended`` and whose time has come."""
        ...

    def claim(self, delivery_id: str, now: float, lease_until: float) -> bool: ...

    def finish(
        self,
        delivery_id: str,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_at: float | None,
    ) -> None:
        """Count an attempt: delivered, or pending again at ``retry_at``, or (None) failed."""
        ...

    def close(self) -> None: ...


class SqliteCallbackDeliveries:
    """Embedded: a table in the state's SQLite file (its own connection, WAL)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _row(row: tuple[object, ...]) -> CallbackDelivery:
        return CallbackDelivery(*row)  # type: ignore[arg-type]

    def add(self, task_id: str, url: str, project_id: str | None) -> CallbackDelivery:
        now = time.time()
        delivery = CallbackDelivery(
            f"dlv_{uuid.uuid4().hex}", task_id, url, project_id, PENDING, 0, now, None, None,
            now, None,
        )  # fmt: skip
        with self._lock:
            self._conn.execute(
                f"INSERT OR REPLACE INTO callback_deliveries ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.delivery_id, task_id, url, project_id, PENDING, 0, now, None, None,
                    now, None,
                ),
            )  # fmt: skip
        return delivery

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM callback_deliveries WHERE task_id = ?", (task_id,))

    def get(self, task_id: str) -> CallbackDelivery | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM callback_deliveries WHERE task_id = ?", (task_id,)
            ).fetchone()
        return None if row is None else self._row(row)

    def due(self, now: float, ended: Collection[str], limit: int = 50) -> list[CallbackDelivery]:
        statuses = sorted(ended)
        columns = ", ".join(f"d.{c.strip()}" for c in _COLUMNS.split(","))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {columns} FROM callback_deliveries d "
                "JOIN tasks t ON t.task_id = d.task_id "
                "WHERE d.state = ? AND d.next_attempt <= ? "
                f"AND t.status IN ({','.join('?' * len(statuses))}) "
                "ORDER BY d.next_attempt LIMIT ?",
                (PENDING, now, *statuses, limit),
            ).fetchall()
        return [self._row(r) for r in rows]

    def claim(self, delivery_id: str, now: float, lease_until: float) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE callback_deliveries SET next_attempt = ? "
                "WHERE delivery_id = ? AND state = ? AND next_attempt <= ?",
                (lease_until, delivery_id, PENDING, now),
            )
        return cur.rowcount == 1

    def finish(
        self,
        delivery_id: str,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_at: float | None,
    ) -> None:
        now = time.time()
        state = finished_state(delivered, retry_at)
        with self._lock:
            self._conn.execute(
                "UPDATE callback_deliveries SET state = ?, attempts = attempts + 1, "
                "next_attempt = ?, last_error = ?, last_status = ?, delivered_at = ? "
                "WHERE delivery_id = ?",
                (
                    state,
                    retry_at if retry_at is not None else now,
                    error,
                    status,
                    now if delivered else None,
                    delivery_id,
                ),
            )


def finished_state(delivered: bool, retry_at: float | None) -> str:
    """A delivery's state after an attempt: delivered, pending again (a retry), or failed."""
    return DELIVERED if delivered else (PENDING if retry_at is not None else FAILED)


def open_deliveries(state: object) -> CallbackDeliveries:
    """The delivery table of a runtime's deployment, by its task state (embedded: SQLite;
    distributed: ``stores.postgres.callbacks`` on the state's PostgreSQL pool)."""
    from stores.sqlite_state import SqliteState

    if isinstance(state, SqliteState):
        return SqliteCallbackDeliveries(state.path)
    from stores.postgres.callbacks import PostgresCallbackDeliveries  # psycopg: distributed only
    from stores.postgres.state import PostgresState

    assert isinstance(state, PostgresState), type(state)
    return PostgresCallbackDeliveries(state)
