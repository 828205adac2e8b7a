"""Dagster lineage of assembled cuts: each scene's (or chapter's) cut asset depends on the take
assets of the shots its latest manifest names (``graph_runtime.assembly``), so the asset graph
shows shot takes -> scene cut. Each cut take is a materialization of the cut asset (the
backend's usual take materializations)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from dagster import AssetKey

from dagster_defs.asset_keys import take_asset_key
from graph_runtime.assembly import CUT, RENDERS
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.takes import Take

log = logging.getLogger(__name__)
CUT_OUTPUTS = ("video", "manifest")


@dataclass(frozen=True)
class CutLineage:
    """One cut asset (an output of a cut shot) and the shot take assets it was cut from."""

    key: AssetKey
    deps: tuple[AssetKey, ...]
    shot: str
    scene: str
    take_id: str


def _cut_shots(project: ProjectStore) -> Iterator[str]:
    """The cut shots of a project (``ch/sc/_cut``, ``ch/_cut/_cut``), by listing folders only
    (not every take of every shot)."""
    for chapter in project.list_dir(RENDERS):
        if chapter.kind != "directory":
            continue
        for scene in project.list_dir(chapter.path):
            if scene.kind == "directory" and project.list_dir(f"{scene.path}/{CUT}/takes"):
                yield f"{chapter.name}/{scene.name}/{CUT}"


def _latest_cuts(project: ProjectStore) -> dict[str, Take]:
    latest: dict[str, Take] = {}
    for shot in _cut_shots(project):
        try:
            takes = [t for t in project.takes.list(shot=shot) if "manifest" in t.outputs]
        except TakeflowError:  # a folder name that is no shot
            continue
        if takes:
            latest[shot] = max(takes, key=lambda t: t.number)
    return latest


def cut_lineage(project: ProjectStore) -> Iterator[CutLineage]:
    """Every cut of a project, with the shot take assets of its latest manifest."""
    for shot, take in sorted(_latest_cuts(project).items()):
        try:
            manifest = json.loads(project.read_file(take.outputs["manifest"].path))
            deps = tuple(
                take_asset_key(project.id, s["shot"], str(s.get("output", "video")))
                for s in manifest["shots"]
            )
        except (TakeflowError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping the lineage of cut %s %s: %s", shot, take.take_id, exc)
            continue
        for output in CUT_OUTPUTS:
            yield CutLineage(
                take_asset_key(project.id, shot, output),
                deps,
                shot,
                str(manifest.get("scene", shot.rsplit("/", 1)[0])),
                take.take_id,
            )
