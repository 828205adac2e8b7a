"""Planning a cut (pure, on the in-memory project): which shots in which order, each active
take's media file and hash, the cut's size and rate, where the cut goes, and the refusals."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime.assembly import (
    AssemblyError,
    AssemblyRequest,
    NoActiveTakeError,
    UnknownChapterError,
    UnknownSceneError,
    cut_shot,
    layout,
    plan_assembly,
    planned_counts,
)
from graph_runtime.canvas import validate_shot
from graph_runtime.projects import MemoryProject
from graph_runtime.takes import OutputFile


def _still(project: MemoryProject, shot: str, data: bytes = b"png") -> None:
    project.takes.create(shot, [OutputFile("image", data, ".png", "image/png")], {})


def _clip(project: MemoryProject, shot: str, facts: dict[str, Any] | None = None) -> None:
    files = [
        OutputFile("video", b"mp4", ".mp4", "video/mp4"),
        OutputFile("video_poster", b"png", ".png", "image/png"),
    ]
    media = {
        "video": facts or {"fps_rational": "30/1", "frame_count": 45, "width": 321, "height": 180}
    }
    project.takes.create(shot, files, {"media": media})


@pytest.fixture
def project() -> MemoryProject:
    p = MemoryProject("film")
    _clip(p, "ch01/sc01/sh020")
    _still(p, "ch01/sc01/sh010")
    _still(p, "ch01/sc02/sh010")
    return p


def test_a_scene_plan_orders_shots_and_takes_the_first_videos_size_and_rate(
    project: MemoryProject,
) -> None:
    plan = plan_assembly(project, AssemblyRequest(scene="ch01/sc01", still_duration=1.0))
    assert (plan["scene"], plan["shot"]) == ("ch01/sc01", "ch01/sc01/_cut")
    assert [(e["shot"], e["kind"], e["output"]) for e in plan["shots"]] == [
        ("ch01/sc01/sh010", "still", "image"),
        ("ch01/sc01/sh020", "video", "video"),  # its poster is not a still of its own
    ]
    first = plan["shots"][0]
    assert first["file"] == "03_Renders/ch01/sc01/sh010/takes/take_001/image.png"
    assert first["sha256"] == project.takes.list(shot="ch01/sc01/sh010")[0].outputs["image"].sha256
    assert (plan["width"], plan["height"], plan["fps_rational"]) == (320, 180, "30/1")  # even
    manifest = layout(plan, planned_counts(plan))
    assert [s["frame_count"] for s in manifest["shots"]] == [30, 45]
    assert manifest["duration"] == 2.5 and manifest["shots"][1]["start"] == 1.0


def test_chapter_and_shot_lists_choose_where_the_cut_goes(project: MemoryProject) -> None:
    chapter = plan_assembly(project, AssemblyRequest(chapter="ch01", width=64, height=64, fps=12))
    assert chapter["shot"] == "ch01/_cut/_cut" and chapter["fps_rational"] == "12/1"
    assert [e["shot"] for e in chapter["shots"]] == [
        "ch01/sc01/sh010", "ch01/sc01/sh020", "ch01/sc02/sh010"
    ]  # fmt: skip
    listed = plan_assembly(project, AssemblyRequest(shots=["ch01/sc01/sh020", "ch01/sc01/sh010"]))
    assert listed["shot"] == "ch01/sc01/_cut"
    assert [e["shot"] for e in listed["shots"]] == ["ch01/sc01/sh020", "ch01/sc01/sh010"]
    across = plan_assembly(project, AssemblyRequest(shots=["ch01/sc02/sh010", "ch01/sc01/sh010"]))
    assert across["shot"] == "ch01/_cut/_cut"
    # a cut is not a shot of its scene: the next plan does not cut the cut
    _clip(project, "ch01/sc01/_cut")
    again = plan_assembly(project, AssemblyRequest(scene="ch01/sc01"))
    assert [e["shot"] for e in again["shots"]] == ["ch01/sc01/sh010", "ch01/sc01/sh020"]


def test_refusals_name_the_field_and_shot(project: MemoryProject) -> None:
    with pytest.raises(UnknownSceneError) as scene:
        plan_assembly(project, AssemblyRequest(scene="ch01/sc09"))
    assert scene.value.details["field"] == "scene"
    with pytest.raises(UnknownChapterError):
        plan_assembly(project, AssemblyRequest(chapter="ch02"))
    with pytest.raises(AssemblyError) as mixed:
        plan_assembly(project, AssemblyRequest(shots=["ch01/sc01/sh010", "ch02/sc01/sh010"]))
    assert mixed.value.code == "invalid_assembly"
    with pytest.raises(AssemblyError) as long:  # 600 s stills at 240 fps: 288,000 frames
        plan_assembly(project, AssemblyRequest(chapter="ch01", still_duration=600, fps=240))
    assert long.value.code == "cut_too_long" and long.value.details["field"] == "still_duration"
    project.takes._active.pop("ch01/sc01/sh020")  # a shot without an active take
    with pytest.raises(NoActiveTakeError) as none:
        plan_assembly(project, AssemblyRequest(scene="ch01/sc01"))
    assert none.value.details == {"field": "scene", "shot": "ch01/sc01/sh020"}
    with pytest.raises(ValueError, match="exactly one"):
        AssemblyRequest(scene="ch01/sc01", chapter="ch01")


def test_cut_shots_are_the_only_shots_that_may_start_with_an_underscore() -> None:
    assert cut_shot("ch01/sc01") == "ch01/sc01/_cut" and cut_shot("ch01") == "ch01/_cut/_cut"
    for shot in ("ch01/sc01/_cut", "ch01/_cut/_cut"):
        assert validate_shot(shot) == shot
    for shot in ("ch01/sc01/_x", "ch01/_cut/sh010", "_cut/sc01/sh010", "ch01/sc01/_cut/x"):
        with pytest.raises(ValueError):
            validate_shot(shot)
