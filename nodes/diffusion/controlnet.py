"""ControlNets: the ``control`` value, loading from the controlnet folder, the pipeline variant.

A ``control`` value is a tuple of ``ControlApplication`` (a ControlNet by name, its hint image,
strength and the start/end of the schedule it acts on), made by chained ``controlnet`` nodes.
A generation template resolves it against the ``controlnet`` model folder (``ControlSpec``: the
file and its content hash) and puts it in the request; the batching scheduler loads each
ControlNet once per (file, hash, dtype, device, UNet shape) and runs the ControlNet variant of the
loaded pipeline (diffusers ``from_pipe``: the base weights are shared, never reloaded).

Files: a ComfyUI/A1111 single file (``control_model.*`` or bare LDM keys, ``.safetensors`` or a
weights-only ``.pth``), a diffusers-style single file (``controlnet_cond_embedding.*`` keys), or a
diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, named by the folder or
its weights file). A single file's config is generated from the base model's UNet config (a
ControlNet has its UNet's encoder shape), so nothing is looked up on the hub.

torch and diffusers are imported on first use.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.diffusion.folders import ModelFile, ModelFolders, load_weights
from nodes.diffusion.requests import (
    IMAGE_TO_IMAGE,
    TEXT_TO_IMAGE,
    InvalidGenerationRequest,
    ModelLoadError,
)

KIND = "controlnet"
MAX_STRENGTH = 10.0
MAX_LOADED = 4  # ControlNets kept loaded (beside the pipeline cache's budget)
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class ControlApplication:
    """One ControlNet use, as the ``control`` port carries it (a tuple of these)."""

    controlnet: str
    image: Any  # PIL image: the hint (e.g. canny edges)
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class ControlSpec:
    """A resolved ControlNet use: the file, its content hash, and how it acts."""

    name: str
    path: Path  # the weights file, or the diffusers folder
    sha256: str
    strength: float
    start: float
    end: float
    image: Any

    def key(self) -> tuple[Any, ...]:
        """What must be equal for two requests to share a batch (the hint image may differ)."""
        return (self.name, self.sha256, self.strength, self.start, self.end)

    def describe(self) -> dict[str, Any]:
        """What a take records: name, content hash, strength and schedule span."""
        return {"kind": KIND, "name": self.name, "sha256": self.sha256,
                "strength": self.strength, "start": self.start, "end": self.end}  # fmt: skip


def add_control(
    control: Iterable[ControlApplication] | None, application: ControlApplication
) -> tuple[ControlApplication, ...]:
    """``control`` with one more application (the ``controlnet`` node's chaining)."""
    check_span(application.strength, application.start, application.end)
    return (*(control or ()), application)


def check_span(strength: float, start: float, end: float) -> None:
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise InvalidGenerationRequest(
            f"ControlNet strength {strength} is not between 0 and {MAX_STRENGTH}", port="strength"
        )
    for port, value in (("start", start), ("end", end)):
        if not 0.0 <= value <= 1.0:
            raise InvalidGenerationRequest(f"ControlNet {port} {value} is not in 0..1", port=port)
    if start >= end:
        raise InvalidGenerationRequest(
            f"ControlNet start {start} must be before its end {end}", port="end"
        )


def find_file(folders: ModelFolders, name: str) -> ModelFile:
    """The ControlNet ``name``: a file of the folder, or a diffusers folder in it, named by the
    folder or its weights file (``ModelFile.path`` is then the folder)."""
    root = folders.folder(KIND)
    candidate = (root / name).resolve() if name else root
    if (
        name
        and root.is_dir()
        and candidate.is_relative_to(root.resolve())
        and (candidate / "config.json").is_file()
        and _folder_weights(candidate) is not None
    ):
        return ModelFile(KIND, name.rstrip("/"), root / name)
    file = folders.resolve(KIND, name)
    if file.path.name in DIFFUSERS_WEIGHTS and (file.path.parent / "config.json").is_file():
        return ModelFile(KIND, name, file.path.parent)  # a diffusers folder, by its weights
    return file


def _folder_weights(folder: Path) -> Path | None:
    return next((folder / w for w in DIFFUSERS_WEIGHTS if (folder / w).is_file()), None)


def content_hash(folders: ModelFolders, file: ModelFile) -> str:
    if file.path.is_dir():
        weights = _folder_weights(file.path)
        assert weights is not None
        return folders.content_hash(ModelFile(KIND, file.name, weights))
    return folders.content_hash(file)


def resolve_controls(folders: ModelFolders, value: Any) -> tuple[ControlSpec, ...]:
    """The ``control`` input of a generation template as resolved specs (``port="control"`` on
    a value that is not one, ``model_not_found`` naming the known files on an unknown name)."""
    if value is None:
        return ()
    if isinstance(value, ControlApplication):
        value = (value,)
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, ControlApplication) for v in value
    ):
        raise InvalidGenerationRequest(
            "control must come from a controlnet node's control output", port="control"
        )
    specs = []
    for app in value:
        check_span(app.strength, app.start, app.end)
        if app.image is None:
            raise InvalidGenerationRequest("a ControlNet needs a hint image", port="control")
        file = find_file(folders, app.controlnet)
        specs.append(ControlSpec(file.name, file.path, content_hash(folders, file),
                                 float(app.strength), float(app.start), float(app.end),
                                 app.image))  # fmt: skip
    return tuple(specs)


# -- loading ----------------------------------------------------------------------------------


def controlnet_config(unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """A ``ControlNetModel`` config with the encoder shape of a UNet of this config."""
    from diffusers import ControlNetModel

    params = inspect.signature(ControlNetModel.__init__).parameters
    config = {k: v for k, v in dict(unet_config).items() if k in params and not k.startswith("_")}
    config["in_channels"] = 4  # an inpainting UNet's extra channels are not the ControlNet's
    config.pop("conditioning_embedding_out_channels", None)  # the published ControlNets' default
    return {"_class_name": "ControlNetModel", **config}


def load_controlnet(
    path: Path, unet_config: Mapping[str, Any], dtype: Any, config_root: Path
) -> Any:
    """A ``ControlNetModel`` from a diffusers folder or a single file, on the CPU, offline."""
    from diffusers import ControlNetModel

    from nodes.diffusion.loading import dtype_kwargs, force_hub_offline

    force_hub_offline()
    try:
        if path.is_dir():
            model = ControlNetModel.from_pretrained(
                str(path), local_files_only=True, **dtype_kwargs(dtype)
            )
        else:
            config = controlnet_config(unet_config)
            text = json.dumps(config, sort_keys=True, default=list)
            folder = config_root / hashlib.sha256(text.encode()).hexdigest()[:16]
            if not (folder / "config.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".config.{threading.get_ident()}.json"
                tmp.write_text(text)
                tmp.replace(folder / "config.json")
            # Read here (a .pth only with weights_only=True: code is refused, never run).
            state = _diffusers_state(load_weights(path), config)
            model = ControlNetModel.from_single_file(
                state, config=str(folder), local_files_only=True, **dtype_kwargs(dtype)
            )
    except Exception as exc:
        raise ModelLoadError(
            f"ControlNet '{path.name}' could not be loaded for this model (it must match the "
            f"model's architecture, SD 1.5 or SDXL): {type(exc).__name__}: {exc}",
            path=str(path),
        ) from exc
    model.eval()
    return model


def _diffusers_state(state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A ControlNet state dict in diffusers' names: the LDM layout (``control_model.*`` or bare)
    converted by diffusers, plus the SDXL ``label_emb`` keys its converter leaves out."""
    if "time_embedding.linear_1.weight" in state:
        return state
    from diffusers.loaders.single_file_utils import (
        DIFFUSERS_TO_LDM_MAPPING,
        LDM_CONTROLNET_KEY,
        convert_controlnet_checkpoint,
    )

    converted = dict(convert_controlnet_checkpoint(state, dict(config)))
    bare = "time_embed.0.weight" in state
    mapping: dict[str, dict[str, str]] = DIFFUSERS_TO_LDM_MAPPING["controlnet"]  # type: ignore[assignment]
    for kind in ("addition_embed_type", "class_embed_type"):
        if config.get(kind) is None:
            continue
        for ours, theirs in mapping[kind].items():
            key = theirs if bare else LDM_CONTROLNET_KEY + theirs
            if key in state:
                converted[ours] = state[key]
    return converted


class ControlNetCache:
    """Loaded ControlNets per (file, content hash, UNet shape, dtype, device), and the
    ControlNet variants of loaded pipelines (dropped with the pipeline they were made from)."""

    def __init__(self, config_root: Path | None = None) -> None:
        self.config_root = config_root
        self._models: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._variants: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self.loads = 0

    def model(self, spec: ControlSpec, base: Any) -> Any:
        """The ControlNet of ``spec`` for pipeline ``base`` (its UNet's shape, dtype, device)."""
        unet = base.unet
        shape = json.dumps(controlnet_config(unet.config), sort_keys=True, default=list)
        key = (str(spec.path), spec.sha256, shape, str(unet.dtype), str(unet.device))
        with self._lock:
            found = self._models.get(key)
            if found is not None:
                self._models.move_to_end(key)
            else:
                while len(self._models) >= MAX_LOADED:  # the least recently used goes,
                    self._models.popitem(last=False)
                    self._variants = weakref.WeakKeyDictionary()  # with the variants using it
                root = self.config_root or spec.path.parent / ".takeflow-configs"
                found = load_controlnet(spec.path, unet.config, unet.dtype, root)
                if str(unet.device) != "cpu":
                    found = found.to(unet.device)
                self._models[key] = found
                self.loads += 1
            return found

    def pipeline(self, base: Any, kind: str, controls: tuple[ControlSpec, ...]) -> Any:
        """The ControlNet variant of ``base`` (text or image to image), sharing its weights."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        if kind not in (TEXT_TO_IMAGE, IMAGE_TO_IMAGE):
            raise InvalidGenerationRequest(
                f"ControlNets guide text to image and image to image, not {kind}", port="control"
            )
        models = [self.model(spec, base) for spec in controls]
        key = tuple(id(m) for m in models)
        with self._lock:
            known = self._variants.setdefault(base, {})
            found = known.get(key)
        if found is not None:
            return found
        auto = AutoPipelineForImage2Image if kind == IMAGE_TO_IMAGE else AutoPipelineForText2Image
        controlnet: Any = models[0] if len(models) == 1 else models
        variant = auto.from_pipe(base, controlnet=controlnet)
        variant.set_progress_bar_config(disable=True)
        with self._lock:
            known[key] = variant
        return variant

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._variants = weakref.WeakKeyDictionary()


def call_kwargs(items: list[Any], kind: str, width: int, height: int) -> dict[str, Any]:
    """The ControlNet arguments of a batched call: per-item hint images (resized to the
    output), and per-ControlNet strengths and schedule spans (equal across the batch)."""
    controls: tuple[ControlSpec, ...] = items[0].request.controls
    hints = [
        [c.image.convert("RGB").resize((width, height)) for c in item.request.controls]
        for item in items
    ]
    image: Any = [h[0] for h in hints] if len(controls) == 1 else hints

    def per_net(values: list[float]) -> float | list[float]:
        return values[0] if len(values) == 1 else values

    return {
        "control_image" if kind == IMAGE_TO_IMAGE else "image": image,
        "controlnet_conditioning_scale": per_net([c.strength for c in controls]),
        "control_guidance_start": per_net([c.start for c in controls]),
        "control_guidance_end": per_net([c.end for c in controls]),
    }


# -- the demo ControlNet ----------------------------------------------------------------------

DEMO_CONTROLNET = "demo-controlnet.safetensors"


def build_random_controlnet(unet_config: Mapping[str, Any], seed: int = 0) -> Any:
    """A ControlNet with random weights for a UNet of ``unet_config``; its zero convolutions
    are random too, so that it changes the image (a fresh ControlNet's are zeros)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    model = ControlNetModel.from_config(controlnet_config(unet_config))
    with torch.no_grad():
        for block in (*model.controlnet_down_blocks, model.controlnet_mid_block):
            torch.nn.init.normal_(block.weight, std=0.5)
            torch.nn.init.normal_(block.bias, std=0.5)
    return model.eval()


def ensure_demo_controlnet(home: Path, demo_model: Path) -> Path:
    """``<home>/models/controlnet/demo-controlnet.safetensors`` (diffusers-style single file,
    random weights, for the demo model's UNet), built if missing."""
    target = home / "models" / KIND / DEMO_CONTROLNET
    if target.is_file():
        return target
    from safetensors.torch import save_file

    unet_config = json.loads((demo_model / "unet" / "config.json").read_text())
    model = build_random_controlnet(unet_config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{threading.get_ident()}")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"takeflow": "demo ControlNet, random weights"})
    tmp.replace(target)
    return target
