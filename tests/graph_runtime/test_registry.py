"""The registry resolves ids, exact and major versions and aliases, and suggests fixes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from graph_runtime.errors import TemplateNotFoundError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType


def _t(version: str, aliases: tuple[str, ...] = ()) -> FunctionTemplate:
    return FunctionTemplate(
        id="upscale",
        version=version,
        name="Upscale",
        category="image",
        description="",
        inputs=(InputSpec("factor", PortType.INTEGER, default=2, minimum=1, maximum=8),),
        outputs=(OutputSpec("image", PortType.IMAGE),),
        fn=lambda ctx, inputs: {},
        aliases=aliases,
    )


def test_versions_resolve_exact_major_and_latest() -> None:
    registry = TemplateRegistry([_t("1.0.0"), _t("1.4.2", ("upscale_v1",)), _t("2.0.1")])
    assert registry.get("upscale").version == "2.0.1"
    assert registry.get("upscale@1").version == "1.4.2"
    assert registry.get("upscale@1.0.0").version == "1.0.0"
    assert registry.get("upscale_v1").version == "1.4.2"
    with pytest.raises(
        TemplateNotFoundError, match=r"no version '3' \(known: 1.0.0, 1.4.2, 2.0.1\)"
    ):
        registry.get("upscale@3")


def test_unknown_template_suggests_close_names() -> None:
    registry = TemplateRegistry([_t("1.0.0")])
    with pytest.raises(TemplateNotFoundError, match="did you mean 'upscale'"):
        registry.get("upscal")


def test_builtins_are_discovered_with_json_schemas() -> None:
    registry = TemplateRegistry.discover()
    resize = registry.get("resize").describe()
    assert resize["inputs_schema"]["properties"]["width"] == {
        "type": "integer",
        "x-port-type": "integer",
        "description": "width in pixels",
        "default": 512,
        "minimum": 1,
        "maximum": 4096,
    }
    assert resize["inputs_schema"]["required"] == ["image"]
    assert resize["outputs_schema"]["properties"]["image"]["x-port-type"] == "image"
    ids = {t.id for t in registry.latest()}
    assert {
        "text_prompt",
        "number",
        "noise_image",
        "gradient_image",
        "solid_image",
        "resize",
        "blend",
        "text_overlay",
        "load_asset",
        "fail",
    } <= ids


def test_bad_template_definitions_are_refused() -> None:
    with pytest.raises(ValueError, match="not semantic"):
        _t("1.0")


def test_third_party_pack_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path
    (root / "studio_pack.py").write_text(
        "from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType\n"
        "TEMPLATES = (FunctionTemplate(id='grade', version='0.3.0', name='Grade', "
        "category='color', description='', inputs=(), "
        "outputs=(OutputSpec('image', PortType.IMAGE),), fn=lambda ctx, i: {}),)\n"
    )
    dist = root / "studio_pack-0.3.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: studio-pack\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text("[takeflow.templates]\nstudio = studio_pack:TEMPLATES\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "studio_pack", raising=False)

    registry = TemplateRegistry.discover()
    assert registry.get("grade").ref == "grade@0.3.0"
    assert registry.get("resize").id == "resize"  # built-ins still there


def test_without_published_packs_the_caller_s_fallback_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A source tree that is not installed publishes no entry points: the core loads nothing on
    its own (it imports no ``nodes``); the caller hands it the built-ins."""
    from graph_runtime import registry as registry_module
    from nodes import discover_templates

    monkeypatch.setattr(registry_module, "entry_points", lambda group: [])
    assert list(TemplateRegistry.discover()) == []
    assert TemplateRegistry.discover(fallback=lambda: [_t("1.0.0")]).get("upscale").ref == (
        "upscale@1.0.0"
    )
    assert discover_templates().get("resize").id == "resize"
