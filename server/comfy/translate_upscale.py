"""ComfyUI's upscaling nodes and the hires fix, as Takeflow nodes (hooked into ``translate``).

``ImageUpscaleWithModel`` becomes ``upscale_with_model`` (the loader's file from the
``upscale_models`` folder, tiles of 512 with 32 pixels of overlap as ComfyUI), ``ImageScale`` /
``ImageScaleBy`` become ``scale_image``. Takeflow has no latent values between nodes, so
``LatentUpscale`` / ``LatentUpscaleBy`` are done in pixel space: the latent's image (a sampler's
output, or a VAEEncode'd image) is scaled to the size ComfyUI's latent would have (sides on the
8-pixel latent grid) and the next KSampler runs image to image on it at its denoise: the hires
fix. That differs from ComfyUI's result by method, so the prompt's notes (its history and take)
record it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.comfy.validate import as_float, as_int

if TYPE_CHECKING:
    from server.comfy.translate import Ref, Translator

IMAGE_NODES = frozenset({"ImageUpscaleWithModel", "ImageScale", "ImageScaleBy"})
LATENT_UPSCALES = frozenset({"LatentUpscale", "LatentUpscaleBy"})
# ComfyUI's upscale_method -> scale_image's resample
RESAMPLE = {
    "nearest-exact": "nearest",
    "bilinear": "bilinear",
    "area": "area",
    "bicubic": "bicubic",
    "lanczos": "lanczos",
    "bislerp": "bicubic",
}
TILE, OVERLAP = 512, 32  # ComfyUI's ImageUpscaleWithModel tiles


def images(tr: Translator, nid: str, cls: str) -> list[Ref]:
    """The Takeflow outputs of an IMAGE-making upscale node (one Takeflow node per image)."""
    sources = tr.images(*tr._source(nid, "image"))
    inputs = tr._inputs(nid)
    if cls == "ImageUpscaleWithModel":
        loader, _ = tr._source(nid, "upscale_model")
        model = str(tr._inputs(loader)["model_name"])
        values: dict[str, Any] = {"upscale_model": model, "tile": TILE, "overlap": OVERLAP}
        ports = {"image": (nid, "image"), "upscale_model": (loader, "model_name")}
        return _each(tr, nid, "upscale", "upscale_with_model", sources, values, ports)
    method = str(inputs["upscale_method"])
    values = {"resample": RESAMPLE[method]}
    ports = {"image": (nid, "image"), "resample": (nid, "upscale_method")}
    if cls == "ImageScaleBy":
        values |= {"mode": "factor", "factor": as_float(inputs["scale_by"])}
        ports["factor"] = (nid, "scale_by")
    else:
        width, height = as_int(inputs["width"]), as_int(inputs["height"])
        if width == 0 and height == 0:  # ComfyUI returns the image as it is
            return sources
        values |= {"mode": "size", "width": width, "height": height, "crop": str(inputs["crop"])}
        ports |= {"width": (nid, "width"), "height": (nid, "height"), "crop": (nid, "crop")}
    return _each(tr, nid, "scale", "scale_image", sources, values, ports)


def latent_images(tr: Translator, nid: str) -> list[Ref]:
    """The images behind a LATENT output: a sampler's, a VAEEncode'd image, or those of an
    upscaled latent (scaled in pixel space, the approximation noted)."""
    cls = tr._class(nid)
    if cls == "KSampler":
        return [(tf, "image") for tf in tr.sampler(nid)]
    if cls == "VAEEncode":
        return tr.images(*tr._source(nid, "pixels"))
    key = f"{nid}:latent"
    if key in tr._images:
        return tr._images[key]
    source = tr._source(nid, "samples")[0]
    if tr._class(source) not in {"KSampler", "VAEEncode", *LATENT_UPSCALES}:
        tr._fail(nid, "Unsupported latent",
                 f"samples: a {tr._class(source)} output cannot be upscaled; upscale a "
                 "KSampler's or VAEEncode's latent", "samples")  # fmt: skip
        return []
    sources = latent_images(tr, source)
    inputs = tr._inputs(nid)
    method = str(inputs["upscale_method"])
    values: dict[str, Any] = {"resample": RESAMPLE[method], "multiple_of": 8}
    ports = {"image": (nid, "samples"), "resample": (nid, "upscale_method")}
    how = f"scaled with {RESAMPLE[method]}"
    if method == "bislerp":
        how += " (bislerp has no pixel-space counterpart)"
    if cls == "LatentUpscaleBy":
        values |= {"mode": "factor", "factor": as_float(inputs["scale_by"])}
        ports["factor"] = (nid, "scale_by")
        made = _each(tr, nid, "latent_scale", "scale_image", sources, values, ports)
    else:
        width, height = as_int(inputs["width"]), as_int(inputs["height"])
        values |= {"mode": "size", "width": width, "height": height, "crop": str(inputs["crop"])}
        ports |= {"width": (nid, "width"), "height": (nid, "height"), "crop": (nid, "crop")}
        made = sources if width == 0 and height == 0 else _each(
            tr, nid, "latent_scale", "scale_image", sources, values, ports
        )  # fmt: skip
    tr.notes.append(
        f"node {nid}: {cls}: latent upscale done in pixel space (the image decoded, {how} to "
        "the latent's size and encoded again by the next sampler); ComfyUI scales the latent "
        "itself"
    )
    tr._images[key] = made
    return made


def _each(
    tr: Translator,
    nid: str,
    prefix: str,
    template: str,
    sources: list[Ref],
    values: dict[str, Any],
    ports: dict[str, tuple[str, str]],
) -> list[Ref]:
    made: list[Ref] = []
    for b, ref in enumerate(sources):
        tf_id = tr._new_id(prefix, nid if b == 0 else f"{nid}_b{b}")
        tr._add(tf_id, template, nid, {**values, "image": ref}, ports)
        made.append((tf_id, "image"))
    return made
