"""Fixtures for the diffusion tests: one tiny random-weight pipeline per session, registered as
the "demo" model of each test's Takeflow home."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stores.home import TakeflowHome

if TYPE_CHECKING:
    from nodes.diffusion.models import ModelRegistry
    from nodes.diffusion.service import DiffusionService

# Small and quick: the tests exercise the service, not image quality.
FAST = {"width": 64, "height": 64, "steps": 4, "scheduler": "euler"}


def registry_for(home: TakeflowHome) -> ModelRegistry:
    """The model registry a runtime on ``home`` would use (the composition root's context)."""
    from dagster_defs.services import service_context
    from nodes.diffusion.factory import FACTORY
    from nodes.diffusion.models import ModelRegistry

    return ModelRegistry.for_context(service_context(home, FACTORY))


def service_for(home: TakeflowHome, **settings: Any) -> DiffusionService:
    """A diffusion service on ``home``'s models with these settings (and its own cache)."""
    from nodes.diffusion.service import DiffusionService, DiffusionSettings

    return DiffusionService(registry_for(home), DiffusionSettings(**settings))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodes.diffusion.demo import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("diffusion") / "tiny", "tiny")


@pytest.fixture(scope="session")
def second_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("diffusion2") / "tiny_copy"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture
def diffusion_home(_isolated_home: Path, tiny_model_dir: Path) -> TakeflowHome:
    """The test's home with the tiny model as "demo" and batching off (tests turn it on)."""
    from nodes.diffusion.demo import register_model

    home = TakeflowHome.resolve(_isolated_home)
    register_model(home, "demo", tiny_model_dir, demo=True)
    home.update_config(diffusion={"max_batch_size": 1, "batch_window_ms": 0, "preview_every": 2})
    return home


@pytest.fixture
def diffusion_runtime(diffusion_home: TakeflowHome, runtime: Any) -> Iterator[Any]:
    """The real runtime (``tests/conftest.py``) opened on a home that knows the tiny model."""
    yield runtime
    runtime.runner.services["diffusion"].close()
