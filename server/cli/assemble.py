"""``takeflow assemble --project P --scene ch01/sc01``: cut the active takes of a scene (a
chapter, or a list of shots) into one MP4, the scene's next cut take, as the server's
``POST .../assemblies`` does (the same plan, the same ``assemble_scene`` task)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from graph_runtime.errors import TakeflowError
from server.cli.output import ProgressBars, print_error, print_task_error
from server.cli.run import _project_for


def register(sub: Any) -> None:
    p = sub.add_parser("assemble", help="cut a scene's active takes into one MP4 (a cut take)")
    p.add_argument("--project", required=True, help="project id or folder")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--scene", help="chapter/scene, e.g. ch01/sc01")
    scope.add_argument("--chapter", help="a chapter, e.g. ch01 (its scenes in order)")
    scope.add_argument(
        "--shots", help="comma-separated shots, e.g. ch01/sc01/sh010,ch01/sc01/sh020"
    )
    p.add_argument("--still-duration", type=float, default=2.0, help="seconds a still is held")
    p.add_argument("--width", type=int, help="even; with --height (default: first video's)")
    p.add_argument("--height", type=int)
    p.add_argument("--fps", type=float, help="default: the first video's frame rate, else 24")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--json", action="store_true", help="print the cut's manifest as JSON")
    p.set_defaults(fn=cmd_assemble)


def cmd_assemble(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from dagster_defs.runtime import open_runtime
    from graph_runtime.assembly import TEMPLATE_ID, AssemblyRequest, plan_assembly
    from graph_runtime.canvas import single_node_graph

    try:
        request = AssemblyRequest(
            scene=args.scene,
            chapter=args.chapter,
            shots=[s.strip() for s in args.shots.split(",") if s.strip()] if args.shots else None,
            still_duration=args.still_duration,
            width=args.width,
            height=args.height,
            fps=args.fps,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        print(f"error: {where}: {first['msg']}", file=sys.stderr)
        return 2
    runtime = open_runtime(args.home, workers=1)
    try:
        project_id = _project_for(runtime, args.project)
        assert project_id is not None
        project = runtime.projects.get(project_id)
        plan = plan_assembly(project, request)
        graph = single_node_graph(TEMPLATE_ID, {"plan": plan})
        submission = runtime.runner.admission.admit(graph, project_id=project_id, shot=plan["shot"])
        runtime.runner.add_sink(ProgressBars(submission.task_id, ["node"]))
        record = runtime.runner.submit(submission, limited=False)
        record = runtime.runner.wait(record.task_id, timeout=args.timeout)
        print(f"task {record.task_id}: {record.status.value}")
        if record.error:
            print_task_error(record.error)
            return 1
        for take in project.takes.list(task_id=record.task_id):
            manifest = json.loads(project.read_file(take.outputs["manifest"].path))
            if args.json:
                print(json.dumps(manifest, indent=2))
                continue
            print(
                f"  {take.take_id} of {take.shot}: {manifest['frame_count']} frames, "
                f"{manifest['duration']:g} s, {manifest['width']}x{manifest['height']} "
                f"@ {manifest['fps']:g} fps"
            )
            for shot in manifest["shots"]:
                where = f"{shot['start']:>8.3f} s  {shot['shot']}"
                print(f"    {where} {shot['take_id']} ({shot['kind']})")
            print(f"  video: {project.location(take.outputs['video'].path)}")
        return 0 if record.status.value == "completed" else 1
    except TakeflowError as exc:
        print_error(exc)
        return 2
    finally:
        runtime.close()
