"""The graph of every job shape Takeflow has run, so the code location can rebuild the job of any
past run (template tasks, unsaved canvases, ComfyUI prompts), not only of saved canvases.

One JSON document per Dagster job name (``compiler.job_name``: graph name and structure hash)
under ``<home>/jobs``, written once, when a process first runs that shape; the values in it are
those of the first task of the shape (every run carries its own values in its run config). The
newest ``keep`` shapes are kept.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

from pydantic import ValidationError

from graph_runtime.canvas import CanvasGraph


class GraphShapes:
    """``<home>/jobs/<job name>.json``: a graph per job shape that ran."""

    def __init__(self, folder: Path, keep: int = 500) -> None:
        self.folder = folder
        self.keep = keep
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, job_name: str, graph: CanvasGraph) -> None:
        """Store ``graph`` as the shape of ``job_name`` unless it is stored already."""
        with self._lock:
            if job_name in self._known:
                return
            self._known.add(job_name)
        path = self.folder / f"{job_name}.json"
        if path.exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(graph.model_dump_json())
        os.replace(tmp, path)
        self._prune()

    def graphs(self) -> list[tuple[str, CanvasGraph]]:
        """(job name, graph) of the stored shapes, newest first; unreadable files skipped."""
        found = []
        for path in self._newest_first():
            try:
                found.append((path.stem, CanvasGraph.model_validate_json(path.read_text())))
            except (OSError, ValidationError):
                continue
        return found

    def _newest_first(self) -> list[Path]:
        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return 0.0

        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.json"), key=mtime, reverse=True)

    def _prune(self) -> None:
        for path in self._newest_first()[self.keep :]:
            path.unlink(missing_ok=True)
