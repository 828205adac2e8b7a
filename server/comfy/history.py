"""A finished prompt's history entry: output files written, status and messages recorded.

Written once per prompt, after its task ends: SaveImage copies the take's images into the
output folder as ``prefix_00001_.png``, PreviewImage into the temp folder; SaveImageWebsocket
keeps the take files to send as binary frames. The entry is what ``/history/{id}`` answers and
what the closing WebSocket messages are made of.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from server.comfy.bridge import Event, TakeflowBridge, TaskInfo
from server.comfy.files import ComfyFolders, PathRefused
from server.comfy.store import PromptRow
from server.comfy.stream import PromptStream
from server.comfy.translate import OutputPlan
from server.comfy.translate_video import OUTPUT_NODES as VIDEO_OUTPUTS
from server.comfy.translate_video import history_output

log = logging.getLogger(__name__)


def _take_paths(plan: OutputPlan, outputs: dict[str, str]) -> list[str]:
    """Take files of an output node's images (``node.port`` keys, or ``port`` when unique)."""
    paths = []
    for node, port in plan.refs:
        path = outputs.get(f"{node}.{port}") or outputs.get(port)
        if path is None:
            log.warning("take output %s.%s missing for %s", node, port, plan.node)
            continue
        paths.append(path)
    return paths


def _error_node(row: PromptRow, data: dict[str, Any]) -> tuple[str | None, str | None]:
    tf_node = data.get("node_id")
    node = row.plan.owners.get(str(tf_node)) if tf_node else None
    return node, row.plan.classes.get(node) if node else None


def _executed(row: PromptRow, ran: set[str], stopped_at: str | None) -> list[str]:
    """ComfyUI's ``executed`` of an error or interrupt: the nodes that ran before it, in
    execution order (not the node it stopped at)."""
    return [n for n in row.plan.order if n in ran and n != stopped_at]


def build_history(
    row: PromptRow, task: TaskInfo, bridge: TakeflowBridge, folders: ComfyFolders
) -> dict[str, Any]:
    """Write the output files of a finished prompt and return its history entry."""
    events: list[Event] = bridge.events(row.task_id)
    started = next((e for e in events if e.type == "task.started"), None)
    terminal = next((e for e in reversed(events) if e.terminal), None)
    ended_ms = int((terminal.timestamp if terminal else task.created_at) * 1000)
    pid = row.prompt_id
    messages: list[list[Any]] = []
    if started is not None:
        ts = int(started.timestamp * 1000)
        messages.append(["execution_start", {"prompt_id": pid, "timestamp": ts}])
        messages.append(["execution_cached", {"nodes": list(row.plan.cached), "prompt_id": pid,
                                              "timestamp": ts}])  # fmt: skip
    done_nodes = {
        row.plan.owners[str(e.data.get("node_id"))]
        for e in events
        if e.type == "node.state"
        and e.data.get("state") == "completed"
        and str(e.data.get("node_id")) in row.plan.owners
    }
    # what ran, as the client was told (``executing``) or Takeflow's node states say
    stream = PromptStream(row)
    for event in events:
        stream.feed(event)
    ran = done_nodes | set(stream.announced) | set(row.plan.cached)
    if task.status == "completed":
        ran = set(row.plan.order)
    outputs: dict[str, Any] = {}
    frames: dict[str, list[list[str]]] = {}
    unsaved: tuple[str, str] | None = None  # (node, why) when an output file was not written
    if task.status == "completed" and row.project is not None:
        take = bridge.take_outputs(row.task_id)
        for plan in row.plan.outputs:
            paths = _take_paths(plan, take)
            if plan.kind == "SaveImageWebsocket":
                frames[plan.node] = [[row.project, p] for p in paths]
                continue
            read = [(p, b) for p in paths if (b := bridge.read_file(row.project, p))]
            images = [b for _, b in read]
            try:
                if plan.kind in VIDEO_OUTPUTS:  # animated images, videos: translate_video
                    outputs[plan.node] = history_output(folders, plan, read)
                    continue
                if plan.kind == "SaveImage":
                    saved, folder_type = folders.save_images(plan.prefix, images), "output"
                else:
                    saved, folder_type = folders.temp_images(images), "temp"
            except (PathRefused, OSError) as exc:  # e.g. a prefix's folder that is a file
                why = exc.message if isinstance(exc, PathRefused) else str(exc.strerror)
                unsaved = unsaved or (plan.node, f"{plan.kind} could not write its files: {why}")
                continue
            outputs[plan.node] = {
                "images": [
                    {"filename": name, "subfolder": sub, "type": folder_type} for name, sub in saved
                ]
            }
    if task.status == "completed" and row.project is not None and unsaved is None:
        messages.append(["execution_success", {"prompt_id": pid, "timestamp": ended_ms}])
        status_str, completed = "success", True
    elif unsaved is not None:  # the take is stored; the ComfyUI copy of an output is not
        messages.append(["execution_error", {
            "prompt_id": pid, "node_id": unsaved[0], "node_type": row.plan.classes.get(unsaved[0]),
            "executed": _executed(row, ran, unsaved[0]), "exception_message": unsaved[1],
            "exception_type": "output_not_saved",
            "traceback": [], "current_inputs": {}, "current_outputs": {},
            "timestamp": ended_ms}])  # fmt: skip
        status_str, completed = "error", False
    elif task.status == "cancelled":
        data = terminal.data if terminal else {}
        node, node_type = _error_node(row, data)
        messages.append(["execution_interrupted", {
            "prompt_id": pid, "node_id": node, "node_type": node_type,
            "executed": _executed(row, ran, node), "timestamp": ended_ms}])  # fmt: skip
        status_str, completed = "error", False
    else:
        data = terminal.data if terminal is not None else dict(task.error or {})
        node, node_type = _error_node(row, data)
        messages.append(["execution_error", {
            "prompt_id": pid, "node_id": node, "node_type": node_type,
            "executed": _executed(row, ran, node),
            "exception_message": str(data.get("message", "the task failed")),
            "exception_type": str(data.get("code", "task_failed")),
            "traceback": [], "current_inputs": {}, "current_outputs": {},
            "timestamp": ended_ms}])  # fmt: skip
        status_str, completed = "error", False
    return {
        "outputs": outputs,
        "frames": frames,
        "status": {"status_str": status_str, "completed": completed, "messages": messages},
        "meta": {
            n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
            for n in outputs
        },
        "takeflow": {
            "task_id": row.task_id,
            "project_id": row.project,
            "status": task.status,
            "notes": row.plan.notes,
        },
    }


def unbuilt_history(row: PromptRow, task: TaskInfo, why: str) -> dict[str, Any]:
    """The entry of a finished prompt whose history could not be built (its task and take
    stay as they are): an ``execution_error``, so the prompt still leaves the queue."""
    error: dict[str, Any] = {
        "prompt_id": row.prompt_id, "node_id": None, "node_type": None, "executed": [],
        "exception_message": f"the history entry could not be built: {why}",
        "exception_type": "history_failed", "traceback": [], "current_inputs": {},
        "current_outputs": {}, "timestamp": int(time.time() * 1000),
    }  # fmt: skip
    return {
        "outputs": {},
        "frames": {},
        "status": {"status_str": "error", "completed": False,
                   "messages": [["execution_error", error]]},
        "meta": {},
        "takeflow": {"task_id": row.task_id, "project_id": row.project, "status": task.status,
                     "notes": row.plan.notes},
    }  # fmt: skip


def history_view(row: PromptRow) -> dict[str, Any]:
    """The ``/history`` entry of a prompt (ComfyUI's shape, plus Takeflow's ids)."""
    entry = dict(row.history or {})
    entry.pop("frames", None)
    return {"prompt": row.queue_item(), **entry}
