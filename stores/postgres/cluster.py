"""What the processes of a distributed Takeflow ask of each other through PostgreSQL: gauges over
every process (queued and running tasks, live workers), the task a Dagster run became, and the
advisory locks that make one step at a time across processes (the intake, each project's git)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from psycopg import Connection

from graph_runtime.tasks import TaskRecord
from stores.postgres.state import PostgresState
from stores.postgres.turns import INTAKE_LOCK


class ClusterStore:
    """Cluster-wide reads and locks over one ``PostgresState``."""

    def __init__(self, state: PostgresState) -> None:
        self.state = state

    def _scalar(self, query: str, params: tuple[Any, ...] = ()) -> int:
        with self.state.pool.connection() as conn:
            found = conn.execute(query, params).fetchone()
        return int(found[0]) if found else 0

    # -- gauges ------------------------------------------------------------------------------

    def count(self, status: str) -> int:
        """Tasks in ``status`` across every process."""
        return self._scalar("SELECT count(*) FROM takeflow_tasks WHERE status = %s", (status,))

    def queued_in(self, project_id: str) -> int:
        return self._scalar(
            "SELECT count(*) FROM takeflow_tasks "
            "WHERE status = 'queued' AND record->>'project_id' = %s",
            (project_id,),
        )

    def workers_total(self) -> int:
        return self._scalar("SELECT count(*) FROM takeflow_workers")

    def workers_alive(self, lease_s: float) -> int:
        """Workers whose heartbeat is younger than a lease."""
        return self._scalar(
            "SELECT count(*) FROM takeflow_workers "
            "WHERE heartbeat > now() - make_interval(secs => %s)",
            (float(lease_s),),
        )

    # -- Dagster runs ------------------------------------------------------------------------

    def task_of_run(self, run_id: str) -> TaskRecord | None:
        """The newest task that executes Dagster run ``run_id``."""
        with self.state.pool.connection() as conn:
            row = conn.execute(
                "SELECT task_id FROM takeflow_tasks WHERE record->>'dagster_run_id' = %s "
                "ORDER BY created_at DESC LIMIT 1",
                (run_id,),
            ).fetchone()
        return self.state.get(row[0]) if row else None

    def lease_holder(self, task_id: str) -> str | None:
        """The worker holding a live lease on ``task_id`` (None: no live lease)."""
        with self.state.pool.connection() as conn:
            row = conn.execute(
                "SELECT owner FROM takeflow_tasks WHERE task_id = %s AND lease_until > now()",
                (task_id,),
            ).fetchone()
        return str(row[0]) if row and row[0] else None

    # -- locks -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def intake(self) -> Iterator[Connection[Any]]:
        """One transaction holding the intake lock: limit checks, turns and enqueues of every
        replica in turn (the limits hold across replicas)."""
        with self.state.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (INTAKE_LOCK,))
            yield conn

    @contextlib.contextmanager
    def git_writer(self, project_id: str) -> Iterator[None]:
        """One git writer per project across processes (commits never meet on
        ``.git/index.lock``)."""
        with self.state.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"git:{project_id}",))
            yield
