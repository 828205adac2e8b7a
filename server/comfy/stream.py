"""One prompt's ComfyUI messages, computed from its Takeflow task events and history entry.

The translation is a pure function of the durable event log (and the history entry written
once the task ends), so the stream a client got live and the one rebuilt for a reconnecting
client are the same, message for message: each message has a dense ``index`` in its prompt's
stream, and a client's position is the last index it was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.comfy.bridge import Event
from server.comfy.store import PromptRow

PREVIEW_IMAGE = 1  # binary frame event type
PREVIEW_IMAGE_WITH_METADATA = 4  # for clients that announce supports_preview_metadata
JPEG, PNG = 1, 2  # binary frame image formats
_STEP = re.compile(r"step (\d+) of (\d+)")
_FILE_URL = re.compile(r"^/api/v1/projects/([^/]+)/files/(.+)$")


@dataclass(frozen=True)
class Frame:
    """A binary frame's image: a project file (a preview or a take output)."""

    project: str
    path: str
    event_type: int = PREVIEW_IMAGE
    image_format: int = PNG
    node: str | None = None  # the ComfyUI node it is of (event 4's metadata)

    @classmethod
    def of(cls, project: str, path: str, node: str) -> Frame:
        fmt = JPEG if path.lower().endswith((".jpg", ".jpeg")) else PNG
        return cls(project, path, image_format=fmt, node=node)


@dataclass(frozen=True)
class Out:
    """One message of a prompt's stream: JSON text or a binary frame."""

    index: int
    text: dict[str, Any] | None = None
    frame: Frame | None = None
    final: bool = False  # the closing ``executing`` with ``node: null``


def _ms(timestamp: float) -> int:
    return int(timestamp * 1000)


class PromptStream:
    """Feed it a prompt's events in order (then ``finish`` with the history entry)."""

    def __init__(self, row: PromptRow) -> None:
        self.row = row
        self.prompt_id = row.prompt_id
        plan = row.plan
        self.plan = plan
        self.outputs = [o.node for o in plan.outputs]
        self.first_item = {tf[0]: s for s, tf in plan.samplers.items() if tf}
        self.sampler_of = {tf: s for s, nodes in plan.samplers.items() for tf in nodes}
        self.count = 0
        self.seq = 0
        self.finished = False
        self.announced: list[str] = []
        self.reported: dict[str, int] = {}  # KSampler -> the last step reported
        self.states: dict[str, dict[str, Any]] = {}  # node -> its progress_state entry
        self.cached = set(plan.cached)  # answered from the cache: no ``executing``
        self._after_sampler = self._downstream(set(plan.samplers))

    def _downstream(self, roots: set[str]) -> set[str]:
        found: set[str] = set()
        for nid in self.plan.order:
            if any(d in roots or d in found for d in self.plan.deps.get(nid, [])):
                found.add(nid)
        return found

    def _ancestors(self, nid: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.plan.deps.get(nid, []))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.plan.deps.get(current, []))
        return seen

    def _out(self, text: dict[str, Any] | None = None, frame: Frame | None = None,
             final: bool = False) -> Out:  # fmt: skip
        self.count += 1
        return Out(self.count, text, frame, final)

    def _executing(self, nid: str | None) -> Out:
        data = {"node": nid, "display_node": nid, "prompt_id": self.prompt_id}
        return self._out({"type": "executing", "data": data}, final=nid is None)

    def _announce(self, nodes: list[str]) -> list[Out]:
        outs = []
        for nid in nodes:
            if nid not in self.announced and nid not in self.cached:
                if self.announced:
                    self._set_state(self.announced[-1], "finished")
                self.announced.append(nid)
                self._set_state(nid, "running", 0, 1)
                outs.append(self._executing(nid))
                outs.append(self._progress_state())
        return outs

    def _set_state(self, nid: str, state: str, value: float | None = None,
                   maximum: float | None = None) -> None:  # fmt: skip
        entry = self.states.setdefault(nid, {
            "value": 0, "max": 1, "state": state, "node_id": nid, "prompt_id": self.prompt_id,
            "display_node_id": nid, "parent_node_id": None, "real_node_id": nid,
        })  # fmt: skip
        entry["state"] = state
        if value is not None and maximum is not None:
            entry["value"], entry["max"] = value, maximum
        elif state == "finished":
            entry["value"] = entry["max"]

    def _progress_state(self) -> Out:
        """ComfyUI's ``progress_state``: every node that is not pending, with its state."""
        nodes = {nid: dict(entry) for nid, entry in self.states.items()}
        return self._out({"type": "progress_state",
                          "data": {"prompt_id": self.prompt_id, "nodes": nodes}})  # fmt: skip

    # -- events -----------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Out]:
        """Messages for the next event of the task (events at or before the last fed: none)."""
        if event.seq <= self.seq or self.finished:
            return []
        self.seq = event.seq
        if event.type == "task.started":
            ts = _ms(event.timestamp)
            outs = [
                self._out({"type": "execution_start",
                           "data": {"prompt_id": self.prompt_id, "timestamp": ts}}),
                self._out({"type": "execution_cached",
                           "data": {"nodes": list(self.plan.cached), "prompt_id": self.prompt_id,
                                    "timestamp": ts}}),
            ]  # fmt: skip
            before = [
                n for n in self.plan.order
                if n not in self._after_sampler and n not in self.plan.samplers
                and n not in self.outputs
            ]  # fmt: skip
            return outs + self._announce(before)
        if event.type == "node.state" and event.data.get("state") in ("running", "completed"):
            sampler = self.sampler_of.get(str(event.data.get("node_id")))
            if sampler is None or sampler in self.announced:
                return []
            ancestors = self._ancestors(sampler)
            return self._announce([n for n in self.plan.order if n in ancestors] + [sampler])
        if event.type == "task.progress":
            return self._progress(event.data)
        return []

    def _steps(self, sampler: str) -> int:
        """The KSampler's ``steps``: the denoising steps ComfyUI reports for it."""
        try:
            return int(self.row.prompt[sampler]["inputs"]["steps"])
        except (KeyError, TypeError, ValueError):
            return 0

    def _progress(self, data: dict[str, Any]) -> list[Out]:
        sampler = self.first_item.get(str(data.get("node_id")))
        if sampler is None or data.get("stage") != "denoising":
            return []
        match = _STEP.search(str(data.get("message") or ""))
        if match is None:
            return []
        value, total = int(match.group(1)), int(match.group(2))
        steps = self._steps(sampler)
        if 0 < steps < total:
            # A sampler that calls the model twice a step reports each call (Heun: 2 * steps - 1
            # calls, the last step single); ComfyUI counts steps: report each completed one.
            value, total = (value + 1) * steps // (total + 1), steps
            if value <= self.reported.get(sampler, 0):
                return []
        self.reported[sampler] = value
        outs = self._announce([sampler])
        body = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": sampler}
        outs.append(self._out({"type": "progress", "data": body}))
        self._set_state(sampler, "running", value, total)
        outs.append(self._progress_state())
        url = _FILE_URL.match(str(data.get("preview_url") or ""))
        if url is not None:
            outs.append(self._out(frame=Frame.of(url.group(1), url.group(2), sampler)))
        return outs

    # -- the end ----------------------------------------------------------------------------

    def finish(self, history: dict[str, Any]) -> list[Out]:
        """The closing messages once the history entry is written; ``executing`` null last."""
        if self.finished:
            return []
        self.finished = True
        status = history["status"]
        outs: list[Out] = []
        if status["status_str"] == "success":
            rest = [n for n in self.plan.order if n not in self.outputs]
            outs += self._announce(rest)
            for nid in self.outputs:
                outs += self._announce([nid])
                output = history["outputs"].get(nid)
                if output is not None:
                    body = {"node": nid, "display_node": nid, "output": output,
                            "prompt_id": self.prompt_id}  # fmt: skip
                    outs.append(self._out({"type": "executed", "data": body}))
                frames = history.get("frames", {}).get(nid, [])
                for i, (project, path) in enumerate(frames):
                    body = {"value": i + 1, "max": len(frames), "prompt_id": self.prompt_id,
                            "node": nid}  # fmt: skip
                    outs.append(self._out({"type": "progress", "data": body}))
                    outs.append(self._out(frame=Frame(project, path)))  # output: event 1
        if self.announced:
            failed = status["status_str"] != "success"
            self._set_state(self.announced[-1], "error" if failed else "finished")
            outs.append(self._progress_state())
        kind, data = status["messages"][-1]
        outs.append(self._out({"type": kind, "data": data}))
        outs.append(self._executing(None))
        return outs


def rebuild(row: PromptRow, events: list[Event]) -> list[Out]:
    """Every message of a prompt so far, from its stored events and history entry."""
    stream = PromptStream(row)
    outs: list[Out] = []
    for event in events:
        outs += stream.feed(event)
    if row.history is not None:
        outs += stream.finish(row.history)
    return outs
