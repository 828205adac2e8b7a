"""Fair turns between users in the distributed queue.

Each queued task gets a ``turn`` when it is enqueued (start-time fair queuing): the user's last
queued turn + 1, but never before the queue's current turn (the smallest one still waiting). A
worker serving a queue job runs the queue's next task by ``priority`` (highest first), then
``turn``, then arrival (``arrival``, else ``created_at``), not necessarily the task that job was
deferred for: the jobs of a queue are interchangeable tokens (one per task), so a user who queues
500 tasks takes one turn in every round and somebody else's single task starts after at most one
of theirs per free worker slot.

A claimed task records the id of the job that claimed it (``job_id``), so the sweeper can tell a
dead worker's job that never claimed anything (re-queued) from one whose task it ran (failed).
Turns are assigned under the intake lock (``INTAKE_LOCK``), which also makes the queue limits
exact across API replicas. A user reorders their own waiting tasks (``move``) by handing the same
places (turn and arrival) out in the new order, so everybody else's place is untouched and the
order lives in the table (every replica and worker sees it, a restart keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stores.postgres.state import PostgresState

INTAKE_LOCK = 0x7A6B_F110  # pg_advisory_xact_lock key: limit checks, turns and enqueues, in turn

_ENQUEUE = """
UPDATE takeflow_tasks t SET
    queue = %(queue)s,
    model = %(model)s,
    user_id = t.record->>'user',
    priority = COALESCE((t.record->>'priority')::int, 0),
    arrival = NULL,
    turn = GREATEST(
        COALESCE((SELECT MIN(q.turn) FROM takeflow_tasks q
                  WHERE q.status = 'queued' AND q.task_id <> t.task_id), 0),
        COALESCE((SELECT MAX(q.turn) + 1 FROM takeflow_tasks q
                  WHERE q.status = 'queued' AND q.user_id = t.record->>'user'
                  AND q.task_id <> t.task_id), 0))
WHERE t.task_id = %(task)s
"""

_BEFORE = """
SELECT count(*) FROM takeflow_tasks q,
    (SELECT queue, priority, turn, COALESCE(arrival, created_at) AS arrival FROM takeflow_tasks
     WHERE task_id = %(task)s AND status = 'queued') me
WHERE q.status = 'queued' AND q.queue = me.queue AND (q.priority > me.priority
    OR (q.priority = me.priority
        AND (q.turn, COALESCE(q.arrival, q.created_at)) < (me.turn, me.arrival)))
"""

_BAND = """
SELECT t.task_id, t.turn, COALESCE(t.arrival, t.created_at) AS arrival FROM takeflow_tasks t,
    (SELECT user_id, priority FROM takeflow_tasks
     WHERE task_id = %(task)s AND status = 'queued') me
WHERE t.status = 'queued' AND t.user_id IS NOT DISTINCT FROM me.user_id
    AND t.priority = me.priority
ORDER BY t.turn, 3, t.task_id FOR UPDATE OF t
"""

_REORDER = """
UPDATE takeflow_tasks t SET turn = v.turn, arrival = v.arrival
FROM unnest(%s::text[], %s::bigint[], %s::float8[]) AS v(task_id, turn, arrival)
WHERE t.task_id = v.task_id AND t.status = 'queued'
"""


class QueueTurns:
    """Turns, positions and the next task of a queue, on the shared task table."""

    def __init__(self, state: PostgresState) -> None:
        self.state = state

    def _one(self, query: str, params: Any) -> Any:
        """The first column of the first row (on the bound transaction when there is one)."""
        with self.state.transaction() as conn:
            row = conn.execute(query, params).fetchone()
        return row[0] if row else None

    def enqueue(self, task_id: str, queue: str, model: str | None = None) -> None:
        """Put a stored queued task in ``queue`` with its turn (call under ``INTAKE_LOCK``);
        ``model``: the model it loads, for workers that hold it."""
        with self.state.transaction() as conn:
            conn.execute(_ENQUEUE, {"task": task_id, "queue": queue, "model": model})

    def next_queued(self, queue: str, warm: Sequence[str] = ()) -> str | None:
        """The task the next job of ``queue`` should run (None: nothing waits there): highest
        priority, then earliest turn; within a turn, one whose model is in ``warm`` first."""
        return self._one(
            "SELECT task_id FROM takeflow_tasks WHERE status = 'queued' AND queue = %s "
            "ORDER BY priority DESC, turn, (model = ANY(%s)) IS TRUE DESC, "
            "COALESCE(arrival, created_at) LIMIT 1",
            (queue, list(warm)),
        )

    def move(self, task_id: str, index: int) -> list[str] | None:
        """Put queued ``task_id`` at ``index`` (0: first, clamped) among its user's queued tasks
        of its priority (any queue): the band's own places (turn, arrival) handed out again in
        the new order, in one transaction holding their row locks (call under ``INTAKE_LOCK``),
        so a worker claiming meanwhile sees the old order or the new one. Other users' tasks
        keep their places; ``created_at`` is untouched. The band's ids in the new order; None
        when it is not queued."""
        with self.state.transaction() as conn:
            rows = conn.execute(_BAND, {"task": task_id}).fetchall()
            ids = [str(r[0]) for r in rows]
            if task_id not in ids:
                return None
            ids.remove(task_id)
            ids.insert(max(0, min(index, len(ids))), task_id)
            turns = [int(r[1]) for r in rows]
            arrivals = [float(r[2]) for r in rows]
            conn.execute(_REORDER, (ids, turns, arrivals))
        return ids

    def position(self, task_id: str) -> int | None:
        """How many tasks of its queue run before this one (None: it is not waiting)."""
        if self._one("SELECT 1 FROM takeflow_tasks WHERE task_id = %s AND status = 'queued'",
                     (task_id,)) is None:  # fmt: skip
            return None
        return int(self._one(_BEFORE, {"task": task_id}))

    def ahead(self, user: str, priority: int) -> int:
        """How many waiting tasks (any queue) would run before a new task of ``user``."""
        return int(
            self._one(
                "WITH now AS (SELECT GREATEST("
                "  COALESCE((SELECT MIN(turn) FROM takeflow_tasks WHERE status = 'queued'), 0),"
                "  COALESCE((SELECT MAX(turn) + 1 FROM takeflow_tasks "
                "            WHERE status = 'queued' AND user_id = %(user)s), 0)) AS turn) "
                "SELECT count(*) FROM takeflow_tasks, now WHERE status = 'queued' AND "
                "(priority > %(p)s OR (priority = %(p)s AND takeflow_tasks.turn <= now.turn))",
                {"user": user, "p": priority},
            )
        )

    def queued_by(self, user: str) -> int:
        return int(
            self._one(
                "SELECT count(*) FROM takeflow_tasks WHERE status = 'queued' AND user_id = %s",
                (user,),
            )
        )

    def unserved(self, task_id: str, alive_s: float) -> str | None:
        """The queue of a waiting task when no worker that heartbeat within ``alive_s`` serves
        it (None: served, or not waiting)."""
        return self._one(
            "SELECT t.queue FROM takeflow_tasks t WHERE t.task_id = %s AND t.status = 'queued' "
            "AND t.queue IS NOT NULL AND NOT EXISTS (SELECT 1 FROM takeflow_workers w "
            "WHERE w.heartbeat > now() - make_interval(secs => %s) "
            "AND (w.queues = '*' OR t.queue = ANY(string_to_array(w.queues, ','))))",
            (task_id, alive_s),
        )

    def consumed(self, job_id: int) -> bool:
        """Whether the queue job ``job_id`` claimed a task (then it must not run again)."""
        return self._one("SELECT 1 FROM takeflow_tasks WHERE job_id = %s", (job_id,)) is not None
