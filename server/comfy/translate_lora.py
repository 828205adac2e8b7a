"""ComfyUI's model part nodes as a Takeflow model value: ``LoraLoader``, ``LoraLoaderModelOnly``,
``CLIPSetLastLayer`` and ``VAELoader``.

In ComfyUI they patch the MODEL, CLIP and VAE objects a KSampler and its prompts use. Here those
stay symbolic: a KSampler's ``model`` input becomes the model value (``nodes.diffusion.
model_value``) gathered from the chain behind its MODEL (LoRAs' UNet strengths), behind its
positive prompt's CLIP (the LoRAs' text-encoder strengths, CLIP skip) and behind the VAEDecode of
its output (a separate VAE). A plain checkpoint stays a name, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.comfy.errors import is_link
from server.comfy.translate_control import conditioning_source

if TYPE_CHECKING:
    from server.comfy.translate import Translator

Chain = list[tuple[str, float]]  # (lora_name, strength), checkpoint side first


def _walk(tr: Translator, nid: str, port: str) -> tuple[str, Chain, int | None]:
    """Follow MODEL (``port="model"``) or CLIP (``"clip"``) links to the checkpoint loader:
    its id, the LoRAs on the way, and the CLIP skip nearest the use (None: not set)."""
    chain: Chain = []
    clip_skip: int | None = None
    seen: set[str] = set()
    while nid not in seen:
        seen.add(nid)
        cls, inputs = tr._class(nid), tr._inputs(nid)
        if cls in ("LoraLoader", "LoraLoaderModelOnly"):
            strength = inputs.get("strength_clip" if port == "clip" else "strength_model", 1.0)
            chain.append((str(inputs["lora_name"]), float(strength)))
        elif cls == "CLIPSetLastLayer" and clip_skip is None:
            clip_skip = max(0, -int(inputs["stop_at_clip_layer"]) - 1)
        elif cls != "CLIPSetLastLayer":
            break  # CheckpointLoaderSimple (the link type check ran first)
        nid, _ = tr._source(nid, port)
    chain.reverse()
    return nid, chain, clip_skip


def _vae(tr: Translator, sampler: str, checkpoint: str) -> str | None:
    """The VAE file decoding ``sampler``'s output (None: the checkpoint's own)."""
    names: list[str | None] = []
    for nid in tr.needed:
        samples: Any = tr._inputs(nid).get("samples")
        if tr._class(nid) != "VAEDecode" or not is_link(samples) or str(samples[0]) != sampler:
            continue
        src, _ = tr._source(nid, "vae")
        if tr._class(src) == "VAELoader":
            names.append(str(tr._inputs(src)["vae_name"]))
        else:
            if src != checkpoint:
                tr.notes.append(f"node {nid}: the VAE of another checkpoint loader ({src}) "
                                f"was replaced by the sampler's checkpoint's own")  # fmt: skip
            names.append(None)
    found = sorted(set(names), key=str)
    if len(found) > 1:
        tr.notes.append(f"node {sampler}: its output is decoded with several VAEs; Takeflow "
                        f"decodes it once, with {found[0] or 'the checkpoint VAE'}")  # fmt: skip
    return found[0] if found else None


def sampler_model(tr: Translator, nid: str) -> tuple[Any, tuple[str, str]]:
    """A KSampler's ``model`` input for the Takeflow graph (a name, or a model value's JSON)
    and the ComfyUI (node, input) it maps back to."""
    model_node, _ = tr._source(nid, "model")
    checkpoint, unet, _ = _walk(tr, model_node, "model")
    ckpt_name = str(tr._inputs(checkpoint)["ckpt_name"])
    pos, _ = conditioning_source(tr, nid, "positive")  # past ControlNet applies, inpaint
    clip_ckpt, text, clip_skip = _walk(tr, tr._source(pos, "clip")[0], "clip")
    neg, _ = conditioning_source(tr, nid, "negative")
    if _walk(tr, tr._source(neg, "clip")[0], "clip") != (clip_ckpt, text, clip_skip):
        tr.notes.append(f"node {nid}: the negative prompt's CLIP differs from the positive's; "
                        "both were encoded with the positive's (LoRAs, CLIP skip)")  # fmt: skip
    if clip_ckpt != checkpoint:
        tr.notes.append(f"node {nid}: its prompts' CLIP comes from another checkpoint loader "
                        f"({clip_ckpt}); the model's checkpoint encoded them")  # fmt: skip
    strengths: dict[str, list[float]] = {}
    for chain, index in ((unet, 0), (text, 1)):
        for name, strength in chain:
            strengths.setdefault(name, [0.0, 0.0])[index] += strength
    vae = _vae(tr, nid, checkpoint)
    port = (checkpoint, "ckpt_name")
    if not strengths and vae is None and not clip_skip:
        return ckpt_name, port
    loras = [{"name": n, "strength_model": m, "strength_clip": c} for n, (m, c) in
             strengths.items()]  # fmt: skip
    value = {"checkpoint": ckpt_name, "vae": vae, "clip_skip": clip_skip or 0, "loras": loras}
    return value, port
