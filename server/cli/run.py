"""``takeflow run GRAPH``: run a graph JSON file (or a sweep of it) and print the takes it made."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph_runtime.errors import TakeflowError
from server.cli.output import BatchBar, ProgressBars, print_error, print_task_error

if TYPE_CHECKING:
    from dagster_defs.runtime import Runtime
    from graph_runtime.canvas import CanvasGraph


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a graph JSON file and print the takes it made")
    p.add_argument("graph")
    p.add_argument("--project", help="project id or folder (omit to run without takes)")
    p.add_argument("--shot", help="chapter/scene/shot (default: the graph's context)")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument(
        "--sweep",
        metavar="FILE.json",
        help="run a batch: lists of values for node inputs (takeflow.sweep/v1, see docs)",
    )
    p.set_defaults(fn=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from dagster_defs.runtime import open_runtime
    from graph_runtime.canvas import CanvasGraph

    try:
        graph = CanvasGraph.model_validate_json(Path(args.graph).read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read graph {args.graph}: {exc}", file=sys.stderr)
        return 2
    runtime = open_runtime(args.home, workers=1)
    try:
        project_id = _project_for(runtime, args.project)
        if args.sweep:
            return _run_sweep(args, runtime, graph, project_id)
        return _run_one(args, runtime, graph, project_id)
    except TakeflowError as exc:
        print_error(exc)
        return 2
    finally:
        runtime.close()


def _run_one(
    args: argparse.Namespace, runtime: Runtime, graph: CanvasGraph, project_id: str | None
) -> int:
    submission = runtime.runner.admission.admit(graph, project_id=project_id, shot=args.shot)
    runtime.runner.add_sink(
        ProgressBars(submission.task_id, [n.node_id for n in submission.plan.nodes])
    )
    record = runtime.runner.submit(submission, limited=False)  # the CLI is not limited
    record = runtime.runner.wait(record.task_id, timeout=args.timeout)
    print(f"task {record.task_id}: {record.status.value}")
    if record.error:
        print_task_error(record.error)
        return 1
    if project_id:
        project = runtime.projects.get(project_id)
        for take in project.takes.list(task_id=record.task_id):
            for name, out in take.outputs.items():
                print(f"  {take.take_id} {name}: {project.location(out.path)}")
    return 0 if record.status.value == "completed" else 1


def _project_for(runtime: Runtime, project: str | None) -> str | None:
    """A project id from an id or a project folder (registering the folder if it is new)."""
    if project is None:
        return None
    candidate = Path(project)
    if candidate.exists() and (candidate / "project.json").exists():
        found = runtime.projects.find_by_path(candidate)
        return str((found or runtime.projects.register(candidate)).id)
    return project


def _run_sweep(
    args: argparse.Namespace, runtime: Runtime, graph: CanvasGraph, project_id: str | None
) -> int:
    """``takeflow run GRAPH --sweep FILE``: one task per combination, one progress line."""
    from dagster_defs.batches import BatchProgress, new_batch_id, submit_sweep
    from graph_runtime.sweeps import Sweep

    try:
        sweep = Sweep.parse(Path(args.sweep).read_text())
    except OSError as exc:
        print(f"error: cannot read sweep {args.sweep}: {exc}", file=sys.stderr)
        return 2
    bar = BatchBar()
    progress = BatchProgress(new_batch_id(), on_change=bar)
    progress.expected = sweep.size()
    runtime.runner.add_sink(progress)
    try:
        batch_id, task_ids = submit_sweep(
            runtime.runner,
            graph,
            sweep,
            project_id=project_id,
            shot=args.shot,
            batch_id=progress.batch_id,
            limited=False,
        )
        print(f"batch {batch_id}: {len(task_ids)} task(s)", file=sys.stderr)
        done = progress.wait(timeout=args.timeout)
    finally:
        runtime.runner.remove_sink(progress)
    if bar.interactive:
        print(file=sys.stderr)
    summary = progress.summary()
    print(
        f"batch {batch_id}: {summary['completed']} completed, {summary['failed']} failed, "
        f"{summary['cancelled']} cancelled of {summary['total']}" + ("" if done else " (timed out)")
    )
    if project_id:
        project = runtime.projects.get(project_id)
        by_task = {t.metadata.get("task_id"): t for t in project.takes.list()}
        for task_id in task_ids:
            take = by_task.get(task_id)
            if take is None:
                print(f"  {task_id}: no take")
                continue
            values = take.metadata.get("sweep", {}).get("values", {})
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            for name, out in take.outputs.items():
                print(f"  {take.take_id} {name} [{shown}]: {project.location(out.path)}")
    return 0 if done and summary["completed"] == summary["total"] else 1
