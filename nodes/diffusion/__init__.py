"""Diffusion templates (image generation with diffusers).

Importing this package (template discovery) must stay cheap: torch and diffusers are imported by
the diffusion service on first use, never here.
"""

from __future__ import annotations

from graph_runtime.templates import FunctionTemplate
from nodes.diffusion.inpaint import TEMPLATES as _INPAINT
from nodes.diffusion.templates import TEMPLATES as _TEMPLATES
from nodes.diffusion.upscale import TEMPLATES as _UPSCALE

TEMPLATES: tuple[FunctionTemplate, ...] = (*_TEMPLATES, *_UPSCALE, *_INPAINT)

__all__ = ["TEMPLATES"]
