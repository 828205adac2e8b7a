"""Completion callback deliveries in PostgreSQL (distributed mode): the table of
``stores.callbacks`` beside ``takeflow_tasks``; every API replica's sender claims due rows with
a lease, so one delivery is sent by one replica at a time."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from typing import Any

from stores.callbacks import PENDING, CallbackDelivery, finished_state
from stores.postgres.state import PostgresState

SCHEMA = """
CREATE TABLE IF NOT EXISTS takeflow_callback_deliveries (
    delivery_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    project_id TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    created DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS takeflow_callback_deliveries_due
    ON takeflow_callback_deliveries (state, next_attempt);
"""
_SCHEMA_LOCK = 0x1DE4_CA11  # pg_advisory_xact_lock key: concurrent first starts do not race
_COLUMNS = (
    "delivery_id, task_id, url, project_id, state, attempts, next_attempt, last_error, "
    "last_status, created, delivered_at"
)


def _row(row: Any) -> CallbackDelivery:
    return CallbackDelivery(*row)


class PostgresCallbackDeliveries:
    """Deliveries on the runtime's pool; each call joins the thread's open transaction, if any."""

    def __init__(self, state: PostgresState) -> None:
        self.state = state
        with state.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    def close(self) -> None:
        """Nothing to release: the pool is the runtime's."""

    def add(self, task_id: str, url: str, project_id: str | None) -> CallbackDelivery:
        now = time.time()
        delivery = CallbackDelivery(
            f"dlv_{uuid.uuid4().hex}", task_id, url, project_id, PENDING, 0, now, None, None,
            now, None,
        )  # fmt: skip
        with self.state.transaction() as conn:
            conn.execute(
                f"INSERT INTO takeflow_callback_deliveries ({_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, 0, %s, NULL, NULL, %s, NULL) "
                "ON CONFLICT (task_id) DO UPDATE SET delivery_id = excluded.delivery_id, "
                "url = excluded.url, project_id = excluded.project_id, state = excluded.state, "
                "attempts = 0, next_attempt = excluded.next_attempt, last_error = NULL, "
                "last_status = NULL, created = excluded.created, delivered_at = NULL",
                (delivery.delivery_id, task_id, url, project_id, PENDING, now, now),
            )
        return delivery

    def forget(self, task_id: str) -> None:
        with self.state.transaction() as conn:
            conn.execute("DELETE FROM takeflow_callback_deliveries WHERE task_id = %s", (task_id,))

    def get(self, task_id: str) -> CallbackDelivery | None:
        with self.state.transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM takeflow_callback_deliveries WHERE task_id = %s",
                (task_id,),
            ).fetchone()
        return None if row is None else _row(row)

    def due(self, now: float, ended: Collection[str], limit: int = 50) -> list[CallbackDelivery]:
        columns = ", ".join(f"d.{c.strip()}" for c in _COLUMNS.split(","))
        with self.state.transaction() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM takeflow_callback_deliveries d "
                "JOIN takeflow_tasks t ON t.task_id = d.task_id "
                "WHERE d.state = %s AND d.next_attempt <= %s AND t.status = ANY(%s) "
                "ORDER BY d.next_attempt LIMIT %s",
                (PENDING, now, sorted(ended), limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def claim(self, delivery_id: str, now: float, lease_until: float) -> bool:
        with self.state.transaction() as conn:
            cur = conn.execute(
                "UPDATE takeflow_callback_deliveries SET next_attempt = %s "
                "WHERE delivery_id = %s AND state = %s AND next_attempt <= %s",
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
        with self.state.transaction() as conn:
            conn.execute(
                "UPDATE takeflow_callback_deliveries SET state = %s, attempts = attempts + 1, "
                "next_attempt = %s, last_error = %s, last_status = %s, delivered_at = %s "
                "WHERE delivery_id = %s",
                (
                    finished_state(delivered, retry_at),
                    retry_at if retry_at is not None else now,
                    error,
                    status,
                    now if delivered else None,
                    delivery_id,
                ),
            )
