"""The diffusion service: what templates call to make an image.

``DiffusionService.generate(request, ctx)`` runs on the runner's worker threads: it resolves the
model, hands a work item to the batching scheduler and, from the calling thread, reports the
item's steps and previews through ``ctx``. The caller turns ``ctx``'s cancel into the item's
``cancelled`` event (polled every few ms), which the device thread reads between steps.

torch and diffusers are imported on first use, never when this module is imported.
"""

from __future__ import annotations

import logging
import queue
import secrets
from collections import deque

from graph_runtime.errors import TaskCancelledError
from graph_runtime.services import ServiceKey
from graph_runtime.templates import ProgressReporter
from nodes.diffusion.config import DiffusionSettings
from nodes.diffusion.models import ModelRegistry, ModelSpec
from nodes.diffusion.parts import resolve_parts
from nodes.diffusion.pipeline_cache import LoadedPipeline, PipelineCache, default_device
from nodes.diffusion.previews import Previewer, TaesdDecoders, latent_preview_png
from nodes.diffusion.requests import (
    IMAGE_TO_IMAGE,
    MAX_SEED,
    SCHEDULERS,
    SIGMA_SCHEDULERS,
    SIGMAS,
    TEXT_TO_IMAGE,
    GenerationRequest,
    GenerationResult,
    InvalidGenerationRequest,
    ModelLoadError,
)
from nodes.diffusion.scheduler import BatchRecord, BatchScheduler, WorkItem

# The pack's public names, importable from here as before the split.
__all__ = [
    "DIFFUSION",
    "IMAGE_TO_IMAGE",
    "MAX_SEED",
    "SCHEDULERS",
    "SIGMAS",
    "SIGMA_SCHEDULERS",
    "TEXT_TO_IMAGE",
    "BatchRecord",
    "DiffusionService",
    "DiffusionSettings",
    "GenerationRequest",
    "GenerationResult",
    "InvalidGenerationRequest",
    "LoadedPipeline",
    "ModelLoadError",
    "ModelRegistry",
    "ModelSpec",
    "PipelineCache",
    "latent_preview_png",
]

log = logging.getLogger(__name__)

_CANCEL_POLL_S = 0.01  # how soon a cancel reaches the device thread while waiting for a step


class DiffusionService:
    """Generates images for templates: model lookup, pipeline cache, batching, progress."""

    def __init__(
        self,
        models: ModelRegistry,
        settings: DiffusionSettings | None = None,
        cache: PipelineCache | None = None,
    ) -> None:
        self.models = models
        self.settings = settings or DiffusionSettings()
        self.cache = cache or PipelineCache(self.settings.memory_budget_bytes)
        self._device: str | None = None
        self.scheduler = BatchScheduler(self.cache, self.settings, lambda: self.device)
        taesd = TaesdDecoders(lambda: models.folders.folder("vae_approx"))
        self.previewer = Previewer(taesd, self.settings.preview_size)
        self.scheduler.controlnets.config_root = models.home / "models" / ".configs" / "controlnet"

    def warm_models(self) -> list[str]:
        """Names of the models loaded in this service's cache."""
        return sorted({loaded.spec.name for loaded in self.cache.loaded()})

    @property
    def device(self) -> str:
        if self._device is None:
            wanted = self.settings.device
            self._device = default_device() if wanted == "auto" else wanted
        return self._device

    @property
    def batches(self) -> deque[BatchRecord]:
        """The latest batches the device ran, newest last."""
        return self.scheduler.batches

    @property
    def current(self) -> BatchRecord | None:
        """The batch on the device now."""
        return self.scheduler.current

    def close(self) -> None:
        """Stop the device thread once its current batch ends."""
        self.scheduler.close()

    def generate(self, request: GenerationRequest, ctx: ProgressReporter) -> GenerationResult:
        """Make one image, reporting its steps through ``ctx``; blocks the calling thread."""
        request.check()
        spec = self.models.resolve(request.model)
        parts, request = resolve_parts(self.models.folders, request)
        seed = request.seed
        if seed is None or seed < 0:
            seed = secrets.randbelow(MAX_SEED + 1)
        item = WorkItem(request, seed, spec, parts=parts)
        ctx.check_cancelled()
        if not self.cache.contains(spec, self.device):
            what = "demo model (random weights)" if spec.demo else "model"
            ctx.progress(0.0, "loading", f"loading {what} '{spec.name}'")
        self.scheduler.submit(item)
        try:
            self._follow(item, ctx)
        except BaseException:
            item.cancelled.set()  # the device thread stops the batch if nobody else needs it
            raise
        if item.error is not None:
            raise item.error
        return GenerationResult(item.image, seed, spec, item.batch_size, self.device, item.parts)

    def _follow(self, item: WorkItem, ctx: ProgressReporter) -> None:
        """Report the item's steps from the calling thread until the device thread is done."""
        previews = True
        while True:
            try:
                kind, *update = item.updates.get(timeout=_CANCEL_POLL_S)
            except queue.Empty:
                ctx.check_cancelled()
                continue
            if kind == "done":
                return
            step, total, latent, arch = update
            fraction, message = 0.95 * step / total, f"step {step} of {total}"
            preview = None
            if latent is not None and previews:
                request = item.request
                try:
                    preview = self.previewer.make(
                        latent, arch, request.preview_method, request.width, request.height
                    )
                except Exception as exc:  # a preview must never fail the generation
                    log.warning("preview failed, continuing without: %s", exc)
                    previews, preview = False, None
            if preview is not None:
                try:
                    ctx.progress(fraction, "denoising", message, preview)
                except TaskCancelledError:
                    raise
                except Exception as exc:  # a preview must never fail the generation
                    log.warning("progress preview failed, continuing without: %s", exc)
                    previews, preview = False, None
            if preview is None:
                ctx.progress(fraction, "denoising", message)
            if step == total:
                ctx.progress(0.96, "decoding", "decoding the image")


DIFFUSION = ServiceKey("diffusion", DiffusionService)
