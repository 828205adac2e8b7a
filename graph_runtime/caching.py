"""Node output caching: a node whose template version and inputs (and everything upstream) are
unchanged reuses its stored outputs instead of running again."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from graph_runtime.validation import ExecutionPlan, PlannedNode


def _uncacheable(node: PlannedNode) -> bool:
    seed = node.literals.get("seed")
    # A template that reads the clock, or a request for a random seed, must run every time.
    return not node.template.cacheable or (isinstance(seed, int) and seed < 0)


def _state(node: PlannedNode, project: Any) -> str | None:
    """The node's outside state (``FunctionTemplate.state_key``), ``""`` when it has none,
    ``None`` when it cannot be known now (no project, a linked input, nothing to read)."""
    resolve = node.template.state_key
    if resolve is None:
        return ""
    return None if project is None else resolve(project, node.literals)


def node_cache_keys(
    plan: ExecutionPlan, quality: Mapping[str, str], project: Any = None
) -> dict[str, str | None]:
    """Cache key per node (``None``: never cached). Keys chain through links, so a change
    anywhere upstream changes every key below it. ``project`` (the task's) resolves the state
    of templates with a ``state_key`` (``load_take``: which take, its content hash)."""
    keys: dict[str, str | None] = {}
    salts: dict[str, str] = {}
    for node in plan.nodes:
        state = _state(node, project)
        if _uncacheable(node) or state is None:
            keys[node.node_id] = None
            salts[node.node_id] = uuid.uuid4().hex  # descendants must not hit either
            continue
        links = {
            port: [keys[src] or salts[src], output]
            for port, (src, output) in sorted(node.links.items())
        }
        if any(keys[src] is None for src, _ in node.links.values()):
            keys[node.node_id] = None
            salts[node.node_id] = uuid.uuid4().hex
            continue
        body = {
            "template": node.template.ref,
            "quality": quality.get(node.node_id, "standard"),
            "literals": {
                name: value
                for name, value in sorted(node.literals.items())
                if (spec := node.template.input(name)) is None or spec.affects_output
            },
            "links": links,
            **({"state": state} if state else {}),
        }
        raw = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
        keys[node.node_id] = hashlib.sha256(raw.encode()).hexdigest()
    return keys


class NodeOutputCache(Protocol):
    def get(self, key: str) -> Mapping[str, Any] | None: ...

    def put(self, key: str, outputs: Mapping[str, Any]) -> None: ...

    def contains(self, key: str) -> bool:
        """Whether ``get(key)`` would find outputs (without loading them)."""
        ...


class MemoryNodeCache:
    """In-memory LRU twin of the node output cache."""

    def __init__(self, max_entries: int = 256) -> None:
        self._items: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: str) -> Mapping[str, Any] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: str, outputs: Mapping[str, Any]) -> None:
        with self._lock:
            self._items[key] = dict(outputs)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
