"""The ComfyUI API's prompt store in PostgreSQL (distributed mode), shared by every API replica.

The same tables as the embedded ``<home>/comfyui/comfyui.sqlite`` (``server.comfy.store``):
prompts (with the history entry once written and who is writing it), per client the position up
to which each prompt's messages were delivered, the user each ``clientId`` belongs to, and the
prompt ``number`` counter (a sequence). Rows are returned as plain tuples (the server turns them
into its own types); JSON columns are text, so the prompt's key order is kept.

A finished prompt's history (its output files) is written once however many replicas see the
task end: a replica first claims it (``claim_history``: a lease, taken over once expired, timed by
the database clock), writes, then stores it (``set_history``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stores.postgres.state import PostgresState

SCHEMA = """
CREATE TABLE IF NOT EXISTS takeflow_comfy_prompts (
    prompt_id TEXT PRIMARY KEY,
    task_id TEXT UNIQUE NOT NULL,
    number DOUBLE PRECISION NOT NULL,
    client_id TEXT,
    user_id TEXT NOT NULL,
    project TEXT,
    created DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL,
    plan TEXT NOT NULL,
    history TEXT,
    hidden BOOLEAN NOT NULL DEFAULT FALSE,
    history_owner TEXT,
    history_until TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS takeflow_comfy_prompts_client
    ON takeflow_comfy_prompts (client_id, created);
CREATE INDEX IF NOT EXISTS takeflow_comfy_prompts_unfinished
    ON takeflow_comfy_prompts (number) WHERE history IS NULL;
CREATE INDEX IF NOT EXISTS takeflow_comfy_prompts_history
    ON takeflow_comfy_prompts (number) WHERE history IS NOT NULL;
CREATE TABLE IF NOT EXISTS takeflow_comfy_deliveries (
    client_id TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (client_id, prompt_id)
);
CREATE TABLE IF NOT EXISTS takeflow_comfy_clients (
    client_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS takeflow_comfy_number;
"""
_SCHEMA_LOCK = 0x7A6B_C0F1  # pg_advisory_xact_lock key: concurrent first starts do not race

_COLUMNS = "prompt_id, task_id, number, client_id, user_id, project, created, body, plan, history"
_SELECT = f"SELECT {_COLUMNS} FROM takeflow_comfy_prompts"

Row = tuple[Any, ...]  # the columns of _COLUMNS, in order


class PostgresComfyStore:
    """Prompt rows, deliveries and client owners on the runtime's PostgreSQL pool."""

    def __init__(self, state: PostgresState) -> None:
        self.pool = state.pool
        self.closed = False
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    def close(self) -> None:
        """Nothing to release: the pool is the runtime's."""
        self.closed = True

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(query, params).fetchall()]

    def _one(self, query: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self._all(query, params)
        return rows[0] if rows else None

    def _run(self, query: str, params: Sequence[Any] = ()) -> int:
        with self.pool.connection() as conn:
            return conn.execute(query, params).rowcount

    # -- prompts ----------------------------------------------------------------------------

    def next_number(self) -> int:
        row = self._one("SELECT nextval('takeflow_comfy_number')")
        assert row is not None
        return int(row[0])

    def add(self, row: Row) -> None:
        """Insert a prompt: the ``_COLUMNS`` values (``history`` is ignored)."""
        self._run(
            "INSERT INTO takeflow_comfy_prompts (prompt_id, task_id, number, client_id, user_id, "
            "project, created, body, plan) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            row[:9],
        )

    def remove(self, prompt_id: str) -> None:
        self._run("DELETE FROM takeflow_comfy_prompts WHERE prompt_id = %s", (prompt_id,))

    def exists(self, prompt_id: str) -> bool:
        found = self._one("SELECT 1 FROM takeflow_comfy_prompts WHERE prompt_id = %s", (prompt_id,))
        return found is not None

    def get(self, prompt_id: str) -> Row | None:
        return self._one(f"{_SELECT} WHERE prompt_id = %s", (prompt_id,))

    def by_task(self, task_id: str) -> Row | None:
        return self._one(f"{_SELECT} WHERE task_id = %s", (task_id,))

    def without_history(self) -> list[Row]:
        return self._all(f"{_SELECT} WHERE history IS NULL ORDER BY number")

    def history(self, max_items: int | None, offset: int, user: str | None) -> list[Row]:
        mine, params = ("", ()) if user is None else ("AND user_id = %s ", (user,))
        return self._all(
            f"{_SELECT} WHERE history IS NOT NULL AND NOT hidden {mine}"
            "ORDER BY number LIMIT %s OFFSET %s",
            (*params, max_items, offset),
        )

    def hide_history(self, prompt_ids: list[str] | None, user: str | None) -> None:
        mine, params = ("", ()) if user is None else (" AND user_id = %s", (user,))
        if prompt_ids is None:
            self._run(
                f"UPDATE takeflow_comfy_prompts SET hidden = TRUE WHERE history IS NOT NULL{mine}",
                params,
            )
        else:
            self._run(
                f"UPDATE takeflow_comfy_prompts SET hidden = TRUE WHERE prompt_id = ANY(%s){mine}",
                (list(prompt_ids), *params),
            )

    # -- the history, written once ----------------------------------------------------------

    def claim_history(self, prompt_id: str, owner: str, lease_s: float) -> bool:
        """Take the right to write the prompt's history: free, ours, or expired."""
        claimed = self._run(
            "UPDATE takeflow_comfy_prompts SET history_owner = %s, "
            "history_until = now() + make_interval(secs => %s) "
            "WHERE prompt_id = %s AND history IS NULL AND (history_owner IS NULL "
            "OR history_owner = %s OR history_until < now())",
            (owner, lease_s, prompt_id, owner),
        )
        return claimed == 1

    def set_history(self, prompt_id: str, history: str) -> None:
        self._run(
            "UPDATE takeflow_comfy_prompts SET history = %s, history_owner = NULL, "
            "history_until = NULL WHERE prompt_id = %s AND history IS NULL",
            (history, prompt_id),
        )

    def release_history(self, prompt_id: str, owner: str) -> None:
        self._run(
            "UPDATE takeflow_comfy_prompts SET history_owner = NULL, history_until = NULL "
            "WHERE prompt_id = %s AND history_owner = %s",
            (prompt_id, owner),
        )

    # -- clients ----------------------------------------------------------------------------

    def claim_client(self, client_id: str, user: str) -> str:
        self._run(
            "INSERT INTO takeflow_comfy_clients (client_id, user_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (client_id, user),
        )
        row = self._one(
            "SELECT user_id FROM takeflow_comfy_clients WHERE client_id = %s", (client_id,)
        )
        assert row is not None
        return str(row[0])

    def positions(self, client_id: str) -> dict[str, tuple[int, bool]]:
        rows = self._all(
            "SELECT prompt_id, position, done FROM takeflow_comfy_deliveries WHERE client_id = %s",
            (client_id,),
        )
        return {r[0]: (int(r[1]), bool(r[2])) for r in rows}

    def save_positions(self, client_id: str, positions: dict[str, tuple[int, bool]]) -> None:
        """Positions only move forward (two replicas may save for one client)."""
        if not positions:
            return
        with self.pool.connection() as conn, conn.transaction():
            conn.cursor().executemany(
                "INSERT INTO takeflow_comfy_deliveries AS d (client_id, prompt_id, position, done) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (client_id, prompt_id) DO UPDATE SET "
                "position = GREATEST(d.position, excluded.position), "
                "done = d.done OR excluded.done",
                [(client_id, p, pos, done) for p, (pos, done) in positions.items()],
            )

    def client_prompts(self, client_id: str, limit: int) -> list[Row]:
        rows = self._all(
            f"{_SELECT} WHERE client_id = %s AND prompt_id NOT IN (SELECT prompt_id FROM "
            "takeflow_comfy_deliveries WHERE client_id = %s AND done) "
            "ORDER BY created DESC LIMIT %s",
            (client_id, client_id, limit),
        )
        return list(reversed(rows))
