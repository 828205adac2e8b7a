"""ComfyUI's mask, inpaint and outpaint nodes, translated for ``server.comfy.translate``.

A MASK is a Takeflow ``mask`` output (``load_mask``, ``image_to_mask``, ``pad_for_outpaint``).
A KSampler whose latent comes from ``VAEEncodeForInpaint``, ``SetLatentNoiseMask`` (over a
``VAEEncode``) or ``InpaintModelConditioning`` becomes one ``inpaint`` node per image; the
prompts of ``InpaintModelConditioning`` are those it was given. Where Takeflow's method differs
from ComfyUI's, the prompt's history and take record it (``INPAINT_NOTES``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.comfy.validate import as_float, as_int

if TYPE_CHECKING:
    from server.comfy.translate import Ref, Translator

SEED_SPACE = 2**32
INPAINT_LATENTS = frozenset({"VAEEncodeForInpaint", "SetLatentNoiseMask",
                             "InpaintModelConditioning"})  # fmt: skip
IMAGE_NODES = frozenset({"ImagePadForOutpaint"})  # nodes with an IMAGE output handled here
CONDITIONING_NODES = frozenset({"InpaintModelConditioning"})  # pass their prompts through
_UNSAFE_FILE = re.compile(r"[^A-Za-z0-9._-]+")
INPAINT_NOTES: dict[str, str] = {
    "composite": "Takeflow composites the sampled image over the original outside the mask "
    "(those pixels are the original's, bit for bit); ComfyUI returns the VAE-decoded image "
    "everywhere",
    "VAEEncodeForInpaint": "the masked pixels are not greyed before encoding: diffusers' "
    "inpainting pipeline starts the masked area from noise at denoise 1",
    "noise_mask": "noise_mask false: Takeflow still changes only the masked area",
}
# ComfyUI channel -> (Takeflow channel, invert): LoadImageMask inverts the alpha (transparent
# pixels are the mask), not the colour channels.
_CHANNELS = {"alpha": ("alpha", True), "red": ("red", False), "green": ("green", False),
             "blue": ("blue", False)}  # fmt: skip


def _load(tr: Translator, nid: str, channel: str) -> str:
    """A ``load_mask`` node on an input-folder file (imported as an asset, as LoadImage is)."""
    name = str(tr._inputs(nid)["image"])
    try:
        digest = hashlib.sha256((tr.input_dir / name).resolve().read_bytes()).hexdigest()[:12]
    except OSError as exc:
        tr._fail(nid, "Image not readable", f"image: {name}: {exc}", "image")
        digest = "0" * 12
    safe = _UNSAFE_FILE.sub("_", Path(name).name).strip("._") or "image.png"
    asset_id = f"uploads/comfyui/{digest}-{safe[:80]}"
    tr.imports[asset_id] = name
    tf_channel, invert = _CHANNELS.get(channel, ("alpha", True))
    tf_id = tr._new_id("mask", nid)
    tr._add(tf_id, "load_mask", nid, {"asset": f"asset://{asset_id}", "channel": tf_channel,
                                       "threshold": 0.0, "invert": invert},
            {"asset": (nid, "image"), "channel": (nid, "channel")})  # fmt: skip
    return tf_id


def masks(tr: Translator, nid: str, index: int) -> list[Ref]:
    """The Takeflow mask behind ComfyUI output ``index`` of node ``nid`` (a MASK)."""
    key = f"{nid}:{index}:mask"
    if key in tr._images:
        return tr._images[key]
    cls, made = tr._class(nid), []
    if cls == "LoadImageMask":
        made = [(_load(tr, nid, str(tr._inputs(nid)["channel"])), "mask")]
    elif cls == "LoadImage":  # its MASK: the inverted alpha
        made = [(_load(tr, nid, "alpha"), "mask")]
    elif cls == "ImageToMask":
        for b, ref in enumerate(tr.images(*tr._source(nid, "image"))):
            tf_id = tr._new_id("mask", nid if b == 0 else f"{nid}_b{b}")
            tr._add(tf_id, "image_to_mask", nid, {"image": ref, "threshold": 0.0, "invert": False,
                                                   "channel": str(tr._inputs(nid)["channel"])},
                    {"image": (nid, "image"), "channel": (nid, "channel")})  # fmt: skip
            made.append((tf_id, "mask"))
    elif cls == "ImagePadForOutpaint":
        made = [(tf, "mask") for tf, _ in pads(tr, nid)]
    else:
        tr._fail(nid, "Unsupported mask", f"{cls} has no mask Takeflow can make")
    tr._images[key] = made
    return made


def pads(tr: Translator, nid: str) -> list[Ref]:
    """The ``pad_for_outpaint`` nodes of an ImagePadForOutpaint (one per image)."""
    key = f"{nid}:pad"
    if key in tr._images:
        return tr._images[key]
    inputs, made = tr._inputs(nid), []
    sides = {s: as_int(inputs[s]) for s in ("left", "top", "right", "bottom")}
    for b, ref in enumerate(tr.images(*tr._source(nid, "image"))):
        tf_id = tr._new_id("pad", nid if b == 0 else f"{nid}_b{b}")
        tr._add(tf_id, "pad_for_outpaint", nid,
                {"image": ref, **sides, "feather": as_int(inputs["feathering"]), "fill": "gray"},
                {"image": (nid, "image"), "feather": (nid, "feathering"),
                 **{s: (nid, s) for s in sides}})  # fmt: skip
        made.append((tf_id, "image"))
    tr._images[key] = made
    return made


def images(tr: Translator, nid: str, index: int) -> list[Ref]:
    """IMAGE outputs of the nodes here (ImagePadForOutpaint's padded image)."""
    return pads(tr, nid)


def prompt_source(tr: Translator, nid: str, index: int) -> tuple[str, int]:
    """The CONDITIONING input behind output ``index`` of an InpaintModelConditioning."""
    return tr._source(nid, ("positive", "negative")[index])


def _plan(tr: Translator, nid: str, latent: str) -> tuple[list[Ref], list[Ref], int, str] | None:
    """(images, masks, grow, latent node whose inputs name them) of an inpainting latent."""
    cls, inputs = tr._class(latent), tr._inputs(latent)
    if cls == "VAEEncodeForInpaint":
        tr.notes.append(f"node {nid}: {INPAINT_NOTES['VAEEncodeForInpaint']}")
        pixels, mask = tr.images(*tr._source(latent, "pixels")), tr._source(latent, "mask")
        return pixels, masks(tr, *mask), as_int(inputs.get("grow_mask_by", 6)), latent
    if cls == "InpaintModelConditioning":
        if inputs.get("noise_mask") in (False, "false", 0):
            tr.notes.append(f"node {nid}: {INPAINT_NOTES['noise_mask']}")
        pixels, mask = tr.images(*tr._source(latent, "pixels")), tr._source(latent, "mask")
        return pixels, masks(tr, *mask), 0, latent
    source, _ = tr._source(latent, "samples")  # SetLatentNoiseMask
    if tr._class(source) != "VAEEncode":
        tr._fail(nid, "Unsupported latent", "latent_image: SetLatentNoiseMask needs the "
                 "samples of a VAEEncode", "latent_image")  # fmt: skip
        return None
    pixels = tr.images(*tr._source(source, "pixels"))
    return pixels, masks(tr, *tr._source(latent, "mask")), 0, source


def sample(tr: Translator, nid: str, latent: str, common: dict[str, Any],
           ports: dict[str, tuple[str, str]], steps: int, seed: int) -> list[str]:  # fmt: skip
    """The ``inpaint`` nodes of a KSampler on an inpainting latent (one per image)."""
    plan = _plan(tr, nid, latent)
    if plan is None:
        return []
    pixels, mask_refs, grow, pixel_node = plan
    denoise = as_float(tr._inputs(nid)["denoise"])
    if not mask_refs:
        return []
    tr.notes.append(f"node {nid}: {INPAINT_NOTES['composite']}")
    # As image to image: diffusers runs int(steps * strength) of its steps.
    total = max(1, round(steps / denoise)) if denoise > 0 else steps
    made = []
    for b, ref in enumerate(pixels):
        tf_id = tr._new_id("inpaint", nid if b == 0 else f"{nid}_b{b}")
        values = {**common, "steps": total, "seed": (seed + b) % SEED_SPACE, "strength": denoise,
                  "image": ref, "mask": mask_refs[min(b, len(mask_refs) - 1)], "grow": grow,
                  "feather": 0}  # fmt: skip
        tr._add(tf_id, "inpaint", nid, values,
                {**ports, "strength": (nid, "denoise"), "image": (pixel_node, "pixels"),
                 "mask": (latent, "mask"), "grow": (latent, "grow_mask_by")})  # fmt: skip
        made.append(tf_id)
    return made
