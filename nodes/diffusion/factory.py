"""The diffusion pack's service factory, published under the ``takeflow.services`` entry point."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from graph_runtime.services import ServiceContext
from nodes.diffusion.config import DiffusionConfig
from nodes.diffusion.folders import KINDS
from nodes.diffusion.models import ModelRegistry
from nodes.diffusion.service import DiffusionService


class DiffusionServiceFactory:
    """Makes the ``diffusion`` service from the ``diffusion``/``models``/``checkpoints_dir``
    keys of the home config; each service gets its own pipeline cache."""

    name = "diffusion"
    config_model: type[BaseModel] = DiffusionConfig
    config_keys: tuple[str, ...] = (
        "diffusion",
        "models",
        "checkpoints_dir",
        *(kind.config_key for kind in KINDS.values()),
    )

    def create(self, config: Any, context: ServiceContext) -> DiffusionService:
        if not isinstance(config, DiffusionConfig):
            raise TypeError(f"expected a DiffusionConfig, got {type(config).__name__}")
        return DiffusionService(ModelRegistry.for_context(context), config.diffusion)

    def close(self, service: object) -> None:
        if isinstance(service, DiffusionService):
            service.close()


FACTORY = DiffusionServiceFactory()
