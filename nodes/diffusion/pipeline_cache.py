"""Loaded pipelines kept in memory under a budget, evicted least-recently-used.

One cache is injected into each diffusion service (its budget comes from that service's
settings); nothing here is process-wide. A model is keyed by its path, size and mtime and the
device, so a replaced checkpoint file is loaded afresh.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodes.diffusion.models import ModelSpec
from nodes.diffusion.requests import (
    IMAGE_TO_IMAGE,
    INPAINT,
    SCHEDULER_OPTIONS,
    SCHEDULERS,
    SIGMAS,
    InvalidGenerationRequest,
)

log = logging.getLogger(__name__)

Loader = Callable[[ModelSpec, str], Any]  # (spec, device) -> a diffusers pipeline on device


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_budget_bytes(device: str) -> int:
    """80% of the GPU's memory, or half the machine's RAM on CPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory * 0.8)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


@dataclass
class LoadedPipeline:
    """A loaded pipeline and what it costs; ``lock`` serializes its use (schedulers hold state)."""

    key: tuple[Any, ...]
    spec: ModelSpec
    pipe: Any
    device: str
    nbytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    _variants: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    uses: int = 0
    parts: Any = None  # LoRA adapters, VAEs, embeddings put on it (nodes/diffusion/parts.py)

    def pipeline_for(self, kind: str, scheduler: str, sigmas: str = "default") -> Any:
        """The text-to-image or image-to-image pipeline with ``scheduler`` (and its sigmas
        spacing), sharing the loaded weights."""
        found = self._variants.get((kind, scheduler, sigmas))
        if found is not None:
            return found
        if type(self.pipe).__name__.startswith("LTX"):  # nodes/diffusion/video_generation.py
            raise InvalidGenerationRequest(
                f"input 'model': '{self.spec.name}' is an LTX-Video model: it makes video; use "
                "text_to_video or image_to_video",
                port="model",
            )
        import diffusers
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForInpainting,
            AutoPipelineForText2Image,
        )

        auto = AutoPipelineForImage2Image if kind == IMAGE_TO_IMAGE else AutoPipelineForText2Image
        if kind == INPAINT:  # ordinary and 9-channel (inpainting) UNets alike
            auto = AutoPipelineForInpainting  # type: ignore[assignment]
        config = {**self.pipe.scheduler.config, **SCHEDULER_OPTIONS.get(scheduler, {}),
                  **SIGMAS[sigmas]}  # fmt: skip
        if scheduler in ("ddim", "ddpm") and "clip_sample" not in config:
            config["clip_sample"] = False  # what SD checkpoints set; diffusers warns otherwise
        sched_cls = getattr(diffusers, SCHEDULERS[scheduler])
        variant = auto.from_pipe(self.pipe, scheduler=sched_cls.from_config(config))
        variant.set_progress_bar_config(disable=True)
        self._variants[(kind, scheduler, sigmas)] = variant
        return variant


def _module_bytes(pipe: Any) -> int:
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in component.parameters())
            total += sum(t.numel() * t.element_size() for t in component.buffers())
    return total


class PipelineCache:
    """Loaded pipelines, one per (model fingerprint, device), within ``budget_bytes``."""

    def __init__(self, budget_bytes: int | None = None, loader: Loader | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._loader = loader
        self._entries: OrderedDict[tuple[Any, ...], LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    @staticmethod
    def key(spec: ModelSpec, device: str) -> tuple[Any, ...]:
        return (*spec.fingerprint(), device)

    def contains(self, spec: ModelSpec, device: str) -> bool:
        with self._lock:
            return self.key(spec, device) in self._entries

    def loaded(self) -> list[LoadedPipeline]:
        with self._lock:
            return list(self._entries.values())

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def get(self, spec: ModelSpec, device: str) -> LoadedPipeline:
        """The pipeline for ``spec`` on ``device``, loading it (and evicting others) if needed."""
        key = self.key(spec, device)
        with self._lock:  # loads are rare; holding the lock keeps one load per model
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.uses += 1
                return entry
            budget = self.budget_bytes or default_budget_bytes(device)
            estimate = spec.weights_bytes() // (2 if device.startswith("cuda") else 1)
            self._evict_for(estimate, budget)
            pipe = self._load(spec, device)
            entry = LoadedPipeline(key, spec, pipe, device, _module_bytes(pipe))
            self._entries[key] = entry
            entry.uses += 1
            self.loads += 1
            if entry.nbytes > budget:
                log.warning(
                    "model %s needs %.1f GB, over the %.1f GB budget",
                    spec.name,
                    entry.nbytes / 2**30,
                    budget / 2**30,
                )
            return entry

    def unload(self) -> list[str]:
        """Drop every loaded pipeline (ComfyUI's ``POST /free``); the names unloaded. A batch
        running on one keeps it until it ends; the next request loads it again."""
        with self._lock:
            names = [e.spec.name for e in self._entries.values()]
            self._entries.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return names

    def _load(self, spec: ModelSpec, device: str) -> Any:
        if self._loader is not None:
            return self._loader(spec, device)
        from nodes.diffusion.loading import load_pipeline

        return load_pipeline(spec, device)

    def _evict_for(self, incoming: int, budget: int) -> None:
        freed = False
        while self._entries and sum(e.nbytes for e in self._entries.values()) + incoming > budget:
            _, old = self._entries.popitem(last=False)
            log.info("evicting model %s (%.2f GB)", old.spec.name, old.nbytes / 2**30)
            self.evictions += 1
            freed = True
        if freed:
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
