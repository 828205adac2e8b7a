"""The diffusion service: a per-process pipeline cache and a device thread that batches requests.

Templates call ``DiffusionService.generate(request, ctx)`` from the runner's worker threads. The
request joins a pending group of compatible requests (same model, kind, size, steps, guidance,
scheduler, strength); one device thread runs each group as one batched pipeline call with a
``torch.Generator`` per item, so each item keeps its own seed. Progress, previews and cancel
stay per item: the calling thread reports its own steps and raises ``TaskCancelledError``
itself; the device thread stops a batch at the next step once all its items are cancelled.

torch and diffusers are imported on first use, never when this module is imported.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import queue
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph_runtime.errors import ModelNotFoundError, TakeflowError, TaskCancelledError
from graph_runtime.templates import ProgressReporter
from nodes.diffusion.models import ModelRegistry, ModelSpec
from stores.home import TakeflowHome

log = logging.getLogger(__name__)

TEXT_TO_IMAGE = "text_to_image"
IMAGE_TO_IMAGE = "image_to_image"
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
}
MAX_SEED = 2**32 - 1
_POLL_S = 0.05

# A cheap latent -> RGB approximation for SD-style 4-channel latents (for previews only).
_LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264),
               (-0.184, -0.271, -0.473))  # fmt: skip


class ModelLoadError(ModelNotFoundError):
    """A configured model folder exists but diffusers could not load it."""

    code = "model_load_failed"


class InvalidGenerationRequest(TakeflowError):
    """A generation request the pipeline cannot run (e.g. a size that is not a multiple of 8)."""

    code = "invalid_generation_request"
    http_status = 422


@dataclass(frozen=True)
class DiffusionSettings:
    """Service options, from the ``"diffusion"`` table of the home config.

    ``max_batch_size`` 1 turns cross-request batching off. ``batch_window_s`` is how long the
    device thread waits for more compatible requests before starting a batch that is not full;
    requests that queue up while the device is busy are batched even with a window of 0.
    """

    device: str = "auto"
    max_batch_size: int = 4
    batch_window_s: float = 0.01
    memory_budget_gb: float | None = None
    preview_every: int = 5
    idle_exit_s: float = 30.0

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> DiffusionSettings:
        raw = raw or {}
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        if "batch_window_ms" in raw:
            known["batch_window_s"] = float(raw["batch_window_ms"]) / 1000.0
        settings = cls(**known)
        if settings.max_batch_size < 1:
            raise ValueError("diffusion.max_batch_size must be at least 1")
        return settings


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make. ``seed`` None or negative means a random seed."""

    prompt: str
    model: str = "demo"
    kind: str = TEXT_TO_IMAGE
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance: float = 7.5
    scheduler: str = "euler"
    seed: int | None = None
    strength: float = 0.75
    image: Any = None  # PIL image, image_to_image only

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one batched pipeline call."""
        strength = self.strength if self.kind == IMAGE_TO_IMAGE else None
        return (self.kind, self.model, self.width, self.height, self.steps,
                float(self.guidance), self.scheduler, strength)  # fmt: skip

    def check(self) -> None:
        for name, value in (("width", self.width), ("height", self.height)):
            if value % 8 or not 64 <= value <= 2048:
                lower, upper = max(64, value - value % 8), min(2048, value - value % 8 + 8)
                raise InvalidGenerationRequest(
                    f"{name} {value} is not a multiple of 8 between 64 and 2048; "
                    f"try {lower} or {upper}",
                    port=name,
                )
        if self.scheduler not in SCHEDULERS:
            raise InvalidGenerationRequest(
                f"unknown scheduler '{self.scheduler}' (known: {', '.join(SCHEDULERS)})",
                port="scheduler",
            )
        if self.kind == IMAGE_TO_IMAGE and self.image is None:
            raise InvalidGenerationRequest("image_to_image needs an input image", port="image")


@dataclass(frozen=True)
class GenerationResult:
    image: Any  # PIL.Image.Image
    seed: int
    model: ModelSpec
    batch_size: int
    device: str


# -- pipeline cache ------------------------------------------------------------------------


def _weights_bytes(folder: Path) -> int:
    return sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt") and p.is_file()
    )


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_budget_bytes(device: str) -> int:
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
    _variants: dict[tuple[str, str], Any] = field(default_factory=dict)
    uses: int = 0

    def pipeline_for(self, kind: str, scheduler: str) -> Any:
        """The text-to-image or image-to-image pipeline with ``scheduler``, sharing weights."""
        found = self._variants.get((kind, scheduler))
        if found is not None:
            return found
        import diffusers
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        auto = AutoPipelineForImage2Image if kind == IMAGE_TO_IMAGE else AutoPipelineForText2Image
        config = dict(self.pipe.scheduler.config)
        if scheduler == "ddim" and "clip_sample" not in config:
            config["clip_sample"] = False  # what SD checkpoints set; diffusers warns otherwise
        sched_cls = getattr(diffusers, SCHEDULERS[scheduler])
        variant = auto.from_pipe(self.pipe, scheduler=sched_cls.from_config(config))
        variant.set_progress_bar_config(disable=True)
        self._variants[(kind, scheduler)] = variant
        return variant


class PipelineCache:
    """Loaded pipelines, one per (folder, device, dtype), evicted least-recently-used when the
    estimated total would pass the memory budget. Shared by every service in the process."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[Any, ...], LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    @staticmethod
    def key(spec: ModelSpec, device: str) -> tuple[Any, ...]:
        index = spec.path / "model_index.json"
        return (str(spec.path.resolve()), index.stat().st_mtime_ns, device)

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
            budget = self.budget_bytes or _default_budget_bytes(device)
            fp16 = device.startswith("cuda")
            estimate = _weights_bytes(spec.path) // (2 if fp16 else 1)
            self._evict_for(estimate, budget)
            entry = self._load(key, spec, device, fp16)
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

    @staticmethod
    def _load(key: tuple[Any, ...], spec: ModelSpec, device: str, fp16: bool) -> LoadedPipeline:
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.pipelines import pipeline_utils
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        dtype = torch.float16 if fp16 else torch.float32
        # diffusers renamed ``torch_dtype`` to ``dtype`` (and warns on the old name).
        dtype_arg = "dtype" if "_resolve_dtype" in dir(pipeline_utils) else "torch_dtype"
        try:
            pipe = DiffusionPipeline.from_pretrained(
                spec.path, local_files_only=True, **{dtype_arg: dtype}
            )
            pipe = pipe.to(device)
        except Exception as exc:
            raise ModelLoadError(
                f"model '{spec.name}' at '{spec.path}' could not be loaded on {device}: "
                f"{type(exc).__name__}: {exc}",
                model=spec.name,
                path=str(spec.path),
            ) from exc
        pipe.set_progress_bar_config(disable=True)
        nbytes = 0
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                nbytes += sum(t.numel() * t.element_size() for t in component.parameters())
                nbytes += sum(t.numel() * t.element_size() for t in component.buffers())
        return LoadedPipeline(key, spec, pipe, device, nbytes)


_SHARED_CACHE: PipelineCache | None = None
_SHARED_LOCK = threading.Lock()


def shared_pipeline_cache() -> PipelineCache:
    """The process's pipeline cache (a model is loaded once per process)."""
    global _SHARED_CACHE
    with _SHARED_LOCK:
        if _SHARED_CACHE is None:
            _SHARED_CACHE = PipelineCache()
        return _SHARED_CACHE


# -- batching ------------------------------------------------------------------------------


@dataclass
class _Item:
    request: GenerationRequest
    seed: int
    spec: ModelSpec
    check_cancelled: Callable[[], None]
    updates: queue.SimpleQueue[tuple[Any, ...]] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    image: Any = None
    error: BaseException | None = None
    batch_size: int = 0

    def is_cancelled(self) -> bool:
        if not self.cancelled.is_set():
            try:
                self.check_cancelled()
            except TaskCancelledError:
                self.cancelled.set()
        return self.cancelled.is_set()


@dataclass
class _Group:
    key: tuple[Any, ...]
    created: float
    items: list[_Item] = field(default_factory=list)


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
        self.cache = cache or shared_pipeline_cache()
        if self.settings.memory_budget_gb is not None:
            self.cache.budget_bytes = int(self.settings.memory_budget_gb * 2**30)
        self._device: str | None = None
        self._groups: list[_Group] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches: deque[BatchRecord] = deque(maxlen=1000)  # the latest, newest last
        self.current: BatchRecord | None = None  # the batch on the device now

    @classmethod
    def for_home(cls, home: TakeflowHome) -> DiffusionService:
        settings = DiffusionSettings.from_config(home.config().get("diffusion"))
        return cls(ModelRegistry(home), settings)

    @property
    def device(self) -> str:
        if self._device is None:
            wanted = self.settings.device
            self._device = default_device() if wanted == "auto" else wanted
        return self._device

    def close(self) -> None:
        """Stop the device thread once its current batch ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    # -- caller side ---------------------------------------------------------------------

    def generate(self, request: GenerationRequest, ctx: ProgressReporter) -> GenerationResult:
        """Make one image, reporting its steps through ``ctx``; blocks the calling thread."""
        request.check()
        spec = self.models.resolve(request.model)
        seed = request.seed
        if seed is None or seed < 0:
            seed = secrets.randbelow(MAX_SEED + 1)
        item = _Item(request, seed, spec, ctx.check_cancelled)
        ctx.check_cancelled()
        if not self.cache.contains(spec, self.device):
            what = "demo model (random weights)" if spec.demo else "model"
            ctx.progress(0.0, "loading", f"loading {what} '{spec.name}'")
        self._submit(item)
        try:
            self._follow(item, ctx)
        except BaseException:
            item.cancelled.set()  # the device thread stops the batch if nobody else needs it
            raise
        if item.error is not None:
            raise item.error
        return GenerationResult(item.image, seed, spec, item.batch_size, self.device)

    def _follow(self, item: _Item, ctx: ProgressReporter) -> None:
        """Report the item's steps from the calling thread until the device thread is done."""
        previews = True
        while True:
            try:
                kind, *update = item.updates.get(timeout=_POLL_S)
            except queue.Empty:
                ctx.check_cancelled()
                continue
            if kind == "done":
                return
            step, total, latent = update
            fraction, message = 0.95 * step / total, f"step {step} of {total}"
            preview = None
            if latent is not None and previews:
                preview = latent_preview_png(latent)
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

    def _submit(self, item: _Item) -> None:
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
            live = [i for i in group.items if not i.is_cancelled()]
            for item in group.items:
                if item not in live:
                    item.error = TaskCancelledError("task was cancelled")
                    item.updates.put(("done",))
            if live:
                self._run_batch(live)

    def _run_batch(self, items: list[_Item]) -> None:
        import torch

        first = items[0].request
        started = time.perf_counter()
        record = BatchRecord(len(items), first.steps, 0, False, 0.0)
        self.current = record
        every = max(1, self.settings.preview_every)
        try:
            entry = self.cache.get(items[0].spec, self.device)
            with entry.lock:
                pipe = entry.pipeline_for(first.kind, first.scheduler)

                def on_step(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                    total = p.num_timesteps
                    step = i + 1
                    record.steps_total, record.steps_done = total, step
                    latents = tensors.get("latents")
                    want_preview = latents is not None and step % every == 0 and step < total
                    for j, item in enumerate(items):
                        if item.cancelled.is_set():
                            continue
                        latent = (
                            latents[j].detach().float().cpu().numpy()
                            if want_preview and latents is not None
                            else None
                        )
                        item.updates.put(("step", step, total, latent))
                    if all(item.is_cancelled() for item in items):
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
                        i.request.image.convert("RGB").resize((first.width, first.height))
                        for i in items
                    ]
                    kwargs["strength"] = first.strength
                else:
                    kwargs["width"], kwargs["height"] = first.width, first.height
                images = pipe(**kwargs).images
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


def latent_preview_png(latent: Any, max_side: int = 128) -> bytes:
    """A small PNG from one latent (C, h, w) by a fixed linear map to RGB: cheap, approximate."""
    import numpy as np
    from PIL import Image

    lat = np.asarray(latent, dtype=np.float32)
    if lat.shape[0] == 4:
        rgb = np.einsum("chw,cr->hwr", lat, np.asarray(_LATENT_RGB, dtype=np.float32))
    else:
        rgb = np.moveaxis(lat[:3], 0, -1)
    rgb = np.nan_to_num(rgb)
    lo, hi = float(rgb.min()), float(rgb.max())
    scaled = (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
    image = Image.fromarray((scaled * 255).astype(np.uint8), "RGB")
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def default_diffusion_services(home: TakeflowHome) -> dict[str, Any]:
    """The services that ``open_runtime`` passes to templates: ``{"diffusion": service}``."""
    return {"diffusion": DiffusionService.for_home(home)}
