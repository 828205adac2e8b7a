"""The composition root creates each installed service from its config section, and a runtime
refuses graphs that need a service it does not have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from dagster_defs.runtime import open_runtime
from dagster_defs.services import open_services
from graph_runtime.canvas import single_node_graph
from graph_runtime.errors import GraphValidationError
from graph_runtime.services import ServiceConfigError, ServiceContext
from nodes.diffusion.demo import register_model
from nodes.diffusion.service import DiffusionService
from stores.home import TakeflowHome


class Recorder(BaseModel):
    label: str = "r"


class RecordingFactory:
    """A real factory whose services say when they are closed."""

    config_model: type[BaseModel] = Recorder
    config_keys: tuple[str, ...] = ("label",)

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def create(self, config: Any, context: ServiceContext) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"create {self.name} {config.label} {context.home.name}")
        return {"name": self.name}

    def close(self, service: object) -> None:
        self.log.append(f"close {self.name}")


def test_open_runtime_builds_the_diffusion_service_from_its_section(
    _isolated_home: Path, tmp_path: Path
) -> None:
    home = TakeflowHome.resolve(_isolated_home)
    home.update_config(diffusion={"max_batch_size": 3, "batch_window_ms": 20, "device": "cpu"})
    runtime = open_runtime(home.path, workers=1)
    try:
        service = runtime.runner.services["diffusion"]
        assert isinstance(service, DiffusionService)
        assert (service.settings.max_batch_size, service.settings.batch_window_s) == (3, 0.02)
        assert service.models.names() == []
        register_model(home, "later", tmp_path / "later")  # edits apply without a restart
        assert service.models.names() == ["later"]
        assert not service.scheduler.closed
    finally:
        runtime.close()
    assert service.scheduler.closed  # the runtime closed the service its factory made


def test_a_bad_service_config_stops_the_runtime_before_it_starts(_isolated_home: Path) -> None:
    home = TakeflowHome.resolve(_isolated_home)
    home.update_config(diffusion={"max_batch_size": 0}, models={"x": {"path": "p", "arch": "sd9"}})
    with pytest.raises(ServiceConfigError) as caught:
        open_runtime(home.path, workers=1)
    message = caught.value.message
    assert message.startswith(f"the 'diffusion' service's config in {home.config_file} is invalid")
    assert "diffusion.max_batch_size: Input should be greater than or equal to 1" in message
    assert "models.x.arch: Input should be 'sd15', 'sdxl', 'ltxv' or 'auto'" in message


def test_a_runtime_without_the_service_refuses_the_graph(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dagster_defs.services.discover_service_factories", lambda: [])
    runtime = open_runtime(_isolated_home, workers=1)
    try:
        assert "diffusion" not in runtime.runner.services
        graph = single_node_graph("image_generation", {"prompt": "p", "width": 64, "height": 64})
        with pytest.raises(GraphValidationError) as caught:
            runtime.runner.submit(graph)
        (issue,) = caught.value.issues
        assert (issue.code, issue.node_id, issue.extra) == (
            "missing_service", "node", {"service": "diffusion"})  # fmt: skip
        assert "needs the 'diffusion' service" in issue.message
        assert runtime.state.list() == []  # nothing queued
        ok = runtime.runner.submit(single_node_graph("text_prompt", {"text": "hi"}))
        assert runtime.runner.wait(ok.task_id, timeout=60).status == "completed"
    finally:
        runtime.close()


def test_open_services_creates_closes_and_lets_given_services_win(_isolated_home: Path) -> None:
    home = TakeflowHome.resolve(_isolated_home)
    home.update_config(label="configured")
    log: list[str] = []
    factories = [RecordingFactory("a", log), RecordingFactory("b", log)]
    given = object()
    opened = open_services(home, {"b": given}, factories)
    assert opened.services["b"] is given and opened.services["a"] == {"name": "a"}
    assert log == [f"create a configured {home.path.name}"]
    opened.close()
    assert log[-1] == "close a"

    log.clear()
    with pytest.raises(RuntimeError, match="c cannot start"):
        open_services(home, None, [*factories, RecordingFactory("c", log, fail=True)])
    assert log == [f"create a configured {home.path.name}", f"create b configured "
                   f"{home.path.name}", "close b", "close a"]  # fmt: skip
