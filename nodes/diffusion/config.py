"""The diffusion pack's typed config: its section of the Takeflow home's ``config.json``.

The section is made of three top-level keys of the home config (the layout homes already have)::

    "diffusion": {"device": "auto", "max_batch_size": 4, "batch_window_ms": 10, ...},
    "models": {
        "demo": {"path": "models/demo", "demo": true},
        "sd15": {"path": "/srv/weights/v1-5-pruned-emaonly.safetensors", "arch": "sd15"},
        "mine": "/srv/weights/my-diffusers-folder"
    },
    "checkpoints_dir": "/srv/ComfyUI/models/checkpoints"

Relative paths are relative to the home. Nothing here imports torch or ``stores``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelFormat = Literal["diffusers", "single_file"]
Arch = Literal["sd15", "sdxl", "ltxv", "auto"]
KNOWN_ARCHS: tuple[str, ...] = ("sd15", "sdxl", "ltxv")


class DiffusionSettings(BaseModel):
    """Service options (the ``"diffusion"`` table).

    ``max_batch_size`` 1 turns cross-request batching off. ``batch_window_s`` (or
    ``batch_window_ms``) is how long the device thread waits for more compatible requests before
    starting a batch that is not full; requests that queue up while the device is busy are
    batched even with a window of 0. ``memory_budget_gb`` caps the loaded pipelines (default: 80%
    of the GPU's memory, or half the RAM on CPU). ``clip_vocab``: the CLIP BPE merges file
    (``bpe_simple_vocab_16e6.txt.gz``) for single-file checkpoints, when no installed package
    ships it. ``lora_fuse``: when a LoRA stack is fused into the weights (``always``, ``auto``:
    from its second consecutive batch, ``never``: peft's extra matmuls); docs/models.md.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = "auto"
    max_batch_size: Annotated[int, Field(ge=1)] = 4
    batch_window_s: Annotated[float, Field(ge=0)] = 0.01
    memory_budget_gb: Annotated[float | None, Field(gt=0)] = None
    preview_every: Annotated[int, Field(ge=1)] = 5
    idle_exit_s: Annotated[float, Field(gt=0)] = 30.0
    clip_vocab: str | None = None
    preview_size: Annotated[int, Field(ge=16, le=2048)] = 512
    lora_fuse: Literal["auto", "always", "never"] = "always"  # nodes/diffusion/lora_fuse.py

    @model_validator(mode="before")
    @classmethod
    def _window_in_ms(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "batch_window_ms" in raw:
            raw = dict(raw)
            ms = raw.pop("batch_window_ms")
            if isinstance(ms, int | float) and not isinstance(ms, bool):
                raw.setdefault("batch_window_s", float(ms) / 1000.0)
            else:
                raw["batch_window_s"] = ms  # let the field's check name the bad value
        return raw

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget_gb is None else int(self.memory_budget_gb * 2**30)


class ModelEntry(BaseModel):
    """One entry of the ``models`` table.

    ``format``: ``diffusers`` (a ``save_pretrained`` folder) or ``single_file`` (``.safetensors``
    or ``.ckpt``); unset, it follows the path (a folder or a file). ``arch`` (single files):
    ``sd15``, ``sdxl``, or ``auto`` to read it from the file's keys. ``config``: a diffusers
    folder holding only configs, used instead of the one Takeflow generates for the arch.
    ``path`` may be left out in an entry named like a checkpoint under ``checkpoints_dir``
    (``"sd15/mine.safetensors": {"config": "..."}``): the entry then adds settings to that file.
    ``text_encoder`` (LTX-Video single files, which hold none): a diffusers folder with
    ``text_encoder/`` and ``tokenizer/``; unset, the ``config`` folder's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Annotated[str | None, Field(min_length=1)] = None
    format: ModelFormat | None = None
    arch: Arch = "auto"
    config: str | None = None
    text_encoder: str | None = None  # LTX-Video single files: a folder with text_encoder/
    demo: bool = False
    label: str | None = None


class DiffusionConfig(BaseModel):
    """The whole section: settings, the models table and the optional checkpoints folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    diffusion: DiffusionSettings = DiffusionSettings()
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    checkpoints_dir: str | None = None
    # Model part folders (nodes.diffusion.folders); unset: <home>/models/<kind>.
    loras_dir: str | None = None
    controlnet_dir: str | None = None
    upscale_models_dir: str | None = None
    embeddings_dir: str | None = None
    vae_dir: str | None = None
    vae_approx_dir: str | None = None  # TAESD preview decoders

    @field_validator("diffusion", "models", mode="before")
    @classmethod
    def _null_is_empty(cls, raw: Any) -> Any:
        return {} if raw is None else raw

    @field_validator("models", mode="before")
    @classmethod
    def _path_shorthand(cls, raw: Any) -> Any:
        """``"name": "path"`` is short for ``"name": {"path": "path"}``."""
        if isinstance(raw, dict):
            return {k: {"path": v} if isinstance(v, str) else v for k, v in raw.items()}
        return raw


def resolve_path(raw: str, home: Path) -> Path:
    """``raw`` with ``~`` expanded, relative to ``home`` unless absolute."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else home / path


class EditableConfig(Protocol):
    """A home whose config can be read and changed (``stores.home.TakeflowHome`` is one)."""

    @property
    def path(self) -> Path: ...

    def config(self) -> dict[str, Any]: ...

    def update_config(self, **changes: Any) -> dict[str, Any]: ...
