"""Diffusion templates (image generation with diffusers).

Importing this package (template discovery) must stay cheap: torch and diffusers are imported by
the diffusion service on first use, never here.
"""

from __future__ import annotations

from graph_runtime.templates import FunctionTemplate
from nodes.diffusion.control_templates import TEMPLATES as _CONTROL_TEMPLATES
from nodes.diffusion.inpaint import TEMPLATES as _INPAINT
from nodes.diffusion.model_templates import TEMPLATES as _MODEL_TEMPLATES
from nodes.diffusion.templates import TEMPLATES as _TEMPLATES
from nodes.diffusion.upscale import TEMPLATES as _UPSCALE
from nodes.diffusion.video_templates import TEMPLATES as _VIDEO

TEMPLATES: tuple[FunctionTemplate, ...] = (
    *_TEMPLATES,
    *_MODEL_TEMPLATES,
    *_UPSCALE,
    *_INPAINT,
    *_CONTROL_TEMPLATES,
    *_VIDEO,  # text_to_video, image_to_video (LTX-Video)
)

__all__ = ["TEMPLATES"]
