"""Random-weight LoRAs in kohya's key layout, for the demo, the tests and the benchmarks.

kohya's sd-scripts (and A1111, ComfyUI) name each LoRA pair by the module it patches, dots as
underscores: ``lora_unet_<module>`` / ``lora_te_<module>`` (SDXL: ``lora_te1_`` and
``lora_te2_``), each with ``.lora_down.weight`` (rank x in), ``.lora_up.weight`` (out x rank)
and ``.alpha``. ``random_kohya_lora`` makes such a file for a given pipeline's shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodes.diffusion.config import EditableConfig, resolve_path

DEMO_LORA = "demo-lora.safetensors"


def _linears(module: Any, keep: str) -> list[tuple[str, Any]]:
    import torch

    return [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear)
        and keep in name
        and "lora_" not in name
        and "base_layer" not in name
    ]


def random_kohya_lora(
    pipe: Any, seed: int = 0, rank: int = 4, scale: float = 0.5, text: bool = True
) -> dict[str, Any]:
    """A kohya-layout state dict with random weights for ``pipe``'s UNet attention layers and
    (``text``) its text encoders' layers."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}

    def add(key: str, linear: Any) -> None:
        down = torch.randn(rank, linear.in_features, generator=generator) * scale
        out[f"{key}.lora_down.weight"] = down
        out[f"{key}.lora_up.weight"] = torch.randn(linear.out_features, rank,
                                                   generator=generator) * scale  # fmt: skip
        out[f"{key}.alpha"] = torch.tensor(float(rank))

    for name, linear in _linears(pipe.unet, ".attn"):
        add("lora_unet_" + name.replace(".", "_"), linear)
    encoders = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
    encoders = [e for e in encoders if e is not None] if text else []
    prefixes = ["lora_te"] if len(encoders) == 1 else ["lora_te1", "lora_te2"]
    for prefix, encoder in zip(prefixes, encoders, strict=False):
        for name, linear in _linears(encoder, "encoder.layers."):
            module = "text_model." + name[name.index("encoder.layers.") :]
            add(f"{prefix}_" + module.replace(".", "_"), linear)
    return out


def save_lora(weights: dict[str, Any], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    metadata = {"ss_network_module": "networks.lora", "takeflow_demo": "random"}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def _demo_lora_path(home: EditableConfig) -> Path:
    raw = home.config().get("loras_dir")
    folder = resolve_path(raw, home.path) if raw else home.path / "models" / "loras"
    return folder / DEMO_LORA


def demo_lora_ready(home: EditableConfig) -> bool:
    return _demo_lora_path(home).is_file()


def ensure_demo_lora(home: EditableConfig, model: Path) -> Path:
    """``demo-lora.safetensors`` (random weights for the demo model) in the home's loras
    folder, unless it is there."""
    target = _demo_lora_path(home)
    if target.is_file():
        return target
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    return save_lora(random_kohya_lora(pipe, seed=7), target)
