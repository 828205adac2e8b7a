"""The function template contract: what a canvas node does, apart from its use in a graph."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from graph_runtime.errors import TaskCancelledError


class PortType(StrEnum):
    """Types carried by edges. ``ANY`` accepts every type; new types may be added freely."""

    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    IMAGE = "image"
    MASK = "mask"
    ASSET = "asset"
    JSON = "json"
    ANY = "any"
    CONTROL = "control"  # ControlNet applications (nodes.diffusion.controlnet)
    MODEL = "model"  # a checkpoint name, or a model value (checkpoint + VAE + CLIP skip + LoRAs)
    VIDEO = "video"  # nodes.video.Video: an MP4 with fps, size, frame count


# A link from an output of type key may feed an input of any type in the value set.
_WIDENINGS: dict[PortType, frozenset[PortType]] = {
    PortType.INTEGER: frozenset({PortType.FLOAT}),
    PortType.MASK: frozenset({PortType.IMAGE}),
    PortType.ASSET: frozenset({PortType.IMAGE}),
    PortType.TEXT: frozenset({PortType.MODEL}),
}


def link_compatible(source: PortType, target: PortType) -> bool:
    """Whether an output of type ``source`` may feed an input of type ``target``."""
    if source == target or PortType.ANY in (source, target):
        return True
    return target in _WIDENINGS.get(source, frozenset())


class Quality(StrEnum):
    DRAFT = "draft"
    STANDARD = "standard"
    HIGH = "high"
    ULTRA = "ultra"


_JSON_TYPES: dict[PortType, dict[str, Any]] = {
    PortType.TEXT: {"type": "string"},
    PortType.INTEGER: {"type": "integer"},
    PortType.FLOAT: {"type": "number"},
    PortType.BOOLEAN: {"type": "boolean"},
    PortType.IMAGE: {"type": "string", "format": "image", "description": "image (PNG in takes)"},
    PortType.MASK: {"type": "string", "format": "mask"},
    PortType.ASSET: {"type": "string", "pattern": "^asset://[A-Za-z0-9._/-]+$"},
    PortType.JSON: {},
    PortType.ANY: {},
    PortType.CONTROL: {"type": "array", "description": "ControlNet applications"},
    PortType.MODEL: {"description": "a model name, or a model value from checkpoint_loader"},
    PortType.VIDEO: {"type": "string", "format": "video", "description": "video (MP4 in takes)"},
}


@dataclass(frozen=True)
class InputSpec:
    """A typed input port. Literal values are checked against default, range and choices."""

    name: str
    type: PortType
    description: str = ""
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    multiline: bool = False
    multiple_of: int | None = None
    # with ``multiple_of``: the value is ``multiple_of * k + multiple_offset`` (LTX frames: 8k+1)
    multiple_offset: int = 0
    # a regular expression a text value must match in full (the description says the form)
    pattern: str | None = None
    affects_output: bool = True  # False: how it runs, not what it makes (left out of cache keys)
    # True: a list linked here arrives whole (collected); False: a list output linked here makes
    # the node run once per element (``graph_runtime/mapping.py``)
    accepts_list: bool = False

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = dict(_JSON_TYPES[self.type])
        schema["x-port-type"] = self.type.value
        if self.accepts_list:
            schema["x-accepts-list"] = True
        if self.description:
            schema["description"] = self.description
        if self.default is not None:
            schema["default"] = self.default
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.multiple_of is not None and not self.multiple_offset:
            schema["multipleOf"] = self.multiple_of
        elif self.multiple_of is not None:  # JSON Schema's multipleOf has no remainder
            schema["x-multiple-of"] = self.multiple_of
            schema["x-multiple-offset"] = self.multiple_offset
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.multiline:
            schema["x-multiline"] = True
        return schema


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: PortType
    description: str = ""
    is_list: bool = False  # the value is a list of ``type`` (e.g. video_to_frames' images)

    def json_schema(self) -> dict[str, Any]:
        schema = dict(_JSON_TYPES[self.type])
        schema["x-port-type"] = self.type.value
        if self.is_list:
            schema["x-list"] = True
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class ResourceHints:
    gpu: bool = False
    vram_gb: float = 0.0


class ProgressReporter(Protocol):
    """What a running template sees: report progress, notice cancel, reach shared services."""

    node_id: str
    task_id: str
    quality: Quality
    services: Mapping[str, Any]

    def progress(
        self,
        fraction: float,
        stage: str = "",
        message: str = "",
        preview: bytes | None = None,
    ) -> None:
        """Report progress in 0..1. Raises ``TaskCancelledError`` once the task is cancelled."""
        ...

    def check_cancelled(self) -> None: ...

    def record_metadata(self, **data: Any) -> None:
        """Add facts to the take's metadata (e.g. the model used)."""
        ...


TemplateFn = Callable[[ProgressReporter, Mapping[str, Any]], Mapping[str, Any]]

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class FunctionTemplate:
    """A node kind: id, semantic version, typed ports, quality presets and the function itself."""

    id: str
    version: str
    name: str
    category: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    fn: TemplateFn = field(compare=False, repr=False)
    quality_presets: Mapping[Quality, Mapping[str, Any]] = field(default_factory=dict)
    resources: ResourceHints = ResourceHints()
    cacheable: bool = True
    aliases: tuple[str, ...] = ()
    timeout_s: float | None = None
    requires: tuple[str, ...] = ()  # service names (``graph_runtime.services``) it runs on
    # What the outputs depend on outside the inputs (e.g. the take ``active`` names today), from
    # the task's project and the node's literal inputs, when the task starts; it goes into the
    # node's cache key. ``None`` from it (or no project): the node is not cached.
    state_key: Callable[[Any, Mapping[str, Any]], str | None] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not _ID_RE.fullmatch(self.id):
            raise ValueError(f"template id {self.id!r} must be snake_case")
        if not _SEMVER_RE.fullmatch(self.version):
            raise ValueError(f"template {self.id!r}: version {self.version!r} is not semantic")
        names = [p.name for p in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"template {self.id!r} has duplicate input names")

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def input(self, name: str) -> InputSpec | None:
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> OutputSpec | None:
        return next((p for p in self.outputs if p.name == name), None)

    def inputs_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {p.name: p.json_schema() for p in self.inputs},
            "required": [p.name for p in self.inputs if p.required],
            "additionalProperties": False,
        }

    def outputs_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {p.name: p.json_schema() for p in self.outputs},
        }

    def describe(self) -> dict[str, Any]:
        """The public description of this template (the API and the editor's palette use it)."""
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "aliases": list(self.aliases),
            "inputs_schema": self.inputs_schema(),
            "outputs_schema": self.outputs_schema(),
            "quality_presets": {q.value: dict(v) for q, v in self.quality_presets.items()},
            "resources": {"gpu": self.resources.gpu, "vram_gb": self.resources.vram_gb},
            "cacheable": self.cacheable,
            "timeout_s": self.timeout_s,
            "requires": list(self.requires),
        }


class NullReporter:
    """A reporter that records nothing; for calling a template directly (tests, benchmarks)."""

    def __init__(
        self,
        node_id: str = "node",
        task_id: str = "direct",
        quality: Quality = Quality.STANDARD,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.node_id = node_id
        self.task_id = task_id
        self.quality = quality
        self.services: Mapping[str, Any] = services or {}
        self.cancelled = False
        self.metadata: dict[str, Any] = {}

    def progress(
        self, fraction: float, stage: str = "", message: str = "", preview: bytes | None = None
    ) -> None:
        self.check_cancelled()

    def record_metadata(self, **data: Any) -> None:
        self.metadata.update(data)

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelledError("task was cancelled", node_id=self.node_id)
