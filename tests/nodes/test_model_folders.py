"""Model part folders: listing by relative path, lookups that stay inside, safe loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from graph_runtime.errors import ModelNotFoundError
from nodes.diffusion.checkpoints import CheckpointError
from nodes.diffusion.config import DiffusionConfig
from nodes.diffusion.folders import ModelFolders, load_weights


def _folders(home: Path, **config: str) -> ModelFolders:
    return ModelFolders(lambda: DiffusionConfig.model_validate(config), home)


def test_files_are_named_by_relative_path_and_listed_at_once(tmp_path: Path) -> None:
    folders = _folders(tmp_path)
    root = tmp_path / "models" / "loras"
    assert folders.folder("loras") == root and folders.names("loras") == []
    (root / "style").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, root / "style" / "ink.safetensors")
    (root / "notes.txt").write_text("not a weights file")
    assert folders.names("loras") == ["style/ink.safetensors"]
    found = folders.resolve("loras", "style/ink.safetensors")
    assert found.path == root / "style" / "ink.safetensors"
    described = folders.describe(found)
    assert described["name"] == "style/ink.safetensors"
    assert described["sha256"].startswith("sha256:") and len(described["sha256"]) == 71


def test_configured_folder_and_refused_names(tmp_path: Path) -> None:
    elsewhere = tmp_path / "comfy" / "models" / "upscale_models"
    elsewhere.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, elsewhere / "x4.pth")
    (tmp_path / "secret.pth").write_bytes(b"x")
    folders = _folders(tmp_path, upscale_models_dir=str(elsewhere))
    assert folders.names("upscale_models") == ["x4.pth"]
    for bad in ("../../../secret.pth", "missing.pth", "x4.txt", ""):
        with pytest.raises(ModelNotFoundError) as caught:
            folders.resolve("upscale_models", bad)
        assert caught.value.code == "model_not_found"
        assert "'x4.pth'" in caught.value.message and "upscale_models_dir" in caught.value.message


def test_content_hash_follows_the_bytes(tmp_path: Path) -> None:
    folders = _folders(tmp_path)
    root = tmp_path / "models" / "vae"
    root.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, root / "a.safetensors")
    first = folders.content_hash(folders.resolve("vae", "a.safetensors"))
    save_file({"w": torch.ones(2)}, root / "a.safetensors")
    os.utime(root / "a.safetensors", ns=(1, 1))
    assert folders.content_hash(folders.resolve("vae", "a.safetensors")) != first


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with evil.open("wb") as f:
        pickle.dump({"w": _RunsCode(marker)}, f)
    with pytest.raises(CheckpointError) as caught:
        load_weights(evil)
    assert caught.value.code == "invalid_checkpoint" and "weights only" in caught.value.message
    assert not marker.exists()


def test_weights_only_pickles_and_safetensors_load(tmp_path: Path) -> None:
    torch.save({"params_ema": {"conv.weight": torch.ones(1, 2)}}, tmp_path / "m.pth")
    assert torch.equal(load_weights(tmp_path / "m.pth")["conv.weight"], torch.ones(1, 2))
    save_file({"a": torch.zeros(3)}, tmp_path / "m.safetensors")
    assert load_weights(tmp_path / "m.safetensors")["a"].shape == (3,)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError):
        load_weights(tmp_path / "broken.safetensors")
