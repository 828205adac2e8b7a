"""Idempotency keys of submits in PostgreSQL (distributed mode): the table of
``stores.idempotency``, written in the caller's transaction (the intake transaction, so a key and
its task row commit together)."""

from __future__ import annotations

from stores.idempotency import DEFAULT_TTL_S
from stores.postgres.state import PostgresState

SCHEMA = """
CREATE TABLE IF NOT EXISTS takeflow_idempotency_keys (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX IF NOT EXISTS takeflow_idempotency_keys_created
    ON takeflow_idempotency_keys (created);
"""
_SCHEMA_LOCK = 0x1DE4_9071  # pg_advisory_xact_lock key: concurrent first starts do not race


class PostgresIdempotencyKeys:
    """Keys on the runtime's pool; each call joins the thread's open transaction, if any."""

    def __init__(self, state: PostgresState, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.state = state
        self.ttl_s = ttl_s
        with state.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    def close(self) -> None:
        """Nothing to release: the pool is the runtime's."""

    def find(self, user: str, key: str) -> tuple[str, str] | None:
        with self.state.transaction() as conn:
            row = conn.execute(
                "SELECT body_hash, task_id FROM takeflow_idempotency_keys WHERE user_id = %s "
                "AND key = %s AND created > now() - make_interval(secs => %s)",
                (user, key, self.ttl_s),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def put(self, user: str, key: str, body_hash: str, task_id: str) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "DELETE FROM takeflow_idempotency_keys "
                "WHERE created <= now() - make_interval(secs => %s)",
                (self.ttl_s,),
            )
            conn.execute(
                "INSERT INTO takeflow_idempotency_keys (user_id, key, body_hash, task_id) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, key) DO UPDATE SET "
                "body_hash = excluded.body_hash, task_id = excluded.task_id, created = now()",
                (user, key, body_hash, task_id),
            )

    def forget(self, user: str, key: str) -> None:
        with self.state.transaction() as conn:
            conn.execute(
                "DELETE FROM takeflow_idempotency_keys WHERE user_id = %s AND key = %s",
                (user, key),
            )
