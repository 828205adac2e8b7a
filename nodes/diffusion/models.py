"""The model registry: a model name maps to a local diffusers folder or a single checkpoint file.

Names come from the ``models`` table of the home config and, when ``checkpoints_dir`` is set,
from every ``.safetensors``/``.ckpt`` file under that folder, named by its path relative to it
with ``/`` separators (the string ComfyUI uses as ``ckpt_name``). A ``models`` entry wins over a
checkpoint file of the same name. The table is re-read on every lookup, so edits apply at once.
Weights are the operator's; nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from graph_runtime.errors import ModelNotFoundError
from graph_runtime.services import ServiceContext
from nodes.diffusion.arch_configs import ArchConfigs
from nodes.diffusion.checkpoints import ArchDetector, CheckpointError
from nodes.diffusion.config import (
    Arch,
    DiffusionConfig,
    ModelEntry,
    ModelFormat,
    resolve_path,
)
from nodes.diffusion.demo import DEMO_MODEL, wait_for_demo_model
from nodes.diffusion.folders import ModelFolders

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One model: its name, where it is, its format and arch (``auto`` until detected), an
    optional config folder, and whether it is the random-weight demo model."""

    name: str
    path: Path
    demo: bool = False
    label: str | None = None
    format: ModelFormat = "diffusers"
    arch: Arch = "auto"
    config: Path | None = None
    source: str = "models"  # or "checkpoints_dir"
    text_encoder: Path | None = None  # video single files: text_encoder/ + tokenizer/ folder

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path),
            "demo": self.demo,
            "format": self.format,
            "arch": self.arch,
            "source": self.source,
        }
        if self.label:
            out["label"] = self.label
        if self.config is not None:
            out["config"] = str(self.config)
        if self.text_encoder is not None:
            out["text_encoder"] = str(self.text_encoder)
        return out

    def fingerprint(self) -> tuple[str, int, int]:
        """Path, size and mtime of what the weights live in: a changed file is a new model."""
        marker = self.path / "model_index.json" if self.format == "diffusers" else self.path
        stat = marker.stat()
        return (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)

    def weights_bytes(self) -> int:
        if self.format == "single_file":
            return self.path.stat().st_size
        return sum(
            p.stat().st_size
            for p in self.path.rglob("*")
            if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt") and p.is_file()
        )


class ModelRegistry:
    """Model lookup over the diffusion config, re-read through ``read_config`` on each call."""

    def __init__(self, read_config: Callable[[], DiffusionConfig], home: Path, origin: str) -> None:
        self._read_config = read_config
        self.home = home
        self.origin = origin  # where the config lives (server side; messages say "config.json")
        self.arch_configs = ArchConfigs(home / "models" / ".configs")
        self._detector = ArchDetector()
        self.folders = ModelFolders(read_config, home)

    @classmethod
    def for_context(cls, context: ServiceContext) -> ModelRegistry:
        return cls(
            lambda: cast(DiffusionConfig, context.current_config()),
            context.home,
            context.config_origin,
        )

    def checkpoints_dir(self) -> Path | None:
        raw = self._read_config().checkpoints_dir
        return resolve_path(raw, self.home) if raw else None

    def checkpoint_names(self) -> list[str]:
        """Every checkpoint file under ``checkpoints_dir``, by relative path, sorted."""
        root = self.checkpoints_dir()
        if root is None or not root.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()
        )

    def names(self) -> list[str]:
        wait_for_demo_model(self.home)  # being built at a server's first start: listed once done
        return sorted({*self._read_config().models, *self.checkpoint_names()})

    def list(self) -> list[ModelSpec]:
        """Every model (an entry that cannot be placed is left out and logged)."""
        table = self._read_config().models
        found = []
        for name in self.names():
            try:
                found.append(
                    self._from_entry(name, table[name]) if name in table
                    else self._from_checkpoint(name)
                )  # fmt: skip
            except ModelNotFoundError as exc:
                log.warning("model '%s' left out of the list: %s", name, exc.message)
        return found

    def _from_entry(self, name: str, entry: ModelEntry) -> ModelSpec:
        if entry.path is None:
            root = self.checkpoints_dir()
            if root is None:
                raise ModelNotFoundError(
                    f"model '{name}' in the home's config.json has no path, and no "
                    'checkpoints_dir is set to find it in; set "path" or "checkpoints_dir"',
                    model=name,
                )
            path = root / name
        else:
            path = resolve_path(entry.path, self.home)
        fmt: ModelFormat = entry.format or (
            "single_file" if path.suffix.lower() in CHECKPOINT_SUFFIXES else "diffusers"
        )
        config = resolve_path(entry.config, self.home) if entry.config else None
        source = "models" if entry.path is not None else "checkpoints_dir"
        words = resolve_path(entry.text_encoder, self.home) if entry.text_encoder else None
        return ModelSpec(
            name, path, entry.demo, entry.label, fmt, entry.arch, config, source, words
        )

    def _from_checkpoint(self, name: str) -> ModelSpec:
        root = self.checkpoints_dir()
        assert root is not None
        return ModelSpec(name, root / name, format="single_file", source="checkpoints_dir")

    def resolve(self, name: str) -> ModelSpec:
        """The model named ``name``, ready to load; ``ModelNotFoundError`` saying what is wrong
        and where. A single file gets its arch (read from its keys) and a config folder (the
        entry's, or the one generated for the arch under the home). The demo model, while this
        process builds it (``prepare_demo_model``), is waited for."""
        if name.startswith(DEMO_MODEL):  # demo, demo-inpaint: built together
            wait_for_demo_model(self.home)
        config = self._read_config()
        if name in config.models:
            spec = self._from_entry(name, config.models[name])
        elif self._is_checkpoint_name(name):
            spec = self._from_checkpoint(name)
        else:
            raise self._unknown(name)
        if spec.source == "checkpoints_dir" and not self._is_checkpoint_name(name):
            raise self._unknown(name)  # e.g. "../x.safetensors": outside the folder
        self._check_exists(spec)
        if spec.format == "diffusers":
            return spec
        found = self._detector.detect(spec.path)
        if spec.arch != "auto" and spec.arch != found:
            raise CheckpointError(
                f"model '{name}' is configured with arch '{spec.arch}', but '{spec.path}' holds "
                f'an {found} checkpoint; set "arch": "{found}" or "auto"',
                model=name,
                path=str(spec.path),
            )
        folder = spec.config
        if folder is None:
            vocab = config.diffusion.clip_vocab
            folder = self.arch_configs.ensure(
                found, resolve_path(vocab, self.home) if vocab else None
            )
        return replace(spec, arch=found, config=folder)  # type: ignore[arg-type]

    def _is_checkpoint_name(self, name: str) -> bool:
        root = self.checkpoints_dir()
        if root is None or Path(name).suffix.lower() not in CHECKPOINT_SUFFIXES:
            return False
        candidate = (root / name).resolve()
        return candidate.is_relative_to(root.resolve()) and candidate.is_file()

    def _unknown(self, name: str) -> ModelNotFoundError:
        names = self.names()
        known = ", ".join(f"'{n}'" for n in names) or "none"
        hint = (
            " (run `takeflow serve --demo` or call ensure_demo_model() to build the demo model)"
            if name == "demo"
            else ""
        )
        where = 'under "models" in the home\'s config.json'
        if self.checkpoints_dir() is not None:
            where += " nor a checkpoint file under its checkpoints_dir"
        return ModelNotFoundError(
            f"unknown model '{name}': no such entry {where} (known models: {known}){hint}",
            model=name,
            known=names,
        )

    @staticmethod
    def _check_exists(spec: ModelSpec) -> None:
        if spec.format == "diffusers":
            if not (spec.path / "model_index.json").is_file():
                problem = "does not exist" if not spec.path.exists() else "has no model_index.json"
                raise ModelNotFoundError(
                    f"model '{spec.name}' is configured at '{spec.path}', but that folder "
                    f"{problem}; point it at a diffusers pipeline folder (one saved with "
                    "save_pretrained) or at a .safetensors/.ckpt file",
                    model=spec.name,
                    path=str(spec.path),
                )
            return
        if not spec.path.is_file():
            problem = "is a folder" if spec.path.is_dir() else "does not exist"
            raise ModelNotFoundError(
                f"model '{spec.name}' is configured at '{spec.path}', but that file {problem}; "
                "point it at a .safetensors or .ckpt checkpoint",
                model=spec.name,
                path=str(spec.path),
            )
        if spec.path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelNotFoundError(
                f"model '{spec.name}' at '{spec.path}' is not a .safetensors or .ckpt file",
                model=spec.name,
                path=str(spec.path),
            )
        if spec.config is not None and not (spec.config / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"model '{spec.name}' names the config folder '{spec.config}', which has no "
                "model_index.json; point it at a diffusers folder (configs only suffice)",
                model=spec.name,
                path=str(spec.config),
            )
