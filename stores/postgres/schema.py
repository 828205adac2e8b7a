"""Takeflow's tables in PostgreSQL (distributed mode). Idempotent: every process runs it at start.

The ``event_clock`` row hands out global event ids. Taking it (``UPDATE ... RETURNING``) inside the
appending transaction holds its row lock until commit, so appends commit one after another in id
order: a reader that has seen id N never finds a smaller id committed later (a plain sequence or
identity column would allow that, and ``read_since(last_id)`` would then skip the late event).
"""

from __future__ import annotations

from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS takeflow_event_clock (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last_id BIGINT NOT NULL
);
INSERT INTO takeflow_event_clock (one, last_id) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS takeflow_events (
    id BIGINT PRIMARY KEY,
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    timestamp DOUBLE PRECISION NOT NULL,
    project_id TEXT,
    data JSONB NOT NULL,
    UNIQUE (task_id, seq)
);
CREATE INDEX IF NOT EXISTS takeflow_events_project ON takeflow_events (project_id, id);

-- per-task last seq: appends take it with INSERT ... ON CONFLICT DO UPDATE (row lock, latest
-- committed value), so an append is one statement (no MAX(seq) scan under the clock lock)
CREATE TABLE IF NOT EXISTS takeflow_task_seq (
    task_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS takeflow_tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    batch_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    record JSONB NOT NULL,
    owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    queue TEXT
);
CREATE INDEX IF NOT EXISTS takeflow_tasks_status ON takeflow_tasks (status);
-- fair turns between users in the queue (stores.postgres.turns); added after the first release
ALTER TABLE takeflow_tasks ADD COLUMN IF NOT EXISTS user_id TEXT;
ALTER TABLE takeflow_tasks ADD COLUMN IF NOT EXISTS priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE takeflow_tasks ADD COLUMN IF NOT EXISTS turn BIGINT NOT NULL DEFAULT 0;
ALTER TABLE takeflow_tasks ADD COLUMN IF NOT EXISTS job_id BIGINT;
ALTER TABLE takeflow_tasks ADD COLUMN IF NOT EXISTS model TEXT;
-- a moved task's place within its turn (QueueTurns.move in stores.postgres.turns); NULL: created_at
ALTER TABLE takeflow_tasks ADD COLUMN IF NOT EXISTS arrival DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS takeflow_tasks_next ON takeflow_tasks
    (queue, priority DESC, turn, created_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS takeflow_tasks_turns ON takeflow_tasks (turn) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS takeflow_tasks_user_turns ON takeflow_tasks (user_id, turn)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS takeflow_tasks_job ON takeflow_tasks (job_id);
CREATE INDEX IF NOT EXISTS takeflow_tasks_batch ON takeflow_tasks (batch_id);
-- task listing (PostgresState.query): newest first, overall and per project
CREATE INDEX IF NOT EXISTS takeflow_tasks_recent ON takeflow_tasks (created_at, task_id);
CREATE INDEX IF NOT EXISTS takeflow_tasks_project_recent
    ON takeflow_tasks ((record->>'project_id'), created_at, task_id);

CREATE TABLE IF NOT EXISTS takeflow_shot_takes (
    project_id TEXT NOT NULL,
    shot TEXT NOT NULL,
    last_number INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, shot)
);

CREATE TABLE IF NOT EXISTS takeflow_workers (
    worker_id TEXT PRIMARY KEY,
    queues TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

# One advisory lock key for schema creation, so that concurrent first starts do not race.
_SCHEMA_LOCK = 0x7A6B_F10E


def migrate(conn: Any) -> None:
    """Create the tables if they are missing (psycopg connection; commits)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(SCHEMA)
