"""The demo upscale model: a tiny Real-ESRGAN compact network with random weights.

``takeflow serve --demo`` puts it in the home's ``upscale_models`` folder beside the demo
checkpoint (``nodes.diffusion.demo.ensure_demo_model``), so that the upscale and hires fix
canvases run offline. Its name says it is a demo.
"""

from __future__ import annotations

from pathlib import Path

from nodes.diffusion.config import EditableConfig, resolve_path

KIND = "upscale_models"
DEMO_UPSCALE_MODEL = "demo-upscale-x4.pth"


def build_demo_upscale_model(path: Path, scale: int = 4, seed: int = 0) -> Path:
    """A tiny Real-ESRGAN compact model with random weights (its residual scaled down, so the
    result looks like a nearest-neighbour enlargement with faint noise), saved as a ``.pth`` in
    Real-ESRGAN's layout (``{"params": state_dict}``)."""
    import torch

    from nodes.diffusion.upscale_arch import SRVGGNetCompact

    torch.manual_seed(seed)
    net = SRVGGNetCompact(3, 3, nf=8, convs=2, scale=scale)
    with torch.no_grad():
        last = net.body[-1]
        assert isinstance(last, torch.nn.Conv2d)
        last.weight.mul_(0.05)
        last.bias.zero_()  # type: ignore[union-attr]
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(f".{path.name}.tmp")
    torch.save({"params": net.state_dict()}, work)
    work.replace(path)
    return path


def _demo_path(home: EditableConfig) -> Path:
    raw = home.config().get("upscale_models_dir")
    folder = resolve_path(raw, home.path) if raw else home.path / "models" / KIND
    return folder / DEMO_UPSCALE_MODEL


def ensure_demo_upscale_model(home: EditableConfig) -> Path:
    """The demo upscale model in the home's ``upscale_models`` folder (built when missing)."""
    path = _demo_path(home)
    if not path.is_file():
        build_demo_upscale_model(path)
    return path
