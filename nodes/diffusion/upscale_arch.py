"""ESRGAN-family upscale networks, with the architecture and scale read from a state dict's keys.

Two architectures, written here from their published descriptions (ESRGAN, Wang et al. 2018;
Real-ESRGAN, Wang et al. 2021; BasicSR's ``RRDBNet`` and ``SRVGGNetCompact`` are the reference
implementations, BSD-3): no code is copied from them.

- ``RRDBNet`` (ESRGAN, Real-ESRGAN x4plus / x2plus, most community ``4x_*.pth``): three key
  layouts are read and mapped onto one: the original ESRGAN layout (``model.0``,
  ``model.1.sub.N.RDB1.conv1.0``, ...), ESRGAN's later layout (``RRDB_trunk``, ``trunk_conv``,
  ``upconv1``, ``HRconv``) and BasicSR's (``body``, ``conv_body``, ``conv_up1``, ``conv_hr``).
  The scale is 2 per up-sampling conv, divided by the pixel-unshuffle factor Real-ESRGAN's x2/x1
  models put in front (read from ``conv_first``'s input channels).
- ``SRVGGNetCompact`` (Real-ESRGAN's ``realesr-general-x4v3``, ``realesr-animevideov3``): a plain
  conv stack with PReLUs ending in a pixel shuffle, plus a nearest-neighbour up-sampled input.

``spandrel`` (MIT) covers many more architectures, but every release imports ``torchvision`` at
import time, which Takeflow's CPU torch build cannot install alongside; these two cover the
ESRGAN family that ComfyUI users mostly run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nodes.diffusion.checkpoints import CheckpointError


class _DenseBlock(nn.Module):
    """Five 3x3 convs, each fed every earlier feature map; a scaled residual."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class _RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks and a scaled residual."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1 = _DenseBlock(nf, gc)
        self.rdb2 = _DenseBlock(nf, gc)
        self.rdb3 = _DenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator (BasicSR key names): ``ups`` nearest x2 up-samplings, each followed by
    a conv; ``unshuffle`` > 1 packs pixels into channels first (Real-ESRGAN x2 / x1)."""

    def __init__(
        self, in_ch: int, out_ch: int, nf: int, gc: int, blocks: int, ups: int, unshuffle: int
    ) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.conv_first = nn.Conv2d(in_ch * unshuffle * unshuffle, nf, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(nf, gc) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.ups = ups
        for i in range(1, ups + 1):
            self.add_module(f"conv_up{i}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.ups + 1):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{i}")(up), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact net: conv + PReLU pairs in ``body`` (index 2k: conv, 2k+1: PReLU),
    a last conv to ``out_ch * scale**2`` channels, a pixel shuffle, plus the nearest-upsampled
    input."""

    def __init__(self, in_ch: int, out_ch: int, nf: int, convs: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_ch, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(convs):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, out_ch * scale * scale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.pixel_shuffle(self.body(x), self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


@dataclass(frozen=True)
class UpscaleNetwork:
    """A loaded upscale model: the network (eval mode), what it is and its facts for a take."""

    module: nn.Module
    architecture: str  # "ESRGAN" | "RealESRGAN-compact"
    layout: str  # which key layout the file used
    scale: int
    multiple: int  # input sides are padded to a multiple of this (pixel unshuffle)
    context: int  # receptive radius in input pixels: the overlap that makes tiles exact

    def describe(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "layout": self.layout, "scale": self.scale}


_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_CONV = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_NEW_ARCH = {"trunk_conv": "conv_body", "HRconv": "conv_hr", "conv_first": "conv_first",
             "conv_last": "conv_last"}  # fmt: skip


def _from_old_esrgan(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The original ESRGAN layout (``model.N``, a ``ShortcutBlock`` ``sub``) -> BasicSR keys."""
    out: dict[str, Tensor] = {}
    blocks = 1 + max(int(m.group(1)) for k in sd if (m := _OLD_RDB.match(k)))
    convs = sorted({int(m.group(1)) for k in sd if (m := _OLD_CONV.match(k))})
    # model.0: conv_first; model.1: trunk; then (up-sample, conv, lrelu) per x2; conv_hr; last.
    last, hr, ups = convs[-1], convs[-2], [c for c in convs if 0 < c < convs[-2]]
    names = {0: "conv_first", hr: "conv_hr", last: "conv_last"}
    names.update({c: f"conv_up{i}" for i, c in enumerate(ups, 1)})
    for key, value in sd.items():
        if m := _OLD_RDB.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif (m := _OLD_TRUNK.match(key)) and int(m.group(1)) == blocks:
            out[f"conv_body.{m.group(2)}"] = value
        elif (m := _OLD_CONV.match(key)) and int(m.group(1)) in names:
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            raise CheckpointError(f"unexpected key '{key}' in an ESRGAN (old layout) model")
    return out


def _from_new_esrgan(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """ESRGAN's later layout (``RRDB_trunk``, ``upconvN``, ``HRconv``) -> BasicSR keys."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        if head == "RRDB_trunk":
            index, block, tail = rest.split(".", 2)
            out[f"body.{index}.{block.lower()}.{tail}"] = value
        elif head.startswith("upconv"):
            out[f"conv_up{head.removeprefix('upconv')}.{rest}"] = value
        elif head in _NEW_ARCH:
            out[f"{_NEW_ARCH[head]}.{rest}"] = value
        else:
            raise CheckpointError(f"unexpected key '{key}' in an ESRGAN (new layout) model")
    return out


def _rrdb(sd: Mapping[str, Tensor], layout: str) -> UpscaleNetwork:
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    nf, out_ch = first.shape[0], last.shape[0]
    packed = first.shape[1] // out_ch  # in_ch * unshuffle**2, taking in_ch == out_ch
    unshuffle = math.isqrt(packed)
    if unshuffle * unshuffle != packed or first.shape[1] % out_ch:
        raise CheckpointError(f"conv_first takes {first.shape[1]} channels: not an ESRGAN model")
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    ups = len({k.split(".")[0] for k in sd if k.startswith("conv_up")})
    gc = sd["body.0.rdb1.conv1.weight"].shape[0]
    net = RRDBNet(out_ch, out_ch, nf, gc, blocks, ups, unshuffle)
    _load(net, sd)
    if (2**ups) % unshuffle:
        raise CheckpointError("an ESRGAN model whose scale is not a whole number")
    # 3x3 convs at feature resolution (input / unshuffle): conv_first, 15 per block,
    # conv_body; the up-sampled convs add under 2 more.
    context = (4 + 15 * blocks) * unshuffle
    return UpscaleNetwork(net, "ESRGAN", layout, 2**ups // unshuffle, unshuffle, context)


def _compact(sd: Mapping[str, Tensor]) -> UpscaleNetwork:
    convs = sorted(int(k.split(".")[1]) for k in sd if k.startswith("body.") and
                   k.endswith(".weight") and sd[k].ndim == 4)  # fmt: skip
    first, last = sd["body.0.weight"], sd[f"body.{convs[-1]}.weight"]
    in_ch, nf = first.shape[1], first.shape[0]
    scale = math.isqrt(last.shape[0] // in_ch)
    if scale * scale * in_ch != last.shape[0]:
        raise CheckpointError(f"the last conv makes {last.shape[0]} channels: not a compact model")
    net = SRVGGNetCompact(in_ch, in_ch, nf, len(convs) - 2, scale)
    _load(net, sd)
    return UpscaleNetwork(net, "RealESRGAN-compact", "compact", scale, 1, len(convs) + 1)


def _load(net: nn.Module, sd: Mapping[str, Tensor]) -> None:
    try:
        net.load_state_dict(dict(sd), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not fit the detected architecture: {exc}") from exc
    net.eval().requires_grad_(False)


def detect(state_dict: Mapping[str, Any]) -> UpscaleNetwork:
    """The network a state dict describes, built and loaded (``CheckpointError`` when the keys
    match no supported architecture)."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items() if isinstance(v, Tensor)}
    if "model.0.weight" in sd and any(_OLD_RDB.match(k) for k in sd):
        return _rrdb(_from_old_esrgan(sd), "esrgan-old")
    if "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        return _rrdb(_from_new_esrgan(sd), "esrgan-new")
    if "body.0.rdb1.conv1.weight" in sd:
        return _rrdb(sd, "basicsr")
    if "body.0.weight" in sd and sd["body.0.weight"].ndim == 4 and "body.1.weight" in sd:
        return _compact(sd)
    sample = ", ".join(sorted(sd)[:4]) or "none"
    raise CheckpointError(
        "not a supported upscale model: expected ESRGAN (RRDBNet) or Real-ESRGAN compact "
        f"(SRVGGNetCompact) keys, found {sample}, ..."
    )
