"""Model parts on a loaded pipeline: LoRAs, a separate VAE, CLIP skip, textual inversions.

``resolve_parts`` runs on the caller's thread: it finds each file (``ModelFolders``), hashes it
(provenance) and rewrites ``embedding:name`` in prompts to the embedding's token. ``apply_parts``
runs on the device thread before each batch: it loads what is missing onto the cached pipeline
(each LoRA once per content hash, as a peft adapter through diffusers' adapter API; each VAE and
embedding once) and activates the batch's set, fused into the weights per ``lora_fuse.py``.
The base model is never reloaded: switching LoRA sets between batches costs an adapter switch
(and a fuse), not a model load.

torch and diffusers are imported on first use.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from graph_runtime.errors import ModelNotFoundError
from nodes.diffusion.folders import KINDS, ModelFile, ModelFolders, load_weights
from nodes.diffusion.lora_fuse import FuseState, fuse, lora_components, restore, wants_fuse
from nodes.diffusion.requests import GenerationRequest, InvalidGenerationRequest, ModelLoadError

if TYPE_CHECKING:
    from nodes.diffusion.pipeline_cache import LoadedPipeline

log = logging.getLogger(__name__)

MAX_ADAPTERS = 16  # LoRAs kept loaded per pipeline; the least recently used beyond go
# ComfyUI's prompt syntax: ``embedding:name`` (with or without the file's extension).
EMBEDDING_RE = re.compile(r"embedding:([A-Za-z0-9_\-./\\]+[A-Za-z0-9_\-])")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class ResolvedLora:
    """A LoRA of the stack, found and hashed."""

    name: str
    file: ModelFile
    sha256: str
    strength_model: float
    strength_clip: float

    @property
    def adapter(self) -> str:
        """The peft adapter name: one per file content."""
        return "lora_" + self.sha256.removeprefix("sha256:")[:20]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "strength_model": self.strength_model,
            "strength_clip": self.strength_clip,
        }


@dataclass(frozen=True)
class ResolvedEmbedding:
    name: str  # as the prompt wrote it
    file: ModelFile
    sha256: str

    @property
    def token(self) -> str:
        return "<emb-" + self.sha256.removeprefix("sha256:")[:16] + ">"

    def describe(self) -> dict[str, Any]:
        return {"name": self.file.name, "sha256": self.sha256}


@dataclass(frozen=True)
class ModelParts:
    """What a request adds to its checkpoint, resolved to files and hashes."""

    loras: tuple[ResolvedLora, ...] = ()
    vae: ModelFile | None = None
    vae_sha256: str | None = None
    clip_skip: int = 0
    embeddings: tuple[ResolvedEmbedding, ...] = ()
    lora_fused: bool | None = None  # set by the device thread (nodes/diffusion/lora_fuse.py)

    def metadata(self) -> dict[str, Any]:
        """What the take records (only what was used)."""
        out: dict[str, Any] = {}
        if self.loras:
            out["loras"] = [lora.describe() for lora in self.loras]
            if self.lora_fused is not None:
                out["lora_fused"] = self.lora_fused
        if self.vae is not None:
            out["vae"] = {"name": self.vae.name, "sha256": self.vae_sha256}
        if self.clip_skip:
            out["clip_skip"] = self.clip_skip
        if self.embeddings:
            out["embeddings"] = [e.describe() for e in self.embeddings]
        return out


def resolve_parts(
    folders: ModelFolders, request: GenerationRequest
) -> tuple[ModelParts, GenerationRequest]:
    """The request's parts as files, and the request with its embeddings as tokens."""
    merged: dict[str, list[float]] = {}  # the same file twice on a stack: strengths add up
    order: list[str] = []
    for use in request.loras:
        if use.name not in merged:
            merged[use.name] = [0.0, 0.0]
            order.append(use.name)
        merged[use.name][0] += use.strength_model
        merged[use.name][1] += use.strength_clip
    loras = []
    for name in order:
        file = _resolve(folders, "loras", name, "model")
        strength_model, strength_clip = merged[name]
        loras.append(
            ResolvedLora(name, file, folders.content_hash(file), strength_model, strength_clip)
        )
    vae = _resolve(folders, "vae", request.vae, "model") if request.vae else None
    embeddings: dict[str, ResolvedEmbedding] = {}
    texts = {}
    for port in ("prompt", "negative_prompt"):
        text = getattr(request, port)
        for written in dict.fromkeys(EMBEDDING_RE.findall(text)):
            if written not in embeddings:
                file = _embedding_file(folders, written, port)
                embeddings[written] = ResolvedEmbedding(written, file, folders.content_hash(file))
        texts[port] = EMBEDDING_RE.sub(lambda m: embeddings[m.group(1)].token, text)
    parts = ModelParts(
        tuple(loras),
        vae,
        folders.content_hash(vae) if vae is not None else None,
        request.clip_skip,
        tuple({e.sha256: e for e in embeddings.values()}.values()),
    )
    if not embeddings:
        return parts, request
    return parts, replace(request, prompt=texts["prompt"], negative_prompt=texts["negative_prompt"])


def _resolve(folders: ModelFolders, kind: str, name: str, port: str) -> ModelFile:
    try:
        return folders.resolve(kind, name)
    except ModelNotFoundError as exc:
        raise exc.with_defaults(port=port) from None


def _embedding_file(folders: ModelFolders, written: str, port: str) -> ModelFile:
    """``embedding:name`` as ComfyUI finds it: the name as written, else with a known suffix."""
    names = folders.names("embeddings")
    wanted = written.replace("\\", "/")
    for candidate in (wanted, *(wanted + s for s in KINDS["embeddings"].suffixes)):
        if candidate in names:
            return folders.resolve("embeddings", candidate)
    known = ", ".join(f"'{n}'" for n in names) or "none"
    raise InvalidGenerationRequest(
        f"{port} uses 'embedding:{written}', but no such embedding is under embeddings_dir "
        f"('{folders.folder('embeddings')}'; known: {known})",
        port=port,
        embedding=written,
    )


# -- device thread ---------------------------------------------------------------------------


@dataclass
class _PartsState:
    """What has been put on one cached pipeline."""

    adapters: OrderedDict[str, None] = field(default_factory=OrderedDict)  # LRU order
    active: tuple[Any, ...] | None = ()  # the adapter set now active; None: unknown
    embeddings: set[str] = field(default_factory=set)
    vaes: dict[str, Any] = field(default_factory=dict)  # sha256 -> AutoencoderKL
    base_vae: Any = None
    switches: int = 0  # adapter set changes (for tests and benchmarks)
    adapter_loads: int = 0
    fuse: FuseState = field(default_factory=FuseState)  # the stack fused into the weights


def state_of(entry: LoadedPipeline) -> _PartsState:
    """The parts state of a cached pipeline (made on first use)."""
    if entry.parts is None:  # under entry.lock, like every use
        entry.parts = _PartsState(base_vae=entry.pipe.vae)
    state: _PartsState = entry.parts
    return state


def apply_parts(
    entry: LoadedPipeline, pipe: Any, parts: Sequence[ModelParts | None], fuse_mode: str = "never"
) -> dict[str, Any]:
    """Make ``pipe`` (a variant of ``entry``'s pipeline) run with the batch's parts; the extra
    call arguments. All items of a batch share LoRAs, VAE and CLIP skip (the batch key);
    their embeddings are all loaded. ``fuse_mode``: ``diffusion.lora_fuse``."""
    first = parts[0] if parts else None
    state = state_of(entry)
    base = entry.pipe
    for item in parts:
        for embedding in item.embeddings if item is not None else ():
            if embedding.sha256 not in state.embeddings:
                _load_embedding(base, embedding)
                state.embeddings.add(embedding.sha256)
    loras = first.loras if first is not None else ()
    stack = tuple((lora.adapter, lora.strength_model, lora.strength_clip) for lora in loras)
    fusing = state.fuse
    want = wants_fuse(fuse_mode, fusing, stack, len(parts))
    if fusing.stack is not None and (fusing.stack != stack or not want):
        restore(fusing)  # before peft sees the model again: the wrappers go back in
    for lora in loras:
        _ensure_adapter(entry, state, lora, keep={x.adapter for x in loras})
    if fusing.stack is None:
        _activate(base, state, loras)
        if want and state.adapters:
            fuse(lora_components(base), fusing, stack)
    fusing.previous = stack
    vae = state.base_vae
    if first is not None and first.vae is not None and first.vae_sha256 is not None:
        vae = state.vaes.get(first.vae_sha256)
        if vae is None:
            vae = state.vaes[first.vae_sha256] = _load_vae(entry, first.vae)
    if pipe.vae is not vae:
        pipe.register_modules(vae=vae)
    clip_skip = first.clip_skip if first is not None else 0
    if clip_skip:
        _clip_skip_shim(base)
    return {"clip_skip": clip_skip} if clip_skip else {}


def _clip_skip_shim(pipe: Any) -> None:
    """diffusers' SD pipeline applies CLIP skip through ``text_encoder.text_model.
    final_layer_norm``; transformers 5's ``CLIPTextModel`` has ``final_layer_norm`` itself."""
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is None or "text_model" in encoder.__dict__ or hasattr(encoder, "text_model"):
        return
    from types import SimpleNamespace

    # Outside the module tree (no submodule registered): only this lookup sees it.
    object.__setattr__(
        encoder, "text_model", SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    )


def _ensure_adapter(
    entry: LoadedPipeline, state: _PartsState, lora: ResolvedLora, keep: set[str]
) -> None:
    name = lora.adapter
    if name in state.adapters:
        state.adapters.move_to_end(name)
        return
    pipe = entry.pipe
    while len(state.adapters) >= MAX_ADAPTERS:
        old = next((a for a in state.adapters if a not in keep), None)
        if old is None:
            break
        del state.adapters[old]
        pipe.delete_adapters(old)
        state.active = None
    weights = load_weights(lora.file.path)
    try:
        with warnings.catch_warnings():  # peft's note on a second adapter: that is the point
            warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
            pipe.load_lora_weights(dict(weights), adapter_name=name)
    except Exception as exc:
        raise ModelLoadError(
            f"LoRA '{lora.name}' could not be applied to model '{entry.spec.name}': "
            f"{type(exc).__name__}: {exc}",
            port="model",
            lora=lora.name,
        ) from exc
    present = {a for names in pipe.get_list_adapters().values() for a in names}
    if name not in present:
        raise ModelLoadError(
            f"LoRA '{lora.name}' has no weights that match model '{entry.spec.name}' "
            f"({entry.spec.arch}); is it made for another architecture (SD 1.5 / SDXL)?",
            port="model",
            lora=lora.name,
        )
    state.adapters[name] = None
    state.adapter_loads += 1
    state.active = None


def _activate(pipe: Any, state: _PartsState, loras: Sequence[ResolvedLora]) -> None:
    """Set the active adapters and their strengths per component (UNet, text encoders)."""
    wanted = tuple((lora.adapter, lora.strength_model, lora.strength_clip) for lora in loras)
    if wanted == state.active or (not wanted and not state.adapters):
        state.active = wanted
        return
    from diffusers.loaders.lora_base import (
        disable_lora_for_text_encoder,
        enable_lora_for_text_encoder,
        set_adapters_for_text_encoder,
    )

    listed = pipe.get_list_adapters()
    for component, present in listed.items():
        model = getattr(pipe, component)
        use = [(a, m, c) for a, m, c in wanted if a in present]
        text = component in TEXT_ENCODERS
        if not use:
            (disable_lora_for_text_encoder(model) if text else model.disable_lora())
            continue
        names = [a for a, _, _ in use]
        weights = [c if text else m for _, m, c in use]
        if text:
            enable_lora_for_text_encoder(model)
            set_adapters_for_text_encoder(names, model, weights)
        else:
            model.enable_lora()
            model.set_adapters(names, weights)
    state.active = wanted
    state.switches += 1


def _load_embedding(pipe: Any, embedding: ResolvedEmbedding) -> None:
    weights = load_weights(embedding.file.path)
    try:
        if "clip_l" in weights and "clip_g" in weights:  # SDXL: one vector set per encoder
            for key, suffix in (("clip_l", ""), ("clip_g", "_2")):
                pipe.load_textual_inversion(
                    weights[key], token=embedding.token,
                    text_encoder=getattr(pipe, "text_encoder" + suffix),
                    tokenizer=getattr(pipe, "tokenizer" + suffix),
                )  # fmt: skip
        else:
            pipe.load_textual_inversion(dict(weights), token=embedding.token)
    except Exception as exc:
        raise ModelLoadError(
            f"embedding '{embedding.file.name}' could not be loaded: {type(exc).__name__}: {exc}",
            port="prompt",
            embedding=embedding.name,
        ) from exc


def _load_vae(entry: LoadedPipeline, file: ModelFile) -> Any:
    """A VAE file (original LDM layout, or diffusers') as an ``AutoencoderKL`` like the
    pipeline's own (its config, dtype and device)."""
    from diffusers import AutoencoderKL

    base = entry.pipe.vae
    weights = load_weights(file.path)
    try:
        if any(k.startswith("encoder.down_blocks.") for k in weights):  # diffusers layout
            vae = AutoencoderKL.from_config(base.config)
            vae.load_state_dict(weights)
        else:
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            vae = AutoencoderKL.from_config(base.config)
            vae.load_state_dict(convert_ldm_vae_checkpoint(weights, dict(base.config)))
    except Exception as exc:
        raise ModelLoadError(
            f"VAE '{file.name}' does not fit model '{entry.spec.name}': "
            f"{type(exc).__name__}: {exc}",
            port="model",
            vae=file.name,
        ) from exc
    return vae.to(device=base.device, dtype=base.dtype).eval()
