"""The model registry: a model name maps to a local diffusers folder named in the home config.

``config.json`` of the Takeflow home holds::

    "models": {
        "demo": {"path": "/home/me/.takeflow/models/demo", "demo": true},
        "sd15": {"path": "/srv/weights/stable-diffusion-v1-5"}
    }

Relative paths are relative to the home. Weights are the operator's; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_runtime.errors import ModelNotFoundError
from stores.home import TakeflowHome


@dataclass(frozen=True)
class ModelSpec:
    """One configured model: its name, folder and whether it is the random-weight demo model."""

    name: str
    path: Path
    demo: bool = False
    label: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "path": str(self.path), "demo": self.demo}
        if self.label:
            out["label"] = self.label
        return out


class ModelRegistry:
    """Reads the ``models`` table of a home's config on each lookup (edits apply at once)."""

    def __init__(self, home: TakeflowHome) -> None:
        self.home = home

    def _table(self) -> dict[str, Any]:
        table = self.home.config().get("models") or {}
        return dict(table) if isinstance(table, dict) else {}

    def names(self) -> list[str]:
        return sorted(self._table())

    def list(self) -> list[ModelSpec]:
        return [self._spec(name, entry) for name, entry in sorted(self._table().items())]

    def _spec(self, name: str, entry: Any) -> ModelSpec:
        raw = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(raw, str) or not raw:
            raise ModelNotFoundError(
                f"model '{name}' has no path in {self.home.config_file}; set "
                f'"models": {{"{name}": {{"path": "/path/to/diffusers/folder"}}}}',
                model=name,
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.home.path / path
        demo = bool(entry.get("demo")) if isinstance(entry, dict) else False
        label = entry.get("label") if isinstance(entry, dict) else None
        return ModelSpec(name, path, demo, label)

    def resolve(self, name: str) -> ModelSpec:
        """The model named ``name``; ``ModelNotFoundError`` saying what is wrong and where."""
        table = self._table()
        if name not in table:
            known = ", ".join(f"'{n}'" for n in sorted(table)) or "none"
            hint = (
                " (run `takeflow serve --demo` or call ensure_demo_model() to build the demo model)"
                if name == "demo"
                else ""
            )
            raise ModelNotFoundError(
                f"unknown model '{name}': no such entry under \"models\" in "
                f"{self.home.config_file} (known models: {known}){hint}",
                model=name,
                known=sorted(table),
            )
        spec = self._spec(name, table[name])
        if not (spec.path / "model_index.json").is_file():
            problem = "does not exist" if not spec.path.exists() else "has no model_index.json"
            raise ModelNotFoundError(
                f"model '{name}' is configured at '{spec.path}', but that folder {problem}; "
                "point it at a diffusers pipeline folder (one saved with save_pretrained)",
                model=name,
                path=str(spec.path),
            )
        return spec
