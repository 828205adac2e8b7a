"""The ComfyUI API's prompt store in SQLite (embedded mode): ``<home>/comfyui/comfyui.sqlite``.

The same tables as the distributed store (``stores.postgres.comfy``): prompts (with the history
entry once written and who is writing it), per client the position up to which each prompt's
messages were delivered, the user each ``clientId`` belongs to, and the prompt ``number``
counter. Rows are plain tuples; the server (``server.comfy.store``) turns them into its types.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]  # prompt_id, task_id, number, client_id, user, project, created,
# body (JSON), plan (JSON), history (JSON or None)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY,
    task_id TEXT UNIQUE NOT NULL,
    number REAL NOT NULL,
    client_id TEXT,
    user TEXT NOT NULL,
    project TEXT,
    created REAL NOT NULL,
    body TEXT NOT NULL,
    plan TEXT NOT NULL,
    history TEXT,
    hidden INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS prompts_client ON prompts(client_id, created);
CREATE TABLE IF NOT EXISTS deliveries (
    client_id TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, prompt_id)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, user TEXT NOT NULL);
"""
# added after the first release: who writes a finished prompt's history, until when
_ADDED_COLUMNS = {"history_owner": "TEXT", "history_until": "REAL"}


class SqlitePromptTables:
    """Embedded: SQLite in WAL mode behind one lock."""

    _COLUMNS = "prompt_id, task_id, number, client_id, user, project, created, body, plan, history"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(prompts)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                self._conn.execute(f"ALTER TABLE prompts ADD COLUMN {column} {kind}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self.closed = True

    def _select(self, where: str, params: tuple[Any, ...]) -> list[Row]:
        with self._lock:
            return self._conn.execute(
                f"SELECT {self._COLUMNS} FROM prompts WHERE {where}", params
            ).fetchall()

    def _run(self, query: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            return self._conn.execute(query, params).rowcount

    # -- prompts ----------------------------------------------------------------------------

    def next_number(self) -> int:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute("SELECT value FROM counters WHERE name='number'").fetchone()
            value = (row[0] if row else 0) + 1
            self._conn.execute(
                "INSERT INTO counters(name, value) VALUES('number', ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (value,),
            )
            self._conn.execute("COMMIT")
            return int(value)

    def add(self, row: Row) -> None:
        self._run(
            "INSERT INTO prompts(prompt_id, task_id, number, client_id, user, project, "
            "created, body, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(row[:9]),
        )

    def remove(self, prompt_id: str) -> None:
        self._run("DELETE FROM prompts WHERE prompt_id = ?", (prompt_id,))

    def exists(self, prompt_id: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM prompts WHERE prompt_id = ?", (prompt_id,)
            ).fetchone()
        return row is not None

    def get(self, prompt_id: str) -> Row | None:
        rows = self._select("prompt_id = ?", (prompt_id,))
        return rows[0] if rows else None

    def by_task(self, task_id: str) -> Row | None:
        rows = self._select("task_id = ?", (task_id,))
        return rows[0] if rows else None

    def without_history(self) -> list[Row]:
        return self._select("history IS NULL ORDER BY number", ())

    def history(self, max_items: int | None, offset: int, user: str | None) -> list[Row]:
        limit = -1 if max_items is None else max_items
        mine, params = ("", ()) if user is None else ("AND user = ? ", (user,))
        return self._select(
            f"history IS NOT NULL AND hidden = 0 {mine}ORDER BY number LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )

    def hide_history(self, prompt_ids: list[str] | None, user: str | None) -> None:
        mine, params = ("", ()) if user is None else (" AND user = ?", (user,))
        with self._lock:
            if prompt_ids is None:
                self._conn.execute(
                    f"UPDATE prompts SET hidden = 1 WHERE history IS NOT NULL{mine}", params
                )
            else:
                self._conn.executemany(
                    f"UPDATE prompts SET hidden = 1 WHERE prompt_id = ?{mine}",
                    [(p, *params) for p in prompt_ids],
                )

    def claim_history(self, prompt_id: str, owner: str, lease_s: float) -> bool:
        now = time.time()
        return (
            self._run(
                "UPDATE prompts SET history_owner = ?, history_until = ? WHERE prompt_id = ? "
                "AND history IS NULL AND (history_owner IS NULL OR history_owner = ? "
                "OR history_until < ?)",
                (owner, now + lease_s, prompt_id, owner, now),
            )
            == 1
        )

    def set_history(self, prompt_id: str, history: str) -> None:
        self._run(
            "UPDATE prompts SET history = ?, history_owner = NULL, history_until = NULL "
            "WHERE prompt_id = ? AND history IS NULL",
            (history, prompt_id),
        )

    def release_history(self, prompt_id: str, owner: str) -> None:
        self._run(
            "UPDATE prompts SET history_owner = NULL, history_until = NULL "
            "WHERE prompt_id = ? AND history_owner = ?",
            (prompt_id, owner),
        )

    # -- clients ----------------------------------------------------------------------------

    def claim_client(self, client_id: str, user: str) -> str:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO clients(client_id, user) VALUES (?, ?)", (client_id, user)
            )
            row = self._conn.execute(
                "SELECT user FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
        return str(row[0])

    def positions(self, client_id: str) -> dict[str, tuple[int, bool]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT prompt_id, position, done FROM deliveries WHERE client_id = ?",
                (client_id,),
            ).fetchall()
        return {r[0]: (int(r[1]), bool(r[2])) for r in rows}

    def save_positions(self, client_id: str, positions: dict[str, tuple[int, bool]]) -> None:
        if not positions:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT INTO deliveries(client_id, prompt_id, position, done) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(client_id, prompt_id) DO UPDATE SET "
                "position=max(position, excluded.position), done=max(done, excluded.done)",
                [(client_id, p, pos, int(done)) for p, (pos, done) in positions.items()],
            )
            self._conn.execute("COMMIT")

    def client_prompts(self, client_id: str, limit: int) -> list[Row]:
        rows = self._select(
            "client_id = ? AND prompt_id NOT IN (SELECT prompt_id FROM deliveries "
            "WHERE client_id = ? AND done = 1) ORDER BY created DESC LIMIT ?",
            (client_id, client_id, limit),
        )
        return list(reversed(rows))
