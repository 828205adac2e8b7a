"""Diffusion templates (image generation with diffusers). Filled in by the diffusion work."""

from graph_runtime.templates import FunctionTemplate

TEMPLATES: tuple[FunctionTemplate, ...] = ()
