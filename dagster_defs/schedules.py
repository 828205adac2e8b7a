"""Saved schedules: a canvas graph run on a cron, as a Dagster ``ScheduleDefinition``.

A saved canvas (``02_Source_Creative/<name>.json``, or ``02_Source_Creative/canvases/
<name>.takeflow.json`` as the server saves them) may have a sidecar ``<name>.schedules.json`` in
the same folder (the canvas document itself forbids unknown fields)::

    {"format": "takeflow.schedules/v1",
     "schedules": [
       {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris",
        "shot": "ch01/sc01/sh020", "inputs": {"grain.seed": 7}, "user": "scheduler"}
     ]}

``inputs`` overrides typed-in values (``node_id.input``, as in sweeps); ``shot`` is where the
takes go (default: the graph's context). ``dagster-daemon`` runs each tick; the run is adopted by
the runner like any run Dagster starts itself, so its outputs become a take and a git commit.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dagster import DefaultScheduleStatus, JobDefinition, ScheduleDefinition
from dagster._utils.schedules import is_valid_cron_string
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dagster_defs.compiler import run_config
from graph_runtime.canvas import CanvasGraph, validate_shot
from graph_runtime.errors import TakeflowError
from graph_runtime.sweeps import set_inputs
from graph_runtime.validation import ExecutionPlan

SCHEDULES_SUFFIX = ".schedules.json"
_NAME_RE = re.compile(r"[^A-Za-z0-9_]")


class ScheduleError(TakeflowError):
    """A saved schedule that cannot be used: bad cron, time zone, shot or input override."""

    code = "invalid_schedule"
    http_status = 422


class SavedSchedule(BaseModel):
    """One schedule of a saved graph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    cron: str
    timezone: str = "UTC"
    shot: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    user: str = "scheduler"
    enabled: bool = True
    description: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not is_valid_cron_string(v):
            raise ValueError(f"{v!r} is not a cron string such as '0 2 * * *'")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone such as 'Europe/Paris'") from None
        return v

    @field_validator("shot")
    @classmethod
    def _shot(cls, v: str | None) -> str | None:
        return validate_shot(v) if v is not None else None


class ScheduleFile(BaseModel):
    """The sidecar document next to a saved canvas."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["takeflow.schedules/v1"] = "takeflow.schedules/v1"
    schedules: tuple[SavedSchedule, ...] = ()


CANVAS_SUFFIXES = (".takeflow.json", ".json")


def canvas_name(canvas_path: Path) -> str:
    """``poster.json`` or ``poster.takeflow.json`` (as the server saves canvases) -> ``poster``."""
    name = canvas_path.name
    for suffix in CANVAS_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return canvas_path.stem


def schedules_path(canvas_path: Path) -> Path:
    """``poster.json`` / ``poster.takeflow.json`` -> ``poster.schedules.json`` beside it."""
    return canvas_path.with_name(canvas_name(canvas_path) + SCHEDULES_SUFFIX)


def load_schedules(canvas_path: Path) -> tuple[SavedSchedule, ...]:
    """The schedules saved next to a canvas (none when there is no sidecar)."""
    path = schedules_path(canvas_path)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return ()
    try:
        return ScheduleFile.model_validate_json(raw).schedules
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ScheduleError(f"{path.name} is invalid: {problems}", path=str(path)) from None


def schedule_name(project_id: str, canvas: str, name: str) -> str:
    """A Dagster-safe, location-unique schedule name."""
    return _NAME_RE.sub("_", f"{project_id}__{canvas}__{name}")


def schedule_tags(
    saved: SavedSchedule, project_id: str, canvas: str, graph: CanvasGraph
) -> dict[str, str]:
    """Tags every run of the schedule carries; the runner reads project, shot and user."""
    return {
        "takeflow/project": project_id,
        "takeflow/shot": saved.shot or graph.context.shot,
        "takeflow/user": saved.user,
        "takeflow/graph": graph.name,
        "takeflow/canvas": canvas,
        "takeflow/schedule": saved.name,
    }


def build_schedule(
    saved: SavedSchedule,
    *,
    project_id: str,
    canvas: str,
    graph: CanvasGraph,
    job: JobDefinition,
    plan_for: Any,
) -> ScheduleDefinition:
    """The Dagster schedule of one saved schedule; ``plan_for(graph)`` validates the overrides."""
    try:
        overridden = set_inputs(graph, saved.inputs)
    except TakeflowError as exc:
        raise ScheduleError(
            f"schedule '{saved.name}' of {canvas}: {exc.message}", schedule=saved.name
        ) from exc
    plan: ExecutionPlan = plan_for(overridden)
    config: Mapping[str, Any] = run_config(plan)
    return ScheduleDefinition(
        name=schedule_name(project_id, canvas, saved.name),
        cron_schedule=saved.cron,
        execution_timezone=saved.timezone,
        job=job,
        run_config=dict(config),
        tags=schedule_tags(saved, project_id, canvas, graph),
        description=saved.description
        or f"Runs {canvas} of project {project_id} into {saved.shot or graph.context.shot}",
        default_status=DefaultScheduleStatus.RUNNING
        if saved.enabled
        else DefaultScheduleStatus.STOPPED,
    )
