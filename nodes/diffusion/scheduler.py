"""The batching scheduler: one device thread runs groups of compatible requests as one call.

A request joins a pending group of compatible requests (same model, kind, size, steps,
guidance, scheduler, strength); the device thread runs each group as one batched pipeline call
with a ``torch.Generator`` per item, so each item keeps its own seed. The caller owns each item's
``cancelled`` event; the device thread only reads it, and stops a batch at the next step once
all its items are cancelled. Per-step updates go back through each item's queue.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.errors import TaskCancelledError
from nodes.diffusion.config import DiffusionSettings
from nodes.diffusion.controlnet import ControlNetCache
from nodes.diffusion.controlnet import call_kwargs as control_kwargs
from nodes.diffusion.lora_fuse import mark_fused
from nodes.diffusion.models import ModelSpec
from nodes.diffusion.parts import apply_parts
from nodes.diffusion.pipeline_cache import PipelineCache
from nodes.diffusion.requests import IMAGE_TO_IMAGE, INPAINT, GenerationRequest

log = logging.getLogger(__name__)


@dataclass
class WorkItem:
    """One request on its way through the device thread.

    ``updates`` carries ``("step", step, total, latent | None, arch)`` and finally ``("done",)``;
    after ``done`` either ``image`` or ``error`` is set.
    """

    request: GenerationRequest
    seed: int
    spec: ModelSpec
    cancelled: threading.Event = field(default_factory=threading.Event)
    updates: queue.SimpleQueue[tuple[Any, ...]] = field(default_factory=queue.SimpleQueue)
    image: Any = None
    error: BaseException | None = None
    batch_size: int = 0
    parts: Any = None  # its ModelParts (LoRAs, VAE, CLIP skip, embeddings), resolved


@dataclass
class _Group:
    key: tuple[Any, ...]
    created: float
    items: list[WorkItem] = field(default_factory=list)


class _BatchInterrupted(Exception):
    """Raised from the step callback to stop a batch whose items were all cancelled."""


@dataclass
class BatchRecord:
    """What the device thread ran (for benchmarks and tests): sizes and steps completed."""

    size: int
    steps_total: int
    steps_done: int
    interrupted: bool
    seconds: float


class BatchScheduler:
    """Groups compatible work items and runs them on one device thread (started on demand,
    gone after ``settings.idle_exit_s`` without work)."""

    def __init__(
        self, cache: PipelineCache, settings: DiffusionSettings, device: Callable[[], str]
    ) -> None:
        self.cache = cache
        self.settings = settings
        self._device = device
        self._groups: list[_Group] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches: deque[BatchRecord] = deque(maxlen=1000)  # the latest, newest last
        self.current: BatchRecord | None = None  # the batch on the device now
        self.controlnets = ControlNetCache()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, item: WorkItem) -> None:
        key = (item.spec.path, *item.request.batch_key())
        limit = self.settings.max_batch_size
        with self._cond:
            if self._closed:
                raise RuntimeError("the diffusion service is closed")
            group = next((g for g in self._groups if g.key == key and len(g.items) < limit), None)
            if group is None:
                group = _Group(key, time.monotonic())
                self._groups.append(group)
            group.items.append(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._device_loop, name="takeflow-diffusion", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the device thread once its current batch ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    # -- device thread -------------------------------------------------------------------

    def _next_group(self) -> _Group | None:
        with self._cond:
            idle_since = time.monotonic()
            while not self._groups:
                if self._closed or time.monotonic() - idle_since > self.settings.idle_exit_s:
                    self._thread = None
                    return None
                self._cond.wait(self.settings.idle_exit_s)
            group = self._groups[0]
            deadline = group.created + self.settings.batch_window_s
            while len(group.items) < self.settings.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._groups.remove(group)
            return group

    def _device_loop(self) -> None:
        try:
            self._serve_groups()
        except BaseException:
            log.exception("the diffusion device thread failed")
            with self._cond:
                self._thread = None
                failed, self._groups = self._groups, []
            for group in failed:
                for item in group.items:
                    item.error = RuntimeError("the diffusion device thread failed; see the log")
                    item.updates.put(("done",))
            raise

    def _serve_groups(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            live = [i for i in group.items if not i.cancelled.is_set()]
            for item in group.items:
                if item not in live:
                    item.error = TaskCancelledError("task was cancelled")
                    item.updates.put(("done",))
            if live:
                self._run_batch(live)

    def _run_batch(self, items: list[WorkItem]) -> None:
        first = items[0].request
        started = time.perf_counter()
        record = BatchRecord(len(items), first.steps, 0, False, 0.0)
        self.current = record
        try:
            entry = self.cache.get(items[0].spec, self._device())
            with entry.lock:
                pipe = entry.pipeline_for(first.kind, first.scheduler, first.sigmas)
                extra = apply_parts(entry, pipe, [i.parts for i in items],
                                    self.settings.lora_fuse)  # LoRAs, VAE, ...  # fmt: skip
                mark_fused(entry, items)
                if first.controls:  # the ControlNet variant shares the patched components
                    pipe = self.controlnets.pipeline(pipe, first.kind, first.controls)
                images = pipe(**self._call_kwargs(pipe, items, record), **extra).images
            for item, image in zip(items, images, strict=True):
                item.image = image.convert("RGB")
                item.batch_size = len(items)
        except _BatchInterrupted:
            record.interrupted = True
            for item in items:
                item.error = TaskCancelledError("task was cancelled")
        except BaseException as exc:
            for item in items:
                item.error = exc
        finally:
            record.seconds = time.perf_counter() - started
            self.batches.append(record)
            self.current = None
            for item in items:
                item.updates.put(("done",))

    def _call_kwargs(self, pipe: Any, items: list[WorkItem], record: BatchRecord) -> dict[str, Any]:
        import torch

        first = items[0].request
        every = self.settings.preview_every
        arch = "sdxl" if "XL" in type(pipe).__name__ else "sd15"  # picks the preview's RGB map

        def on_step(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = p.num_timesteps
            step = i + 1
            record.steps_total, record.steps_done = total, step
            latents = tensors.get("latents")
            want_preview = latents is not None and step % every == 0 and step < total
            for j, item in enumerate(items):
                if item.cancelled.is_set():
                    continue
                latent = None
                if want_preview and latents is not None and item.request.preview_method != "none":
                    latent = latents[j].detach().float().cpu().numpy()
                item.updates.put(("step", step, total, latent, arch))
            if all(item.cancelled.is_set() for item in items):
                p._interrupt = True
                raise _BatchInterrupted
            return {}

        kwargs: dict[str, Any] = {
            "prompt": [i.request.prompt for i in items],
            "negative_prompt": [i.request.negative_prompt or "" for i in items],
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": [torch.Generator("cpu").manual_seed(i.seed) for i in items],
            "callback_on_step_end": on_step,
            "output_type": "pil",
        }
        if first.kind == IMAGE_TO_IMAGE:
            kwargs["image"] = [
                i.request.image.convert("RGB").resize((first.width, first.height)) for i in items
            ]
            kwargs["strength"] = first.strength
        elif first.kind == INPAINT:  # one mask per batch (batch_key)
            size = (first.width, first.height)
            kwargs["image"] = [i.request.image.convert("RGB").resize(size) for i in items]
            kwargs["mask_image"] = first.mask.convert("L").resize(size, 0)  # nearest
            kwargs.update(strength=first.strength, width=first.width, height=first.height)
        else:
            kwargs["width"], kwargs["height"] = first.width, first.height
        if first.controls:
            kwargs.update(control_kwargs(items, first.kind, first.width, first.height))
        if "original_size" in inspect.signature(pipe.__call__).parameters:
            # SDXL's size conditioning: made at this size, uncropped, for this size.
            size = (first.height, first.width)
            kwargs.update(original_size=size, target_size=size, crops_coords_top_left=(0, 0))
        return kwargs
