"""Templates that make and change a model value: ``checkpoint_loader`` and ``lora``.

They only check and describe (the files must exist, so that a wrong name fails on the node that
names it); the generation templates apply the parts on the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_runtime.errors import ModelNotFoundError
from graph_runtime.services import require_service
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
)
from nodes.diffusion.model_value import MAX_CLIP_SKIP, MAX_STRENGTH, LoraUse, ModelValue, as_model
from nodes.diffusion.service import DIFFUSION

T = PortType


def _check(kind: str, name: str, port: str, ctx: ProgressReporter) -> None:
    folders = require_service(ctx.services, DIFFUSION).models.folders
    try:
        folders.resolve(kind, name)
    except ModelNotFoundError as exc:
        raise exc.with_defaults(port=port) from None


def checkpoint_loader(ctx: ProgressReporter, inputs: Mapping[str, Any]) -> dict[str, Any]:
    name = str(inputs["checkpoint"])
    service = require_service(ctx.services, DIFFUSION)
    try:
        service.models.resolve(name)
    except ModelNotFoundError as exc:
        raise exc.with_defaults(port="checkpoint") from None
    vae = str(inputs.get("vae") or "") or None
    if vae is not None:
        _check("vae", vae, "vae", ctx)
    return {"model": ModelValue(name, vae, int(inputs.get("clip_skip") or 0))}


def lora(ctx: ProgressReporter, inputs: Mapping[str, Any]) -> dict[str, Any]:
    model = as_model(inputs["model"])
    name = str(inputs["lora"])
    _check("loras", name, "lora", ctx)
    use = LoraUse(name, float(inputs["strength_model"]), float(inputs["strength_clip"]))
    return {"model": model.with_lora(use)}


def _strength(name: str, what: str) -> InputSpec:
    return InputSpec(name, T.FLOAT, f"how strongly it changes the {what} (0: not at all)",
                     default=1.0, minimum=-MAX_STRENGTH, maximum=MAX_STRENGTH)  # fmt: skip


_LOADER_INPUTS = (
    InputSpec("checkpoint", T.TEXT, "model name from the Takeflow home's config",
              default="demo"),
    InputSpec("vae", T.TEXT, "a VAE file under vae_dir (empty: the checkpoint's own)",
              default=""),
    InputSpec("clip_skip", T.INTEGER, "text encoder layers to skip at the end (0: none; "
              "A1111's clip skip 2 and ComfyUI's -2 are 1)", default=0, minimum=0,
              maximum=MAX_CLIP_SKIP),
)  # fmt: skip
_MODEL_OUT = OutputSpec("model", T.MODEL, "the model with its parts")

TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="checkpoint_loader",
        version="1.0.0",
        name="Checkpoint loader",
        category="models",
        description="A checkpoint as a model value, with an optional separate VAE and CLIP skip; "
        "chain lora nodes after it.",
        inputs=_LOADER_INPUTS,
        outputs=(_MODEL_OUT,),
        fn=checkpoint_loader,
        requires=(DIFFUSION.name,),
    ),
    FunctionTemplate(
        id="lora",
        version="1.0.0",
        name="LoRA",
        category="models",
        description="Adds a LoRA (kohya / A1111 / ComfyUI / diffusers .safetensors under "
        "loras_dir) to a model, with strengths for the UNet and the text encoders; chainable.",
        inputs=(
            InputSpec("model", T.MODEL, "the model to change", required=True),
            InputSpec("lora", T.TEXT, "LoRA file under loras_dir (relative path)", required=True),
            _strength("strength_model", "UNet"),
            _strength("strength_clip", "text encoders"),
        ),
        outputs=(_MODEL_OUT,),
        fn=lora,
        requires=(DIFFUSION.name,),
    ),
)
