"""`takeflow assemble` as a user runs it: a project made with `init`, a still and a clip made with
`run`, then the scene cut into one MP4 (a committed take of ``ch01/sc01/_cut``); bad scopes exit 2
with the error's code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av

from tests.e2e.test_cli import takeflow

CLIP = {
    "name": "clip",
    "nodes": [
        {"id": "plate", "template": "solid_image",
         "inputs": {"width": {"kind": "literal", "value": 64},
                    "height": {"kind": "literal", "value": 32},
                    "color": {"kind": "literal", "value": "#20c040"}}},
        {"id": "clip", "template": "frames_to_video",
         "inputs": {"images": {"kind": "link", "node": "plate", "output": "image"},
                    "frame_count": {"kind": "literal", "value": 10},
                    "fps": {"kind": "literal", "value": 10.0}}},
    ],
}  # fmt: skip
STILL = {
    "name": "still",
    "nodes": [
        {"id": "plate", "template": "solid_image",
         "inputs": {"width": {"kind": "literal", "value": 32},
                    "height": {"kind": "literal", "value": 32},
                    "color": {"kind": "literal", "value": "#d02020"}}},
    ],
}  # fmt: skip


def test_assemble_a_scene_from_the_command_line(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "film"
    assert takeflow("init", str(project), home=home).returncode == 0
    for name, graph, shot in (("still", STILL, "sh010"), ("clip", CLIP, "sh020")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(graph))
        made = takeflow(
            "run", str(path), "--project", str(project), "--shot", f"ch01/sc01/{shot}", home=home
        )
        assert made.returncode == 0, made.stderr

    done = takeflow(
        "assemble", "--project", str(project), "--scene", "ch01/sc01", "--still-duration", "1.5",
        home=home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # 1.5 s still + 1 s clip at the clip's 10 fps and 64x32
    assert "take_001 of ch01/sc01/_cut: 25 frames, 2.5 s, 64x32 @ 10 fps" in done.stdout
    assert "ch01/sc01/sh010 take_001 (still)" in done.stdout
    assert "ch01/sc01/sh020 take_001 (video)" in done.stdout
    cut = project / "03_Renders/ch01/sc01/_cut/takes/take_001"
    with av.open(str(cut / "video.mp4")) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    assert len(frames) == 25 and frames[0].size == (64, 32)
    manifest = json.loads((cut / "manifest.json").read_text())
    assert [s["shot"] for s in manifest["shots"]] == ["ch01/sc01/sh010", "ch01/sc01/sh020"]
    log = subprocess.run(
        ["git", "log", "-1", "--name-only", "--format=%B"],
        cwd=project, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "03_Renders/ch01/sc01/_cut/takes/take_001/manifest.json" in log

    for args, code in (
        (("--scene", "ch01/sc09"), "[unknown_scene]"),
        (("--shots", "ch01/sc01/sh999"), "[unknown_shot]"),
    ):
        refused = takeflow("assemble", "--project", str(project), *args, home=home)
        assert refused.returncode == 2 and code in refused.stderr, refused.stderr
