"""Masks: greyscale ("L") images where white (255) marks what to repaint and black what to keep.

Pure PIL and numpy: a mask from an image's alpha or luminance, threshold, invert, grow (or
shrink), an inward feather, padding an image for outpainting, and the composite that keeps every
pixel outside a mask exactly as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from graph_runtime.errors import TakeflowError
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
)
from nodes.images import open_image

T = PortType
Inputs = Mapping[str, Any]
CHANNELS = ("alpha", "luminance", "red", "green", "blue")
MAX_PAD = 2048


class InvalidMaskError(TakeflowError):
    """A mask input that cannot be used (e.g. the alpha of an image that has none)."""

    code = "invalid_mask"
    http_status = 422


def mask_from_image(image: Image.Image, channel: str = "luminance") -> Image.Image:
    """One channel of ``image`` as a mask ("alpha" of an image without alpha is refused)."""
    if channel not in CHANNELS:
        raise InvalidMaskError(f"unknown channel '{channel}' (known: {', '.join(CHANNELS)})",
                               port="channel")  # fmt: skip
    if channel == "alpha":
        if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
            raise InvalidMaskError(
                f"the image ({image.mode}) has no alpha channel; use channel 'luminance'",
                port="channel",
            )
        return image.convert("RGBA").getchannel("A")
    if channel == "luminance":
        return image.convert("L")
    return image.convert("RGB").getchannel("RGB".index(channel[0].upper()))


def threshold_mask(mask: Image.Image, threshold: float) -> Image.Image:
    """Black and white: values at or above ``threshold`` (0..1) become white; 0 keeps it soft."""
    if threshold <= 0:
        return mask.convert("L")
    cut = threshold * 255
    return mask.convert("L").point(lambda v: 255 if v >= cut else 0)


def invert_mask(mask: Image.Image) -> Image.Image:
    return mask.convert("L").point(lambda v: 255 - v)


def _shifted_extreme(values: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """A square max (grow) or min (shrink) filter of ``radius``, separably, one shift at a time."""
    pick = np.maximum if grow else np.minimum
    fill = 0 if grow else 255
    out = values
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)],
                        constant_values=fill)  # fmt: skip
        size = out.shape[axis]
        acc = out.copy()
        for shift in range(2 * radius + 1):
            window = padded[shift : shift + size] if axis == 0 else padded[:, shift : shift + size]
            acc = pick(acc, window)
        out = acc
    return out


def grow_mask(mask: Image.Image, pixels: int) -> Image.Image:
    """Grow the white area by ``pixels`` in every direction (a negative count shrinks it)."""
    if pixels == 0:
        return mask.convert("L")
    values = np.asarray(mask.convert("L"), dtype=np.uint8)
    return Image.fromarray(_shifted_extreme(values, abs(pixels), pixels > 0), "L")


def feather_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Soften the mask's edge inward over about ``radius`` pixels: nothing outside it turns
    non-zero, so the pixels it keeps stay exactly as they are."""
    mask = mask.convert("L")
    if radius <= 0:
        return mask
    blurred = mask.filter(ImageFilter.GaussianBlur(radius / 2))
    shrunk = np.asarray(grow_mask(mask, -radius), dtype=np.uint8)
    soft = np.minimum(np.asarray(mask), np.maximum(np.asarray(blurred), shrunk))
    return Image.fromarray(soft.astype(np.uint8), "L")


def fit_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The mask at ``size`` (nearest neighbour, so a hard mask stays hard)."""
    mask = mask.convert("L")
    return mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)


def composite_keep_outside(generated: Image.Image, original: Image.Image,
                           mask: Image.Image) -> Image.Image:  # fmt: skip
    """``generated`` where the mask is white, ``original`` where it is black (blended between):
    every pixel where the mask is 0 is the original's, bit for bit."""
    mask = fit_mask(mask, original.size)
    generated = generated.convert(original.mode).resize(original.size, Image.Resampling.LANCZOS)
    return Image.composite(generated, original, mask)


def pad_for_outpaint(
    image: Image.Image,
    left: int,
    top: int,
    right: int,
    bottom: int,
    feather: int = 0,
    fill: str = "edge",
) -> tuple[Image.Image, Image.Image]:
    """The image on a larger canvas and a mask that is white over the new area; ``feather``
    fades the mask into the old image along padded sides (ComfyUI's quadratic ramp). ``fill``:
    "edge" repeats the border pixels into the new area, "gray" fills it with mid grey."""
    for name, value in (("left", left), ("top", top), ("right", right), ("bottom", bottom)):
        if not 0 <= value <= MAX_PAD:
            raise InvalidMaskError(f"{name} {value} is not between 0 and {MAX_PAD}", port=name)
    rgb = image.convert("RGB")
    src = np.asarray(rgb)
    h, w = src.shape[:2]
    widths = ((top, bottom), (left, right), (0, 0))
    if fill == "gray":
        padded = np.pad(src, widths, constant_values=128)
    else:
        padded = np.pad(src, widths, mode="edge")
    mask = np.full((h + top + bottom, w + left + right), 255.0)
    inner = np.zeros((h, w))
    if feather > 0:
        ys, xs = np.mgrid[0:h, 0:w]
        dist = np.full((h, w), np.inf)
        for pad, d in ((left, xs), (right, w - xs), (top, ys), (bottom, h - ys)):
            if pad:
                dist = np.minimum(dist, d)
        ramp = np.where(dist < feather, ((feather - dist) / feather) ** 2, 0.0)
        inner = ramp * 255
    mask[top : top + h, left : left + w] = inner
    return (
        Image.fromarray(padded.astype(np.uint8), "RGB"),
        Image.fromarray(np.rint(mask).astype(np.uint8), "L"),
    )


# -- templates ------------------------------------------------------------------------------


def _shape(mask: Image.Image, threshold: float, invert: bool) -> Image.Image:
    mask = threshold_mask(mask, threshold)
    return invert_mask(mask) if invert else mask


def load_mask(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    assets = ctx.services.get("assets")
    if assets is None:
        raise RuntimeError("no asset resolver is configured for this run (is a project set?)")
    image = open_image(assets.read(inputs["asset"]), inputs["asset"])
    image.load()
    mask = mask_from_image(image, str(inputs["channel"]))
    return {"mask": _shape(mask, float(inputs["threshold"]), bool(inputs["invert"]))}


def image_to_mask(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    mask = mask_from_image(inputs["image"], str(inputs["channel"]))
    return {"mask": _shape(mask, float(inputs["threshold"]), bool(inputs["invert"]))}


def adjust_mask(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    mask = grow_mask(inputs["mask"], int(inputs["grow"]))
    mask = feather_mask(mask, int(inputs["feather"]))
    return {"mask": invert_mask(mask) if inputs["invert"] else mask}


def pad_image_for_outpaint(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image, mask = pad_for_outpaint(
        inputs["image"], int(inputs["left"]), int(inputs["top"]), int(inputs["right"]),
        int(inputs["bottom"]), int(inputs["feather"]), str(inputs["fill"]),
    )  # fmt: skip
    return {"image": image, "mask": mask}


def _pad(name: str) -> InputSpec:
    return InputSpec(name, T.INTEGER, f"pixels to add on the {name}", default=0, minimum=0,
                     maximum=MAX_PAD)  # fmt: skip


_SHAPE = (
    InputSpec("threshold", T.FLOAT, "values at or above become white (0 keeps a soft mask)",
              default=0.5, minimum=0.0, maximum=1.0),
    InputSpec("invert", T.BOOLEAN, "swap what is repainted and what is kept", default=False),
)  # fmt: skip
_MASK_OUT = (OutputSpec("mask", T.MASK, "white: repaint, black: keep"),)


def _template(
    fn: Any,
    name: str,
    description: str,
    inputs: tuple[InputSpec, ...],
    outputs: tuple[OutputSpec, ...],
    id: str | None = None,
) -> FunctionTemplate:
    return FunctionTemplate(
        id=id or fn.__name__,
        version="1.0.0",
        name=name,
        category="mask",
        description=description,
        inputs=inputs,
        outputs=outputs,
        fn=fn,
    )


TEMPLATES: tuple[FunctionTemplate, ...] = (
    _template(load_mask, "Load mask",
              "A mask from an uploaded image (e.g. one painted in the editor): its alpha or "
              "luminance, thresholded, optionally inverted.",
              (InputSpec("asset", T.ASSET, "asset://<id> of an uploaded image", required=True),
               InputSpec("channel", T.TEXT, "which channel is the mask", default="luminance",
                         choices=CHANNELS), *_SHAPE), _MASK_OUT),
    _template(image_to_mask, "Image to mask",
              "A mask from an image's alpha, luminance or one colour channel.",
              (InputSpec("image", T.IMAGE, "the image", required=True),
               InputSpec("channel", T.TEXT, "which channel is the mask", default="luminance",
                         choices=CHANNELS), *_SHAPE), _MASK_OUT),
    _template(adjust_mask, "Grow / feather mask",
              "Grow (or, negative, shrink) a mask, soften its edge inward, or invert it.",
              (InputSpec("mask", T.MASK, "the mask", required=True),
               InputSpec("grow", T.INTEGER, "pixels to grow (negative: shrink)", default=0,
                         minimum=-256, maximum=256),
               InputSpec("feather", T.INTEGER, "pixels of soft edge, inside the mask", default=0,
                         minimum=0, maximum=256),
               InputSpec("invert", T.BOOLEAN, "invert the result", default=False)), _MASK_OUT),
    _template(pad_image_for_outpaint, "Pad for outpaint",
              "Extend an image's canvas and make the mask of the new area, for an inpaint node "
              "to paint it.",
              (InputSpec("image", T.IMAGE, "the image to extend", required=True),
               _pad("left"), _pad("top"), _pad("right"), _pad("bottom"),
               InputSpec("feather", T.INTEGER, "pixels over which the mask fades into the image",
                         default=0, minimum=0, maximum=MAX_PAD),
               InputSpec("fill", T.TEXT, "what the new area starts as", default="edge",
                         choices=("edge", "gray"))),
              (OutputSpec("image", T.IMAGE, "the padded image"),
               OutputSpec("mask", T.MASK, "white over the new area")), id="pad_for_outpaint"),
)  # fmt: skip
