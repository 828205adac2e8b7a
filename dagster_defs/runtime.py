"""Wires one Takeflow home into a working runtime: registry, projects, state, Dagster, runner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from dagster_defs.admission import Admission
from dagster_defs.backend import DEFAULT_PUBLIC_URL
from dagster_defs.compiler import JobCompiler
from dagster_defs.deployment import ClusterParts
from dagster_defs.instance import open_runner_instance
from dagster_defs.intake import QueueLimits
from dagster_defs.lifecycle import TaskState
from dagster_defs.runner import TaskRunner
from dagster_defs.services import OpenServices, open_services
from graph_runtime.events import EventSource
from graph_runtime.registry import TemplateRegistry
from nodes import discover_templates
from nodes.images import configure_image_limits
from stores.graph_shapes import GraphShapes
from stores.home import TakeflowHome
from stores.node_cache import DiskNodeCache
from stores.projects import ProjectCatalog
from stores.sqlite_state import SqliteState


@dataclass
class Runtime:
    home: TakeflowHome
    registry: TemplateRegistry
    projects: ProjectCatalog
    state: TaskState
    instance: DagsterInstance
    runner: TaskRunner
    services: OpenServices
    # distributed mode: every process's events, for the server's live hubs (None: embedded)
    feed: EventSource | None = None
    # distributed mode: settings, coordination, the queue worker (None: embedded)
    cluster: ClusterParts | None = None

    @property
    def events(self) -> EventSource:
        """Every stored event once, in order, for live hubs (Takeflow's and ComfyUI's): the
        runner's bus embedded, the cross-process feed distributed (``start`` before use)."""
        return self.feed if self.feed is not None else self.runner.bus

    @property
    def admission(self) -> Admission:
        return self.runner.admission

    @property
    def compiler(self) -> JobCompiler:
        return self.runner.compiler

    def close(self, grace_s: float | None = None) -> None:
        """Stop the runner (running tasks get ``grace_s``, default ``runner.shutdown_grace_s``
        of the home's config, to finish), then release the state and the instance."""
        self.runner.close(grace_s)
        self.events.stop()
        if self.cluster is not None:
            self.cluster.close()
        self.services.close()
        self.state.close()
        self.instance.dispose()


def runner_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The runner settings of a home's ``config.json`` (both modes): template time and memory
    limits (``runner``), shutdown grace, and the queue limits (``admission``)."""
    limits = config.get("runner", {})
    memory_gb = limits.get("memory_limit_gb")
    return {
        "node_timeout_s": float(limits.get("node_timeout_s", 3600.0)),
        "memory_limit_mb": float(memory_gb) * 1024 if memory_gb else None,
        "shutdown_grace_s": float(limits.get("shutdown_grace_s", 10.0)),
        "queue_limits": QueueLimits.from_config(config),
        "public_url": str(config.get("public_url") or DEFAULT_PUBLIC_URL),
    }


def open_runtime(
    home: str | Path | None = None,
    workers: int = 2,
    services: Mapping[str, Any] | None = None,
    registry: TemplateRegistry | None = None,
) -> Runtime:
    """Open (creating if needed) the Takeflow home and start its runner."""
    takeflow_home = TakeflowHome.resolve(home)
    configure_image_limits(takeflow_home.config())  # images.max_pixels, for every decode
    opened = open_services(takeflow_home, services)  # packs' factories; no torch until first use
    registry = registry or discover_templates()
    # -- distributed mode (TAKEFLOW_DATABASE_URL / config.json "distributed"): see docs/deploy.md
    from dagster_defs.settings import ClusterSettings

    cluster = ClusterSettings.resolve(takeflow_home.config())
    if cluster is not None:
        from dagster_defs.cluster import open_cluster_parts

        options = runner_options(takeflow_home.config())
        parts = open_cluster_parts(takeflow_home, cluster, registry, opened.services, options)
        return Runtime(
            takeflow_home,
            registry,
            parts.projects,
            parts.state,
            parts.instance,
            parts.runner,
            opened,
            feed=parts.feed,
            cluster=parts.cluster,
        )
    # -- embedded mode (default)
    projects = ProjectCatalog(takeflow_home.path)
    state = SqliteState(takeflow_home.state_db)
    instance = open_runner_instance(takeflow_home.dagster_home)
    runner = TaskRunner(
        registry,
        projects,
        state,
        instance,
        workers=workers,
        services=opened.services,
        node_cache=DiskNodeCache(takeflow_home.cache_dir / "nodes"),
        shapes=GraphShapes(takeflow_home.jobs_dir),
        **runner_options(takeflow_home.config()),
    )
    return Runtime(takeflow_home, registry, projects, state, instance, runner, opened)
