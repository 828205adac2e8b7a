"""Export a diffusers ControlNet to the ComfyUI/A1111 single-file layout (test code).

The original ControlNet files hold the UNet encoder's LDM names (``input_blocks``,
``middle_block``, ``time_embed``, ``label_emb``) plus ``input_hint_block.*`` (the hint encoder),
``zero_convs.N.0.*`` and ``middle_block_out.0.*``, optionally under ``control_model.``. The mapping
is the inverse of diffusers' ``convert_controlnet_checkpoint``, for any number of levels.
"""

from __future__ import annotations

from typing import Any

import torch

from tests.nodes.ldm_export import _RESNET, unet_prefixes


def controlnet_to_ldm(
    state: dict[str, torch.Tensor], config: Any, prefix: str = "control_model."
) -> dict[str, torch.Tensor]:
    unet_like = {**config, "up_block_types": ["UpBlock2D"] * len(config["down_block_types"])}
    pairs = [
        (ours, theirs)
        for ours, theirs in unet_prefixes(unet_like)
        if not ours.startswith(("up_blocks.", "conv_norm_out.", "conv_out."))
    ]
    blocks = len(config["conditioning_embedding_out_channels"]) * 2 - 2
    pairs += [
        ("controlnet_cond_embedding.conv_in.", "input_hint_block.0."),
        ("controlnet_cond_embedding.conv_out.", "input_hint_block.14."),
        ("controlnet_mid_block.", "middle_block_out.0."),
        *((f"controlnet_cond_embedding.blocks.{k}.", f"input_hint_block.{2 * (k + 1)}.")
          for k in range(blocks)),
        *((f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0.") for i in range(64)),
    ]  # fmt: skip
    out = {}
    for key, value in state.items():
        for ours, theirs in pairs:
            if key.startswith(ours):
                rest = key[len(ours) :]
                if ".resnets." in ours:
                    head, dot, tail = rest.partition(".")
                    rest = dict(_RESNET).get(head, head) + dot + tail
                out[prefix + theirs + rest] = value.contiguous()
                break
        else:
            raise KeyError(f"no LDM name for ControlNet key {key}")
    return out
