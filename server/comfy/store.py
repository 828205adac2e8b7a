"""What the ComfyUI layer keeps beside Takeflow's own task records and event log.

Per prompt: its id, task id, number, client and the ComfyUI prompt with its translation (to
speak ComfyUI about the task), the history entry once written (output file names) and who is
writing it; per client the position up to which each prompt's messages were delivered (so a
reconnecting client gets exactly what it missed, across restarts and replicas too), and with
auth on the user each ``clientId`` belongs to (the first to connect with it).

Two stores of the same tables (``PromptTables``): embedded, ``<home>/comfyui/comfyui.sqlite``
(``SqlitePromptTables``, here); distributed, PostgreSQL shared by every API replica
(``stores.postgres.comfy.PostgresComfyStore``). ``ComfyStore`` turns their rows into
``PromptRow`` for the rest of the layer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.comfy.translate import Translation
from stores.sqlite_state import SqliteState

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

Row = tuple[Any, ...]  # prompt_id, task_id, number, client_id, user, project, created,
# body (JSON), plan (JSON), history (JSON or None)


def open_tables(state: object, path: Path) -> PromptTables:
    """The prompt store of a runtime's deployment, by its task state: SQLite at ``path``
    beside a SQLite state (embedded), the state's PostgreSQL pool (distributed)."""
    if isinstance(state, SqliteState):
        return SqlitePromptTables(path)
    from stores.postgres.comfy import PostgresComfyStore  # psycopg: distributed mode only
    from stores.postgres.state import PostgresState

    assert isinstance(state, PostgresState), type(state)
    return PostgresComfyStore(state)


class PromptTables(Protocol):
    """The ComfyUI layer's tables, one implementation per deployment; every method is safe
    from any thread."""

    closed: bool

    def close(self) -> None: ...

    def next_number(self) -> int: ...

    def add(self, row: Row) -> None: ...

    def remove(self, prompt_id: str) -> None: ...

    def exists(self, prompt_id: str) -> bool: ...

    def get(self, prompt_id: str) -> Row | None: ...

    def by_task(self, task_id: str) -> Row | None: ...

    def without_history(self) -> list[Row]: ...

    def history(self, max_items: int | None, offset: int, user: str | None) -> list[Row]: ...

    def hide_history(self, prompt_ids: list[str] | None, user: str | None) -> None: ...

    def claim_history(self, prompt_id: str, owner: str, lease_s: float) -> bool: ...

    def set_history(self, prompt_id: str, history: str) -> None: ...

    def release_history(self, prompt_id: str, owner: str) -> None: ...

    def claim_client(self, client_id: str, user: str) -> str: ...

    def positions(self, client_id: str) -> dict[str, tuple[int, bool]]: ...

    def save_positions(self, client_id: str, positions: dict[str, tuple[int, bool]]) -> None: ...

    def client_prompts(self, client_id: str, limit: int) -> list[Row]: ...


@dataclass(frozen=True)
class PromptRow:
    """One ComfyUI prompt and the Takeflow task that runs it."""

    prompt_id: str
    task_id: str
    number: float
    client_id: str | None
    user: str
    project: str | None
    created: float
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    plan: Translation
    history: dict[str, Any] | None

    def queue_item(self) -> list[Any]:
        """ComfyUI's queue entry: ``[number, prompt_id, prompt, extra_data, outputs]``."""
        number: float | int = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @staticmethod
    def of(raw: Row) -> PromptRow:
        body = json.loads(raw[7])
        return PromptRow(
            prompt_id=raw[0],
            task_id=raw[1],
            number=raw[2],
            client_id=raw[3],
            user=raw[4],
            project=raw[5],
            created=raw[6],
            prompt=body["prompt"],
            extra_data=body.get("extra_data", {}),
            outputs=body.get("outputs", []),
            plan=Translation.from_json(json.loads(raw[8])),
            history=json.loads(raw[9]) if raw[9] else None,
        )


class ComfyStore:
    """Prompt rows as ``PromptRow`` over either deployment's tables."""

    def __init__(self, tables: PromptTables) -> None:
        self.tables = tables

    @property
    def closed(self) -> bool:
        return self.tables.closed

    def close(self) -> None:
        self.tables.close()

    # -- prompts ----------------------------------------------------------------------------

    def next_number(self) -> int:
        return self.tables.next_number()

    def add(
        self,
        prompt_id: str,
        task_id: str,
        number: float,
        client_id: str | None,
        user: str,
        project: str | None,
        body: dict[str, Any],
        plan: Translation,
    ) -> None:
        self.tables.add((prompt_id, task_id, number, client_id, user, project, time.time(),
                         json.dumps(body), json.dumps(plan.to_json()), None))  # fmt: skip

    def remove(self, prompt_id: str) -> None:
        self.tables.remove(prompt_id)

    def exists(self, prompt_id: str) -> bool:
        return self.tables.exists(prompt_id)

    def get(self, prompt_id: str) -> PromptRow | None:
        raw = self.tables.get(prompt_id)
        return PromptRow.of(raw) if raw is not None else None

    def by_task(self, task_id: str) -> PromptRow | None:
        raw = self.tables.by_task(task_id)
        return PromptRow.of(raw) if raw is not None else None

    def without_history(self) -> list[PromptRow]:
        """Prompts whose history is not written yet (queued, running, or just ended)."""
        return [PromptRow.of(r) for r in self.tables.without_history()]

    def history(
        self, max_items: int | None = None, offset: int = 0, user: str | None = None
    ) -> list[PromptRow]:
        """Prompts with a history entry (``user``'s only when given), oldest first (``offset``
        skips the oldest); a negative ``max_items`` is no limit."""
        limit = None if max_items is None or max_items < 0 else max_items
        return [PromptRow.of(r) for r in self.tables.history(limit, offset, user)]

    def hide_history(self, prompt_ids: list[str] | None, user: str | None = None) -> None:
        """``POST /history``: hide entries (all when ``None``), only ``user``'s when given;
        tasks and takes stay."""
        self.tables.hide_history(prompt_ids, user)

    def claim_history(self, prompt_id: str, owner: str, lease_s: float) -> bool:
        """The right to write a prompt's history (once across processes): free, ``owner``'s,
        or its holder's lease of ``lease_s`` expired; false once written."""
        return self.tables.claim_history(prompt_id, owner, lease_s)

    def set_history(self, prompt_id: str, history: dict[str, Any]) -> None:
        self.tables.set_history(prompt_id, json.dumps(history))

    def release_history(self, prompt_id: str, owner: str) -> None:
        self.tables.release_history(prompt_id, owner)

    # -- clients ----------------------------------------------------------------------------

    def claim_client(self, client_id: str, user: str) -> str:
        """Tie ``client_id`` to ``user`` unless it is tied already; the user it belongs to."""
        return self.tables.claim_client(client_id, user)

    def positions(self, client_id: str) -> dict[str, tuple[int, bool]]:
        return self.tables.positions(client_id)

    def save_positions(self, client_id: str, positions: dict[str, tuple[int, bool]]) -> None:
        self.tables.save_positions(client_id, positions)

    def client_prompts(self, client_id: str, limit: int) -> list[PromptRow]:
        """The client's most recent prompts whose messages it has not all received."""
        return [PromptRow.of(r) for r in self.tables.client_prompts(client_id, limit)]


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
