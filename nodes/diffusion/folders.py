"""Model part folders: LoRAs, ControlNets, upscale models, embeddings and VAEs by name.

Each kind has a folder key in the home config (``loras_dir``, ``controlnet_dir``,
``upscale_models_dir``, ``embeddings_dir``, ``vae_dir``; ComfyUI's folder names map one to one);
unset, it is ``<home>/models/<kind>``. Every file with one of the kind's suffixes under the folder,
at any depth, is named by its path relative to it with ``/`` separators (the string ComfyUI uses),
so files added to a folder are listed at once. Listing reads directory entries only; loading reads
``.safetensors`` with safetensors and ``.pt``/``.pth``/``.ckpt``/``.bin`` only with
``torch.load(weights_only=True)``: a pickle holding code is refused and its code never runs.
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_runtime.errors import ModelNotFoundError
from nodes.diffusion.checkpoints import CheckpointError
from nodes.diffusion.config import DiffusionConfig, resolve_path

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class FolderKind:
    """One kind of model part: its config key, default folder name and file suffixes."""

    kind: str
    config_key: str
    suffixes: tuple[str, ...]
    what: str  # for messages: "LoRA", "ControlNet", ...


KINDS: dict[str, FolderKind] = {
    k.kind: k
    for k in (
        FolderKind("loras", "loras_dir", (".safetensors", ".pt", ".ckpt", ".bin"), "LoRA"),
        FolderKind("controlnet", "controlnet_dir", (".safetensors", ".pth", ".pt", ".bin"),
                   "ControlNet"),
        FolderKind("upscale_models", "upscale_models_dir", (".pth", ".pt", ".safetensors"),
                   "upscale model"),
        FolderKind("embeddings", "embeddings_dir", (".safetensors", ".pt", ".bin"),
                   "embedding"),
        FolderKind("vae", "vae_dir", (".safetensors", ".pt", ".ckpt", ".bin"), "VAE"),
        FolderKind("vae_approx", "vae_approx_dir", (".safetensors", ".pth", ".pt"),
                   "preview decoder"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class ModelFile:
    """One model part file: its kind, name (relative path) and where it is."""

    kind: str
    name: str
    path: Path

    def fingerprint(self) -> tuple[str, int, int]:
        stat = self.path.stat()
        return (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)


class ModelFolders:
    """Names, paths and content hashes of the model part files, over the live home config."""

    def __init__(self, read_config: Callable[[], DiffusionConfig], home: Path) -> None:
        self._read_config = read_config
        self.home = home
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def folder(self, kind: str) -> Path:
        """The folder of ``kind`` (configured, else ``<home>/models/<kind>``)."""
        spec = _kind(kind)
        raw = getattr(self._read_config(), spec.config_key)
        return resolve_path(raw, self.home) if raw else self.home / "models" / kind

    def names(self, kind: str) -> list[str]:
        """Every file of ``kind`` by relative path, sorted (empty when the folder is missing)."""
        spec, root = _kind(kind), self.folder(kind)
        if not root.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in spec.suffixes and p.is_file() and not p.name.startswith(".")
        )

    def resolve(self, kind: str, name: str) -> ModelFile:
        """The file ``name`` of ``kind``; ``ModelNotFoundError`` naming the known files."""
        spec, root = _kind(kind), self.folder(kind)
        candidate = (root / name).resolve()
        inside = candidate.is_relative_to(root.resolve()) if root.exists() else False
        if (
            not name
            or not inside
            or Path(name).suffix.lower() not in spec.suffixes
            or not candidate.is_file()
        ):
            known = ", ".join(f"'{n}'" for n in self.names(kind)) or "none"
            raise ModelNotFoundError(
                f"unknown {spec.what} '{name}': no such file under {spec.config_key} "
                f"('{root}'; known: {known})",
                kind=kind,
                model=name,
                known=self.names(kind),
            )
        return ModelFile(kind, name, root / name)

    def content_hash(self, file: ModelFile) -> str:
        """``sha256:<hex>`` of the file's bytes, cached per path, size and mtime."""
        key = file.fingerprint()
        with self._lock:
            found = self._hashes.get(key)
        if found is None:
            digest = hashlib.sha256()
            with file.path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            found = f"sha256:{digest.hexdigest()}"
            with self._lock:
                self._hashes[key] = found
        return found

    def describe(self, file: ModelFile) -> dict[str, Any]:
        """What a take records of a model part: kind, name and content hash."""
        return {"kind": file.kind, "name": file.name, "sha256": self.content_hash(file)}


def load_weights(path: Path) -> dict[str, Any]:
    """A weights file's tensors: safetensors, or a pickle read with ``weights_only=True``.

    A pickle that holds code (not only tensors) is refused with ``invalid_checkpoint`` and its
    code never runs. A ``state_dict`` / ``params`` wrapper is unwrapped.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"'{path}' is not a readable .safetensors file: {exc}", path=str(path)
            ) from exc
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise CheckpointError(f"'{path}' is not a known weights file type", path=str(path))
    import pickle
    import zipfile

    import torch

    try:
        with warnings.catch_warnings():  # a plain pickle of another protocol: read it anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"'{path}' could not be read as weights only (Takeflow never runs code from a "
            f"weights file; convert it to .safetensors): {type(exc).__name__}: {exc}",
            path=str(path),
        ) from exc
    for wrapper in ("state_dict", "params_ema", "params"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, dict):
        raise CheckpointError(f"'{path}' holds no state dict", path=str(path))
    return loaded


def _kind(kind: str) -> FolderKind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model folder kind {kind!r} (known: {sorted(KINDS)})") from None
