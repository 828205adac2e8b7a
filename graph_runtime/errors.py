"""One exception root for Takeflow, with families that carry the data a person needs to act."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class TakeflowError(Exception):
    """Root of every error Takeflow raises on purpose. ``code`` is stable; the API exposes it."""

    code = "takeflow_error"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}

    def with_defaults(self, **details: Any) -> TakeflowError:
        """A copy of this error with ``details`` added where it has none of its own (the
        original, which user code may still hold, is left as it was)."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.args = self.args
        copy.details = dict(self.details)
        for key, value in details.items():
            copy.details.setdefault(key, value)
        return copy


@dataclass(frozen=True)
class GraphIssue:
    """One problem found in a canvas graph, pinned to its node and port."""

    code: str
    message: str
    node_id: str | None = None
    port: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.node_id is not None:
            out["node_id"] = self.node_id
        if self.port is not None:
            out["port"] = self.port
        out.update(self.extra)
        return out


class GraphValidationError(TakeflowError):
    """A graph failed validation; ``issues`` holds every problem found, not just the first."""

    code = "invalid_graph"
    http_status = 422

    def __init__(self, issues: Sequence[GraphIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(
            f"- [{i.code}] {i.node_id + ': ' if i.node_id else ''}{i.message}" for i in self.issues
        )
        super().__init__(f"graph has {len(self.issues)} error(s):\n{lines}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": f"graph has {len(self.issues)} error(s)",
            "errors": [i.to_dict() for i in self.issues],
        }


class TemplateError(TakeflowError):
    """Base of template lookup and execution failures."""


class TemplateNotFoundError(TemplateError):
    code = "unknown_template"
    http_status = 404


class TemplateExecutionError(TemplateError):
    """A template raised while running; names the node and template and keeps the cause."""

    code = "template_failed"
    http_status = 500

    def __init__(self, node_id: str, template_id: str, cause: BaseException) -> None:
        super().__init__(
            f"node '{node_id}' (template '{template_id}') failed: {type(cause).__name__}: {cause}",
            node_id=node_id,
            template_id=template_id,
        )
        self.node_id = node_id
        self.template_id = template_id
        self.__cause__ = cause


class TemplateTimeoutError(TemplateError):
    """A template ran longer than its time limit and was stopped."""

    code = "template_timeout"
    http_status = 504

    def __init__(self, node_id: str, template_id: str, limit_s: float) -> None:
        super().__init__(
            f"node '{node_id}' (template '{template_id}') ran longer than its limit of "
            f"{limit_s:g} s and was stopped",
            node_id=node_id,
            template_id=template_id,
            limit_s=limit_s,
        )


class TemplateMemoryError(TemplateError):
    """The server went over its memory limit while a template ran; that template was stopped."""

    code = "template_memory_limit"
    http_status = 507

    def __init__(self, node_id: str, template_id: str, rss_mb: float, limit_mb: float) -> None:
        super().__init__(
            f"node '{node_id}' (template '{template_id}') was stopped: the server used "
            f"{rss_mb:.0f} MB, over its limit of {limit_mb:.0f} MB, while it ran",
            node_id=node_id,
            template_id=template_id,
            limit_mb=limit_mb,
        )


class TaskCancelledError(TakeflowError):
    """Raised inside a template at its next progress point once its task is cancelled."""

    code = "cancelled"
    http_status = 409


class TaskInterruptedError(TakeflowError):
    """A task ended because its server stopped (crash, kill, or a graceful stop's grace ran out)."""

    code = "interrupted"
    http_status = 503


class TaskNotFoundError(TakeflowError):
    code = "task_not_found"
    http_status = 404


class ProjectError(TakeflowError):
    """Bad project, shot or path: unknown, malformed or trying to leave the project."""

    code = "invalid_project"
    http_status = 400


class ProjectNotFoundError(ProjectError):
    code = "project_not_found"
    http_status = 404


class UnsafePathError(ProjectError):
    code = "unsafe_path"
    http_status = 400


class AssetNotFoundError(ProjectError):
    code = "asset_not_found"
    http_status = 404


class ProjectFileNotFoundError(ProjectError):
    code = "file_not_found"
    http_status = 404


class TakeStoreError(TakeflowError):
    code = "take_store_error"
    http_status = 500


class TakeNotFoundError(TakeStoreError):
    code = "take_not_found"
    http_status = 404


class StorageError(TakeflowError):
    code = "storage_error"
    http_status = 503


class GitError(TakeflowError):
    code = "git_error"
    http_status = 503


class ModelNotFoundError(TakeflowError):
    code = "model_not_found"
    http_status = 422
