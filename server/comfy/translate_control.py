"""ControlNet nodes, Canny and KSamplerAdvanced in the ComfyUI translation.

A ``ControlNetApply``/``ControlNetApplyAdvanced`` node sits on a CONDITIONING link: the prompt
text is found by following it back to its ``CLIPTextEncode``, and the ControlNets met on the way
become a chain of Takeflow ``controlnet`` nodes whose ``control`` feeds the generation node. A
``Canny`` node becomes a ``canny`` node per image. ``KSamplerAdvanced`` is read as a KSampler:
``start_at_step`` S of N steps on a VAEEncode'd image runs image to image at strength (N-S)/N.

Where the method differs from ComfyUI's, the translation runs Takeflow's and records a note (in
the prompt's history and the take, as the sampler notes): diffusers runs a ControlNet on both the
positive and the negative halves of classifier-free guidance, its start/end are fractions of the
steps (ComfyUI: of the noise schedule), and a KSamplerAdvanced always adds noise and runs its
schedule to the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from server.comfy.translate_inpaint import CONDITIONING_NODES as PROMPT_PASSING
from server.comfy.translate_upscale import LATENT_UPSCALES
from server.comfy.validate import as_float, as_int

if TYPE_CHECKING:
    from server.comfy.translate import Ref, Translator

APPLY_CLASSES = frozenset({"ControlNetApply", "ControlNetApplyAdvanced"})
SAMPLER_CLASSES = frozenset({"KSampler", "KSamplerAdvanced"})


def conditioning_source(tr: Translator, nid: str, name: str) -> tuple[str, list[str]]:
    """The node behind CONDITIONING input ``name`` of ``nid`` past any ControlNet apply nodes,
    and those apply nodes, the first applied first."""
    src, index = tr._source(nid, name)
    applied: list[str] = []
    while True:
        cls = tr._class(src)
        if cls in APPLY_CLASSES:
            applied.append(src)
            inner = "conditioning" if cls == "ControlNetApply" else (
                "positive" if index == 0 else "negative")  # fmt: skip
        elif cls in PROMPT_PASSING:  # e.g. InpaintModelConditioning: its prompts pass through
            inner = ("positive", "negative")[index]
        else:
            return src, applied[::-1]
        src, index = tr._source(src, inner)


def _apply_node(tr: Translator, nid: str, control: Ref | None) -> Ref:
    """The Takeflow ``controlnet`` node of one ComfyUI apply node (made once per chain)."""
    key = f"{nid}|{control}"
    made = tr.controls
    if key in made:
        return made[key]
    inputs = tr._inputs(nid)
    loader, _ = tr._source(nid, "control_net")
    hints = tr.images(*tr._source(nid, "image"))
    if len(hints) > 1:
        tr.notes.append(f"node {nid}: the hint image is a batch of {len(hints)}; the first one "
                        "guides every image")  # fmt: skip
    advanced = tr._class(nid) == "ControlNetApplyAdvanced"
    start = as_float(inputs["start_percent"]) if advanced else 0.0
    end = as_float(inputs["end_percent"]) if advanced else 1.0
    if start >= end:
        why = f"start_percent {start} must be below end_percent {end}"
        tr._fail(nid, "Invalid ControlNet span", why, "end_percent")
    elif (start, end) != (0.0, 1.0):
        tr.notes.append(f"node {nid}: start_percent/end_percent are applied as fractions of the "
                        "sampling steps (ComfyUI: of the noise schedule's timesteps)")  # fmt: skip
    values: dict[str, Any] = {
        "controlnet": str(tr._inputs(loader)["control_net_name"]),
        "strength": as_float(inputs["strength"]),
        "start": start,
        "end": end,
    }
    ports: dict[str, tuple[str, str]] = {
        "controlnet": (loader, "control_net_name"),
        "strength": (nid, "strength"),
        "image": (nid, "image"),
    }
    if advanced:
        ports.update(start=(nid, "start_percent"), end=(nid, "end_percent"))
    if hints:
        values["image"] = hints[0]
    if control is not None:
        values["control"] = control
    tf_id = tr._new_id("controlnet", nid)
    tr._add(tf_id, "controlnet", nid, values, ports)
    made[key] = (tf_id, "control")
    return made[key]


def control_inputs(tr: Translator, nid: str) -> dict[str, Any]:
    """The ``control`` input of a sampler's generation nodes (empty without ControlNets)."""
    _, positive = conditioning_source(tr, nid, "positive")
    _, negative = conditioning_source(tr, nid, "negative")
    if not positive:
        if negative:
            tr.notes.append(f"node {nid}: a ControlNet on the negative prompt only is not run "
                            "(diffusers applies ControlNets to both prompts)")  # fmt: skip
        return {}
    if negative != positive:
        tr.notes.append(f"node {nid}: the ControlNets guide both the positive and the negative "
                        "prompt (diffusers runs them on both halves of the guidance)")  # fmt: skip
    control: Ref | None = None
    for apply in positive:
        control = _apply_node(tr, apply, control)
    return {"control": control}


def canny_images(tr: Translator, nid: str) -> list[Ref]:
    """A ``canny`` node per image of a ComfyUI ``Canny`` node."""
    inputs = tr._inputs(nid)
    made: list[Ref] = []
    for b, ref in enumerate(tr.images(*tr._source(nid, "image"))):
        tf_id = tr._new_id("canny", nid if b == 0 else f"{nid}_b{b}")
        tr._add(tf_id, "canny", nid,
                {"image": ref, "low_threshold": as_float(inputs["low_threshold"]),
                 "high_threshold": as_float(inputs["high_threshold"])},
                {"image": (nid, "image"), "low_threshold": (nid, "low_threshold"),
                 "high_threshold": (nid, "high_threshold")})  # fmt: skip
        made.append((tf_id, "image"))
    return made


def sampler_inputs(tr: Translator, nid: str) -> Mapping[str, Any]:
    """A sampler's inputs as a KSampler's: a KSamplerAdvanced's ``noise_seed`` as ``seed``, its
    ``start_at_step`` as ``denoise``, with notes on what runs differently."""
    inputs = tr._inputs(nid)
    if tr._class(nid) != "KSamplerAdvanced":
        return inputs
    steps, start = as_int(inputs["steps"]), as_int(inputs["start_at_step"])
    end = min(as_int(inputs["end_at_step"]), steps)
    latent, _ = tr._source(nid, "latent_image")
    denoise = 1.0
    if start >= end:
        tr._fail(nid, "Nothing to sample",
                 f"start_at_step {start} must be below end_at_step and steps ({end})",
                 "start_at_step")  # fmt: skip
    elif start > 0 and tr._class(latent) not in ("VAEEncode", *LATENT_UPSCALES):
        tr._fail(nid, "Unsupported start_at_step",
                 "start_at_step: above 0 needs a VAEEncode'd or upscaled image as latent_image",
                 "start_at_step")  # fmt: skip
    elif start > 0:
        denoise = (steps - start) / steps
        tr.notes.append(f"node {nid}: start_at_step {start} of {steps} runs as image to image "
                        f"at strength {denoise:g} (the last {steps - start} steps)")  # fmt: skip
    if end < steps:
        leftover = str(inputs["return_with_leftover_noise"]) == "enable"
        tr.notes.append(
            f"node {nid}: end_at_step {end} of {steps}: Takeflow runs the schedule to "
            "its end" + (" (no leftover noise is returned)" if leftover else "")
        )
    if str(inputs["add_noise"]) == "disable":
        tr.notes.append(f"node {nid}: add_noise 'disable' is not available; the sampler's noise "
                        "was added")  # fmt: skip
    return {**inputs, "seed": inputs["noise_seed"], "denoise": denoise,
            "steps": steps - start if start < end else steps}  # fmt: skip


ADVANCED_PORTS = {"seed": "noise_seed", "denoise": "start_at_step"}


def fix_ports(tr: Translator, nid: str) -> None:
    """Point a KSamplerAdvanced's Takeflow ports at its own input names."""
    if tr._class(nid) != "KSamplerAdvanced":
        return
    for key, (node, name) in list(tr.ports.items()):
        if node == nid and name in ADVANCED_PORTS:
            tr.ports[key] = [node, ADVANCED_PORTS[name]]
