"""Finds templates by id and version: built-ins and third-party packs (entry points)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points

from graph_runtime.errors import TemplateNotFoundError
from graph_runtime.templates import FunctionTemplate

ENTRY_POINT_GROUP = "takeflow.templates"
log = logging.getLogger(__name__)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"resize@1.2.0"`` -> ``("resize", "1.2.0")``; ``"resize"`` -> ``("resize", None)``."""
    template_id, _, version = ref.partition("@")
    return template_id, (version or None)


class TemplateRegistry:
    """All known templates, every version of each. Lookup accepts exact or major versions."""

    def __init__(self, templates: Iterable[FunctionTemplate] = ()) -> None:
        self._by_id: dict[str, dict[str, FunctionTemplate]] = {}
        self._aliases: dict[str, FunctionTemplate] = {}
        for t in templates:
            self.register(t)

    def register(self, template: FunctionTemplate) -> None:
        versions = self._by_id.setdefault(template.id, {})
        if template.version in versions:
            raise ValueError(f"template {template.ref} registered twice")
        versions[template.version] = template
        for alias in template.aliases:
            self._aliases[alias] = template

    @classmethod
    def discover(
        cls, fallback: Callable[[], Iterable[FunctionTemplate]] | None = None
    ) -> TemplateRegistry:
        """Every pack published under the ``takeflow.templates`` entry point (the built-ins are
        one); ``fallback()`` when none is (a source tree that is not installed: the caller's
        built-ins, ``nodes.discover_templates``)."""
        registry = cls()
        seen: set[str] = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in seen:
                continue
            seen.add(ep.value)
            try:
                loaded = ep.load()
            except Exception:  # a broken third-party pack must not take the runtime down
                log.exception("template pack %s failed to load", ep.value)
                continue
            for template in loaded() if callable(loaded) else loaded:
                registry.register(template)
        if not seen and fallback is not None:  # not installed as a distribution
            for template in fallback():
                registry.register(template)
        return registry

    def __iter__(self) -> Iterator[FunctionTemplate]:
        for versions in self._by_id.values():
            yield from versions.values()

    def latest(self) -> list[FunctionTemplate]:
        return [
            versions[max(versions, key=_version_key)] for _, versions in sorted(self._by_id.items())
        ]

    def suggest(self, template_id: str) -> list[str]:
        return difflib.get_close_matches(template_id, [*self._by_id, *self._aliases], n=3)

    def get(self, ref: str) -> FunctionTemplate:
        """Resolve ``id``, ``id@X.Y.Z``, ``id@X`` (newest X.*.*) or an alias to one template."""
        template_id, version = split_ref(ref)
        if template_id in self._aliases and template_id not in self._by_id:
            alias_target = self._aliases[template_id]
            if version is None:
                return alias_target
            template_id = alias_target.id
        versions = self._by_id.get(template_id)
        if not versions:
            hint = self.suggest(template_id)
            did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
            raise TemplateNotFoundError(
                f"unknown template '{template_id}'{did_you_mean}", template_id=template_id
            )
        if version is None:
            return versions[max(versions, key=_version_key)]
        if version in versions:
            return versions[version]
        matching = [
            v for v in versions if v.split(".")[0] == version or v.startswith(version + ".")
        ]
        if matching:
            return versions[max(matching, key=_version_key)]
        known = ", ".join(sorted(versions, key=_version_key))
        raise TemplateNotFoundError(
            f"template '{template_id}' has no version '{version}' (known: {known})",
            template_id=template_id,
            version=version,
        )
