"""Opens a Takeflow home in distributed mode: PostgreSQL state, queue and Dagster instance,
Redis fan-out. ``open_runtime`` calls this when ``ClusterSettings.resolve`` finds a database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from dagster import DagsterInstance

from dagster_defs.deployment import ClusterParts, Deployment
from dagster_defs.distributed import ClusterCoordination, JobQueuePool, QueueWorker
from dagster_defs.instance import open_runner_instance
from dagster_defs.runner import TaskRunner
from dagster_defs.settings import ClusterSettings, worker_identity
from graph_runtime.registry import TemplateRegistry
from stores.graph_shapes import GraphShapes
from stores.home import TakeflowHome
from stores.node_cache import DiskNodeCache
from stores.postgres.jobs import JobQueue
from stores.postgres.state import PostgresState
from stores.postgres.takes import PostgresTakeStore
from stores.projects import ProjectCatalog
from stores.redis_fanout import EventFeed, RedisPublisher


@dataclass
class OpenedCluster:
    projects: ProjectCatalog
    state: PostgresState
    instance: DagsterInstance
    runner: TaskRunner
    feed: EventFeed
    cluster: ClusterParts


def open_cluster_parts(
    home: TakeflowHome,
    settings: ClusterSettings,
    registry: TemplateRegistry,
    services: Mapping[str, Any],
    options: Mapping[str, Any],
    pool_size: int = 10,
) -> OpenedCluster:
    """The parts of a distributed runtime; ``options`` are the runner's settings of the home."""
    state = PostgresState(settings.database_url, pool_size=pool_size)
    jobs = JobQueue(settings.database_url)
    with state.pool.connection() as conn:
        jobs.ensure_schema(conn)
    worker_id = worker_identity()

    def take_store(project_id: str, root: str, fs: fsspec.AbstractFileSystem) -> PostgresTakeStore:
        return PostgresTakeStore(project_id, root, fs, state, worker_id)

    projects = ProjectCatalog(home.path, take_store=take_store)
    instance = open_runner_instance(home.dagster_home, settings.database_url)
    coordination = ClusterCoordination(state, settings)
    runner = TaskRunner(
        registry,
        projects,
        state,
        instance,
        workers=0,  # execution is driven by the job queue (``QueueWorker``, server/worker.py)
        services=services,
        node_cache=DiskNodeCache(home.cache_dir / "nodes"),
        shapes=GraphShapes(home.jobs_dir),
        deployment=Deployment(JobQueuePool(state, jobs), coordination),
        **options,
    )
    if settings.redis_url:
        runner.add_sink(RedisPublisher(settings.redis_url, state))
    worker = QueueWorker(runner, state, jobs, settings, worker_id, home)
    return OpenedCluster(
        projects,
        state,
        instance,
        runner,
        EventFeed(state, settings.redis_url),
        ClusterParts(settings, coordination, worker, jobs.close),
    )
