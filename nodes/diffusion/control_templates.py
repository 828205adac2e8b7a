"""The ControlNet templates: ``controlnet`` (chainable, makes a ``control`` value) and ``canny``
(edge detection, no weights: numpy only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from graph_runtime.services import require_service
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
)
from nodes.diffusion.controlnet import (
    KIND,
    MAX_STRENGTH,
    ControlApplication,
    ControlSpec,
    add_control,
    find_file,
    resolve_controls,
)
from nodes.diffusion.service import DIFFUSION

T = PortType
Inputs = Mapping[str, Any]


def controlnet(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    name = str(inputs["controlnet"])
    service = require_service(ctx.services, DIFFUSION)
    try:
        find_file(service.models.folders, name)
    except Exception as exc:  # the name is checked here so the error points at this node
        if hasattr(exc, "with_defaults"):
            raise exc.with_defaults(port="controlnet") from None
        raise
    application = ControlApplication(name, inputs["image"], float(inputs["strength"]),
                                     float(inputs["start"]), float(inputs["end"]))  # fmt: skip
    return {"control": add_control(inputs.get("control"), application)}


def controls_for(ctx: ProgressReporter, inputs: Inputs) -> tuple[ControlSpec, ...]:
    """A generation template's ``control`` input resolved (and recorded in the take)."""
    if inputs.get("control") is None:
        return ()
    service = require_service(ctx.services, DIFFUSION)
    specs = resolve_controls(service.models.folders, inputs["control"])
    ctx.record_metadata(controlnets=[s.describe() for s in specs])
    return specs


CONTROL_INPUT = InputSpec(
    "control", T.CONTROL, "ControlNets guiding the image (from controlnet nodes)"
)

# -- canny ------------------------------------------------------------------------------------


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by (dy, dx), edges repeated."""
    h, w = a.shape
    p = np.pad(a, 1, mode="edge")
    return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _blur(a: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    radius = 2
    xs = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(xs**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    for axis in (0, 1):
        p = np.pad(a, [(radius, radius) if i == axis else (0, 0) for i in (0, 1)], mode="edge")
        n = a.shape[axis]
        a = sum(k * (p[i : i + n] if axis == 0 else p[:, i : i + n]) for i, k in enumerate(kernel))
    return a


def canny_edges(image: Image.Image, low: float, high: float) -> np.ndarray:
    """Canny edges (bool) of ``image``: Gaussian blur, Sobel gradients, non-maximum suppression,
    double threshold and hysteresis. Thresholds apply to the gradient magnitude of the grey
    image in 0..1 (ComfyUI's scale: 0.4 / 0.8 by default)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    g = _blur(grey)
    gx = (_shifted(g, -1, 1) + 2 * _shifted(g, 0, 1) + _shifted(g, 1, 1)
          - _shifted(g, -1, -1) - 2 * _shifted(g, 0, -1) - _shifted(g, 1, -1))  # fmt: skip
    gy = (_shifted(g, 1, -1) + 2 * _shifted(g, 1, 0) + _shifted(g, 1, 1)
          - _shifted(g, -1, -1) - 2 * _shifted(g, -1, 0) - _shifted(g, -1, 1))  # fmt: skip
    mag = np.hypot(gx, gy)
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = ((angle + 22.5) // 45).astype(np.int8) % 4  # 0: -, 1: /, 2: |, 3: \
    keep = np.zeros(mag.shape, dtype=bool)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        local = (mag >= _shifted(mag, dy, dx)) & (mag >= _shifted(mag, -dy, -dx))
        keep |= (sector == s) & local
    mag = np.where(keep, mag, 0.0)
    weak = mag >= low
    edges = mag >= high
    while True:  # hysteresis: weak edges joined to strong ones, grown one pixel per pass
        grown = edges.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    grown |= _shifted(edges, dy, dx)
        grown &= weak
        if np.array_equal(grown, edges):
            return edges
        edges = grown


def canny(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    low, high = float(inputs["low_threshold"]), float(inputs["high_threshold"])
    if low > high:
        from nodes.diffusion.requests import InvalidGenerationRequest

        raise InvalidGenerationRequest(
            f"low_threshold {low} is above high_threshold {high}", port="low_threshold"
        )
    edges = canny_edges(inputs["image"], low, high)
    out = Image.fromarray((edges * 255).astype(np.uint8), "L").convert("RGB")
    return {"image": out}


def _threshold(name: str, default: float, what: str) -> InputSpec:
    return InputSpec(name, T.FLOAT, what, default=default, minimum=0.01, maximum=0.99)


TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="controlnet",
        version="1.0.0",
        name="ControlNet",
        category="generation",
        description="Guide a generation with a ControlNet and a hint image (chain several).",
        inputs=(
            InputSpec("control", T.CONTROL, "ControlNets applied before this one"),
            InputSpec("image", T.IMAGE, "the hint image (e.g. canny edges)", required=True),
            InputSpec("controlnet", T.TEXT, f"file name in the {KIND} folder", required=True),
            InputSpec("strength", T.FLOAT, "how strongly it guides (0 = not at all)",
                      default=1.0, minimum=0.0, maximum=MAX_STRENGTH),
            InputSpec("start", T.FLOAT, "where in the schedule it starts acting (0..1)",
                      default=0.0, minimum=0.0, maximum=1.0),
            InputSpec("end", T.FLOAT, "where in the schedule it stops acting (0..1)",
                      default=1.0, minimum=0.0, maximum=1.0),
        ),
        outputs=(OutputSpec("control", T.CONTROL, "the ControlNets so far, this one last"),),
        fn=controlnet,
        requires=(DIFFUSION.name,),
    ),
    FunctionTemplate(
        id="canny",
        version="1.0.0",
        name="Canny edges",
        category="image",
        description="Edges of an image (white on black), the hint of a canny ControlNet.",
        inputs=(
            InputSpec("image", T.IMAGE, "the image to trace", required=True),
            _threshold("low_threshold", 0.4, "edges weaker than this are dropped"),
            _threshold("high_threshold", 0.8, "edges stronger than this are kept"),
        ),
        outputs=(OutputSpec("image", T.IMAGE, "the edges, white on black"),),
        fn=canny,
    ),
)  # fmt: skip
