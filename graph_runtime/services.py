"""Services that templates declare and packs provide: the factory protocol and a typed accessor.

A template names the services it needs (``FunctionTemplate.requires``); a pack publishes a
``ServiceFactory`` under the ``takeflow.services`` entry point group; the composition root
creates one service per factory from the factory's typed config section, and validation refuses
a graph whose templates need a service the runtime does not provide. A template reaches its
service with ``require_service(ctx.services, KEY)``, typed by the key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from graph_runtime.errors import TakeflowError

SERVICES_ENTRY_POINT_GROUP = "takeflow.services"
log = logging.getLogger(__name__)

S = TypeVar("S")


class MissingServiceError(TakeflowError):
    """A template asked for a service that this runtime does not provide."""

    code = "missing_service"


class ServiceConfigError(TakeflowError):
    """A service's section of the home config does not fit its config model."""

    code = "invalid_service_config"
    http_status = 422


@dataclass(frozen=True)
class ServiceContext:
    """What a factory gets besides its config: where it may keep files, where its config comes
    from (for messages) and how to re-read its config now (edits apply without a restart)."""

    home: Path
    config_origin: str
    current_config: Callable[[], BaseModel]


@runtime_checkable
class ServiceFactory(Protocol):
    """Makes one named service from its typed config section; published by a pack."""

    @property
    def name(self) -> str:
        """The service name that templates list in ``requires``."""
        ...

    @property
    def config_model(self) -> type[BaseModel]:
        """The pydantic model of this service's config section."""
        ...

    @property
    def config_keys(self) -> tuple[str, ...]:
        """The top-level keys of the home config that make up the section."""
        ...

    def create(self, config: Any, context: ServiceContext) -> object:
        """Build the service; must not load heavy libraries (that happens on first use)."""
        ...

    def close(self, service: object) -> None:
        """Release what ``create`` made (threads, memory)."""
        ...


def parse_service_config(
    factory: ServiceFactory, home_config: Mapping[str, Any], origin: str
) -> BaseModel:
    """The factory's section of ``home_config``, validated (``ServiceConfigError`` names the
    bad field)."""
    section = {key: home_config[key] for key in factory.config_keys if key in home_config}
    try:
        return factory.config_model.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(section)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ServiceConfigError(
            f"the '{factory.name}' service's config in {origin} is invalid: {problems}",
            service=factory.name,
        ) from exc


def discover_service_factories() -> list[ServiceFactory]:
    """Every factory published under ``takeflow.services`` (a broken pack is logged, skipped)."""
    found: dict[str, ServiceFactory] = {}
    for ep in entry_points(group=SERVICES_ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception:  # a broken third-party pack must not take the runtime down
            log.exception("service pack %s failed to load", ep.value)
            continue
        factory = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(factory, ServiceFactory):
            log.error("entry point %s is not a ServiceFactory; skipped", ep.value)
            continue
        if factory.name in found:
            log.warning("service '%s' published twice; keeping the first", factory.name)
            continue
        found[factory.name] = factory
    return list(found.values())


@runtime_checkable
class WarmModels(Protocol):
    """A service that keeps models loaded: in distributed mode its worker prefers, within a
    turn, queued tasks that name one of them (no reload)."""

    def warm_models(self) -> list[str]: ...


@dataclass(frozen=True)
class ServiceKey(Generic[S]):
    """A service's name together with its type, for typed lookups."""

    name: str
    type: type[S]


def require_service(services: Mapping[str, object], key: ServiceKey[S]) -> S:
    """The service under ``key``; ``MissingServiceError`` when absent or of another type."""
    found = services.get(key.name)
    if isinstance(found, key.type):
        return found
    known = ", ".join(sorted(services)) or "none"
    raise MissingServiceError(
        f"this run has no '{key.name}' service ({key.type.__name__}); services provided: "
        f"{known}. Open the runtime with dagster_defs.runtime.open_runtime(), which creates "
        "every installed service from the Takeflow home's config",
        service=key.name,
    )


def missing_services(required: Iterable[str], available: Iterable[str]) -> list[str]:
    """The names in ``required`` that ``available`` lacks, in order."""
    have = set(available)
    return [name for name in required if name not in have]
