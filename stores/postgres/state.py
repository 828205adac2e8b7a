"""Takeflow's durable state in PostgreSQL: the sequenced event log and task records, shared by
every API replica and worker (distributed mode). Same interface as ``stores.sqlite_state``.

Ordering: each append takes the one-row ``takeflow_event_clock`` lock, so event ids commit in id
order (see ``schema.py``) and ``seq`` is ``max(seq) + 1`` under that lock.

Fencing: a worker ``claim``s a task (``status`` queued -> running, ``epoch + 1``, a lease). While
this process holds a claim, every append and update for that task checks, under the task row's
lock, that the epoch is still its own; once the sweeper has failed the task over (epoch bumped),
the old owner's writes raise ``LeaseLostError`` and store nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from psycopg import Connection
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from graph_runtime.errors import TakeflowError, TaskNotFoundError
from graph_runtime.events import TaskEvent
from graph_runtime.tasks import TaskQuery, TaskRecord, TaskStatus
from stores.postgres.schema import migrate

_EVENT_COLUMNS = "id, task_id, seq, type, timestamp, project_id, data"

# One append in one statement. The clock's row lock (held to commit) orders ids; the seq row
# (INSERT ... ON CONFLICT DO UPDATE locks it and reads its latest committed value) numbers the
# task's events; MAX(seq) only seeds tasks whose events predate the seq table.
_APPEND = """
WITH clock AS (
    UPDATE takeflow_event_clock SET last_id = last_id + 1 {fence} RETURNING last_id
), next AS (
    INSERT INTO takeflow_task_seq AS s (task_id, last_seq)
    SELECT %(task)s, COALESCE(
        (SELECT MAX(seq) FROM takeflow_events WHERE task_id = %(task)s), 0) + 1 FROM clock
    ON CONFLICT (task_id) DO UPDATE SET last_seq = s.last_seq + 1 RETURNING last_seq
)
INSERT INTO takeflow_events (id, task_id, seq, type, timestamp, project_id, data)
SELECT clock.last_id, %(task)s, next.last_seq, %(type)s, %(ts)s, %(project)s, %(data)s
FROM clock, next RETURNING id, seq
"""
# A claimed task's append also checks (and locks to commit) that the task is still ours.
_APPEND_FENCED = _APPEND.format(
    fence="WHERE EXISTS (SELECT 1 FROM takeflow_tasks WHERE task_id = %(task)s "
    "AND owner = %(owner)s AND epoch = %(epoch)s FOR UPDATE)"
)
_APPEND = _APPEND.format(fence="")


class LeaseLostError(TakeflowError):
    """This worker's claim on a task was taken away (lease expired); it must stop writing."""

    code = "lease_lost"
    http_status = 409


@dataclass(frozen=True)
class Claim:
    """What a worker holds while it runs a task: the fence for all its writes."""

    task_id: str
    owner: str
    epoch: int


def _dump(record: TaskRecord) -> Jsonb:
    body = asdict(record)
    body["status"] = record.status.value
    return Jsonb(json.loads(json.dumps(body, default=str)))


def _load(body: dict[str, Any]) -> TaskRecord:
    body = dict(body)
    body["status"] = TaskStatus(body["status"])
    return TaskRecord(**body)


def _event(row: tuple[Any, ...]) -> TaskEvent:
    event_id, task_id, seq, type_, ts, project_id, data = row
    return TaskEvent(type_, task_id, seq, int(event_id), ts, project_id, data)


class PostgresState:
    """Event log + task store on a pooled PostgreSQL database (psycopg 3)."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=True,
            name="takeflow-state",
        )
        self._claims: dict[str, Claim] = {}
        self._claimant: tuple[str, float] | None = None
        self.lost: set[str] = set()  # tasks whose claim this process lost (see heartbeat)
        self._bound = threading.local()
        with self.pool.connection() as conn:
            migrate(conn)

    def close(self) -> None:
        self.pool.close()

    # -- connections and transactions -------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection[Any]]:
        """One transaction for every state call made by this thread inside the block (and for
        other writes given the yielded connection, e.g. a queue job): all of it or none."""
        bound: Connection[Any] | None = getattr(self._bound, "conn", None)
        if bound is not None:
            with bound.transaction():
                yield bound
            return
        self._bound.after = []
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._bound.conn = conn
                try:
                    yield conn
                finally:
                    self._bound.conn = None
            callbacks = self._bound.after
        finally:
            self._bound.after = []
        for callback in callbacks:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction commits (at once outside one); a
        rolled-back transaction drops it. Used to publish events only once they are durable."""
        if getattr(self._bound, "conn", None) is None:
            callback()
        else:
            self._bound.after.append(callback)

    # -- claims and fencing -----------------------------------------------------------------

    def claim_as(self, owner: str, lease_s: float) -> None:
        """Make this process a worker: its ``queued -> running`` transitions claim the task."""
        self._claimant = (owner, lease_s)

    def claim(self, task_id: str, worker: str, lease_s: float, **changes: Any) -> TaskRecord | None:
        """Atomically take a queued task for ``worker``: running, a new epoch, a lease. ``None``
        when it is not queued any more (cancelled, or claimed by another worker)."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT record FROM takeflow_tasks WHERE task_id = %s AND status = 'queued' "
                "FOR UPDATE",
                (task_id,),
            ).fetchone()
            if row is None:
                return None
            changes.setdefault("started_at", time.time())
            record = replace(_load(row[0]), **{**changes, "status": TaskStatus.RUNNING})
            epoch_row = conn.execute(
                "UPDATE takeflow_tasks SET status = 'running', record = %s, owner = %s, "
                "epoch = epoch + 1, lease_until = now() + make_interval(secs => %s), "
                "cancel_requested = FALSE, job_id = %s WHERE task_id = %s RETURNING epoch",
                (_dump(record), worker, lease_s, getattr(self._bound, "job_id", None), task_id),
            ).fetchone()
            assert epoch_row is not None
            claim = Claim(task_id, worker, int(epoch_row[0]))
            # held (heartbeat, fence) once committed: before that, another connection sees the
            # task still queued and a heartbeat would take the claim for lost
            self.after_commit(lambda: self._hold(claim))
        return record

    @contextlib.contextmanager
    def serving(self, job_id: int | None) -> Iterator[None]:
        """Claims made by this thread inside the block record the queue job ``job_id``."""
        self._bound.job_id = job_id
        try:
            yield
        finally:
            self._bound.job_id = None

    def _hold(self, claim: Claim) -> None:
        self._claims[claim.task_id] = claim
        self.lost.discard(claim.task_id)

    def release(self, task_id: str) -> None:
        """Forget this process's claim (after the task's terminal event)."""
        self._claims.pop(task_id, None)
        self.lost.discard(task_id)

    def claims(self) -> list[Claim]:
        return list(self._claims.values())

    def _held(self, task_id: str) -> Claim | None:
        """This process's claim on ``task_id`` (``None``: it never claimed it). A task whose
        claim it lost stays fenced until released: every write for it raises."""
        if task_id in self.lost:
            raise LeaseLostError(
                f"this worker lost its lease on task {task_id}; write refused", task_id=task_id
            )
        return self._claims.get(task_id)

    def _check_fence(self, conn: Connection[Any], task_id: str) -> None:
        claim = self._held(task_id)
        if claim is None:
            return
        row = conn.execute(
            "SELECT owner, epoch FROM takeflow_tasks WHERE task_id = %s FOR UPDATE", (task_id,)
        ).fetchone()
        if row is None or row[0] != claim.owner or int(row[1]) != claim.epoch:
            self._lose(claim)

    def _locked(self, conn: Connection[Any], task_id: str) -> TaskRecord | None:
        """The task's record under its row lock (``None``: no such task), after the fence
        check of a claimed task: one round trip for both."""
        row = conn.execute(
            "SELECT record, owner, epoch FROM takeflow_tasks WHERE task_id = %s FOR UPDATE",
            (task_id,),
        ).fetchone()
        claim = self._held(task_id)
        if claim is not None and (row is None or row[1] != claim.owner or row[2] != claim.epoch):
            self._lose(claim)
        return _load(row[0]) if row is not None else None

    def check_fence(self, task_id: str) -> None:
        """Raise ``LeaseLostError`` if this process no longer owns ``task_id`` (no-op when it
        never claimed it). Call inside ``transaction()`` to hold the task row until commit."""
        with self.transaction() as conn:
            self._check_fence(conn, task_id)

    def heartbeat(self, owner: str, lease_s: float) -> dict[str, bool]:
        """Extend the lease of every task this process holds; returns ``{task_id: cancel
        requested}`` for those still held. Claims found lost are dropped (fenced) and their
        task ids added to ``lost``."""
        held = [c for c in self._claims.values() if c.owner == owner]
        if not held:
            return {}
        with self.pool.connection() as conn:
            rows = conn.execute(
                "UPDATE takeflow_tasks t SET lease_until = now() + make_interval(secs => %s) "
                "FROM unnest(%s::text[], %s::int[]) AS held(task_id, epoch) "
                "WHERE t.task_id = held.task_id AND t.epoch = held.epoch AND t.owner = %s "
                "AND t.status = 'running' RETURNING t.task_id, t.cancel_requested",
                (lease_s, [c.task_id for c in held], [c.epoch for c in held], owner),
            ).fetchall()
        alive = {r[0]: bool(r[1]) for r in rows}
        for claim in held:
            if claim.task_id not in alive and self._claims.get(claim.task_id) == claim:
                self._claims.pop(claim.task_id, None)
                self.lost.add(claim.task_id)
        return alive

    def request_cancel(self, task_id: str) -> bool:
        """Ask the owner of a running task to stop (it polls this flag with its heartbeat)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE takeflow_tasks SET cancel_requested = TRUE "
                "WHERE task_id = %s AND status = 'running' RETURNING task_id",
                (task_id,),
            ).fetchone()
        return row is not None

    def expired(self) -> list[TaskRecord]:
        """Running tasks whose lease ran out (their worker died or stalled)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT record FROM takeflow_tasks WHERE status = 'running' "
                "AND lease_until < now() ORDER BY created_at"
            ).fetchall()
        return [_load(r[0]) for r in rows]

    def expire(self, task_id: str, error: dict[str, Any]) -> TaskRecord | None:
        """Fence out the owner of an expired task and fail it: epoch + 1, status failed with
        ``error``. ``None`` if the lease was renewed meanwhile (or it ended). Call inside
        ``transaction()`` together with the ``task.failed`` append."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT record FROM takeflow_tasks WHERE task_id = %s AND status = 'running' "
                "AND lease_until < now() FOR UPDATE",
                (task_id,),
            ).fetchone()
            if row is None:
                return None
            record = replace(
                _load(row[0]), status=TaskStatus.FAILED, finished_at=time.time(), error=error
            )
            conn.execute(
                "UPDATE takeflow_tasks SET status = 'failed', record = %s, epoch = epoch + 1, "
                "owner = NULL, lease_until = NULL WHERE task_id = %s",
                (_dump(record), task_id),
            )
        return record

    def fail_expired(self, task_id: str, data: dict[str, Any]) -> TaskEvent | None:
        """``expire`` and append ``task.failed`` in one transaction; the event, or ``None``."""
        with self.transaction():
            record = self.expire(task_id, dict(data))
            if record is None:
                return None
            return self.append("task.failed", task_id, record.project_id, dict(data))

    def register_worker(self, worker_id: str, queues: Iterable[str], host: str, pid: int) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO takeflow_workers (worker_id, queues, host, pid) VALUES "
                "(%s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE SET heartbeat = now()",
                (worker_id, ",".join(queues), host, pid),
            )

    def delete_task(self, task_id: str) -> None:
        """Remove a task's record and every event of it (internal tasks such as the
        ``/health`` probe, which must leave nothing behind; user tasks are never deleted)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM takeflow_events WHERE task_id = %s", (task_id,))
            conn.execute("DELETE FROM takeflow_task_seq WHERE task_id = %s", (task_id,))
            conn.execute("DELETE FROM takeflow_tasks WHERE task_id = %s", (task_id,))

    def worker_heartbeat(self, worker_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE takeflow_workers SET heartbeat = now() WHERE worker_id = %s",
                (worker_id,),
            )

    # -- event log ----------------------------------------------------------------------------

    def append(
        self, type: str, task_id: str, project_id: str | None, data: dict[str, Any]
    ) -> TaskEvent:
        """One statement (one round trip; its own transaction outside ``transaction()``): the
        fence check, the clock, the task's next seq and the insert."""
        now = time.time()
        payload = json.loads(json.dumps(data, default=str))
        claim = self._held(task_id)
        params: dict[str, Any] = {
            "task": task_id,
            "type": type,
            "ts": now,
            "project": project_id,
            "data": Jsonb(payload),
        }
        if claim is not None:
            params |= {"owner": claim.owner, "epoch": claim.epoch}
        query = _APPEND_FENCED if claim is not None else _APPEND
        bound: Connection[Any] | None = getattr(self._bound, "conn", None)
        if bound is not None:
            row = bound.execute(query, params).fetchone()
        else:
            with self.pool.connection() as conn:
                row = conn.execute(query, params).fetchone()
        if row is None:  # the fence refused: another worker (or the sweeper) owns the task now
            assert claim is not None
            self._lose(claim)
        assert row is not None
        return TaskEvent(type, task_id, int(row[1]), int(row[0]), now, project_id, payload)

    def _lose(self, claim: Claim) -> None:
        self._claims.pop(claim.task_id, None)
        self.lost.add(claim.task_id)
        raise LeaseLostError(
            f"worker {claim.owner} lost its lease on task {claim.task_id}; write refused",
            task_id=claim.task_id,
        )

    def read_task(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            rows = cur.execute(
                f"SELECT {_EVENT_COLUMNS} FROM takeflow_events "
                "WHERE task_id = %s AND seq > %s ORDER BY seq",
                (task_id, after_seq),
            ).fetchall()
        return [_event(r) for r in rows]

    def read_since(
        self, after_id: int = 0, project_ids: Iterable[str] | None = None, limit: int = 10_000
    ) -> list[TaskEvent]:
        query = f"SELECT {_EVENT_COLUMNS} FROM takeflow_events WHERE id > %s"
        params: list[Any] = [after_id]
        if project_ids is not None:
            query += " AND project_id = ANY(%s)"
            params.append(list(project_ids))
        query += " ORDER BY id LIMIT %s"
        params.append(limit)
        with self.pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [_event(r) for r in rows]

    def last_seq(self, task_id: str) -> int | None:
        """The sequence number of the task's last event (None: no event)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT MAX(seq) FROM takeflow_events WHERE task_id = %s", (task_id,)
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def last_id(self) -> int:
        """The highest committed event id (the clock row is updated in the same commits)."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT last_id FROM takeflow_event_clock").fetchone()
        return int(row[0]) if row else 0

    # -- task records ---------------------------------------------------------------------------

    def save(self, record: TaskRecord, queue: str | None = None) -> None:
        with self.transaction() as conn:
            self._check_fence(conn, record.task_id)
            conn.execute(
                "INSERT INTO takeflow_tasks (task_id, status, batch_id, created_at, record, queue) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (task_id) DO UPDATE SET "
                "status = EXCLUDED.status, batch_id = EXCLUDED.batch_id, record = EXCLUDED.record",
                (
                    record.task_id,
                    record.status.value,
                    record.batch_id,
                    record.created_at,
                    _dump(record),
                    queue,
                ),
            )

    def get(self, task_id: str) -> TaskRecord | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT record FROM takeflow_tasks WHERE task_id = %s", (task_id,)
            ).fetchone()
        return _load(row[0]) if row else None

    def update(self, task_id: str, **changes: Any) -> TaskRecord:
        """Change fields of a task under its row lock (no lost update between processes)."""
        with self.transaction() as conn:
            current = self._locked(conn, task_id)
            if current is None:
                raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
            record = replace(current, **changes)
            conn.execute(
                "UPDATE takeflow_tasks SET status = %s, record = %s WHERE task_id = %s",
                (record.status.value, _dump(record), task_id),
            )
        return record

    def transition(
        self, task_id: str, expected: Collection[TaskStatus], **changes: Any
    ) -> TaskRecord | None:
        """Apply ``changes`` only while the status is one of ``expected`` (under the row lock);
        ``None`` otherwise. In a worker (``claim_as``), ``queued -> running`` is a claim."""
        claimant = self._claimant
        if (
            claimant is not None
            and changes.get("status") == TaskStatus.RUNNING
            and TaskStatus.QUEUED in expected
        ):
            return self.claim(task_id, claimant[0], claimant[1], **changes)
        with self.transaction() as conn:
            current = self._locked(conn, task_id)
            if current is None or current.status not in expected:
                return None
            record = replace(current, **changes)
            conn.execute(
                "UPDATE takeflow_tasks SET status = %s, record = %s WHERE task_id = %s",
                (record.status.value, _dump(record), task_id),
            )
        return record

    def query(self, query: TaskQuery) -> list[TaskRecord]:
        """Records matching ``query``, newest first (served by ``takeflow_tasks_recent`` or,
        with a project filter, ``takeflow_tasks_project_recent``)."""
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        if query.projects is not None or query.projectless_of is not None:
            clause = "record->>'project_id' IS NOT NULL"
            if query.projects is not None:
                clause = "record->>'project_id' = ANY(%s)"
                params.append(sorted(query.projects))
            if query.projectless_of is not None:
                clause = f"({clause} OR (record->>'project_id' IS NULL AND record->>'user' = %s))"
                params.append(query.projectless_of)
            where.append(clause)
        for value, column in (
            (query.shot, "record->>'shot'"),
            (query.user, "record->>'user'"),
            (query.batch_id, "batch_id"),
            (query.template_id, "record->'metadata'->>'template_id'"),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.statuses is not None:
            where.append("status = ANY(%s)")
            params.append(sorted(s.value for s in query.statuses))
        if query.since is not None:
            where.append("created_at >= %s")
            params.append(query.since)
        if query.before is not None:
            where.append("(created_at, task_id) < (%s, %s)")
            params += list(query.before)
        sql = (
            f"SELECT record FROM takeflow_tasks WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, task_id DESC LIMIT %s"
        )
        with self.pool.connection() as conn:
            rows = conn.execute(sql, [*params, query.limit]).fetchall()
        return [_load(r[0]) for r in rows]

    def list(
        self, status: TaskStatus | None = None, batch_id: str | None = None
    ) -> list[TaskRecord]:
        query, params = "SELECT record FROM takeflow_tasks WHERE TRUE", []
        if status is not None:
            query += " AND status = %s"
            params.append(status.value)
        if batch_id is not None:
            query += " AND batch_id = %s"
            params.append(batch_id)
        with self.pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY created_at", params).fetchall()
        return [_load(r[0]) for r in rows]
