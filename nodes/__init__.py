"""Function templates: what canvas nodes do."""

from __future__ import annotations

from graph_runtime.registry import TemplateRegistry
from graph_runtime.templates import FunctionTemplate


def builtin_templates() -> tuple[FunctionTemplate, ...]:
    """The built-in templates (``nodes.builtin``), imported when asked for."""
    from nodes.builtin import TEMPLATES

    return TEMPLATES


def discover_templates() -> TemplateRegistry:
    """Every published template pack; the built-ins when none is (a source tree not installed)."""
    return TemplateRegistry.discover(fallback=builtin_templates)
