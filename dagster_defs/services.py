"""Composition of services: every installed service factory, fed its section of the home config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from graph_runtime.services import (
    ServiceContext,
    ServiceFactory,
    discover_service_factories,
    parse_service_config,
)
from stores.home import TakeflowHome


def service_context(home: TakeflowHome, factory: ServiceFactory) -> ServiceContext:
    """The context for ``factory`` in ``home``: re-reads and re-validates its section on call."""
    origin = str(home.config_file)

    def current_config() -> BaseModel:
        return parse_service_config(factory, home.config(), origin)

    return ServiceContext(home.path, origin, current_config)


@dataclass
class OpenServices:
    """The services a runtime provides, and the factories that must close the ones they made."""

    services: dict[str, Any]
    _made: list[tuple[ServiceFactory, object]] = field(default_factory=list)

    def close(self) -> None:
        for factory, service in reversed(self._made):
            factory.close(service)
        self._made.clear()


def open_services(
    home: TakeflowHome,
    given: Mapping[str, Any] | None = None,
    factories: list[ServiceFactory] | None = None,
) -> OpenServices:
    """One service per discovered factory (``given`` ones win and are not created), each from
    its typed config section; ``ServiceConfigError`` names a bad field before anything starts."""
    opened = OpenServices(dict(given or {}))
    config = home.config()
    try:
        for factory in discover_service_factories() if factories is None else factories:
            if factory.name in opened.services:
                continue
            settings = parse_service_config(factory, config, str(home.config_file))
            service = factory.create(settings, service_context(home, factory))
            opened.services[factory.name] = service
            opened._made.append((factory, service))
    except BaseException:
        opened.close()
        raise
    return opened
