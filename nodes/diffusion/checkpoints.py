"""Single-file checkpoints: read their keys without loading tensors, and tell their arch.

A ``.safetensors`` file starts with an 8-byte little-endian header length and a JSON header
naming every tensor: reading that is enough to tell SD 1.5 from SDXL, whatever the file's
size. A ``.ckpt`` is a pickle: it is opened only with ``torch.load(weights_only=True)``
(memory-mapped when it is a zip archive), so it can hold tensors but never run code.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Collection
from pathlib import Path

from graph_runtime.errors import ModelNotFoundError

_MAX_HEADER = 100 * 2**20  # a header is a few hundred kB even for big checkpoints

# Key prefixes of the original (LDM/SGM) single-file layouts, by family.
_UNET = "model.diffusion_model."
_SD15_TEXT = "cond_stage_model.transformer."
_SD2_TEXT = "cond_stage_model.model."
_SDXL_TEXT_L = "conditioner.embedders.0.transformer."
_SDXL_TEXT_G = "conditioner.embedders.1.model."
_SDXL_REFINER_TEXT = "conditioner.embedders.0.model."


class CheckpointError(ModelNotFoundError):
    """A checkpoint file that cannot be read or is of an architecture Takeflow cannot run."""

    code = "invalid_checkpoint"


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a ``.safetensors`` file, from its header alone."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("the file is shorter than a safetensors header")
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= _MAX_HEADER:
                raise ValueError(f"header length {length} is not plausible")
            header = json.loads(f.read(length))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"'{path}' is not a readable .safetensors file: {exc}", path=str(path)
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"'{path}' has a malformed safetensors header", path=str(path))
    return [k for k in header if k != "__metadata__"]


def load_ckpt_state_dict(path: Path) -> dict[str, object]:
    """A ``.ckpt``'s state dict via ``torch.load(weights_only=True)`` (code in it is refused)."""
    import pickle
    import zipfile

    import torch

    mmap = zipfile.is_zipfile(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"'{path}' could not be read as a weights-only .ckpt (Takeflow never runs code from "
            f"a checkpoint; convert it to .safetensors): {type(exc).__name__}: {exc}",
            path=str(path),
        ) from exc
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise CheckpointError(f"'{path}' holds no state dict", path=str(path))
    return loaded


def checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a ``.safetensors`` or ``.ckpt`` checkpoint."""
    if path.suffix.lower() == ".safetensors":
        return safetensors_keys(path)
    return [str(k) for k in load_ckpt_state_dict(path)]


def arch_from_keys(keys: Collection[str], path: Path) -> str:
    """``sd15`` or ``sdxl`` from a checkpoint's key names; a clear error for anything else."""

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    def unsupported(what: str) -> CheckpointError:
        return CheckpointError(
            f"'{path}' looks like {what}, which Takeflow cannot run yet (supported: SD 1.5 and "
            "SDXL single files)",
            path=str(path),
        )

    from nodes.diffusion.video_single_file import LTXV, is_ltxv  # video: transformer + VAE

    if is_ltxv(keys):
        return LTXV
    if has(_UNET) and has(_SDXL_TEXT_G):
        return "sdxl"
    if has(_UNET) and has(_SD15_TEXT):
        return "sd15"
    if has(_SD2_TEXT):
        raise unsupported("a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder)")
    if has(_SDXL_REFINER_TEXT):
        raise unsupported("an SDXL refiner checkpoint")
    if has(_UNET + "joint_blocks.") or has("text_encoders."):
        raise unsupported("a Stable Diffusion 3 checkpoint")
    if has("double_blocks.") or has(_UNET + "double_blocks."):
        raise unsupported("a Flux checkpoint")
    if has(_UNET):
        raise CheckpointError(
            f"'{path}' holds a UNet but no text encoder Takeflow recognises (no "
            f"'{_SD15_TEXT}' or '{_SDXL_TEXT_G}' keys); a UNet-only file needs its text "
            "encoders and VAE from elsewhere, which Takeflow does not support yet",
            path=str(path),
        )
    raise CheckpointError(
        f"'{path}' is not a Stable Diffusion checkpoint (no '{_UNET}' keys among its "
        f"{len(keys)} tensors)",
        path=str(path),
    )


class ArchDetector:
    """``detect(path)`` with the answer kept per (path, size, mtime): a file is read once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def detect(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            found = self._seen.get(key)
        if found is None:
            found = arch_from_keys(checkpoint_keys(path), path)
            with self._lock:
                self._seen[key] = found
        return found
