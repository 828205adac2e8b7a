"""Opens a Takeflow home in distributed mode: PostgreSQL state, queue and Dagster instance,
Redis fan-out. ``open_runtime`` calls this when ``ClusterSettings.resolve`` finds a database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec

from dagster_defs.distributed import DistributedRunner
from dagster_defs.instance import open_runner_instance
from dagster_defs.queue import JobQueue
from dagster_defs.runtime import runner_options
from dagster_defs.settings import ClusterSettings, worker_identity
from graph_runtime.registry import TemplateRegistry
from stores.graph_shapes import GraphShapes
from stores.home import TakeflowHome
from stores.node_cache import DiskNodeCache
from stores.postgres.state import PostgresState
from stores.postgres.takes import PostgresTakeStore
from stores.projects import ProjectCatalog
from stores.redis_fanout import EventFeed, RedisPublisher


def open_cluster_parts(
    home: TakeflowHome,
    settings: ClusterSettings,
    registry: TemplateRegistry,
    services: Mapping[str, Any],
    pool_size: int = 10,
) -> dict[str, Any]:
    """The parts of a distributed runtime (``dagster_defs.runtime.Runtime`` fields)."""
    state = PostgresState(settings.database_url, pool_size=pool_size)
    jobs = JobQueue(settings.database_url)
    with state.pool.connection() as conn:
        jobs.ensure_schema(conn)
    worker_id = worker_identity()

    def take_store(project_id: str, root: str, fs: fsspec.AbstractFileSystem) -> PostgresTakeStore:
        return PostgresTakeStore(project_id, root, fs, state, worker_id)

    projects = ProjectCatalog(home.path, take_store=take_store)
    instance = open_runner_instance(home.dagster_home, settings.database_url)
    runner = DistributedRunner(
        registry,
        projects,
        state,
        instance,
        services=services,
        node_cache=DiskNodeCache(home.cache_dir / "nodes"),
        shapes=GraphShapes(home.jobs_dir),
        **runner_options(home.config()),
        settings=settings,
        jobs=jobs,
        worker_id=worker_id,
    )
    runner.home = home
    if settings.redis_url:
        runner.add_sink(RedisPublisher(settings.redis_url, state))
    return {
        "projects": projects,
        "state": state,
        "instance": instance,
        "runner": runner,
        "feed": EventFeed(state, settings.redis_url),
    }
