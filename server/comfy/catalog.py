"""The ComfyUI node types Takeflow understands, described as ComfyUI's ``/object_info`` does.

Each type lists its inputs (``INT``/``FLOAT``/``STRING``, a combo of choices, or a link type
such as ``MODEL`` or ``IMAGE``) and its outputs by position. Ranges of inputs that map one to one
onto a Takeflow template input (sizes, steps, cfg) are read from that template, so what
``/object_info`` advertises is what Takeflow's validation enforces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.comfy.bridge import Limits

LINK_TYPES = frozenset(
    {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "UPSCALE_MODEL",
     "CONTROL_NET", "VIDEO", "AUDIO"}
)  # fmt: skip
MAX_SEED = 2**64 - 1
MAX_BATCH = 64

# ComfyUI sampler names -> Takeflow sampler names (the diffusion templates' ``scheduler``): the
# same method in diffusers. Where diffusers runs another variant or order of that method, the
# prompt's history and take record it (SAMPLER_NOTES).
SAMPLERS: dict[str, str] = {
    "euler": "euler",
    "euler_ancestral": "euler_a",
    "heun": "heun",
    "dpmpp_2m": "dpm++",
    "dpmpp_2m_sde": "dpm++_sde",
    "dpmpp_2m_sde_gpu": "dpm++_sde",
    "ddpm": "ddpm",
    "ddim": "ddim",
    "uni_pc": "unipc",
    "uni_pc_bh2": "unipc",
    "deis": "deis",
}
SAMPLER_NOTES: dict[str, str] = {
    "uni_pc": "diffusers' UniPC runs the bh2 variant of order 2 (ComfyUI's uni_pc: bh1, order 3)",
    "uni_pc_bh2": "diffusers' UniPC runs order 2 (ComfyUI's uni_pc_bh2: order 3)",
    "deis": "diffusers' DEIS runs order 2 (ComfyUI's deis: order 3)",
}
# ComfyUI samplers without a faithful counterpart among the Takeflow samplers: refused
# (``value_not_in_list``) with this reason.
REFUSED_SAMPLERS: dict[str, str] = {
    "dpmpp_sde": "DPM++ SDE (single-step) has no Takeflow sampler; dpmpp_2m_sde is the multistep "
    "SDE variant",
    "dpmpp_sde_gpu": "DPM++ SDE (single-step) has no Takeflow sampler; dpmpp_2m_sde is the "
    "multistep SDE variant",
    "dpmpp_2s_ancestral": "no ancestral single-step DPM++ in diffusers",
    "dpm_2": "KDPM2 is not among the Takeflow samplers",
    "dpm_2_ancestral": "KDPM2 ancestral is not among the Takeflow samplers",
    "lms": "LMS is not among the Takeflow samplers",
    "lcm": "LCM needs an LCM model and scheduler",
}
# ComfyUI's noise schedules -> the templates' ``sigmas``: ``normal`` is the model's own spacing,
# ``karras`` / ``exponential`` diffusers' spacings of the same names (for the samplers that can
# space their sigmas, SIGMA_SAMPLERS). The others, and karras/exponential with another sampler,
# run with the model's own spacing and the prompt's history records the approximation.
SCHEDULERS: tuple[str, ...] = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "linear_quadratic",
    "kl_optimal",
)
SIGMAS: dict[str, str] = {"normal": "default", "karras": "karras", "exponential": "exponential"}
# Takeflow samplers that accept ``sigmas`` other than ``default`` (the diffusion pack's
# ``SIGMA_SCHEDULERS``; tests/comfy/test_translate.py checks they agree).
SIGMA_SAMPLERS = frozenset({"euler", "dpm++", "dpm++_sde", "dpm++_2s", "heun", "unipc", "deis"})


@dataclass(frozen=True)
class Input:
    """One input: ``kind`` is INT, FLOAT, STRING, BOOLEAN, COMBO or a link type."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    choices: Callable[[Catalog], list[str]] | None = None
    limits_from: tuple[str, str] | None = None  # (template, port) whose range applies
    required: bool = True
    refused: dict[str, str] = field(default_factory=dict)  # known values left out, and why


@dataclass(frozen=True)
class NodeType:
    name: str
    display_name: str
    category: str
    description: str
    inputs: tuple[Input, ...]
    outputs: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    output_node: bool = False

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)


class Catalog:
    """The node types, with choices (models, input files) and ranges read when asked."""

    def __init__(
        self,
        models: Callable[[], list[str]],
        input_files: Callable[[], list[str]],
        limits: Callable[[str, str], Limits],
        folder_names: Callable[[str], list[str]] = lambda kind: [],
    ) -> None:
        self.models = models
        self.input_files = input_files
        self.limits = limits
        self.folder_names = folder_names  # model part files by folder kind ("upscale_models")
        self.types = {t.name: t for t in (*NODE_TYPES, *CONTROL_NODE_TYPES, *VIDEO_NODE_TYPES)}

    def get(self, class_type: str) -> NodeType | None:
        return self.types.get(class_type)

    def choices(self, spec: Input) -> list[str]:
        return spec.choices(self) if spec.choices is not None else []

    def options(self, spec: Input) -> dict[str, Any]:
        """The input's options, with the range of the Takeflow input it maps onto."""
        options = dict(spec.options)
        if spec.limits_from is not None:
            limits = self.limits(*spec.limits_from)
            if limits.default is not None and "default" not in options:
                options["default"] = limits.default
            if limits.minimum is not None:
                options["min"] = limits.minimum
            if limits.maximum is not None:
                options["max"] = limits.maximum
            if limits.multiple_of:
                options["step"] = limits.multiple_of
        return options

    def input_config(self, spec: Input) -> list[Any]:
        """``[TYPE, {opts}]``, or ``[[choices], {opts}]`` for a combo."""
        head: Any = self.choices(spec) if spec.kind == "COMBO" else spec.kind
        return [head, self.options(spec)]

    def describe(self, node: NodeType) -> dict[str, Any]:
        """One ``/object_info`` entry."""
        required = {i.name: self.input_config(i) for i in node.inputs if i.required}
        optional = {i.name: self.input_config(i) for i in node.inputs if not i.required}
        body: dict[str, Any] = {
            "input": {"required": required},
            "input_order": {"required": list(required)},
            "output": list(node.outputs),
            "output_is_list": [False] * len(node.outputs),
            "output_name": list(node.output_names or node.outputs),
            "name": node.name,
            "display_name": node.display_name,
            "description": node.description,
            "python_module": "takeflow",
            "category": node.category,
            "output_node": node.output_node,
        }
        if optional:
            body["input"]["optional"] = optional
            body["input_order"]["optional"] = list(optional)
        if node.output_node:
            body["input"]["hidden"] = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
        return body

    def object_info(self) -> dict[str, Any]:
        return {name: self.describe(node) for name, node in self.types.items()}


def _models(catalog: Catalog) -> list[str]:
    return catalog.models()


def _input_files(catalog: Catalog) -> list[str]:
    """LoadImage's choices: the input folder without its videos (LoadVideo lists those)."""
    return [f for f in catalog.input_files() if not f.lower().endswith(VIDEO_FILES)]


def _loras(catalog: Catalog) -> list[str]:
    return catalog.folder_names("loras")


def _vaes(catalog: Catalog) -> list[str]:
    return catalog.folder_names("vae")


def _samplers(_: Catalog) -> list[str]:
    return list(SAMPLERS)


def _schedulers(_: Catalog) -> list[str]:
    return list(SCHEDULERS)


def _upscale_models(catalog: Catalog) -> list[str]:
    return catalog.folder_names("upscale_models")


# ComfyUI's resampling methods -> scale_image's ``resample`` (bislerp: bicubic, noted)
IMAGE_SCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
LATENT_SCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")

_GEN = "image_generation"
_I2I = "image_to_image"

NODE_TYPES: tuple[NodeType, ...] = (
    NodeType(
        "CheckpointLoaderSimple", "Load Checkpoint", "loaders",
        "A diffusion model from Takeflow's model registry (by name or checkpoint path).",
        (Input("ckpt_name", "COMBO", choices=_models),),
        ("MODEL", "CLIP", "VAE"),
    ),
    NodeType(
        "CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
        "A prompt for a sampler (encoded by the sampler's model).",
        (Input("text", "STRING", {"multiline": True, "dynamicPrompts": True}),
         Input("clip", "CLIP")),
        ("CONDITIONING",),
    ),
    NodeType(
        "EmptyLatentImage", "Empty Latent Image", "latent",
        "Start from noise: the image size and how many images to make.",
        (Input("width", "INT", {"default": 512}, limits_from=(_GEN, "width")),
         Input("height", "INT", {"default": 512}, limits_from=(_GEN, "height")),
         Input("batch_size", "INT", {"default": 1, "min": 1, "max": MAX_BATCH})),
        ("LATENT",),
    ),
    NodeType(
        "KSampler", "KSampler", "sampling",
        "One Takeflow generation per image: text to image, or image to image when the latent "
        "is a VAEEncode'd image and denoise < 1.",
        (Input("model", "MODEL"),
         Input("seed", "INT", {"default": 0, "min": 0, "max": MAX_SEED,
                               "control_after_generate": True}),
         Input("steps", "INT", {"default": 20}, limits_from=(_GEN, "steps")),
         Input("cfg", "FLOAT", {"default": 8.0, "step": 0.1, "round": 0.01},
               limits_from=(_GEN, "guidance")),
         Input("sampler_name", "COMBO", choices=_samplers, refused=REFUSED_SAMPLERS),
         Input("scheduler", "COMBO", choices=_schedulers),
         Input("positive", "CONDITIONING"),
         Input("negative", "CONDITIONING"),
         Input("latent_image", "LATENT"),
         Input("denoise", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})),
        ("LATENT",),
    ),
    NodeType(
        "VAEDecode", "VAE Decode", "latent", "The sampled image.",
        (Input("samples", "LATENT"), Input("vae", "VAE")),
        ("IMAGE",),
    ),
    NodeType(
        "VAEEncode", "VAE Encode", "latent", "An image as the start of image to image.",
        (Input("pixels", "IMAGE"), Input("vae", "VAE")),
        ("LATENT",),
    ),
    NodeType(
        "SaveImage", "Save Image", "image",
        "Saves the images to the output folder (and as a take of the Takeflow project).",
        (Input("images", "IMAGE"),
         Input("filename_prefix", "STRING", {"default": "ComfyUI"})),
        output_node=True,
    ),
    NodeType(
        "PreviewImage", "Preview Image", "image", "Saves the images to the temp folder.",
        (Input("images", "IMAGE"),),
        output_node=True,
    ),
    NodeType(
        "SaveImageWebsocket", "SaveImageWebsocket", "api node/image",
        "Sends the images over the WebSocket as binary PNG frames.",
        (Input("images", "IMAGE"),),
        output_node=True,
    ),
    NodeType(
        "LoadImage", "Load Image", "image", "An image from the input folder (upload it first).",
        (Input("image", "COMBO", {"image_upload": True}, choices=_input_files),),
        ("IMAGE", "MASK"),
    ),
    # Masks, inpaint and outpaint: translated by server.comfy.translate_inpaint.
    NodeType(
        "LoadImageMask", "Load Image (as Mask)", "mask",
        "A mask from an input-folder image's channel (alpha: its transparent part).",
        (Input("image", "COMBO", {"image_upload": True}, choices=_input_files),
         Input("channel", "COMBO", choices=lambda _: ["alpha", "red", "green", "blue"])),
        ("MASK",),
    ),
    NodeType(
        "ImageToMask", "Convert Image to Mask", "mask", "One channel of an image as a mask.",
        (Input("image", "IMAGE"),
         Input("channel", "COMBO", choices=lambda _: ["red", "green", "blue", "alpha"])),
        ("MASK",),
    ),
    NodeType(
        "VAEEncodeForInpaint", "VAE Encode (for Inpainting)", "latent/inpaint",
        "An image and the mask to repaint (grown by grow_mask_by): a KSampler on it inpaints.",
        (Input("pixels", "IMAGE"), Input("vae", "VAE"), Input("mask", "MASK"),
         Input("grow_mask_by", "INT", {"default": 6, "min": 0, "max": 64, "step": 1})),
        ("LATENT",),
    ),
    NodeType(
        "SetLatentNoiseMask", "Set Latent Noise Mask", "latent/inpaint",
        "Limit a VAEEncode'd image's sampling to the mask.",
        (Input("samples", "LATENT"), Input("mask", "MASK")),
        ("LATENT",),
    ),
    NodeType(
        "InpaintModelConditioning", "InpaintModelConditioning", "conditioning/inpaint",
        "Prompts, image and mask for an inpainting (9-channel) or ordinary checkpoint.",
        (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
         Input("vae", "VAE"), Input("pixels", "IMAGE"), Input("mask", "MASK"),
         Input("noise_mask", "BOOLEAN", {"default": True})),
        ("CONDITIONING", "CONDITIONING", "LATENT"),
        ("positive", "negative", "latent"),
    ),
    NodeType(
        "ImagePadForOutpaint", "Pad Image for Outpainting", "image",
        "The image on a larger canvas (new area mid grey) and a mask over the new area.",
        (Input("image", "IMAGE"),
         *(Input(side, "INT", {"default": 0, "min": 0, "max": 2048, "step": 8})
           for side in ("left", "top", "right", "bottom")),
         Input("feathering", "INT", {"default": 40, "min": 0, "max": 2048, "step": 1})),
        ("IMAGE", "MASK"),
    ),
    # Model parts (server/comfy/translate_lora.py): they change the symbolic MODEL/CLIP/VAE.
    NodeType(
        "LoraLoader", "Load LoRA", "loaders",
        "Adds a LoRA from Takeflow's loras folder to the model (UNet) and CLIP (text encoders).",
        (Input("model", "MODEL"), Input("clip", "CLIP"),
         Input("lora_name", "COMBO", choices=_loras),
         Input("strength_model", "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0,
                                           "step": 0.01}),
         Input("strength_clip", "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0,
                                          "step": 0.01})),
        ("MODEL", "CLIP"),
    ),
    NodeType(
        "LoraLoaderModelOnly", "LoraLoaderModelOnly", "loaders",
        "Adds a LoRA from Takeflow's loras folder to the model (UNet) only.",
        (Input("model", "MODEL"), Input("lora_name", "COMBO", choices=_loras),
         Input("strength_model", "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0,
                                           "step": 0.01})),
        ("MODEL",),
    ),
    NodeType(
        "CLIPSetLastLayer", "CLIP Set Last Layer", "conditioning",
        "CLIP skip: the text encoder layer whose output conditions the model (-1: the last).",
        (Input("clip", "CLIP"),
         Input("stop_at_clip_layer", "INT", {"default": -1, "min": -12, "max": -1, "step": 1})),
        ("CLIP",),
    ),
    NodeType(
        "VAELoader", "Load VAE", "loaders", "A VAE from Takeflow's vae folder.",
        (Input("vae_name", "COMBO", choices=_vaes),),
        ("VAE",),
    ),
    *(  # upscaling and the hires fix (server/comfy/translate_upscale.py)
        NodeType(
            "UpscaleModelLoader", "Load Upscale Model", "loaders",
            "An ESRGAN-family model from Takeflow's upscale_models folder.",
            (Input("model_name", "COMBO", choices=_upscale_models),),
            ("UPSCALE_MODEL",),
        ),
        NodeType(
            "ImageUpscaleWithModel", "Upscale Image (using Model)", "image/upscaling",
            "Takeflow's upscale_with_model, in tiles of 512 with 32 pixels of overlap.",
            (Input("upscale_model", "UPSCALE_MODEL"), Input("image", "IMAGE")),
            ("IMAGE",),
        ),
        NodeType(
            "ImageScale", "Upscale Image", "image/upscaling",
            "Takeflow's scale_image to a size (a side of 0 keeps the aspect ratio).",
            (Input("image", "IMAGE"),
             Input("upscale_method", "COMBO", choices=lambda _: list(IMAGE_SCALE_METHODS)),
             Input("width", "INT", {"default": 512, "min": 0, "max": 16384, "step": 1}),
             Input("height", "INT", {"default": 512, "min": 0, "max": 16384, "step": 1}),
             Input("crop", "COMBO", choices=lambda _: ["disabled", "center"])),
            ("IMAGE",),
        ),
        NodeType(
            "ImageScaleBy", "Upscale Image By", "image/upscaling",
            "Takeflow's scale_image by a factor.",
            (Input("image", "IMAGE"),
             Input("upscale_method", "COMBO", choices=lambda _: list(IMAGE_SCALE_METHODS)),
             Input("scale_by", "FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0,
                                         "step": 0.01})),
            ("IMAGE",),
        ),
        NodeType(
            "LatentUpscale", "Upscale Latent", "latent",
            "Done in pixel space: the latent's image is scaled and the next sampler encodes it "
            "(the prompt's history and take record the approximation).",
            (Input("samples", "LATENT"),
             Input("upscale_method", "COMBO", choices=lambda _: list(LATENT_SCALE_METHODS)),
             Input("width", "INT", {"default": 512, "min": 0, "max": 16384, "step": 8}),
             Input("height", "INT", {"default": 512, "min": 0, "max": 16384, "step": 8}),
             Input("crop", "COMBO", choices=lambda _: ["disabled", "center"])),
            ("LATENT",),
        ),
        NodeType(
            "LatentUpscaleBy", "Upscale Latent By", "latent",
            "Done in pixel space: the latent's image is scaled and the next sampler encodes it "
            "(the prompt's history and take record the approximation).",
            (Input("samples", "LATENT"),
             Input("upscale_method", "COMBO", choices=lambda _: list(LATENT_SCALE_METHODS)),
             Input("scale_by", "FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0,
                                         "step": 0.01})),
            ("LATENT",),
        ),
    ),
)  # fmt: skip

# ControlNet, Canny and KSamplerAdvanced (translated by server/comfy/translate_control.py).


def _controlnets(catalog: Catalog) -> list[str]:
    return catalog.folder_names("controlnet")


_STRENGTH = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
_PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}
_THRESHOLD = {"min": 0.01, "max": 0.99, "step": 0.01}
_STEP_AT = {"min": 0, "max": 10000}

CONTROL_NODE_TYPES: tuple[NodeType, ...] = (
    NodeType(
        "ControlNetLoader", "Load ControlNet Model", "loaders",
        "A ControlNet from the controlnet folder (single file or diffusers folder).",
        (Input("control_net_name", "COMBO", choices=_controlnets),),
        ("CONTROL_NET",),
    ),
    NodeType(
        "ControlNetApply", "Apply ControlNet (OLD)", "conditioning/controlnet",
        "Guide the sampler with a ControlNet and a hint image.",
        (Input("conditioning", "CONDITIONING"), Input("control_net", "CONTROL_NET"),
         Input("image", "IMAGE"), Input("strength", "FLOAT", _STRENGTH)),
        ("CONDITIONING",),
    ),
    NodeType(
        "ControlNetApplyAdvanced", "Apply ControlNet", "conditioning/controlnet",
        "Guide the sampler with a ControlNet and a hint image over part of the schedule.",
        (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
         Input("control_net", "CONTROL_NET"), Input("image", "IMAGE"),
         Input("strength", "FLOAT", _STRENGTH),
         Input("start_percent", "FLOAT", {"default": 0.0, **_PERCENT}),
         Input("end_percent", "FLOAT", {"default": 1.0, **_PERCENT}),
         Input("vae", "VAE", required=False)),
        ("CONDITIONING", "CONDITIONING"), ("positive", "negative"),
    ),
    NodeType(
        "Canny", "Canny", "image/preprocessors", "Edges of an image (Takeflow's canny template).",
        (Input("image", "IMAGE"),
         Input("low_threshold", "FLOAT", {"default": 0.4, **_THRESHOLD}),
         Input("high_threshold", "FLOAT", {"default": 0.8, **_THRESHOLD})),
        ("IMAGE",),
    ),
    NodeType(
        "KSamplerAdvanced", "KSampler (Advanced)", "sampling",
        "A KSampler over part of the schedule: start_at_step > 0 on a VAEEncode'd image runs "
        "image to image; what Takeflow runs differently is recorded in the history.",
        (Input("model", "MODEL"),
         Input("add_noise", "COMBO", choices=lambda _: ["enable", "disable"]),
         Input("noise_seed", "INT", {"default": 0, "min": 0, "max": MAX_SEED,
                                     "control_after_generate": True}),
         Input("steps", "INT", {"default": 20}, limits_from=(_GEN, "steps")),
         Input("cfg", "FLOAT", {"default": 8.0, "step": 0.1, "round": 0.01},
               limits_from=(_GEN, "guidance")),
         Input("sampler_name", "COMBO", choices=_samplers, refused=REFUSED_SAMPLERS),
         Input("scheduler", "COMBO", choices=_schedulers),
         Input("positive", "CONDITIONING"),
         Input("negative", "CONDITIONING"),
         Input("latent_image", "LATENT"),
         Input("start_at_step", "INT", {"default": 0, **_STEP_AT}),
         Input("end_at_step", "INT", {"default": 10000, **_STEP_AT}),
         Input("return_with_leftover_noise", "COMBO",
               choices=lambda _: ["disable", "enable"])),
        ("LATENT",),
    ),
)  # fmt: skip

# Animated images and video (translated by server/comfy/translate_video.py).

VIDEO_FILES = (".mp4", ".webm", ".mov")  # what LoadVideo offers from the input folder
_SAVE_FPS = {"min": 0.01, "max": 1000.0, "step": 0.01}


def _video_files(catalog: Catalog) -> list[str]:
    return [f for f in catalog.input_files() if f.lower().endswith(VIDEO_FILES)]


VIDEO_NODE_TYPES: tuple[NodeType, ...] = (
    NodeType(
        "SaveAnimatedWEBP", "SaveAnimatedWEBP", "image/animation",
        "Saves the images as one animated WEBP in the output folder (and as a take).",
        (Input("images", "IMAGE"),
         Input("filename_prefix", "STRING", {"default": "ComfyUI"}),
         Input("fps", "FLOAT", {"default": 6.0, **_SAVE_FPS}),
         Input("lossless", "BOOLEAN", {"default": True}),
         Input("quality", "INT", {"default": 80, "min": 0, "max": 100}),
         Input("method", "COMBO", choices=lambda _: ["default", "fastest", "slowest"])),
        output_node=True,
    ),
    NodeType(
        "SaveAnimatedPNG", "SaveAnimatedPNG", "image/animation",
        "Saves the images as one animated PNG (APNG) in the output folder (and as a take).",
        (Input("images", "IMAGE"),
         Input("filename_prefix", "STRING", {"default": "ComfyUI"}),
         Input("fps", "FLOAT", {"default": 6.0, **_SAVE_FPS}),
         Input("compress_level", "INT", {"default": 4, "min": 0, "max": 9})),
        output_node=True,
    ),
    NodeType(
        "SaveWEBM", "Save WEBM", "image/video",
        "Saves the images as a WEBM (VP9 or AV1, yuv420p) in the output folder.",
        (Input("images", "IMAGE"),
         Input("filename_prefix", "STRING", {"default": "ComfyUI"}),
         Input("codec", "COMBO", choices=lambda _: ["vp9", "av1"]),
         Input("fps", "FLOAT", {"default": 24.0, **_SAVE_FPS}),
         Input("crf", "FLOAT", {"default": 32.0, "min": 0, "max": 63.0, "step": 1})),
        output_node=True,
    ),
    NodeType(
        "CreateVideo", "Create Video", "image/video",
        "An H.264 MP4 of the images; with audio, the audio track of the video it came from.",
        (Input("images", "IMAGE"),
         Input("fps", "FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}),
         Input("audio", "AUDIO", required=False)),
        ("VIDEO",),
    ),
    NodeType(
        "SaveVideo", "Save Video", "image/video",
        "Saves the video as an H.264 MP4 in the output folder (and as a take).",
        (Input("video", "VIDEO"),
         Input("filename_prefix", "STRING", {"default": "video/ComfyUI"}),
         Input("format", "COMBO", {"default": "auto"}, choices=lambda _: ["auto", "mp4"]),
         Input("codec", "COMBO", {"default": "auto"}, choices=lambda _: ["auto", "h264"])),
        output_node=True,
    ),
    NodeType(
        "LoadVideo", "Load Video", "image/video",
        "A video (mp4, webm, mov) from the input folder (upload it with /upload/image).",
        (Input("file", "COMBO", {"video_upload": True}, choices=_video_files),),
        ("VIDEO",),
    ),
    NodeType(
        "GetVideoComponents", "Get Video Components", "image/video",
        "The video's frames (at most 1000), its audio track and its frame rate.",
        (Input("video", "VIDEO"),),
        ("IMAGE", "AUDIO", "FLOAT"), ("images", "audio", "fps"),
    ),
)  # fmt: skip
