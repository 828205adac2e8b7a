"""The Takeflow home: Dagster instance, event log, cache, config and project index in one folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_HOME = Path.home() / ".takeflow"


@dataclass(frozen=True)
class TakeflowHome:
    path: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> TakeflowHome:
        """``--home`` beats ``TAKEFLOW_HOME`` beats ``~/.takeflow``."""
        raw = explicit or os.environ.get("TAKEFLOW_HOME") or DEFAULT_HOME
        home = cls(Path(raw).expanduser().resolve())
        home.path.mkdir(parents=True, exist_ok=True)
        return home

    @property
    def dagster_home(self) -> Path:
        return self.path / "dagster"

    @property
    def state_db(self) -> Path:
        return self.path / "state.db"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def jobs_dir(self) -> Path:
        """The graph of each job shape run (``stores.graph_shapes``)."""
        return self.path / "jobs"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    def config(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.config_file.read_text()))
        except FileNotFoundError:
            return {}

    def update_config(self, **changes: Any) -> dict[str, Any]:
        config = {**self.config(), **changes}
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
        tmp.replace(self.config_file)
        return config
