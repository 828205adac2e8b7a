"""The diffusion templates: text to image and image to image, on the diffusion service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_runtime.services import require_service
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
    Quality,
    ResourceHints,
)
from nodes.diffusion.control_templates import CONTROL_INPUT, controls_for
from nodes.diffusion.model_value import as_model
from nodes.diffusion.previews import PREVIEW_METHODS
from nodes.diffusion.requests import (
    IMAGE_TO_IMAGE,
    MAX_SEED,
    SCHEDULERS,
    SIGMAS,
    TEXT_TO_IMAGE,
    GenerationRequest,
    GenerationResult,
)
from nodes.diffusion.service import DIFFUSION, DiffusionService

T = PortType
Inputs = Mapping[str, Any]

# The studio's presets; a value typed into the node beats its preset.
QUALITY_PRESETS: dict[Quality, dict[str, Any]] = {
    Quality.DRAFT: {"steps": 15, "guidance": 7.0},
    Quality.STANDARD: {"steps": 30, "guidance": 7.5},
    Quality.HIGH: {"steps": 50, "guidance": 8.0},
    Quality.ULTRA: {"steps": 100, "guidance": 8.5},
}


def _service(ctx: ProgressReporter) -> DiffusionService:
    return require_service(ctx.services, DIFFUSION)


def _request(kind: str, inputs: Inputs, **extra: Any) -> GenerationRequest:
    model = as_model(inputs["model"])  # a name, or a model value with its parts
    return GenerationRequest(
        kind=kind,
        prompt=str(inputs["prompt"]),
        negative_prompt=str(inputs.get("negative_prompt") or ""),
        steps=int(inputs["steps"]),
        guidance=float(inputs["guidance"]),
        scheduler=str(inputs["scheduler"]),
        seed=inputs.get("seed"),
        model=model.checkpoint,
        sigmas=str(inputs.get("sigmas") or "default"),
        preview_method=str(inputs.get("preview_method") or "auto"),
        loras=model.loras,
        vae=model.vae,
        clip_skip=model.clip_skip,
        **extra,
    )


def _outputs(ctx: ProgressReporter, result: GenerationResult) -> dict[str, Any]:
    # The take says which model made the image (and that the demo model is a demo), where,
    # and how many requests shared its batch.
    ctx.record_metadata(
        model=result.model.name,
        demo=result.model.demo,
        device=result.device,
        batch_size=result.batch_size,
    )
    if result.parts is not None:  # LoRAs, VAE, CLIP skip, embeddings: by name and hash
        ctx.record_metadata(**result.parts.metadata())
    return {"image": result.image, "seed": result.seed}


def image_generation(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    request = _request(TEXT_TO_IMAGE, inputs, width=int(inputs["width"]),
                       height=int(inputs["height"]),
                       controls=controls_for(ctx, inputs))  # fmt: skip
    return _outputs(ctx, _service(ctx).generate(request, ctx))


def image_to_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image = inputs["image"]
    width = int(inputs.get("width") or image.width - image.width % 8)
    height = int(inputs.get("height") or image.height - image.height % 8)
    request = _request(IMAGE_TO_IMAGE, inputs, width=width, height=height, image=image,
                       strength=float(inputs["strength"]),
                       controls=controls_for(ctx, inputs))  # fmt: skip
    return _outputs(ctx, _service(ctx).generate(request, ctx))


_PROMPTS = (
    InputSpec("prompt", T.TEXT, "what to picture", required=True, multiline=True),
    InputSpec("negative_prompt", T.TEXT, "what to avoid", default="", multiline=True),
)
_SAMPLING = (
    InputSpec("steps", T.INTEGER, "denoising steps (quality preset unless set)",
              default=30, minimum=1, maximum=200),
    InputSpec("guidance", T.FLOAT, "classifier-free guidance scale (1 = none)",
              default=7.5, minimum=0.0, maximum=30.0),
    InputSpec("seed", T.INTEGER, "-1 for a random seed; the seed used is an output",
              default=-1, minimum=-1, maximum=MAX_SEED),
    InputSpec("scheduler", T.TEXT, "sampler", default="euler", choices=tuple(SCHEDULERS)),
    InputSpec("sigmas", T.TEXT, "noise schedule spacing (karras/exponential: some samplers only)",
              default="default", choices=tuple(SIGMAS)),
    InputSpec("model", T.MODEL, "a model name from the Takeflow home's config, or a "
              "checkpoint_loader / lora output", default="demo"),
    InputSpec("preview_method", T.TEXT, "live previews while denoising (auto: TAESD where its "
              "decoder is in vae_approx, else latent2rgb)", default="auto",
              choices=PREVIEW_METHODS, affects_output=False),
)  # fmt: skip


def _size(name: str, default: int | None) -> InputSpec:
    return InputSpec(
        name, T.INTEGER, f"{name} in pixels, a multiple of 8", default=default,
        minimum=64, maximum=2048, multiple_of=8,
    )  # fmt: skip


_OUTPUTS = (
    OutputSpec("image", T.IMAGE, "the generated image"),
    OutputSpec("seed", T.INTEGER, "the seed actually used (to reproduce the image)"),
)

TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="image_generation",
        version="1.0.0",
        name="Image generation",
        category="generation",
        description="Text to image with a Stable Diffusion model (diffusers).",
        inputs=(*_PROMPTS, _size("width", 512), _size("height", 512), *_SAMPLING, CONTROL_INPUT),
        outputs=_OUTPUTS,
        fn=image_generation,
        quality_presets=QUALITY_PRESETS,
        resources=ResourceHints(gpu=True, vram_gb=4.0),
        aliases=("image_generation_v1",),
        requires=(DIFFUSION.name,),
    ),
    FunctionTemplate(
        id="image_to_image",
        version="1.0.0",
        name="Image to image",
        category="generation",
        description="Repaint an image guided by a prompt; strength 1 ignores the input image.",
        inputs=(
            InputSpec("image", T.IMAGE, "the image to start from", required=True),
            InputSpec(
                "strength",
                T.FLOAT,
                "how much to change it (0 keeps it, 1 ignores it)",
                default=0.75,
                minimum=0.05,
                maximum=1.0,
            ),
            *_PROMPTS,
            _size("width", None),
            _size("height", None),
            *_SAMPLING,
            CONTROL_INPUT,
        ),
        outputs=_OUTPUTS,
        fn=image_to_image,
        quality_presets=QUALITY_PRESETS,
        resources=ResourceHints(gpu=True, vram_gb=4.0),
        aliases=("image_to_image_v1",),
        requires=(DIFFUSION.name,),
    ),
)
