"""Declared services: the typed accessor, the factory protocol and validation's check."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from graph_runtime.canvas import CanvasGraph, single_node_graph
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.services import (
    MissingServiceError,
    ServiceConfigError,
    ServiceFactory,
    ServiceKey,
    discover_service_factories,
    missing_services,
    parse_service_config,
    require_service,
)
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType
from graph_runtime.validation import validate_graph


class Clock:
    def now(self) -> int:
        return 42


CLOCK = ServiceKey("clock", Clock)


def _tick(ctx: Any, inputs: Any) -> dict[str, Any]:
    return {"value": require_service(ctx.services, CLOCK).now()}


TICK = FunctionTemplate(
    id="tick", version="1.0.0", name="Tick", category="test", description="needs a clock",
    inputs=(InputSpec("label", PortType.TEXT, default="x"),),
    outputs=(OutputSpec("value", PortType.INTEGER),), fn=_tick, requires=("clock", "weather"),
)  # fmt: skip


class ClockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tick_ms: int = 10


class ClockConfig(BaseModel):
    """The section: the home config's ``clock`` key."""

    model_config = ConfigDict(extra="forbid")
    clock: ClockSettings = ClockSettings()


class ClockFactory:
    name = "clock"
    config_model: type[BaseModel] = ClockConfig
    config_keys: tuple[str, ...] = ("clock",)

    def create(self, config: Any, context: Any) -> Clock:
        return Clock()

    def close(self, service: object) -> None:
        pass


def test_require_service_is_typed_and_names_what_is_missing() -> None:
    clock = Clock()
    assert require_service({"clock": clock}, CLOCK) is clock
    with pytest.raises(MissingServiceError, match=r"no 'clock' service \(Clock\); services "
                       r"provided: diffusion") as caught:  # fmt: skip
        require_service({"diffusion": object()}, CLOCK)
    assert caught.value.code == "missing_service" and caught.value.details == {"service": "clock"}
    with pytest.raises(MissingServiceError, match="services provided: clock"):
        require_service({"clock": "not a clock"}, CLOCK)


def test_validation_refuses_templates_whose_services_are_missing() -> None:
    registry = TemplateRegistry([TICK])
    graph = CanvasGraph.model_validate({"nodes": [
        {"id": "a", "template": "tick"}, {"id": "b", "template": "tick"}]})  # fmt: skip
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(graph, registry, available_services={"clock"})
    issues = [(i.code, i.node_id, i.extra["service"]) for i in caught.value.issues]
    assert issues == [("missing_service", "a", "weather"), ("missing_service", "b", "weather")]
    assert caught.value.issues[0].message == (
        "template 'tick' needs the 'weather' service, which this runtime does not provide "
        "(services provided: 'clock'); install the pack that publishes it"
    )
    assert caught.value.to_dict()["errors"][0]["service"] == "weather"
    # Every service there: planned. No runtime at hand (None): not checked, as before.
    assert validate_graph(graph, registry, available_services=["clock", "weather"]).nodes
    assert validate_graph(graph, registry).nodes
    assert missing_services(TICK.requires, ["weather"]) == ["clock"]


def test_missing_service_is_reported_with_the_other_issues() -> None:
    registry = TemplateRegistry.discover()
    graph = single_node_graph("image_generation", {"prompt": "p", "width": 100})
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(graph, registry, available_services=())
    codes = sorted(i.code for i in caught.value.issues)
    assert codes == ["missing_service", "not_a_multiple"]
    assert registry.get("image_generation").describe()["requires"] == ["diffusion"]
    assert registry.get("text_prompt").requires == ()


def test_service_config_is_the_declared_keys_validated() -> None:
    factory = ClockFactory()
    assert isinstance(factory, ServiceFactory)
    home_config = {"clock": {"tick_ms": 3}, "diffusion": {"device": "cpu"}}
    config = parse_service_config(factory, home_config, "cfg.json")
    assert config == ClockConfig(clock=ClockSettings(tick_ms=3))  # other keys are not its own
    assert parse_service_config(factory, {}, "cfg.json") == ClockConfig()
    with pytest.raises(ServiceConfigError) as caught:
        parse_service_config(factory, {"clock": {"tick_ms": "soon", "tik": 1}}, "cfg.json")
    assert caught.value.code == "invalid_service_config"
    assert caught.value.message == (
        "the 'clock' service's config in cfg.json is invalid: clock.tick_ms: Input should be a "
        "valid integer, unable to parse string as an integer; clock.tik: Extra inputs are not "
        "permitted"
    )


def test_the_diffusion_pack_publishes_its_factory() -> None:
    factories = {f.name: f for f in discover_service_factories()}
    assert "diffusion" in factories
    diffusion = factories["diffusion"]
    assert diffusion.config_keys == (
        "diffusion", "models", "checkpoints_dir", "loras_dir", "controlnet_dir",
        "upscale_models_dir", "embeddings_dir", "vae_dir", "vae_approx_dir",
    )  # fmt: skip
