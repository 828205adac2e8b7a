"""The inpaint template: repaint where a mask is white, keep every other pixel exactly.

It runs diffusers' inpainting pipeline made from the loaded model (``from_pipe``: the weights are
shared), which serves ordinary checkpoints (the unmasked latents are put back at each step) and
inpainting checkpoints (a 9-channel UNet that also sees the mask and the masked image) alike.
The image is generated at its size rounded down to a multiple of 8, and composited back over the
original through the (grown, feathered) mask, so pixels outside the mask are the original's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    PortType,
    ProgressReporter,
    ResourceHints,
)
from nodes.diffusion.requests import INPAINT, MIN_SIZE, InvalidGenerationRequest
from nodes.diffusion.service import DiffusionService
from nodes.diffusion.templates import (
    _OUTPUTS,
    _PROMPTS,
    _SAMPLING,
    DIFFUSION,
    QUALITY_PRESETS,
    _outputs,
    _request,
    _service,
)
from nodes.masks import composite_keep_outside, feather_mask, fit_mask, grow_mask

T = PortType
Inputs = Mapping[str, Any]


def unet_in_channels(service: DiffusionService, model: Any, device: str) -> int:
    """4 for an ordinary checkpoint, 9 for an inpainting one (it also sees mask and image)."""
    entry = service.cache.get(model, device)
    return int(entry.pipe.unet.config.in_channels)


def inpaint(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image = inputs["image"]
    width, height = image.width - image.width % 8, image.height - image.height % 8
    if width < MIN_SIZE or height < MIN_SIZE:
        raise InvalidGenerationRequest(
            f"image is {image.width}x{image.height}; inpaint needs at least {MIN_SIZE}x{MIN_SIZE}",
            port="image",
        )
    mask = grow_mask(fit_mask(inputs["mask"], image.size), int(inputs["grow"]))
    mask = feather_mask(mask, int(inputs["feather"]))
    if mask.getbbox() is None:  # nothing to repaint: the image as it is, no model run
        ctx.record_metadata(inpaint={"empty_mask": True})
        return {"image": image, "seed": max(int(inputs.get("seed") or 0), 0)}
    service = _service(ctx)
    source = image.convert("RGB").resize((width, height))
    request = _request(
        INPAINT,
        inputs,
        width=width,
        height=height,
        image=source,
        mask=mask.resize((width, height)),
        strength=float(inputs["strength"]),
    )
    result = service.generate(request, ctx)
    out = _outputs(ctx, result)
    ctx.record_metadata(
        inpaint={
            "strength": request.strength,
            "grow": int(inputs["grow"]),
            "feather": int(inputs["feather"]),
            "unet_in_channels": unet_in_channels(service, result.model, result.device),
            "composited": True,
        }
    )
    out["image"] = composite_keep_outside(result.image, image, mask)
    return out


TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="inpaint",
        version="1.0.0",
        name="Inpaint",
        category="generation",
        description="Repaint the white part of a mask, guided by a prompt; every pixel outside "
        "the mask stays as it was. Works with ordinary and inpainting (9-channel) checkpoints.",
        inputs=(
            InputSpec("image", T.IMAGE, "the image to repaint", required=True),
            InputSpec("mask", T.MASK, "white: repaint, black: keep", required=True),
            InputSpec(
                "strength",
                T.FLOAT,
                "denoise: how much to change the masked part (1 repaints it from noise)",
                default=1.0,
                minimum=0.05,
                maximum=1.0,
            ),
            InputSpec(
                "grow",
                T.INTEGER,
                "pixels to grow the mask by first",
                default=0,
                minimum=0,
                maximum=256,
            ),
            InputSpec(
                "feather",
                T.INTEGER,
                "pixels of soft edge inside the mask",
                default=0,
                minimum=0,
                maximum=256,
            ),
            *_PROMPTS,
            *_SAMPLING,
        ),
        outputs=_OUTPUTS,
        fn=inpaint,
        quality_presets=QUALITY_PRESETS,
        resources=ResourceHints(gpu=True, vram_gb=4.0),
        requires=(DIFFUSION.name,),
    ),
)
