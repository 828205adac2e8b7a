"""The model value a ``model`` port carries: a checkpoint with the parts that change it.

``checkpoint_loader`` makes one (checkpoint, optional separate VAE, CLIP skip); each ``lora``
node returns a copy with one more LoRA on its stack. A plain string on a ``model`` port is a
checkpoint name (what canvases and the task API sent before model values existed). The value is
a frozen dataclass, so it is hashable, picklable (the node cache) and turns into JSON for takes
and cache keys (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from graph_runtime.errors import TakeflowError

MAX_CLIP_SKIP = 11  # SD 1.5's text encoder has 12 layers; SDXL's first one 12 too
MAX_STRENGTH = 10.0


class InvalidModelValue(TakeflowError):
    """A ``model`` input that is neither a model name nor a well-formed model value."""

    code = "invalid_model_value"
    http_status = 422


@dataclass(frozen=True)
class LoraUse:
    """One LoRA on a model's stack: its file (relative to ``loras_dir``) and two strengths."""

    name: str
    strength_model: float = 1.0  # on the UNet
    strength_clip: float = 1.0  # on the text encoder(s)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strength_model": self.strength_model,
            "strength_clip": self.strength_clip,
        }


@dataclass(frozen=True)
class ModelValue:
    """A checkpoint (a model registry name), an optional VAE file (relative to ``vae_dir``),
    CLIP skip (how many of the text encoder's last layers to skip; 0 = none, diffusers'
    ``clip_skip``) and the ordered stack of LoRAs."""

    checkpoint: str
    vae: str | None = None
    clip_skip: int = 0
    loras: tuple[LoraUse, ...] = ()

    @property
    def plain(self) -> bool:
        """Whether this is just the checkpoint (what a name on the port means)."""
        return self.vae is None and self.clip_skip == 0 and not self.loras

    def with_lora(self, use: LoraUse) -> ModelValue:
        return replace(self, loras=(*self.loras, use))

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "vae": self.vae,
            "clip_skip": self.clip_skip,
            "loras": [lora.to_json() for lora in self.loras],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], port: str = "model") -> ModelValue:
        """The value from its JSON form; ``InvalidModelValue`` naming the field that is wrong."""

        def bad(field: str, why: str) -> InvalidModelValue:
            return InvalidModelValue(f"input '{port}': {field} {why}", port=port, field=field)

        unknown = sorted(set(raw) - {"checkpoint", "vae", "clip_skip", "loras"})
        if unknown:
            raise bad(unknown[0], "is not a field of a model value (checkpoint, vae, "
                      "clip_skip, loras)")  # fmt: skip
        checkpoint = raw.get("checkpoint")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise bad("checkpoint", "must be a model name")
        vae = raw.get("vae") or None
        if vae is not None and not isinstance(vae, str):
            raise bad("vae", "must be a VAE file name or null")
        clip_skip = raw.get("clip_skip", 0) or 0
        if (
            not isinstance(clip_skip, int)
            or isinstance(clip_skip, bool)
            or not (0 <= clip_skip <= MAX_CLIP_SKIP)
        ):
            raise bad("clip_skip", f"must be an integer from 0 to {MAX_CLIP_SKIP}")
        loras_raw = raw.get("loras") or []
        if not isinstance(loras_raw, list | tuple):
            raise bad("loras", "must be a list")
        loras = []
        for i, entry in enumerate(loras_raw):
            where = f"loras[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise bad(where, "must be an object with a LoRA file 'name'")
            strengths = []
            for key in ("strength_model", "strength_clip"):
                value = entry.get(key, 1.0)
                if not _strength_ok(value):
                    raise bad(f"{where}.{key}", f"must be a number from -{MAX_STRENGTH:g} to "
                              f"{MAX_STRENGTH:g}")  # fmt: skip
                strengths.append(float(value))
            loras.append(LoraUse(entry["name"], *strengths))
        return cls(checkpoint, vae, clip_skip, tuple(loras))


def _strength_ok(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_STRENGTH
    )


def as_model(value: Any, port: str = "model") -> ModelValue:
    """What a ``model`` port received, as a model value: a name, a value, or its JSON."""
    if isinstance(value, ModelValue):
        return value
    if isinstance(value, str) and value:
        return ModelValue(value)
    if isinstance(value, Mapping):
        return ModelValue.from_json(value, port)
    raise InvalidModelValue(
        f"input '{port}' takes a model name or a model value (from checkpoint_loader), "
        f"got {type(value).__name__}",
        port=port,
    )
