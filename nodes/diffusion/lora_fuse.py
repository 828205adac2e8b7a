"""Exact LoRA fusing: a LoRA stack folded into the base weights, undone by copying back.

peft runs a LoRA as extra matmuls beside each patched layer (``B(A(x)) * scale``), which costs
time on every step. Fusing writes ``W + sum(scale_i * B_i @ A_i)`` (computed in fp32, cast to
the layer's dtype) into each patched layer's weight and takes peft's wrapper out of the module
tree, so the model runs at base-model speed. Before a layer is changed, an exact copy of its
original weight is kept; ``restore`` copies it back (never subtracts) and puts the wrappers back,
so the base weights are bit-exact again afterwards and fused pixels do not depend on which
stacks ran before.

The scales are the ones peft holds after ``parts._activate`` set the stack's strengths, so the
fused model computes what the peft path computes, up to float rounding. A layer at scale 0
(strength 0) is left untouched: strength 0 is exactly no LoRA. Layers peft patches some other
way (DoRA and other variants, LoRA biases, embeddings, grouped convolutions) are not fused: the
whole stack then runs on the peft path.

Policy (``diffusion.lora_fuse``): ``always`` fuses every batch with a LoRA (the default: fused
pixels depend only on the stack and seed); ``auto`` fuses a stack on its second consecutive
batch, or at once for a batch of two or more requests, and runs a stack that keeps switching on
the peft path; ``never`` keeps the peft path. Either way a batch without LoRAs runs with the
wrappers taken out. Everything here runs on the device thread under the pipeline's lock (the
same guard as every other use of the cached pipeline).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)
Stack = tuple[tuple[str, float, float], ...]  # (adapter, strength_model, strength_clip)


@dataclass
class _Patch:
    """One peft wrapper taken out of its parent, and its base weight's original if changed."""

    parent: Any
    attr: str
    wrapper: Any
    base: Any
    original: Any = None  # an exact copy of ``base.weight`` before fusing; None: unchanged


@dataclass
class FuseState:
    """What is fused into one cached pipeline now (kept on the parts state)."""

    stack: Stack | None = None  # the stack in the weights; None: the peft path (wrappers in)
    patches: list[_Patch] = field(default_factory=list)
    previous: Stack | None = None  # the stack of the batch before (``auto``)
    fuses: int = 0
    restores: int = 0

    @property
    def fused(self) -> bool:
        return bool(self.stack)

    def saved_bytes(self) -> int:
        """Memory held by the copies of the original weights."""
        return sum(p.original.numel() * p.original.element_size() for p in self.patches
                   if p.original is not None)  # fmt: skip


def wants_fuse(mode: str, state: FuseState, stack: Stack, batch_size: int) -> bool:
    """Whether a batch with ``stack`` should run fused (an empty stack: wrappers out)."""
    if mode == "never":
        return False
    if not stack or mode == "always":
        return True
    return batch_size >= 2 or stack == state.previous or stack == state.stack


def restore(state: FuseState) -> None:
    """Copy the original weights back and put peft's wrappers back (bit-exact)."""
    import torch

    with torch.no_grad():
        for patch in reversed(state.patches):
            if patch.original is not None:
                patch.base.weight.copy_(patch.original)
            setattr(patch.parent, patch.attr, patch.wrapper)
    if state.stack:
        state.restores += 1
    state.patches = []
    state.stack = None


def fuse(components: Iterable[Any], state: FuseState, stack: Stack) -> bool:
    """Fold the active adapters of ``components`` (torch modules) into their base weights and
    take the wrappers out; False (nothing changed) when a layer cannot be fused exactly."""
    import torch

    assert state.stack is None and not state.patches, "restore before fusing again"
    layers = [found for module in components for found in _wrappers(module)]
    plans: list[tuple[Any, str, Any, list[tuple[str, float]]]] = []
    for parent, attr, wrapper in layers:
        active = _active(wrapper)
        if active is None:
            return False
        plans.append((parent, attr, wrapper, active))
    try:
        with torch.no_grad():
            for parent, attr, wrapper, active in plans:
                base = wrapper.get_base_layer()
                patch = _Patch(parent, attr, wrapper, base)
                state.patches.append(patch)
                setattr(parent, attr, base)
                if active:
                    weight = base.weight
                    patch.original = weight.detach().clone()
                    total = patch.original.to(torch.float32)
                    for adapter, scale in active:
                        total = total + _delta(wrapper, adapter, weight.shape) * scale
                    weight.copy_(total.to(weight.dtype))
    except torch.OutOfMemoryError:  # no room for the copies: this stack runs on peft's path
        restore(state)
        log.warning("not enough memory to fuse the LoRA stack; running it unfused")
        return False
    except BaseException:
        restore(state)
        raise
    state.stack = stack
    if stack:
        state.fuses += 1
    return True


def _wrappers(module: Any) -> list[tuple[Any, str, Any]]:
    """peft's LoRA wrappers in ``module``: (parent, attribute, wrapper)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = []
    for name, child in module.named_modules():
        if isinstance(child, BaseTunerLayer) and name:
            path, _, attr = name.rpartition(".")
            out.append((module.get_submodule(path) if path else module, attr, child))
    return out


def _active(wrapper: Any) -> list[tuple[str, float]] | None:
    """The (adapter, scale) pairs ``wrapper`` adds now (scale 0 left out); None: not fusable."""
    import torch
    from peft.tuners.lora import LoraLayer

    if not isinstance(wrapper, LoraLayer) or getattr(wrapper, "merged_adapters", None):
        return None
    if wrapper.disable_adapters:
        return []
    out = []
    for adapter in wrapper.active_adapters:
        if adapter in getattr(wrapper, "lora_embedding_A", {}):
            return None
        if adapter not in wrapper.lora_A:
            continue
        if adapter in getattr(wrapper, "lora_variant", {}) or wrapper.use_dora.get(adapter):
            return None
        if wrapper.lora_bias.get(adapter):
            return None
        base = wrapper.get_base_layer()
        a: Any = wrapper.lora_A[adapter]
        b: Any = wrapper.lora_B[adapter]
        if isinstance(base, torch.nn.Conv2d):
            if base.groups != 1 or a.groups != 1 or tuple(b.weight.shape[2:]) != (1, 1):
                return None
        elif not isinstance(base, torch.nn.Linear):
            return None
        scale = float(wrapper.scaling[adapter])
        if scale != 0.0:
            out.append((adapter, scale))
    return out


def _delta(wrapper: Any, adapter: str, shape: Any) -> Any:
    """``B @ A`` in fp32, in the base weight's layout."""
    import torch

    a = wrapper.lora_A[adapter].weight.to(torch.float32)
    b = wrapper.lora_B[adapter].weight.to(torch.float32)
    delta = b.flatten(1) @ a.flatten(1)  # Linear: (out, r) @ (r, in); Conv2d: 1x1 B
    if getattr(wrapper, "fan_in_fan_out", False):
        delta = delta.T
    return delta.reshape(shape)


def lora_components(pipe: Any) -> list[Any]:
    """The torch modules of ``pipe`` that LoRAs patch (UNet or transformer, text encoders)."""
    import torch

    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def mark_fused(entry: Any, items: Iterable[Any]) -> None:
    """Record on each work item's parts whether its LoRA stack ran fused (provenance)."""
    state = getattr(entry.parts, "fuse", None)
    fused = bool(state is not None and state.fused)
    for item in items:
        if item.parts is not None and item.parts.loras:
            item.parts = replace(item.parts, lora_fused=fused)
