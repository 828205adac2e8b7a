"""Export a diffusers Stable Diffusion pipeline to the original single-file key layout.

Test code (and the benchmark's): it makes checkpoints in the layout users hold (SD 1.5:
``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``; SDXL:
``conditioner.embedders.0.transformer.*`` for CLIP-L and ``conditioner.embedders.1.model.*`` for
OpenCLIP bigG) from a model whose weights we know, so loading them back can be checked exactly.
The mapping is the inverse of diffusers' ``single_file_utils`` conversion, written for any
number of levels and layers (diffusers' own export script assumes the SD 1.5 shape).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)


def unet_prefixes(config: Any) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs for a UNet2DConditionModel config."""
    layers = config["layers_per_block"]
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    levels = len(down_attn)
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(levels):
        for j in range(layers):
            block = 1 + i * (layers + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{block}.0."))
            if down_attn[i]:
                pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{block}.1."))
        if i < levels - 1:
            block = (i + 1) * (layers + 1)
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{block}.0.op."))
        for j in range(layers + 1):
            block = i * (layers + 1) + j
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{block}.0."))
            if up_attn[i]:
                pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{block}.1."))
        if i < levels - 1:
            block = i * (layers + 1) + layers
            slot = 2 if up_attn[i] else 1
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{block}.{slot}."))
    return pairs


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    pairs = unet_prefixes(config)
    out = {}
    for key, value in state.items():
        for ours, theirs in pairs:
            if key.startswith(ours):
                rest = key[len(ours) :]
                if ".resnets." in ours:
                    head, dot, tail = rest.partition(".")
                    rest = dict(_RESNET).get(head, head) + dot + tail
                out["model.diffusion_model." + theirs + rest] = value
                break
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    levels = len(config["down_block_types"])
    pairs = []
    for i in range(levels):
        pairs += [
            (f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
            (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block."),
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."),
        ]
    for side in ("encoder", "decoder"):
        pairs += [
            (f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1."),
            (f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2."),
            (f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1."),
            (f"{side}.conv_norm_out.", f"{side}.norm_out."),
        ]
    attention = {
        "group_norm.": "norm.",
        "to_q.": "q.",
        "to_k.": "k.",
        "to_v.": "v.",
        "to_out.0.": "proj_out.",
    }
    out = {}
    for key, value in state.items():
        name = next(
            (theirs + key[len(ours) :] for ours, theirs in pairs if key.startswith(ours)), key
        )
        name = name.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in name:
            head, _, rest = name.partition(".mid.attn_1.")
            for ours, theirs in attention.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours) :]
            name = f"{head}.mid.attn_1.{rest}"
            if value.ndim == 2:  # linear in diffusers, 1x1 convolution in LDM
                value = value.reshape(*value.shape, 1, 1)
        out["first_stage_model." + name] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel (flattened in transformers >= 5.6 or not) under ``prefix``."""
    return {
        prefix + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection in OpenCLIP's layout: q/k/v fused into ``in_proj``,
    ``text_projection`` stored transposed."""
    state = {
        (k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": state.pop("text_model.final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    layer_ids = sorted(
        {int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")}
    )
    renames = (
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
        ("self_attn.out_proj", "attn.out_proj"),
    )
    for i in layer_ids:
        ours, theirs = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{ours}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{theirs}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
        for key in [k for k in state if k.startswith(ours)]:
            rest = key[len(ours) :]
            for a, b in renames:
                rest = rest.replace(a, b)
            out[theirs + rest] = state.pop(key)
    if state:
        raise KeyError(f"no OpenCLIP name for {sorted(state)}")
    return {prefix + k: v for k, v in out.items()}


def pipeline_to_ldm(pipe: Any) -> dict[str, torch.Tensor]:
    """The whole pipeline's weights under their original single-file names."""
    out = {
        **unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
        **vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config),
    }
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL
        out.update(
            clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer.")
        )
        out.update(
            open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.")
        )
    else:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    return {k: v.detach().contiguous() for k, v in out.items()}


def save_single_file(pipe: Any, path: Path) -> Path:
    """``.safetensors`` via safetensors, ``.ckpt`` as ``{"state_dict": ...}`` via torch.save."""
    state = pipeline_to_ldm(pipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path
