"""Collapses a checked ComfyUI prompt into one Takeflow canvas graph (``takeflow.graph/v1``).

ComfyUI node outputs are symbolic here: MODEL/CLIP/VAE name a model, CONDITIONING is a prompt
text, LATENT is an empty canvas (size, batch) or an encoded image, IMAGE is a list of Takeflow
outputs. Each KSampler becomes one Takeflow generation node per image (``image_generation``, or
``image_to_image`` on a VAEEncode'd image), LoadImage a ``load_asset`` node. The translation keeps
maps back to ComfyUI node ids (for events) and inputs (for validation errors).
"""

from __future__ import annotations

import graphlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from server.comfy import translate_inpaint as inpaint
from server.comfy import translate_upscale as upscale
from server.comfy import translate_video as video
from server.comfy.catalog import SAMPLER_NOTES, SAMPLERS, SIGMA_SAMPLERS, SIGMAS, Catalog
from server.comfy.errors import NodeErrors, PromptRejected, input_error, is_link
from server.comfy.files import PathRefused, check_prefix
from server.comfy.translate_control import (
    SAMPLER_CLASSES,
    canny_images,
    conditioning_source,
    control_inputs,
    fix_ports,
    sampler_inputs,
)
from server.comfy.translate_lora import sampler_model
from server.comfy.validate import as_float, as_int

SEED_SPACE = 2**32  # Takeflow's seeds are 32-bit; ComfyUI's 64-bit seeds are taken modulo
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_UNSAFE_FILE = re.compile(r"[^A-Za-z0-9._-]+")
Ref = tuple[str, str]  # (Takeflow node id, output port)


@dataclass
class OutputPlan:
    """A ComfyUI output node: what it does with which Takeflow outputs."""

    node: str
    kind: str  # SaveImage | PreviewImage | SaveImageWebsocket | translate_video.OUTPUT_NODES
    refs: list[Ref]
    prefix: str = "ComfyUI"


@dataclass
class Translation:
    """The Takeflow graph and everything needed to speak ComfyUI about it afterwards."""

    graph: dict[str, Any]
    owners: dict[str, str]  # Takeflow node -> ComfyUI node
    samplers: dict[str, list[str]]  # ComfyUI KSampler -> its Takeflow nodes, batch order
    outputs: list[OutputPlan]
    order: list[str]  # ComfyUI nodes that run, in dependency order
    deps: dict[str, list[str]]  # ComfyUI node -> the ComfyUI nodes it links from
    classes: dict[str, str]  # ComfyUI node -> class_type
    ports: dict[str, list[str]]  # "tfnode|port" -> [ComfyUI node, input]
    imports: dict[str, str] = field(default_factory=dict)  # asset id -> input-folder file
    notes: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)  # ComfyUI nodes answered from the cache

    def cached_nodes(self, hits: set[str]) -> list[str]:
        """The ComfyUI nodes that the node cache answers, given the Takeflow nodes it holds.

        A ComfyUI node is cached when every Takeflow node it takes part in is a hit: those it
        became, and those made from its ancestors or descendants (a loader or a prompt is folded
        into the generation nodes it feeds; an output node saves what its ancestors made). The
        keys are Takeflow's: a node's template, literal values and its inputs' keys, not node ids
        (a LoadImage's asset id carries its file's content hash), as ComfyUI's cache keys are.
        """
        made: dict[str, set[str]] = {}
        for tf_node, owner in self.owners.items():
            made.setdefault(owner, set()).add(tf_node)
        for output in self.outputs:
            made.setdefault(output.node, set()).update(ref[0] for ref in output.refs)
        related: dict[str, set[str]] = {nid: {nid} for nid in self.order}
        for nid in self.order:  # dependency order: each node's ancestors are known before it
            for dep in self.deps.get(nid, []):
                related[nid] |= related.get(dep, set())
        descendants: dict[str, set[str]] = {nid: set() for nid in self.order}
        for nid, ancestors in related.items():
            for ancestor in ancestors:
                descendants.setdefault(ancestor, set()).add(nid)
        cached = []
        for nid in self.order:
            involved = set().union(*(made.get(n, set()) for n in related[nid] | descendants[nid]))
            if involved and involved <= hits:
                cached.append(nid)
        return cached

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Translation:
        body = dict(raw)
        body["outputs"] = [
            OutputPlan(o["node"], o["kind"], [(r[0], r[1]) for r in o["refs"]], o["prefix"])
            for o in body["outputs"]
        ]
        return cls(**body)


def _link(value: Any) -> tuple[str, int]:
    return str(value[0]), int(value[1])


class Translator:
    """One use: ``translate()`` a checked prompt (``server.comfy.validate``)."""

    def __init__(
        self,
        prompt: Mapping[str, Any],
        outputs: list[str],
        needed: list[str],
        catalog: Catalog,
        input_dir: Path,
        name: str = "comfyui",
    ) -> None:
        self.prompt = prompt
        self.output_ids = outputs
        self.needed = needed
        self.catalog = catalog
        self.input_dir = input_dir
        self.name = name
        self.errors = NodeErrors(prompt, outputs)
        self.nodes: list[dict[str, Any]] = []
        self.owners: dict[str, str] = {}
        self.ports: dict[str, list[str]] = {}
        self.samplers: dict[str, list[str]] = {}
        self.imports: dict[str, str] = {}
        self.notes: list[str] = []
        self.controls: dict[str, Ref] = {}  # ControlNet apply node (in a chain) -> its control
        self._images: dict[str, list[Ref]] = {}
        self._ids: set[str] = set()

    # -- helpers ----------------------------------------------------------------------------

    def _inputs(self, nid: str) -> Mapping[str, Any]:
        inputs: Mapping[str, Any] = self.prompt[nid].get("inputs", {})
        return inputs

    def _source(self, nid: str, name: str) -> tuple[str, int]:
        return _link(self._inputs(nid)[name])

    def _class(self, nid: str) -> str:
        return str(self.prompt[nid]["class_type"])

    def _fail(self, nid: str, message: str, details: str, name: str | None = None) -> None:
        received = self._inputs(nid).get(name) if name else None
        self.errors.add(nid, input_error("custom_validation_failed", message, details, name,
                                         None, received))  # fmt: skip

    def _new_id(self, prefix: str, comfy_id: str) -> str:
        base = f"{prefix}_{_UNSAFE.sub('_', comfy_id)[:40]}"
        candidate, n = base, 1
        while candidate in self._ids:
            n += 1
            candidate = f"{base}_{n}"
        self._ids.add(candidate)
        return candidate

    def _add(self, tf_id: str, template: str, owner: str, inputs: dict[str, Any],
             ports: dict[str, tuple[str, str]]) -> None:  # fmt: skip
        wired = {
            port: {"kind": "link", "node": v[0], "output": v[1]}
            if isinstance(v, tuple)
            else {"kind": "literal", "value": v}
            for port, v in inputs.items()
        }
        self.nodes.append({"id": tf_id, "template": template, "inputs": wired})
        self.owners[tf_id] = owner
        for port, (comfy_node, comfy_input) in ports.items():
            self.ports[f"{tf_id}|{port}"] = [comfy_node, comfy_input]

    # -- values -----------------------------------------------------------------------------

    def images(self, nid: str, index: int) -> list[Ref]:
        """The Takeflow outputs behind ComfyUI output ``index`` of node ``nid`` (an IMAGE)."""
        key = f"{nid}:{index}"
        if key not in self._images:
            self._images[key] = self._make_images(nid, index)
        return self._images[key]

    def _make_images(self, nid: str, index: int) -> list[Ref]:
        cls = self._class(nid)
        if cls == "LoadImage":
            return [(self._load_image(nid), "image")]
        if cls in inpaint.IMAGE_NODES:
            return inpaint.images(self, nid, index)
        if cls in upscale.IMAGE_NODES:
            return upscale.images(self, nid, cls)
        if cls == "Canny":
            return canny_images(self, nid)
        if cls in video.IMAGE_NODES:
            return video.images(self, nid, index)
        if cls == "VAEDecode":
            src, _ = self._source(nid, "samples")
            src_cls = self._class(src)
            if src_cls in SAMPLER_CLASSES:
                return [(tf, "image") for tf in self.sampler(src)]
            if src_cls == "VAEEncode":
                return self.images(*self._source(src, "pixels"))
            if src_cls in upscale.LATENT_UPSCALES:
                return upscale.latent_images(self, src)
            self._fail(nid, "Unsupported latent", "samples: decode a KSampler's output", "samples")
            return []
        raise AssertionError(f"{cls} has no IMAGE output")  # the link type check ran first

    def _load_image(self, nid: str) -> str:
        name = str(self._inputs(nid)["image"])
        path = (self.input_dir / name).resolve()
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError as exc:
            self._fail(nid, "Image not readable", f"image: {name}: {exc}", "image")
            digest = "0" * 12
        safe = _UNSAFE_FILE.sub("_", Path(name).name).strip("._") or "image.png"
        asset_id = f"uploads/comfyui/{digest}-{safe[:80]}"
        self.imports[asset_id] = name
        tf_id = self._new_id("load", nid)
        self._add(tf_id, "load_asset", nid, {"asset": f"asset://{asset_id}"},
                  {"asset": (nid, "image")})  # fmt: skip
        return tf_id

    def _text(self, nid: str, name: str) -> str:
        src, _ = conditioning_source(self, nid, name)
        return str(self._inputs(src).get("text", ""))

    def _sigmas(self, nid: str, sampler_name: str, schedule: str) -> str:
        """The templates' ``sigmas`` for a ComfyUI scheduler, noting an approximation."""
        sigmas = SIGMAS.get(schedule)
        if sigmas is None:
            self.notes.append(
                f"node {nid}: scheduler '{schedule}' has no Takeflow counterpart; the model's own "
                "noise schedule ('normal') was used"
            )
            return "default"
        if sigmas != "default" and SAMPLERS[sampler_name] not in SIGMA_SAMPLERS:
            self.notes.append(
                f"node {nid}: sampler '{sampler_name}' cannot space its noise levels as "
                f"'{schedule}' in diffusers; the model's own noise schedule ('normal') was used"
            )
            return "default"
        return sigmas

    def sampler(self, nid: str) -> list[str]:
        """The Takeflow generation nodes of a KSampler (one per image), made once."""
        if nid in self.samplers:
            return self.samplers[nid]
        self.samplers[nid] = []
        inputs = sampler_inputs(self, nid)
        model, model_port = sampler_model(self, nid)  # LoRAs, CLIP skip, VAE: translate_lora
        pos_node, _ = conditioning_source(self, nid, "positive")
        neg_node, _ = conditioning_source(self, nid, "negative")
        latent_node, _ = self._source(nid, "latent_image")
        steps, cfg = as_int(inputs["steps"]), as_float(inputs["cfg"])
        seed, denoise = as_int(inputs["seed"]), as_float(inputs["denoise"])
        sampler_name, schedule = str(inputs["sampler_name"]), str(inputs["scheduler"])
        sampler, sigmas = SAMPLERS[sampler_name], self._sigmas(nid, sampler_name, schedule)
        if sampler_name in SAMPLER_NOTES:
            self.notes.append(
                f"node {nid}: sampler '{sampler_name}': {SAMPLER_NOTES[sampler_name]}"
            )
        common: dict[str, Any] = {
            "prompt": self._text(nid, "positive"),
            "negative_prompt": self._text(nid, "negative"),
            "guidance": cfg,
            "scheduler": sampler,
            "sigmas": sigmas,
            "model": model,
            **control_inputs(self, nid),
        }
        ports: dict[str, tuple[str, str]] = {
            "prompt": (pos_node, "text"),
            "negative_prompt": (neg_node, "text"),
            "guidance": (nid, "cfg"),
            "scheduler": (nid, "sampler_name"),
            "sigmas": (nid, "scheduler"),
            "model": model_port,
            "seed": (nid, "seed"),
            "steps": (nid, "steps"),
        }
        latent_cls = self._class(latent_node)
        made: list[str] = []
        if latent_cls == "EmptyLatentImage":
            latent = self._inputs(latent_node)
            if denoise < 1.0:
                why = "denoise: below 1 needs a VAEEncode'd image as latent_image"
                self._fail(nid, "Unsupported denoise", why, "denoise")
            for b in range(as_int(latent["batch_size"])):
                tf_id = self._new_id("ksampler", nid if b == 0 else f"{nid}_b{b}")
                size = {"width": as_int(latent["width"]), "height": as_int(latent["height"])}
                values: dict[str, Any] = {
                    **common,
                    **size,
                    "steps": steps,
                    "seed": (seed + b) % SEED_SPACE,
                }
                self._add(tf_id, "image_generation", nid, values,
                          {**ports, "width": (latent_node, "width"),
                           "height": (latent_node, "height")})  # fmt: skip
                made.append(tf_id)
        elif latent_cls == "VAEEncode" or latent_cls in upscale.LATENT_UPSCALES:
            pixels = upscale.latent_images(self, latent_node)  # hires fix: an upscaled latent
            pixels_in = "pixels" if latent_cls == "VAEEncode" else "samples"
            # ComfyUI runs the last `steps` of a `steps / denoise` schedule; diffusers runs
            # int(num_inference_steps * strength) steps: the same count of denoising steps.
            total = max(1, round(steps / denoise)) if denoise > 0 else steps
            for b, ref in enumerate(pixels):
                tf_id = self._new_id("ksampler", nid if b == 0 else f"{nid}_b{b}")
                values = {**common, "steps": total, "seed": (seed + b) % SEED_SPACE,
                          "strength": denoise, "image": ref}  # fmt: skip
                self._add(tf_id, "image_to_image", nid, values,
                          {**ports, "strength": (nid, "denoise"),
                           "image": (latent_node, pixels_in)})  # fmt: skip
                made.append(tf_id)
        elif latent_cls in inpaint.INPAINT_LATENTS:
            made = inpaint.sample(self, nid, latent_node, common, ports, steps, seed)
        else:
            self._fail(nid, "Unsupported latent",
                       f"latent_image: a {latent_cls} output cannot be sampled again; decode it "
                       "and VAEEncode the image", "latent_image")  # fmt: skip
        self.samplers[nid] = made
        fix_ports(self, nid)
        return made

    # -- whole prompt -----------------------------------------------------------------------

    def _order(self) -> tuple[list[str], dict[str, list[str]]]:
        deps = {
            nid: sorted({str(v[0]) for v in self._inputs(nid).values() if is_link(v)})
            for nid in self.needed
        }
        sorter = graphlib.TopologicalSorter(deps)
        order: list[str] = []
        try:
            sorter.prepare()
            while sorter.is_active():  # ready nodes by id, numbers numerically: a stable order
                ready = sorted(sorter.get_ready(), key=_natural)
                order.extend(ready)
                sorter.done(*ready)
        except graphlib.CycleError as exc:
            raise PromptRejected(
                "invalid_prompt", "Invalid prompt: the nodes form a dependency cycle",
                " -> ".join(str(n) for n in exc.args[1]),
            ) from None  # fmt: skip
        return order, deps

    def translate(self) -> Translation:
        order, deps = self._order()
        video.check_links(self)  # a video's frames feed the nodes that encode sequences only
        plans: list[OutputPlan] = []
        for nid in order:
            if nid not in self.output_ids:
                continue
            if self._class(nid) in video.OUTPUT_NODES:
                refs = video.output_refs(self, nid)
            else:
                refs = self.images(*self._source(nid, "images"))
            prefix = str(self._inputs(nid).get("filename_prefix", "ComfyUI"))
            plans.append(OutputPlan(nid, self._class(nid), refs, prefix))
        consumed = {
            v["node"] for n in self.nodes for v in n["inputs"].values() if v["kind"] == "link"
        }
        for plan in plans:
            plan.refs = video.keep_saved(self, plan)  # a batch also saved as an animation
            if any(ref[0] in consumed for ref in plan.refs):
                self._fail(plan.node, "Unsupported output",
                           "images: an image that feeds another sampler cannot also be saved "
                           "(Takeflow keeps the final images of a graph)", "images")  # fmt: skip
            saves = plan.kind == "SaveImage" or plan.kind in video.OUTPUT_NODES
            if saves and not _safe_prefix(plan.prefix):
                self._fail(plan.node, "Saving image outside the output folder is not allowed.",
                           f"filename_prefix: {plan.prefix!r}", "filename_prefix")  # fmt: skip
            elif saves:
                try:
                    check_prefix(plan.prefix)
                except PathRefused as refused:
                    self._fail(
                        plan.node, "Invalid filename_prefix", refused.message, "filename_prefix"
                    )
        self.errors.raise_if_any()
        graph = {"format": "takeflow.graph/v1", "name": self.name, "nodes": self.nodes}
        return Translation(
            graph=graph,
            owners=self.owners,
            samplers=self.samplers,
            outputs=plans,
            order=order,
            deps=deps,
            classes={nid: self._class(nid) for nid in order},
            ports=self.ports,
            imports=self.imports,
            notes=self.notes,
        )


def _natural(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def _safe_prefix(prefix: str) -> bool:
    parts = prefix.replace("\\", "/").split("/")
    return bool(prefix) and not prefix.startswith("/") and ".." not in parts and ":" not in prefix
