"""What a caller asks the diffusion service for, and what it gets back."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from graph_runtime.errors import ModelNotFoundError, TakeflowError
from nodes.diffusion.model_value import LoraUse
from nodes.diffusion.models import ModelSpec

TEXT_TO_IMAGE = "text_to_image"
IMAGE_TO_IMAGE = "image_to_image"
INPAINT = "inpaint"  # image + mask: repaint where the mask is white
# Sampler name -> diffusers scheduler class (SCHEDULER_OPTIONS: extra config for some).
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
    "dpm++_sde": "DPMSolverMultistepScheduler",
    "dpm++_2s": "DPMSolverSinglestepScheduler",
    "heun": "HeunDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "deis": "DEISMultistepScheduler",
    "ddpm": "DDPMScheduler",
}
SCHEDULER_OPTIONS: dict[str, dict[str, Any]] = {"dpm++_sde": {"algorithm_type": "sde-dpmsolver++"}}
# Noise schedule spacing -> scheduler config; only some samplers can space their sigmas.
SIGMAS: dict[str, dict[str, Any]] = {
    "default": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
}
SIGMA_SCHEDULERS = frozenset({"euler", "dpm++", "dpm++_sde", "dpm++_2s", "heun", "unipc",
                              "deis"})  # fmt: skip
MAX_SEED = 2**32 - 1
MIN_SIZE, MAX_SIZE = 64, 2048


class ModelLoadError(ModelNotFoundError):
    """A configured model exists but diffusers could not load it."""

    code = "model_load_failed"


class InvalidGenerationRequest(TakeflowError):
    """A generation request the pipeline cannot run (e.g. a size that is not a multiple of 8)."""

    code = "invalid_generation_request"
    http_status = 422


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
    sigmas: str = "default"
    preview_method: str = "auto"  # nodes.diffusion.previews.PREVIEW_METHODS; not in batch_key
    mask: Any = None  # PIL "L" image (white: repaint), inpaint only
    controls: tuple[Any, ...] = ()  # ControlSpec (nodes.diffusion.controlnet), in order
    # The model's parts (nodes/diffusion/model_value.py): its LoRA stack, VAE file, CLIP skip.
    loras: tuple[LoraUse, ...] = ()
    vae: str | None = None
    clip_skip: int = 0

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one batched pipeline call."""
        strength = self.strength if self.kind in (IMAGE_TO_IMAGE, INPAINT) else None
        mask = _mask_digest(self.mask) if self.mask is not None else None
        return (self.kind, self.model, self.width, self.height, self.steps,
                float(self.guidance), self.scheduler, self.sigmas, strength, mask,
                tuple(c.key() for c in self.controls), self.loras, self.vae,
                self.clip_skip)  # fmt: skip

    def check(self) -> None:
        for name, value in (("width", self.width), ("height", self.height)):
            if value % 8 or not MIN_SIZE <= value <= MAX_SIZE:
                lower = max(MIN_SIZE, value - value % 8)
                upper = min(MAX_SIZE, value - value % 8 + 8)
                raise InvalidGenerationRequest(
                    f"{name} {value} is not a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}; "
                    f"try {lower} or {upper}",
                    port=name,
                )
        if self.scheduler not in SCHEDULERS:
            raise InvalidGenerationRequest(
                f"unknown scheduler '{self.scheduler}' (known: {', '.join(SCHEDULERS)})",
                port="scheduler",
            )
        if self.sigmas not in SIGMAS:
            raise InvalidGenerationRequest(
                f"unknown sigmas '{self.sigmas}' (known: {', '.join(SIGMAS)})", port="sigmas"
            )
        if self.sigmas != "default" and self.scheduler not in SIGMA_SCHEDULERS:
            raise InvalidGenerationRequest(
                f"scheduler '{self.scheduler}' cannot use '{self.sigmas}' sigmas (those can: "
                f"{', '.join(sorted(SIGMA_SCHEDULERS))})",
                port="sigmas",
            )
        if self.kind == IMAGE_TO_IMAGE and self.image is None:
            raise InvalidGenerationRequest("image_to_image needs an input image", port="image")
        if self.kind == INPAINT and (self.image is None or self.mask is None):
            port = "image" if self.image is None else "mask"
            raise InvalidGenerationRequest(f"inpaint needs an input {port}", port=port)


def _mask_digest(mask: Any) -> str:
    """Masks batch separately: requests batch only with an identical mask."""
    return hashlib.sha256(f"{mask.mode}{mask.size}".encode() + mask.tobytes()).hexdigest()


@dataclass(frozen=True)
class GenerationResult:
    image: Any  # PIL.Image.Image
    seed: int
    model: ModelSpec
    batch_size: int
    device: str
    parts: Any = None  # the ModelParts used (nodes/diffusion/parts.py), for provenance
