"""Save a diffusers LTX-Video pipeline's transformer and VAE as one single file in the original
(Lightricks / ComfyUI) key layout, the inverse of diffusers' single-file conversion for the
0.9.0 layout; checked by running diffusers' own conversion back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_TRANSFORMER = {"proj_in": "patchify_proj", "time_embed": "adaln_single", "norm_q": "q_norm",
                "norm_k": "k_norm"}  # fmt: skip
# diffusers block path -> original block index (0.9.0 layout)
_ENCODER = {"down_blocks.0": 0, "down_blocks.0.downsamplers.0": 1, "down_blocks.0.conv_out": 2,
            "down_blocks.1": 3, "down_blocks.1.downsamplers.0": 4, "down_blocks.1.conv_out": 5,
            "down_blocks.2": 6, "down_blocks.2.downsamplers.0": 7, "down_blocks.3": 8,
            "mid_block": 9}  # fmt: skip
_DECODER = {"mid_block": 0, "up_blocks.0": 1, "up_blocks.1.upsamplers.0": 2, "up_blocks.1": 3,
            "up_blocks.2.conv_in": 4, "up_blocks.2.upsamplers.0": 5, "up_blocks.2": 6,
            "up_blocks.3.conv_in": 7, "up_blocks.3.upsamplers.0": 8, "up_blocks.3": 9}  # fmt: skip


def _vae_key(key: str) -> str:
    part, _, rest = key.partition(".")
    if part in ("encoder", "decoder"):
        table, name = (_ENCODER, "down_blocks") if part == "encoder" else (_DECODER, "up_blocks")
        for block in sorted(table, key=len, reverse=True):  # the longest path first
            if rest.startswith(block + "."):
                rest = f"{name}.{table[block]}." + rest[len(block) + 1 :]
                break
        key = f"{part}.{rest}"
    key = key.replace("resnets", "res_blocks").replace("conv_shortcut.conv", "conv_shortcut")
    key = re.sub(r"\.norm3\.", ".norm3.norm.", key)
    key = key.replace("latents_mean", "per_channel_statistics.mean-of-means")
    key = key.replace("latents_std", "per_channel_statistics.std-of-means")
    return "vae." + key


def original_state_dict(pipe: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, tensor in pipe.transformer.state_dict().items():
        for new, old in _TRANSFORMER.items():
            key = key.replace(new, old)
        out["model.diffusion_model." + key] = tensor.contiguous()
    for key, tensor in pipe.vae.state_dict().items():
        out[_vae_key(key)] = tensor.contiguous()
    return out


def save_ltx_single_file(pipe: Any, path: Path) -> Path:
    """Write ``path`` and check that diffusers' conversion gives back the same keys."""
    from diffusers.loaders.single_file_utils import (
        convert_ltx_transformer_checkpoint_to_diffusers,
        convert_ltx_vae_checkpoint_to_diffusers,
    )
    from safetensors.torch import save_file

    state = original_state_dict(pipe)
    back_t = convert_ltx_transformer_checkpoint_to_diffusers(dict(state))
    back_v = convert_ltx_vae_checkpoint_to_diffusers(dict(state))
    assert set(back_t) == set(pipe.transformer.state_dict()), set(back_t) ^ set(
        pipe.transformer.state_dict()
    )
    wanted = {k for k in pipe.vae.state_dict()}
    assert set(back_v) == wanted, set(back_v) ^ wanted
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
