"""The video generation templates: ``text_to_video`` and ``image_to_video`` (LTX-Video)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from graph_runtime.services import require_service
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
    ResourceHints,
)
from nodes.diffusion.model_value import as_model
from nodes.diffusion.previews import PREVIEW_METHODS
from nodes.diffusion.requests import MAX_SEED
from nodes.diffusion.service import DIFFUSION
from nodes.diffusion.video_demo import DEMO_VIDEO_MODEL
from nodes.diffusion.video_generation import (
    IMAGE_TO_VIDEO,
    MAX_FRAMES,
    MAX_SIDE,
    MIN_FRAMES,
    MIN_SIDE,
    SPATIAL_MULTIPLE,
    TEMPORAL_MULTIPLE,
    TEXT_TO_VIDEO,
    VideoRequest,
    VideoResult,
    generate_video,
    image_content_hash,
)

T = PortType
Inputs = Mapping[str, Any]


def _request(kind: str, inputs: Inputs, image: Any = None) -> VideoRequest:
    seed = inputs.get("seed")
    return VideoRequest(
        kind=kind,
        prompt=str(inputs["prompt"]),
        negative_prompt=str(inputs.get("negative_prompt") or ""),
        model=as_model(inputs["model"]).checkpoint,
        width=int(inputs["width"]),
        height=int(inputs["height"]),
        frames=int(inputs["frames"]),
        fps=float(inputs["fps"]),
        steps=int(inputs["steps"]),
        cfg=float(inputs["cfg"]),
        seed=None if seed is None else int(seed),
        image=image,
        preview_method=str(inputs.get("preview_method") or "auto"),
    )


def _outputs(ctx: ProgressReporter, result: VideoResult) -> dict[str, Any]:
    ctx.record_metadata(
        model=result.model.name,
        demo=result.model.demo,
        device=result.device,
        video_family="ltx-video",
    )
    return {"video": result.video, "seed": result.seed}


def text_to_video(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    service = require_service(ctx.services, DIFFUSION)
    return _outputs(ctx, generate_video(service, _request(TEXT_TO_VIDEO, inputs), ctx))


def image_to_video(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image = inputs.get("image")
    if isinstance(image, list | tuple):
        raise ValueError("input 'image': image_to_video takes one image, got a list")
    service = require_service(ctx.services, DIFFUSION)
    if isinstance(image, Image.Image):
        # Continuity is provable: the take names the picture it started from by content.
        ctx.record_metadata(
            conditioning_image_sha256=image_content_hash(image),
            conditioning_image_size=list(image.size),
        )
    result = generate_video(service, _request(IMAGE_TO_VIDEO, inputs, image), ctx)
    assert result.conditioning is not None
    ctx.record_metadata(conditioning_frame_sha256=image_content_hash(result.conditioning))
    return {**_outputs(ctx, result), "first_frame": result.conditioning}


def _side(name: str, default: int) -> InputSpec:
    return InputSpec(
        name, T.INTEGER, f"{name} in pixels, a multiple of {SPATIAL_MULTIPLE}", default=default,
        minimum=MIN_SIDE, maximum=MAX_SIDE, multiple_of=SPATIAL_MULTIPLE,
    )  # fmt: skip


_INPUTS = (
    InputSpec("prompt", T.TEXT, "what happens in the shot", required=True, multiline=True),
    InputSpec("negative_prompt", T.TEXT, "what to avoid", default="", multiline=True),
    InputSpec("model", T.MODEL, "an LTX-Video model name from the Takeflow home's config "
              "(diffusers folder or single file)", default=DEMO_VIDEO_MODEL),
    _side("width", 704),
    _side("height", 480),
    InputSpec("frames", T.INTEGER, "how many frames: 8k+1 (9, 17, 25, ..., 97, ...)",
              default=97, minimum=MIN_FRAMES, maximum=MAX_FRAMES,
              multiple_of=TEMPORAL_MULTIPLE, multiple_offset=1),
    InputSpec("fps", T.FLOAT, "frames per second of the clip (LTX-Video is trained at 24-30)",
              default=24.0, minimum=1.0, maximum=240.0),
    InputSpec("steps", T.INTEGER, "denoising steps", default=30, minimum=1, maximum=200),
    InputSpec("cfg", T.FLOAT, "classifier-free guidance scale (1 = none)", default=3.0,
              minimum=1.0, maximum=30.0),
    InputSpec("seed", T.INTEGER, "-1 for a random seed; the seed used is an output",
              default=-1, minimum=-1, maximum=MAX_SEED),
    InputSpec("preview_method", T.TEXT, "live previews (a frame) while denoising",
              default="auto", choices=PREVIEW_METHODS, affects_output=False),
)  # fmt: skip
_IMAGE = InputSpec("image", T.IMAGE, "the first frame (scaled to width x height)", required=True)
_VIDEO = OutputSpec("video", T.VIDEO, "the clip: H.264 MP4 (yuv420p) at fps")
_SEED = OutputSpec("seed", T.INTEGER, "the seed actually used (to reproduce the clip)")

TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="text_to_video",
        version="1.0.0",
        name="Text to video",
        category="generation",
        description="A clip from a prompt with an LTX-Video model (diffusers).",
        inputs=_INPUTS,
        outputs=(_VIDEO, _SEED),
        fn=text_to_video,
        resources=ResourceHints(gpu=True, vram_gb=12.0),
        requires=(DIFFUSION.name,),
    ),
    FunctionTemplate(
        id="image_to_video",
        version="1.0.0",
        name="Image to video",
        category="generation",
        description="A clip that starts from an image (e.g. the last frame of the previous "
        "shot's take, through extract_frame), with an LTX-Video model.",
        inputs=(_IMAGE, *_INPUTS),
        outputs=(
            _VIDEO,
            _SEED,
            OutputSpec("first_frame", T.IMAGE, "the conditioning frame, as the model got it"),
        ),
        fn=image_to_video,
        resources=ResourceHints(gpu=True, vram_gb=12.0),
        requires=(DIFFUSION.name,),
    ),
)
