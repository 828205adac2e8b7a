"""One contract for the deployment parts (``dagster_defs.deployment``), run against the
embedded parts (``WorkerPool`` + ``LocalCoordination`` on SQLite, the in-memory side) and the
distributed ones (``JobQueuePool`` + ``ClusterCoordination`` on a real PostgreSQL): the same
``TaskRunner`` composed with either queues, counts, refuses, cancels, waits and commits alike.
No worker runs here, so every task stays where the runner put it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster_defs.deployment import Deployment, LocalCoordination
from dagster_defs.instance import open_runner_instance
from dagster_defs.intake import QueueFullError, QueueLimits
from dagster_defs.runner import TaskRunner
from dagster_defs.workers import WorkerPool
from graph_runtime.canvas import single_node_graph
from graph_runtime.tasks import TaskStatus
from nodes import discover_templates
from stores.projects import ProjectCatalog
from stores.sqlite_state import SqliteState


def _runner(request: pytest.FixtureRequest, tmp_path: Path, limits: QueueLimits) -> TaskRunner:
    registry = discover_templates()
    projects = ProjectCatalog(tmp_path / "home")
    instance = open_runner_instance(tmp_path / "dagster")
    if request.param == "embedded":
        state = SqliteState(tmp_path / "state.db")
        deployment = Deployment(WorkerPool(0), LocalCoordination())
    else:
        from dagster_defs.distributed import ClusterCoordination, JobQueuePool
        from dagster_defs.settings import ClusterSettings
        from stores.postgres.jobs import JobQueue
        from stores.postgres.state import PostgresState

        url = request.getfixturevalue("pg_url")
        state = PostgresState(url, pool_size=4)  # type: ignore[assignment]
        jobs = JobQueue(url)
        with state.pool.connection() as conn:  # type: ignore[attr-defined]
            jobs.ensure_schema(conn)
        settings = ClusterSettings(url)
        deployment = Deployment(JobQueuePool(state, jobs), ClusterCoordination(state, settings))  # type: ignore[arg-type]
    runner = TaskRunner(
        registry, projects, state, instance, workers=0, queue_limits=limits, deployment=deployment
    )
    runner.projects.create("film", "Film")
    return runner


@pytest.fixture(params=["embedded", "distributed"])
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskRunner]:
    made = _runner(request, tmp_path, QueueLimits(max_queued=4, max_queued_per_user=3))
    try:
        yield made
    finally:
        made.close(grace_s=0)
        made.state.close()  # type: ignore[attr-defined]
        made.instance.dispose()


def _submit(runner: TaskRunner, user: str, priority: int = 0) -> str:
    graph = single_node_graph("number", {"value": 1})
    record = runner.submit(graph, project_id="film", user=user, priority=priority)
    return record.task_id


def test_submitted_tasks_wait_counted_and_in_fair_order(runner: TaskRunner) -> None:
    a1, a2, b1 = _submit(runner, "ana"), _submit(runner, "ana"), _submit(runner, "ben")
    queue = runner.pool
    assert (queue.depth(), runner.queue_depth()) == (3, 3)
    assert (queue.queued_by("ana"), queue.queued_by("ben"), queue.queued_in("film")) == (2, 1, 3)
    # users take turns: ben's only task goes before ana's second
    assert queue.positions([a1, a2, b1]) == {a1: 0, b1: 1, a2: 2}
    # a newcomer waits for one task of each user's first turn, not for ana's second
    assert queue.ahead("carl", 0) == 2 and queue.ahead("carl", 5) == 0
    for task_id in (a1, a2, b1):
        events = runner.state.read_task(task_id)  # type: ignore[attr-defined]
        assert [e.type for e in events] == ["task.submitted"]
        assert runner.get(task_id).status == TaskStatus.QUEUED
    assert (runner.running(), runner.workers_alive()) == (0, 0)


def test_over_a_limit_nothing_is_stored_or_published(runner: TaskRunner) -> None:
    for _ in range(3):
        _submit(runner, "ana")
    stored = len(runner.state.list())
    with pytest.raises(QueueFullError) as refused:
        _submit(runner, "ana")  # ana's limit is 3
    assert refused.value.code == "queue_full" and refused.value.details["limit"] == "user"
    _submit(runner, "ben")  # the overall limit (4) is not reached yet
    with pytest.raises(QueueFullError) as overall:
        _submit(runner, "carl")
    assert overall.value.details["limit"] == "overall" and overall.value.retry_after >= 1
    assert len(runner.state.list()) == stored + 1
    assert runner.pool.depth() == 4


def test_cancel_of_a_waiting_task_takes_it_out_once(runner: TaskRunner) -> None:
    first, second = _submit(runner, "ana"), _submit(runner, "ana")
    cancelled = runner.cancel(first)
    assert cancelled.status == TaskStatus.CANCELLED
    assert runner.cancel(first).status == TaskStatus.CANCELLED  # again: nothing more happens
    events = [e.type for e in runner.state.read_task(first)]  # type: ignore[attr-defined]
    assert events == ["task.submitted", "task.cancelled"]
    assert runner.pool.depth() == 1 and runner.pool.positions([first, second]) == {second: 0}


def test_a_waiter_sees_an_end_made_elsewhere(runner: TaskRunner) -> None:
    task_id = _submit(runner, "ana")
    timer = threading.Timer(0.3, runner.lifecycle.cancel_queued, args=(task_id,))
    started = time.monotonic()
    timer.start()
    assert runner.wait(task_id, timeout=10).status == TaskStatus.CANCELLED
    assert time.monotonic() - started < 5


def test_commits_from_many_threads_land_one_writer_at_a_time(runner: TaskRunner) -> None:
    project = runner.projects.get("film")
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            path = f"01_Assets/notes/n{i}.txt"
            project.write_file(path, f"note {i}".encode())
            assert runner.histories.commit(project, [path], f"note {i}") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and runner.git_error is None
    log = subprocess.run(
        ["git", "log", "--format=%B"], cwd=project.path, capture_output=True, text=True, check=True
    ).stdout
    assert all(f"note {i}" in log for i in range(4)), log
    tracked = subprocess.run(
        ["git", "ls-files", "01_Assets/notes"], cwd=project.path, capture_output=True, text=True
    ).stdout.split()
    assert sorted(tracked) == [f"01_Assets/notes/n{i}.txt" for i in range(4)]
