"""Run a compiled job in this thread, on the persistent instance, with a code origin.

``JobDefinition.execute_in_process`` records runs without a code origin, so the Dagster UI
cannot re-execute them. This does what it does (same Dagster internals) but gives the run the
origin of Takeflow's code location (``workspace.yaml``: location ``takeflow``), so a run of a
saved canvas can be re-executed from the UI like any run the daemon launched.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from dagster import DagsterInstance, JobDefinition
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    execute_run,
    job_execution_iterator,
)
from dagster._core.execution.context_creation_job import (
    PlanOrchestrationContextManager,
    orchestration_context_event_generator,
)
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from dagster_defs.location import LOCATION_ATTRIBUTE, LOCATION_MODULE, LOCATION_NAME, REPO_ROOT

REPOSITORY_NAME = "__repository__"


def code_origin(job_name: str) -> RemoteJobOrigin:
    """Where the Dagster UI finds ``job_name`` to re-execute a run of it."""
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=ManagedGrpcPythonEnvCodeLocationOrigin(
                loadable_target_origin=LoadableTargetOrigin(
                    executable_path=sys.executable,
                    module_name=LOCATION_MODULE,
                    attribute=LOCATION_ATTRIBUTE,
                    working_directory=str(REPO_ROOT),
                ),
                location_name=LOCATION_NAME,
            ),
            repository_name=REPOSITORY_NAME,
        ),
        job_name=job_name,
    )


def execute_with_origin(
    job: JobDefinition,
    run_config: Mapping[str, Any],
    instance: DagsterInstance,
    run_id: str,
    tags: Mapping[str, str],
) -> bool:
    """Execute ``job`` in process as run ``run_id``; True when the run succeeded."""
    wrapped = InMemoryJob(job)
    plan = create_execution_plan(wrapped, run_config=run_config, instance_ref=instance.get_ref())
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        tags={**job.run_tags, **tags},
        run_id=run_id,
        execution_plan=plan,
        remote_job_origin=code_origin(job.name),
    )
    events = ExecuteRunWithPlanIterable(
        execution_plan=plan,
        iterator=job_execution_iterator,
        execution_context_manager=PlanOrchestrationContextManager(
            context_event_generator=orchestration_context_event_generator,
            job=wrapped,
            execution_plan=plan,
            dagster_run=run,
            instance=instance,
            run_config=run_config,
            executor_defs=None,
            output_capture=None,
            raise_on_error=False,
        ),
    )
    for _ in events:
        pass
    finished = instance.get_run_by_id(run.run_id)
    return finished is not None and finished.is_success


def execute_existing_run(job: JobDefinition, run: DagsterRun, instance: DagsterInstance) -> bool:
    """Execute a run Dagster created (UI launch, schedule tick) in this thread, with its own run
    config and step selection; True when it succeeded (distributed mode's queued launches)."""
    return execute_run(InMemoryJob(job), run, instance).success
