"""Takeflow's durable state in one SQLite file: the sequenced event log and task records.

``SqliteState`` implements both the ``EventLog`` and the ``TaskStore`` protocols. A task record
is one JSON document per row; fields added later (``result``, ``metadata``, ``owner``) simply
appear in new documents and take their defaults when an older one is read, so an existing home
needs no migration."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from graph_runtime.errors import TaskNotFoundError
from graph_runtime.events import TaskEvent
from graph_runtime.tasks import TaskQuery, TaskRecord, TaskStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    timestamp REAL NOT NULL,
    project_id TEXT,
    data TEXT NOT NULL,
    UNIQUE (task_id, seq)
);
CREATE INDEX IF NOT EXISTS events_project ON events (project_id, id);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    batch_id TEXT,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
CREATE INDEX IF NOT EXISTS tasks_batch ON tasks (batch_id);
-- task listing (``query``): newest first, overall and per project
CREATE INDEX IF NOT EXISTS tasks_recent ON tasks (created_at, task_id);
CREATE INDEX IF NOT EXISTS tasks_project_recent
    ON tasks (json_extract(record, '$.project_id'), created_at, task_id);
"""


class SqliteState:
    """One connection, serialized by a lock; WAL with ``synchronous=NORMAL`` (durable on commit
    order, survives process crashes; an OS crash may drop the last few ms)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- event log -------------------------------------------------------------------------

    def append(
        self, type: str, task_id: str, project_id: str | None, data: dict[str, Any]
    ) -> TaskEvent:
        payload = json.dumps(data, default=str, separators=(",", ":"))
        with self._lock:
            seq = self._seq.get(task_id)
            if seq is None:
                row = self._conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id = ?", (task_id,)
                ).fetchone()
                seq = int(row[0])
            seq += 1
            now = time.time()
            cur = self._conn.execute(
                "INSERT INTO events (task_id, seq, type, timestamp, project_id, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, seq, type, now, project_id, payload),
            )
            self._seq[task_id] = seq
            event_id = int(cur.lastrowid or 0)
        return TaskEvent(type, task_id, seq, event_id, now, project_id, data)

    @staticmethod
    def _event(row: tuple[Any, ...]) -> TaskEvent:
        event_id, task_id, seq, type_, ts, project_id, data = row
        return TaskEvent(type_, task_id, seq, event_id, ts, project_id, json.loads(data))

    def read_task(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, task_id, seq, type, timestamp, project_id, data FROM events "
                "WHERE task_id = ? AND seq > ? ORDER BY seq",
                (task_id, after_seq),
            ).fetchall()
        return [self._event(r) for r in rows]

    def read_since(
        self, after_id: int = 0, project_ids: Iterable[str] | None = None, limit: int = 10_000
    ) -> list[TaskEvent]:
        query = (
            "SELECT id, task_id, seq, type, timestamp, project_id, data FROM events WHERE id > ?"
        )
        params: list[Any] = [after_id]
        if project_ids is not None:
            ids = list(project_ids)
            query += f" AND project_id IN ({','.join('?' * len(ids))})"
            params += ids
        query += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(query, params).fetchall()
        return [self._event(r) for r in rows]

    def last_seq(self, task_id: str) -> int | None:
        """The sequence number of the task's last event (None: no event)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MAX(seq) FROM events WHERE task_id = ?", (task_id,)
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def last_id(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(row[0])

    # -- task records ----------------------------------------------------------------------

    @staticmethod
    def _dump(record: TaskRecord) -> str:
        body = asdict(record)
        body["status"] = record.status.value
        return json.dumps(body, default=str)

    @staticmethod
    def _load(raw: str) -> TaskRecord:
        body = json.loads(raw)
        body["status"] = TaskStatus(body["status"])
        known = {f.name for f in fields(TaskRecord)}
        return TaskRecord(**{k: v for k, v in body.items() if k in known})

    def save(self, record: TaskRecord) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO tasks (task_id, status, batch_id, created_at, record) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.task_id,
                    record.status.value,
                    record.batch_id,
                    record.created_at,
                    self._dump(record),
                ),
            )

    def get(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT record FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return self._load(row[0]) if row else None

    def update(self, task_id: str, **changes: Any) -> TaskRecord:
        with self._lock:
            row = self._conn.execute(
                "SELECT record FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None:
                raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
            record = replace(self._load(row[0]), **changes)
            self._conn.execute(
                "UPDATE tasks SET status = ?, record = ? WHERE task_id = ?",
                (record.status.value, self._dump(record), task_id),
            )
        return record

    def delete_task(self, task_id: str) -> None:
        """Remove a task's record and every event of it (for internal tasks such as the
        ``/health`` probe, which must leave nothing behind; user tasks are never deleted)."""
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
            self._conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            self._conn.execute("COMMIT")
            self._seq.pop(task_id, None)

    def transition(
        self, task_id: str, expected: Collection[TaskStatus], **changes: Any
    ) -> TaskRecord | None:
        """Apply ``changes`` only while the record's status is one of ``expected``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT record FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None:
                return None
            current = self._load(row[0])
            if current.status not in expected:
                return None
            record = replace(current, **changes)
            self._conn.execute(
                "UPDATE tasks SET status = ?, record = ? WHERE task_id = ?",
                (record.status.value, self._dump(record), task_id),
            )
        return record

    def query(self, query: TaskQuery) -> list[TaskRecord]:
        """Records matching ``query``, newest first (served by ``tasks_recent`` or, with a
        project filter, ``tasks_project_recent``)."""
        where: list[str] = ["1=1"]
        params: list[Any] = []

        def field(name: str) -> str:
            return f"json_extract(record, '$.{name}')"

        if query.projects is not None or query.projectless_of is not None:
            clause = f"{field('project_id')} IS NOT NULL"
            if query.projects is not None:
                ids = sorted(query.projects)
                clause = f"{field('project_id')} IN ({','.join('?' * len(ids))})"
                params += ids
            if query.projectless_of is not None:
                clause = f"({clause} OR ({field('project_id')} IS NULL AND {field('user')} = ?))"
                params.append(query.projectless_of)
            where.append(clause)
        for value, column in (
            (query.shot, field("shot")),
            (query.user, field("user")),
            (query.batch_id, "batch_id"),
            (query.template_id, field("metadata.template_id")),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.statuses is not None:
            statuses = sorted(s.value for s in query.statuses)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        if query.since is not None:
            where.append("created_at >= ?")
            params.append(query.since)
        if query.before is not None:
            where.append("(created_at, task_id) < (?, ?)")
            params += list(query.before)
        sql = (
            f"SELECT record FROM tasks WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, task_id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*params, query.limit]).fetchall()
        return [self._load(r[0]) for r in rows]

    def list(
        self, status: TaskStatus | None = None, batch_id: str | None = None
    ) -> list[TaskRecord]:
        query, params = "SELECT record FROM tasks WHERE 1=1", []
        if status is not None:
            query += " AND status = ?"
            params.append(status.value)
        if batch_id is not None:
            query += " AND batch_id = ?"
            params.append(batch_id)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY created_at", params).fetchall()
        return [self._load(r[0]) for r in rows]
