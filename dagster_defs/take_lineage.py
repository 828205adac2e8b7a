"""Dagster lineage of shot continuity: a take made from a ``load_take`` node (another shot's
take read into the graph, ``graph_runtime.take_sources``) has that take's asset upstream.

- Static, from the project's takes: each shot's latest take that recorded ``source_take``
  gives its output assets the source take assets as upstream (``sh010.video`` ->
  ``sh020.video``), whether or not the canvas was saved. One ``take.json`` is read per shot.
- Static, from saved canvases: a ``load_take`` node with a typed-in shot depends on that
  shot's take asset (its ``output``, else the one ``active`` resolves to now, else ``video``).
- Per run: each take materialization names the takes it read (``source_takes`` metadata)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import AssetKey

from dagster_defs.asset_keys import take_asset_key
from graph_runtime.assembly import CUT, RENDERS
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.take_sources import ACTIVE, resolve_take
from graph_runtime.takes import TAKE_ID_RE, Take, take_number
from graph_runtime.validation import PlannedNode

log = logging.getLogger(__name__)
LOAD_TAKE = "load_take"


@dataclass(frozen=True)
class TakeLineage:
    """One take output asset and the take assets its latest take was made from."""

    key: AssetKey
    deps: tuple[AssetKey, ...]
    shot: str
    take_id: str


def source_takes(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The takes a take read (``take.json``: each node's ``source_take``), in node order."""
    nodes = metadata.get("node_metadata") or {}
    return [
        dict(facts["source_take"])
        for facts in nodes.values()
        if isinstance(facts, Mapping) and isinstance(facts.get("source_take"), Mapping)
    ]


def source_asset_keys(project_id: str, metadata: Mapping[str, Any]) -> list[AssetKey]:
    keys: list[AssetKey] = []
    for source in source_takes(metadata):
        try:
            key = take_asset_key(project_id, str(source["shot"]), str(source["output"]))
        except (KeyError, ValueError):
            continue
        if key not in keys:
            keys.append(key)
    return keys


def _shots(project: ProjectStore) -> Iterator[str]:
    for chapter in project.list_dir(RENDERS):
        if chapter.kind != "directory":
            continue
        for scene in project.list_dir(chapter.path):
            if scene.kind != "directory":
                continue
            for shot in project.list_dir(scene.path):
                if shot.kind == "directory" and shot.name != CUT:
                    yield f"{chapter.name}/{scene.name}/{shot.name}"


def _latest(project: ProjectStore, shot: str) -> Take | None:
    numbers = [
        take_number(info.name)
        for info in project.list_dir(f"{RENDERS}/{shot}/takes")
        if info.kind == "directory" and TAKE_ID_RE.fullmatch(info.name)
    ]
    if not numbers:
        return None
    return project.takes.get(shot, f"take_{max(numbers):03d}")


def take_lineage(project: ProjectStore) -> Iterator[TakeLineage]:
    """Every shot whose latest take read other takes, one entry per output of that take."""
    for shot in _shots(project):
        try:
            take = _latest(project, shot)
        except TakeflowError as exc:  # a folder that is no shot, an unreadable take.json
            log.warning("skipping the continuity lineage of %s: %s", shot, exc)
            continue
        if take is None:
            continue
        deps = tuple(source_asset_keys(project.id, take.metadata))
        if not deps:
            continue
        for output in take.outputs:
            key = take_asset_key(project.id, shot, output.replace(".", "__"))
            yield TakeLineage(key, deps, shot, take.take_id)


def load_take_deps(project: ProjectStore | None, node: PlannedNode) -> list[AssetKey]:
    """The take asset a saved canvas's ``load_take`` node reads (none when its shot is linked)."""
    shot, take, output = (node.literals.get(n) for n in ("shot", "take", "output"))
    if node.template.id != LOAD_TAKE or not isinstance(shot, str) or project is None:
        return []
    name = output if isinstance(output, str) and output else None
    if name is None:
        try:
            name = resolve_take(project, shot, str(take or ACTIVE), "").output
        except TakeflowError:
            name = "video"  # no take yet: the video a continuity canvas reads
    return [take_asset_key(project.id, shot, name.replace(".", "__"))]
