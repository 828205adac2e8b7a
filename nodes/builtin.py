"""Built-in CPU templates: prompts, numbers, procedural images, resize, blend, text, assets."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageChops, ImageColor, ImageDraw, ImageFont

from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
    TemplateFn,
)
from nodes.animated import TEMPLATES as ANIMATED_TEMPLATES
from nodes.assembly import TEMPLATES as ASSEMBLY_TEMPLATES
from nodes.images import check_image_size, open_image
from nodes.masks import TEMPLATES as MASK_TEMPLATES
from nodes.take_io import TEMPLATES as TAKE_IO_TEMPLATES
from nodes.video_templates import TEMPLATES as VIDEO_TEMPLATES

T = PortType
Inputs = Mapping[str, Any]


def _size_inputs(default: int = 256) -> tuple[InputSpec, ...]:
    return (
        InputSpec("width", T.INTEGER, "width in pixels", default=default, minimum=1, maximum=4096),
        InputSpec(
            "height", T.INTEGER, "height in pixels", default=default, minimum=1, maximum=4096
        ),
    )


def _color(value: str, node_input: str) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise ValueError(
            f"input '{node_input}': {value!r} is not a colour (try '#ff8800')"
        ) from None
    return rgb[0], rgb[1], rgb[2]


def text_prompt(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    return {"text": str(inputs["text"])}


def number(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    return {"value": float(inputs["value"])}


def noise_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    import random

    width, height = inputs["width"], inputs["height"]
    rng = random.Random(inputs["seed"])
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    ctx.progress(1.0, "noise")
    return {"image": image, "seed": inputs["seed"]}


def gradient_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    start = _color(inputs["start_color"], "start_color")
    end = _color(inputs["end_color"], "end_color")
    width, height = inputs["width"], inputs["height"]
    horizontal = inputs["direction"] == "horizontal"
    ramp = Image.linear_gradient("L").resize((256, 256))
    if horizontal:
        ramp = ramp.rotate(90, expand=True).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mask = ramp.resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), end), Image.new("RGB", (width, height), start), mask
    )
    return {"image": image}


def solid_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    color = _color(inputs["color"], "color")
    return {"image": Image.new("RGB", (inputs["width"], inputs["height"]), color)}


_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image: Image.Image = inputs["image"]
    return {
        "image": image.resize((inputs["width"], inputs["height"]), _RESAMPLE[inputs["resample"]])
    }


_SCALE_RESAMPLE = {**_RESAMPLE, "area": Image.Resampling.BOX}


def scale_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    """Scale by a factor, or to a width and/or height (0 keeps the aspect ratio); ``crop``
    center fills the size without distorting; sides are rounded to ``multiple_of``."""
    image: Image.Image = inputs["image"]
    width: float = inputs["width"]
    height: float = inputs["height"]
    multiple = int(inputs["multiple_of"])
    if inputs["mode"] == "factor":
        factor = float(inputs["factor"])
        width, height = image.width * factor, image.height * factor
    elif not width and not height:
        raise ValueError("input 'width': set width or height (or both) when mode is 'size'")
    elif not width:
        width = image.width * height / image.height
    elif not height:
        height = image.height * width / image.width
    size = (max(multiple, round(width / multiple) * multiple),
            max(multiple, round(height / multiple) * multiple))  # fmt: skip
    check_image_size(*size)
    box = None
    if inputs["crop"] == "center":
        aspect = size[0] / size[1]
        crop_w = min(image.width, round(image.height * aspect))
        crop_h = min(image.height, round(image.width / aspect))
        left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
        box = (left, top, left + crop_w, top + crop_h)
    return {"image": image.resize(size, _SCALE_RESAMPLE[inputs["resample"]], box=box)}


_BLEND = {
    "normal": lambda a, b: b,
    "multiply": ImageChops.multiply,
    "screen": ImageChops.screen,
    "add": ImageChops.add,
    "difference": ImageChops.difference,
}


def blend(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    base: Image.Image = inputs["base"].convert("RGB")
    overlay: Image.Image = inputs["overlay"].convert("RGB").resize(base.size)
    mixed = _BLEND[inputs["mode"]](base, overlay)
    result = Image.blend(base, mixed, float(inputs["opacity"]))
    mask = inputs.get("mask")
    if mask is not None:
        result = Image.composite(result, base, mask.convert("L").resize(base.size))
    return {"image": result}


def text_overlay(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image: Image.Image = inputs["image"].convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=inputs["size"])
    draw.text(
        (inputs["x"], inputs["y"]), inputs["text"], fill=_color(inputs["color"], "color"), font=font
    )
    return {"image": image}


def load_asset(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    assets = ctx.services.get("assets")
    if assets is None:
        raise RuntimeError("no asset resolver is configured for this run (is a project set?)")
    data: bytes = assets.read(inputs["asset"])
    image = open_image(data, inputs["asset"])  # the header's size is checked before decoding
    image.load()
    return {
        "image": image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "P")
        else image.convert("RGB")
    }


def fail(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    ctx.progress(0.5, "about to fail")
    raise RuntimeError(inputs["message"])


def delay(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    steps = inputs["steps"]
    for i in range(steps):
        time.sleep(inputs["seconds"] / steps)
        ctx.progress((i + 1) / steps, "waiting", f"step {i + 1} of {steps}")
    return {"value": inputs["value"]}


def _t(
    fn: TemplateFn,
    name: str,
    category: str,
    description: str,
    inputs: tuple[InputSpec, ...],
    outputs: tuple[OutputSpec, ...],
    version: str = "1.0.0",
    cacheable: bool = True,
) -> FunctionTemplate:
    return FunctionTemplate(
        id=fn.__name__,
        version=version,
        name=name,
        category=category,
        description=description,
        inputs=inputs,
        outputs=outputs,
        fn=fn,
        cacheable=cacheable,
    )


TEMPLATES: tuple[FunctionTemplate, ...] = (
    _t(text_prompt, "Text prompt", "prompt", "Write a prompt.",
       (InputSpec("text", T.TEXT, "the prompt", default="", multiline=True),),
       (OutputSpec("text", T.TEXT),)),
    _t(number, "Number", "value", "A number to feed other nodes.",
       (InputSpec("value", T.FLOAT, default=0.0),), (OutputSpec("value", T.FLOAT),)),
    _t(noise_image, "Noise image", "image", "Seeded RGB noise: same seed, same pixels.",
       (*_size_inputs(), InputSpec("seed", T.INTEGER, default=0, minimum=0, maximum=2**32 - 1)),
       (OutputSpec("image", T.IMAGE), OutputSpec("seed", T.INTEGER))),
    _t(gradient_image, "Gradient image", "image", "A linear gradient between two colours.",
       (*_size_inputs(), InputSpec("start_color", T.TEXT, default="#000000"),
        InputSpec("end_color", T.TEXT, default="#ffffff"),
        InputSpec("direction", T.TEXT, default="vertical", choices=("vertical", "horizontal"))),
       (OutputSpec("image", T.IMAGE),)),
    _t(solid_image, "Solid image", "image", "An image of one colour.",
       (*_size_inputs(), InputSpec("color", T.TEXT, default="#808080")),
       (OutputSpec("image", T.IMAGE),)),
    _t(resize, "Resize", "image", "Resize an image to an exact size.",
       (InputSpec("image", T.IMAGE, required=True), *_size_inputs(512),
        InputSpec("resample", T.TEXT, default="lanczos", choices=tuple(_RESAMPLE))),
       (OutputSpec("image", T.IMAGE),)),
    _t(scale_image, "Scale image", "image",
       "Scale an image by a factor, or to a width and/or height (0 keeps the aspect ratio).",
       (InputSpec("image", T.IMAGE, required=True),
        InputSpec("mode", T.TEXT, "scale by 'factor' or to 'size'", default="factor",
                  choices=("factor", "size")),
        InputSpec("factor", T.FLOAT, "mode factor: the scale", default=2.0, minimum=0.01,
                  maximum=16.0),
        InputSpec("width", T.INTEGER, "mode size: width (0: from height, keeping the aspect)",
                  default=0, minimum=0, maximum=16384),
        InputSpec("height", T.INTEGER, "mode size: height (0: from width, keeping the aspect)",
                  default=0, minimum=0, maximum=16384),
        InputSpec("resample", T.TEXT, default="lanczos", choices=tuple(_SCALE_RESAMPLE)),
        InputSpec("crop", T.TEXT, "center: crop to the new aspect instead of distorting",
                  default="disabled", choices=("disabled", "center")),
        InputSpec("multiple_of", T.INTEGER, "round each side to a multiple of this", default=1,
                  minimum=1, maximum=64)),
       (OutputSpec("image", T.IMAGE),)),
    _t(blend, "Blend", "composite", "Composite an overlay on a base image.",
       (InputSpec("base", T.IMAGE, required=True), InputSpec("overlay", T.IMAGE, required=True),
        InputSpec("mode", T.TEXT, default="normal", choices=tuple(_BLEND)),
        InputSpec("opacity", T.FLOAT, default=0.5, minimum=0.0, maximum=1.0),
        InputSpec("mask", T.MASK, "optional mask: white keeps the blend")),
       (OutputSpec("image", T.IMAGE),)),
    _t(text_overlay, "Text overlay", "composite", "Draw text on an image.",
       (InputSpec("image", T.IMAGE, required=True), InputSpec("text", T.TEXT, default=""),
        InputSpec("x", T.INTEGER, default=8, minimum=0, maximum=4096),
        InputSpec("y", T.INTEGER, default=8, minimum=0, maximum=4096),
        InputSpec("size", T.INTEGER, default=16, minimum=4, maximum=512),
        InputSpec("color", T.TEXT, default="#ffffff")),
       (OutputSpec("image", T.IMAGE),)),
    _t(load_asset, "Load asset", "io", "Load an uploaded image by its asset:// reference.",
       (InputSpec("asset", T.ASSET, "asset://<id> of an uploaded file", required=True),),
       (OutputSpec("image", T.IMAGE),)),
    _t(fail, "Fail", "testing", "Fails on purpose, with the given message (for tests).",
       (InputSpec("message", T.TEXT, default="this template fails on purpose"),),
       (OutputSpec("value", T.TEXT),), cacheable=False),
    _t(delay, "Delay", "testing", "Waits, reporting progress each step; cancellable.",
       (InputSpec("seconds", T.FLOAT, default=1.0, minimum=0.0, maximum=3600.0),
        InputSpec("steps", T.INTEGER, default=10, minimum=1, maximum=10_000),
        InputSpec("value", T.TEXT, default="done")),
       (OutputSpec("value", T.TEXT),), cacheable=False),
)  # fmt: skip

TEMPLATES += ANIMATED_TEMPLATES  # nodes.animated: image lists, animated WEBP/PNG, WEBM, ...

TEMPLATES += MASK_TEMPLATES  # nodes.masks: load / image to / grow mask, pad for outpaint

TEMPLATES += VIDEO_TEMPLATES  # nodes.video_templates: frames <-> video, trim, concat, ...
TEMPLATES += ASSEMBLY_TEMPLATES  # nodes.assembly: a scene's shots cut into one MP4
TEMPLATES += TAKE_IO_TEMPLATES  # nodes.take_io: load_take (shot continuity on the canvas)
