"""Video generation on the diffusion service: LTX-Video text-to-video and image-to-video.

``generate_video(service, request, ctx)`` resolves the model through the service's registry,
takes the loaded pipeline from the service's pipeline cache (the same cache, devices and memory
budget as images), runs it on the calling worker thread under the pipeline's lock, reports each
denoising step (with a preview frame every ``preview_every`` steps through the service's
previewer), each decoded chunk and the encoded frames, and streams the frames into an H.264 MP4
(``nodes.video.VideoWriter``). Video requests are not batched: one clip is already a batch of
frames.

Family: LTX-Video (diffusers ``LTXPipeline`` / ``LTXImageToVideoPipeline``). Its VAE compresses
32x in space and 8x in time, so sizes are multiples of 32 and frame counts are 8k+1. Image to
video encodes the given frame with the VAE as the first latent frame (no image encoder).

torch and diffusers are imported on first use.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from PIL import Image

from graph_runtime.errors import TaskCancelledError
from graph_runtime.templates import ProgressReporter
from nodes.diffusion.models import ModelSpec
from nodes.diffusion.pipeline_cache import LoadedPipeline
from nodes.diffusion.requests import MAX_SEED, InvalidGenerationRequest
from nodes.diffusion.service import DiffusionService
from nodes.video import Video, VideoWriter

log = logging.getLogger(__name__)

TEXT_TO_VIDEO = "text_to_video"
IMAGE_TO_VIDEO = "image_to_video"
SPATIAL_MULTIPLE = 32  # LTX-Video's VAE: 32x in space
TEMPORAL_MULTIPLE = 8  # and 8x in time: 8k+1 frames
MIN_SIDE, MAX_SIDE = 64, 2048
MIN_FRAMES, MAX_FRAMES = 9, 1025
MAX_SEQUENCE_LENGTH = 128  # T5 tokens of the prompt (LTX-Video's default)
_PIPELINES = {TEXT_TO_VIDEO: "LTXPipeline", IMAGE_TO_VIDEO: "LTXImageToVideoPipeline"}


def image_content_hash(image: Image.Image) -> str:
    """sha256 of an image's size and RGB pixels: equal for equal pictures, whatever the file."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:RGB:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class VideoRequest:
    """One clip to make. ``seed`` None or negative means a random seed."""

    prompt: str
    model: str = "demo-video"
    kind: str = TEXT_TO_VIDEO
    negative_prompt: str = ""
    width: int = 704
    height: int = 480
    frames: int = 97
    fps: float = 24.0
    steps: int = 30
    cfg: float = 3.0
    seed: int | None = None
    image: Any = None  # PIL image, image_to_video only: the first frame
    preview_method: str = "auto"

    def check(self) -> None:
        """Refuse what LTX-Video cannot make, naming the input."""
        for name, value in (("width", self.width), ("height", self.height)):
            if value % SPATIAL_MULTIPLE or not MIN_SIDE <= value <= MAX_SIDE:
                lower = max(MIN_SIDE, value - value % SPATIAL_MULTIPLE)
                raise InvalidGenerationRequest(
                    f"input '{name}': LTX-Video makes sides that are multiples of "
                    f"{SPATIAL_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}; {value} is not one "
                    f"(try {lower} or {min(MAX_SIDE, lower + SPATIAL_MULTIPLE)})",
                    port=name,
                )
        if (self.frames - 1) % TEMPORAL_MULTIPLE or not MIN_FRAMES <= self.frames <= MAX_FRAMES:
            below = max(MIN_FRAMES, self.frames - (self.frames - 1) % TEMPORAL_MULTIPLE)
            raise InvalidGenerationRequest(
                f"input 'frames': LTX-Video makes 8k+1 frames ({MIN_FRAMES}, 17, 25, ... "
                f"{MAX_FRAMES}); {self.frames} is not one (try {below} or "
                f"{min(MAX_FRAMES, below + TEMPORAL_MULTIPLE)})",
                port="frames",
            )
        if not 0 < self.fps <= 240:
            raise InvalidGenerationRequest(
                f"input 'fps': frames per second must be in (0, 240], got {self.fps}", port="fps"
            )
        if self.steps < 1:
            raise InvalidGenerationRequest("input 'steps': at least 1 step", port="steps")
        if self.kind == IMAGE_TO_VIDEO and not isinstance(self.image, Image.Image):
            raise InvalidGenerationRequest(
                "input 'image': image_to_video needs an image to start from", port="image"
            )

    def conditioning_frame(self) -> Image.Image | None:
        """The first frame as the pipeline gets it: the input image at the clip's size."""
        if self.image is None:
            return None
        image = self.image.convert("RGB")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.LANCZOS)
        return image


@dataclass(frozen=True)
class VideoResult:
    video: Video
    seed: int
    model: ModelSpec
    device: str
    conditioning: Image.Image | None = None  # the first frame as conditioned on (image_to_video)


def video_pipeline(entry: LoadedPipeline, kind: str, model: str) -> Any:
    """The text-to-video or image-to-video pipeline sharing ``entry``'s loaded weights."""
    key = (kind, "video", "")
    found = entry._variants.get(key)
    if found is not None:
        return found
    import diffusers

    name = type(entry.pipe).__name__
    if not name.startswith("LTX"):
        raise InvalidGenerationRequest(
            f"input 'model': '{model}' is a {name}, not an LTX-Video model; text_to_video and "
            "image_to_video run LTX-Video pipelines (e.g. 'demo-video')",
            port="model",
        )
    pipeline_class = getattr(diffusers, _PIPELINES[kind])
    pipe = entry.pipe
    if type(pipe) is not pipeline_class:  # same modules, another __call__
        pipe = pipeline_class(**{k: v for k, v in entry.pipe.components.items()})
    pipe.set_progress_bar_config(disable=True)
    entry._variants[key] = pipe
    return pipe


def generate_video(
    service: DiffusionService, request: VideoRequest, ctx: ProgressReporter
) -> VideoResult:
    """Make one clip as an MP4, reporting steps, decoded chunks and encoded frames."""
    request.check()
    spec = service.models.resolve(request.model)
    seed = request.seed
    if seed is None or seed < 0:
        seed = secrets.randbelow(MAX_SEED + 1)
    ctx.check_cancelled()
    device = service.device
    if not service.cache.contains(spec, device):
        what = "demo video model (random weights)" if spec.demo else "video model"
        ctx.progress(0.0, "loading", f"loading {what} '{spec.name}'")
    entry = service.cache.get(spec, device)
    conditioning = request.conditioning_frame()
    with entry.lock:
        pipe = video_pipeline(entry, request.kind, request.model)
        frames = _run(service, pipe, request, seed, conditioning, ctx)
    video = _encode(frames, request, ctx)
    return VideoResult(video, seed, spec, device, conditioning)


def _run(
    service: DiffusionService,
    pipe: Any,
    request: VideoRequest,
    seed: int,
    conditioning: Image.Image | None,
    ctx: ProgressReporter,
) -> Any:
    """The pipeline call; returns the frames as a float array (frames, height, width, 3)."""
    import torch

    every = service.settings.preview_every
    previews = request.preview_method != "none"
    latent_shape = (
        (request.frames - 1) // pipe.vae_temporal_compression_ratio + 1,
        request.height // pipe.vae_spatial_compression_ratio,
        request.width // pipe.vae_spatial_compression_ratio,
    )

    def on_step(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        nonlocal previews
        step, total = i + 1, p.num_timesteps
        fraction, message = 0.85 * step / total, f"step {step} of {total}"
        preview = None
        if previews and step % every == 0 and step < total:
            try:
                preview = _preview(service, p, tensors["latents"], latent_shape, request)
            except Exception as exc:  # a preview must never fail the generation
                log.warning("video preview failed, continuing without: %s", exc)
                previews = False
        if preview is not None:
            try:
                ctx.progress(fraction, "denoising", message, preview)
            except TaskCancelledError:
                raise
            except Exception as exc:
                log.warning("progress preview failed, continuing without: %s", exc)
                previews, preview = False, None
        if preview is None:
            ctx.progress(fraction, "denoising", message)
        if step == total:
            ctx.progress(0.86, "decoding", "decoding the frames")
        return {}

    decoded = 0

    def on_decoded_chunk(module: Any, args: Any, output: Any) -> None:
        nonlocal decoded
        decoded += 1
        ctx.progress(0.88, "decoding", f"decoded chunk {decoded}")

    kwargs: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "width": request.width,
        "height": request.height,
        "num_frames": request.frames,
        "frame_rate": request.fps,
        "num_inference_steps": request.steps,
        "guidance_scale": request.cfg,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "callback_on_step_end": on_step,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "output_type": "np",
    }
    if conditioning is not None:
        kwargs["image"] = conditioning
    hook = pipe.vae.decoder.register_forward_hook(on_decoded_chunk)
    try:
        return pipe(**kwargs).frames[0]
    finally:
        hook.remove()


def _preview(
    service: DiffusionService,
    pipe: Any,
    latents: Any,
    latent_shape: tuple[int, int, int],
    request: VideoRequest,
) -> bytes | None:
    """The middle latent frame of the clip being denoised, through the service's previewer."""
    frames, height, width = latent_shape
    unpacked = pipe._unpack_latents(
        latents[:1], frames, height, width,
        pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size,
    )  # fmt: skip  # (1, channels, frames, height, width)
    latent = unpacked[0, :, frames // 2].detach().float().cpu().numpy()
    return service.previewer.make(
        latent, "ltxv", request.preview_method, request.width, request.height
    )


def _encode(frames: Any, request: VideoRequest, ctx: ProgressReporter) -> Video:
    """Stream the frames into an MP4, reporting about every tenth."""
    import numpy as np

    total = len(frames)
    every = max(1, total // 10)
    with VideoWriter(request.width, request.height, request.fps) as writer:
        for index in range(total):
            pixels = np.clip(np.asarray(frames[index]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            writer.write(Image.fromarray(pixels, "RGB"))
            done = index + 1
            if done % every == 0 or done == total:
                ctx.progress(0.9 + 0.1 * done / total, "encoding", f"frame {done} of {total}")
        return writer.close()
