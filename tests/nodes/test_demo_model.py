"""The demo model prepared on a thread (``serve --demo``'s first start): lookups wait for it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from graph_runtime.errors import ModelNotFoundError
from nodes.diffusion.demo import (
    DEMO_REVISION,
    demo_model_preparing,
    prepare_demo_model,
    register_model,
)
from nodes.diffusion.models import ModelSpec
from nodes.diffusion.video_demo import DEMO_VIDEO_REVISION
from stores.home import TakeflowHome
from tests.nodes.conftest import registry_for


def fake_demo_build(home: TakeflowHome, gate: threading.Event) -> None:
    """What ``ensure_demo_model`` leaves behind (a folder with its marker, registered), once
    ``gate`` opens; no weights, so no torch."""
    assert gate.wait(30)
    folder = home.path / "models" / "demo"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "takeflow-demo.json").write_text(json.dumps({"revision": DEMO_REVISION}))
    loras = home.path / "models" / "loras"  # the demo LoRA is part of a ready demo
    loras.mkdir(parents=True)
    (loras / "demo-lora.safetensors").write_bytes(b"")
    register_model(home, "demo", folder, demo=True)
    video = home.path / "models" / "demo-video"  # and the demo video model
    video.mkdir(parents=True)
    (video / "model_index.json").write_text("{}")
    (video / "takeflow-demo-video.json").write_text(json.dumps({"revision": DEMO_VIDEO_REVISION}))
    register_model(home, "demo-video", video, demo=True)


def test_lookups_of_the_demo_model_wait_until_it_is_prepared(_isolated_home: Path) -> None:
    home = TakeflowHome.resolve(_isolated_home)
    gate = threading.Event()
    build = prepare_demo_model(home, lambda: fake_demo_build(home, gate))
    assert build is not None and demo_model_preparing(home.path)
    assert prepare_demo_model(home) is build  # one build per home at a time
    registry = registry_for(home)
    found: list[ModelSpec] = []
    lookup = threading.Thread(target=lambda: found.append(registry.resolve("demo")))
    lookup.start()
    lookup.join(0.3)
    assert lookup.is_alive() and not found  # waiting, not failing with "unknown model"
    gate.set()
    lookup.join(30)
    assert found and found[0].demo and found[0].path == home.path / "models" / "demo"
    build.join(30)
    assert not demo_model_preparing(home.path)
    assert registry.names() == ["demo", "demo-video"]
    assert prepare_demo_model(home) is None  # ready: nothing to build


def test_a_failed_preparation_ends_the_wait_with_unknown_model(
    _isolated_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = TakeflowHome.resolve(_isolated_home)

    def broken() -> None:
        raise RuntimeError("no torch here")

    build = prepare_demo_model(home, broken)
    assert build is not None
    with pytest.raises(ModelNotFoundError, match="unknown model 'demo'"):
        registry_for(home).resolve("demo")
    build.join(30)
    assert not demo_model_preparing(home.path)
    assert "could not prepare the demo diffusion model" in caplog.text
