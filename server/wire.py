"""Events and files as HTTP and WebSocket clients see them.

The runner stores a preview as a project-relative ``preview_path``; clients get it as
``preview_url`` (``/api/v1/projects/{id}/files/...``), the server's own URL layout.
"""

from __future__ import annotations

from typing import Any

from dagster_defs.asset_keys import API, file_url
from graph_runtime.events import TaskEvent

__all__ = ["API", "file_url", "wire_event"]


def wire_event(event: TaskEvent) -> dict[str, Any]:
    """``event.to_dict()`` with a stored ``preview_path`` sent as ``preview_url``."""
    body = event.to_dict()
    if "preview_path" in event.data:
        path = event.data["preview_path"]
        body["data"] = {
            ("preview_url" if k == "preview_path" else k): (
                file_url(event.project_id or "", path) if k == "preview_path" and path else v
            )
            for k, v in body["data"].items()
        }
    return body
