"""The code location: every saved canvas of every project as a Dagster job, its schedules, and
asset specs that draw lineage from uploaded assets through node outputs to the takes.

Built here from a ``DefinitionsSource`` (a ``Runtime``, or a ``LocationSource``); the code
location's entry point, which opens its own runtime for the runs it executes, is
``dagster_defs.code_location`` (so this module imports no runtime: the runner builds a saved
canvas's job from here too).

- A saved canvas is ``<project>/02_Source_Creative/<name>.json`` or, as the server saves
  them, ``02_Source_Creative/canvases/<name>.takeflow.json`` (a ``takeflow.graph/v1``
  document). It becomes the job that ``compiler.job_for(plan, with_takes=True)`` builds (op
  definitions renamed per job, node names kept as aliases), so its name is the one runs
  started from the server or CLI carry (``compiler.job_name``) and those runs sit under it;
  the job's default run config holds the canvas's values, so a launch from the UI runs the
  graph as saved. Runs Dagster starts itself are adopted by the runner as tasks.
- Its schedules live in the sidecar ``<name>.schedules.json`` (see ``dagster_defs.schedules``).
- Asset keys: an uploaded asset ``["takeflow", project, "01_Assets", *id]``; a node's outputs
  ``["takeflow", project, canvas, node_id]``; a shot's take output
  ``["takeflow", project, chapter, scene, shot, output]`` (the key the runner's take
  materializations use).

A canvas that does not parse or validate is skipped with a warning, so one broken file does not
take the location down; ``load_errors`` in the location's metadata lists them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dagster import (
    AssetKey,
    AssetSpec,
    Definitions,
    GraphDefinition,
    JobDefinition,
    OpDefinition,
    ResourceDefinition,
    ScheduleDefinition,
    in_process_executor,
)
from dagster._core.definitions.dependency import IDependencyDefinition, NodeInvocation
from pydantic import ValidationError

from dagster_defs.admission import Admission
from dagster_defs.asset_keys import (
    SOURCE_DIR,
    node_asset_key,
    saved_canvas_paths,
    take_asset_key,
    uploaded_asset_key,
)
from dagster_defs.compiler import JobCompiler, job_name, run_config
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from dagster_defs.queue import queue_for
from dagster_defs.scene_lineage import cut_lineage
from dagster_defs.schedules import build_schedule, canvas_name, load_schedules
from dagster_defs.take_lineage import load_take_deps, take_lineage
from dagster_defs.take_recorder import take_output_names as recorded_output_names
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.validation import ExecutionPlan
from nodes import discover_templates
from stores.graph_shapes import GraphShapes
from stores.home import TakeflowHome
from stores.projects import ProjectCatalog

log = logging.getLogger(__name__)

_GROUP_RE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class SavedCanvas:
    """One saved canvas of a project, validated."""

    project_id: str
    name: str
    path: Path
    plan: ExecutionPlan

    @property
    def graph(self) -> CanvasGraph:
        return self.plan.graph


def take_output_names(plan: ExecutionPlan) -> dict[str, tuple[str, str]]:
    """Take output key (as in the take's asset key, ``.`` written ``__``) -> (terminal node
    id, output port); the names are the take recorder's."""
    return {k.replace(".", "__"): v for k, v in recorded_output_names(plan).items()}


def group_name(project_id: str) -> str:
    return _GROUP_RE.sub("_", f"takeflow_{project_id}")


@dataclass
class _SpecBuilder:
    """Collects asset specs, merging deps and descriptions when several canvases share a key."""

    deps: dict[AssetKey, set[AssetKey]] = field(default_factory=dict)
    info: dict[AssetKey, dict[str, Any]] = field(default_factory=dict)

    def add(self, key: AssetKey, deps: Iterable[AssetKey] = (), **info: Any) -> None:
        self.deps.setdefault(key, set()).update(deps)
        known = self.info.setdefault(key, {"used_by": []})
        for k, v in info.items():
            if k == "used_by":
                known["used_by"].extend(x for x in v if x not in known["used_by"])
            else:
                known.setdefault(k, v)

    def specs(self) -> list[AssetSpec]:
        out = []
        for key in sorted(self.deps, key=lambda k: k.to_user_string()):
            info = dict(self.info[key])
            used_by = info.pop("used_by")
            description = info.pop("description", None)
            group = info.pop("group")
            metadata = {k: v for k, v in info.items() if v is not None}
            if used_by:
                metadata["used_by"] = ", ".join(used_by)
            upstream: list[AssetKey] = sorted(self.deps[key], key=AssetKey.to_user_string)
            out.append(
                AssetSpec(
                    key,
                    deps=upstream,
                    description=description,
                    group_name=group,
                    metadata=metadata,
                )
            )
        return out


def _canvas_specs(
    canvas: SavedCanvas,
    shots: Iterable[str],
    specs: _SpecBuilder,
    project: ProjectStore | None = None,
) -> None:
    pid, plan = canvas.project_id, canvas.plan
    group = group_name(pid)
    used_by = [f"{canvas.name} ({canvas.path.name})"]
    for node in plan.nodes:
        deps = [node_asset_key(pid, canvas.name, u) for u in node.upstream]
        deps += load_take_deps(project, node)  # another shot's take read in (continuity)
        for port, value in node.literals.items():
            spec = node.template.input(port)
            if spec is not None and spec.type.value == "asset" and isinstance(value, str):
                asset = uploaded_asset_key(pid, value)
                deps.append(asset)
                specs.add(
                    asset,
                    description=f"Uploaded asset {value}",
                    group=group,
                    path=f"01_Assets/{value.removeprefix('asset://')}",
                    used_by=used_by,
                )
        specs.add(
            node_asset_key(pid, canvas.name, node.node_id),
            deps,
            description=f"Outputs of node '{node.node_id}': {node.template.name} "
            f"({node.template.ref}) in canvas {canvas.name}",
            group=group,
            template=node.template.ref,
            outputs=", ".join(o.name for o in node.template.outputs),
            used_by=used_by,
        )
    for shot in shots:
        for output, (nid, port) in take_output_names(plan).items():
            specs.add(
                take_asset_key(pid, shot, output),
                [node_asset_key(pid, canvas.name, nid)],
                description=f"Takes of shot {shot}: output '{output}' (node {nid}.{port}); each "
                "take is a materialization",
                group=group,
                shot=shot,
                takes_folder=f"03_Renders/{shot}/takes",
                used_by=used_by,
            )


def _cut_specs(project: ProjectStore, specs: _SpecBuilder) -> None:
    group = group_name(project.id)
    for cut in cut_lineage(project):
        for dep in cut.deps:
            shot = "/".join(dep.path[2:5])
            specs.add(dep, description=f"Takes of shot {shot}", group=group, shot=shot)
        specs.add(
            cut.key,
            cut.deps,
            description=f"Cuts of {cut.scene}: the active takes of its shots as one MP4; each "
            "cut take is a materialization",
            group=group,
            shot=cut.shot,
            takes_folder=f"03_Renders/{cut.shot}/takes",
        )


def _with_unique_op_names(graph: GraphDefinition) -> GraphDefinition:
    """The same graph, its op definitions renamed ``<node>__<hash of the job name>``.

    Dagster wants op definition names unique across a code location, but every compiled job
    names its ops after node ids (and has a ``takeflow_takes`` op). Each op keeps its node name as
    an alias, so run config (``ops.<node>``), step keys and re-execution of runs the runner made
    are unchanged.
    """
    suffix = hashlib.sha1(graph.name.encode()).hexdigest()[:8]
    defs_by_name = {d.name: d for d in graph.node_defs}
    renamed: dict[str, OpDefinition] = {}
    deps: dict[NodeInvocation, dict[str, IDependencyDefinition]] = {}
    for key, inputs in graph.dependencies.items():
        name, alias = (
            (key.name, key.alias or key.name) if isinstance(key, NodeInvocation) else (key, key)
        )
        op = defs_by_name[name]
        assert isinstance(op, OpDefinition)
        new_name = f"{alias}__{suffix}"
        renamed[new_name] = op.with_replaced_properties(name=new_name)
        deps[NodeInvocation(name=new_name, alias=alias)] = dict(inputs)
    return GraphDefinition(
        name=graph.name,
        node_defs=list(renamed.values()),
        dependencies=deps,
        description=graph.description,
    )


class DefinitionsSource(Protocol):
    """What the code location is built from: no runner, no workers, no open state."""

    @property
    def home(self) -> TakeflowHome: ...

    @property
    def projects(self) -> ProjectCatalog: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def compiler(self) -> JobCompiler: ...


def _location_job(source: DefinitionsSource, canvas: SavedCanvas, shared: bool) -> JobDefinition:
    """The compiler's job for a canvas, with its tags and default run config."""
    tags = {}
    if not shared:
        tags = {
            "takeflow/project": canvas.project_id,
            "takeflow/shot": canvas.graph.context.shot,
            "takeflow/canvas": canvas.name,
        }
    description = f"Takeflow canvas {canvas.name} of project {canvas.project_id}"
    if shared:
        description = (
            f"Takeflow graph '{canvas.graph.name}' (saved in several projects: add the tag "
            "takeflow/project when launching)"
        )
    return _wrapped_job(source, canvas.plan, description, tags)


def _shape_job(source: DefinitionsSource, plan: ExecutionPlan) -> JobDefinition:
    """The job of a graph shape Takeflow ran that no saved canvas has (a template task, an
    unsaved canvas, a ComfyUI prompt), so that its runs can be re-executed from the UI."""
    description = (
        f"Takeflow graph '{plan.graph.name}' as run from the API, the CLI or the ComfyUI API "
        "(not a saved canvas). Re-execute its runs; to launch it anew, add the tags "
        "takeflow/project and takeflow/shot."
    )
    return _wrapped_job(source, plan, description, {})


def _wrapped_job(
    source: DefinitionsSource, plan: ExecutionPlan, description: str, tags: dict[str, str]
) -> JobDefinition:
    """The compiler's job for ``plan`` (with takes), its ops renamed for the location, with
    its graph and queue tags plus ``tags``, and the plan's values as default run config."""
    base = source.compiler.job_for(plan, with_takes=True)
    return _with_unique_op_names(base.graph).to_job(
        name=base.name,
        description=description,
        executor_def=in_process_executor,
        logger_defs=dict(base.loggers),
        resource_defs=dict(base.resource_defs),
        tags={"takeflow/graph": plan.graph.name, "takeflow/queue": queue_for(plan), **tags},
        config=run_config(plan),
    )


def load_shapes(source: DefinitionsSource, taken: Iterable[str]) -> list[ExecutionPlan]:
    """The plans of the graph shapes Takeflow ran (``stores.graph_shapes``) that are not jobs
    already; shapes whose templates are gone or changed are left out."""
    skip = set(taken)
    plans = []
    for name, graph in GraphShapes(source.home.jobs_dir).graphs():
        if name in skip:
            continue
        try:
            plan = source.admission.validate(graph)
        except TakeflowError as exc:
            log.info("graph shape %s is not a job any more: %s", name, exc.message)
            continue
        if source.compiler.register_plan(plan) == name:
            plans.append(plan)
            skip.add(name)
    return plans


def load_canvases(source: DefinitionsSource, errors: list[str]) -> list[SavedCanvas]:
    """Every project's saved canvases that parse and validate; problems go to ``errors``."""
    canvases = []
    for project in source.projects.list():
        for path in saved_canvas_paths(project.path):
            try:
                graph = CanvasGraph.model_validate_json(path.read_text())
                plan = source.admission.validate(graph)
            except (OSError, ValidationError, TakeflowError) as exc:
                message = getattr(exc, "message", None) or str(exc).splitlines()[0]
                errors.append(f"{project.id}/{path.relative_to(project.path)}: {message}")
                log.warning("skipping canvas %s: %s", path, message)
                continue
            canvases.append(SavedCanvas(project.id, canvas_name(path), path, plan))
    return canvases


def _continuity_specs(project: ProjectStore, specs: _SpecBuilder) -> None:
    group = group_name(project.id)
    for lineage in take_lineage(project):
        for dep in lineage.deps:
            shot = "/".join(dep.path[2:5])
            specs.add(dep, description=f"Takes of shot {shot}", group=group, shot=shot)
        specs.add(
            lineage.key,
            lineage.deps,
            description=f"Takes of shot {lineage.shot}; {lineage.take_id} continues the "
            "takes upstream (load_take)",
            group=group,
            shot=lineage.shot,
            takes_folder=f"03_Renders/{lineage.shot}/takes",
        )


def _project_of(source: DefinitionsSource, project_id: str) -> ProjectStore | None:
    try:
        return source.projects.get(project_id)
    except TakeflowError:
        return None


def build_definitions(source: DefinitionsSource) -> Definitions:
    """Jobs, schedules and asset specs for every saved canvas in the source's home (a
    ``Runtime`` or the location's own ``LocationSource``)."""
    errors: list[str] = []
    canvases = load_canvases(source, errors)
    users: dict[str, set[tuple[str, str]]] = {}
    for canvas in canvases:
        name = source.compiler.register_plan(canvas.plan)
        users.setdefault(name, set()).add((canvas.project_id, canvas.graph.context.shot))

    jobs: dict[str, JobDefinition] = {}
    schedules: list[ScheduleDefinition] = []
    specs = _SpecBuilder()
    for canvas in canvases:
        name = source.compiler.register_plan(canvas.plan)
        shots = [canvas.graph.context.shot]
        if name not in jobs:
            jobs[name] = _location_job(source, canvas, shared=len(users[name]) > 1)
        try:
            saved = load_schedules(canvas.path)
            for entry in saved:
                schedules.append(
                    build_schedule(
                        entry,
                        project_id=canvas.project_id,
                        canvas=canvas.name,
                        graph=canvas.graph,
                        job=jobs[name],
                        plan_for=source.admission.validate,
                    )
                )
                if entry.shot and entry.shot not in shots:
                    shots.append(entry.shot)
        except TakeflowError as exc:
            errors.append(f"{canvas.project_id}/{SOURCE_DIR}/{canvas.path.name}: {exc.message}")
            log.warning("skipping schedules of %s: %s", canvas.path, exc.message)
        _canvas_specs(canvas, shots, specs, _project_of(source, canvas.project_id))
    for plan in load_shapes(source, jobs):
        jobs[job_name(plan)] = _shape_job(source, plan)
    for project in source.projects.list():  # assembled cuts: shot takes -> scene cut
        _cut_specs(project, specs)
        _continuity_specs(project, specs)  # shot takes -> the shot takes they continue

    return Definitions(
        jobs=list(jobs.values()),
        schedules=schedules,
        assets=specs.specs(),
        executor=in_process_executor,
        metadata={
            "takeflow_home": str(source.home.path),
            "load_errors": json.dumps(errors),
            "canvases": len(canvases),
        },
    )


@dataclass(frozen=True)
class LocationSource:
    """The code location's view of a home: projects and templates to build jobs from, and a
    compiler whose ``takeflow`` resource asks ``run_backend`` for the backend that runs a job
    executed in this process (a run Dagster launched: it is adopted as a task)."""

    home: TakeflowHome
    projects: ProjectCatalog
    admission: Admission
    compiler: JobCompiler

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        run_backend: Callable[[LocationSource], object] | None = None,
    ) -> LocationSource:
        """The source of ``home`` (default: ``$TAKEFLOW_HOME``). Without ``run_backend`` it
        builds definitions but runs none (``dagster_defs.code_location`` passes one)."""
        takeflow_home = TakeflowHome.resolve(home)
        projects = ProjectCatalog(takeflow_home.path)
        admission = Admission(discover_templates(), projects, TaskTelemetry(RunnerMetrics()))
        source: LocationSource | None = None

        def bridge(_init_context: object) -> object:
            assert source is not None
            if run_backend is None:
                raise TakeflowError(
                    "this code location source runs no jobs: load the location through "
                    "dagster_defs.code_location"
                )
            return run_backend(source)

        source = cls(takeflow_home, projects, admission, JobCompiler(ResourceDefinition(bridge)))
        return source
