"""ComfyUI's animated image and video nodes as Takeflow nodes (hooked into ``translate``).

An IMAGE batch is a list of Takeflow image outputs; the save nodes gather it (``image_list``,
16 inputs a node, a tree beyond) into one file node: ``animated_image`` (SaveAnimatedWEBP,
SaveAnimatedPNG), ``frames_to_webm`` (SaveWEBM), ``video_as_mp4`` (SaveVideo). A VIDEO is one
Takeflow video output: ``load_video`` (LoadVideo: the input-folder file, probed here, copied into
the project as an asset) or ``create_video`` (CreateVideo). GetVideoComponents' frames are one
Takeflow output holding a list (``video_to_frames``): only the nodes that encode image sequences
take it; its AUDIO is the video it came from (``create_video`` copies that video's audio track)
and its FLOAT the video's frame rate.

History: each save node's file is copied to the output folder (``prefix_00001_.webp``) and
listed as ComfyUI lists them: under ``images``, with ``animated: [true]`` (SaveVideo and SaveWEBM
always; the animated images when they have more than one frame).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from nodes.animated import LIST_INPUTS
from nodes.video import InvalidVideoError, check_decodes, probe
from server.comfy.errors import is_link
from server.comfy.files import ComfyFolders
from server.comfy.validate import as_float, as_int

if TYPE_CHECKING:
    from server.comfy.translate import OutputPlan, Ref, Translator

IMAGE_NODES = frozenset({"GetVideoComponents"})
OUTPUT_NODES = frozenset({"SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveWEBM", "SaveVideo"})
_SEQUENCES = frozenset({"CreateVideo", "SaveWEBM", "SaveAnimatedWEBP", "SaveAnimatedPNG"})
_VIDEO_NODES = OUTPUT_NODES | {"CreateVideo", "LoadVideo", "GetVideoComponents"}


def check_links(tr: Translator) -> None:
    """GetVideoComponents' frames (one list) and frame rate feed only the nodes that encode
    image sequences, at their ``images`` and ``fps``: anything else is refused by name (running
    an image node per frame is not a ComfyUI mapping Takeflow makes)."""
    for nid in tr.needed:
        cls = tr._class(nid)
        for name, value in tr._inputs(nid).items():
            if not is_link(value) or str(value[0]) not in tr.prompt:
                continue
            if tr._class(str(value[0])) != "GetVideoComponents":
                continue
            index = int(value[1])
            wanted = "images" if index == 0 else "fps" if index == 2 else name
            if cls not in _SEQUENCES or name != wanted:
                what = "frames" if index == 0 else "frame rate" if index == 2 else "audio"
                why = f"; Takeflow does not run {cls} on each frame" if index == 0 else ""
                tr._fail(nid, "Unsupported input",
                         f"{name}: the {what} of a GetVideoComponents feed the {wanted} of "
                         f"CreateVideo, SaveWEBM, SaveAnimatedWEBP or SaveAnimatedPNG "
                         f"only{why}", name)  # fmt: skip
    tr.errors.raise_if_any()


def images(tr: Translator, nid: str, index: int) -> list[Ref]:
    """GetVideoComponents' IMAGE: one ``video_to_frames`` output (a list of the frames)."""
    video = tr_video(tr, *tr._source(nid, "video"))
    if video is None:
        return []
    tf_id = tr._new_id("frames", nid)
    tr._add(tf_id, "video_to_frames", nid, {"video": video, "start": 0, "count": 0},
            {"video": (nid, "video")})  # fmt: skip
    return [(tf_id, "images")]


def tr_video(tr: Translator, nid: str, index: int = 0) -> Ref | None:
    """The Takeflow output behind a VIDEO (LoadVideo, CreateVideo: their only output, so
    ``index`` is 0), made once."""
    key = f"{nid}:video"
    if key not in tr._images:
        cls = tr._class(nid)
        made = _load_video(tr, nid) if cls == "LoadVideo" else _create_video(tr, nid)
        tr._images[key] = [made] if made is not None else []
    found = tr._images[key]
    return found[0] if found else None


def _load_video(tr: Translator, nid: str) -> Ref | None:
    name = str(tr._inputs(nid)["file"])
    path = (tr.input_dir / name).resolve()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        check_decodes(probe(path, name), name)
    except (OSError, ValueError, InvalidVideoError) as exc:
        why = exc.message if isinstance(exc, InvalidVideoError) else str(exc)
        tr._fail(nid, "Video not readable", f"file: {name}: {why}", "file")
        return None
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
    asset_id = f"uploads/comfyui/{digest}-{safe.strip('._')[:80] or 'video.mp4'}"
    tr.imports[asset_id] = name
    tf_id = tr._new_id("load_video", nid)
    tr._add(tf_id, "load_video", nid, {"asset": f"asset://{asset_id}"}, {"asset": (nid, "file")})
    return (tf_id, "video")


def _create_video(tr: Translator, nid: str) -> Ref | None:
    frames = gather(tr, nid, tr.images(*tr._source(nid, "images")))
    if frames is None:
        return None
    values: dict[str, Any] = {"images": frames, "fps": fps_of(tr, nid)}
    if is_link(tr._inputs(nid).get("audio")):  # GetVideoComponents' AUDIO: the track of the
        components, _ = tr._source(nid, "audio")  # video it came from
        source = tr_video(tr, *tr._source(components, "video"))
        if source is not None:
            values["audio"] = source
    tf_id = tr._new_id("create_video", nid)
    tr._add(tf_id, "create_video", nid, values,
            {"images": (nid, "images"), "fps": (nid, "fps"), "audio": (nid, "audio")})  # fmt: skip
    return (tf_id, "video")


def fps_of(tr: Translator, nid: str) -> float | Ref:
    """A node's ``fps``: its number, or the frame rate of the video a GetVideoComponents
    splits (LoadVideo's as probed when it runs, CreateVideo's as set)."""
    value = tr._inputs(nid)["fps"]
    if not is_link(value):
        return as_float(value)
    video_node, _ = tr._source(str(value[0]), "video")
    if tr._class(video_node) == "LoadVideo":
        ref = tr_video(tr, video_node)
        return (ref[0], "fps") if ref is not None else 0.0
    return fps_of(tr, video_node)


def gather(tr: Translator, nid: str, refs: list[Ref]) -> Ref | None:
    """One Takeflow output for an IMAGE batch: the image itself, or ``image_list`` nodes."""
    while len(refs) > 1:
        lists: list[Ref] = []
        for start in range(0, len(refs), LIST_INPUTS):
            tf_id = tr._new_id("image_list", nid)
            chunk = refs[start : start + LIST_INPUTS]
            tr._add(tf_id, "image_list", nid,
                    {f"image_{i + 1}": ref for i, ref in enumerate(chunk)},
                    {f"image_{i + 1}": (nid, "images") for i in range(len(chunk))})  # fmt: skip
            lists.append((tf_id, "images"))
        refs = lists
    return refs[0] if refs else None


def keep_saved(tr: Translator, plan: OutputPlan) -> list[Ref]:
    """An image output node's images that also feed a video node (a batch saved as PNGs and
    as an animation): each through ``keep_image``, so it stays a take file of its own."""
    if plan.kind in OUTPUT_NODES:
        return plan.refs
    consumers: dict[str, set[str]] = {}
    for node in tr.nodes:
        if node["template"] == "keep_image":  # another image output node's copy
            continue
        for value in node["inputs"].values():
            if value["kind"] == "link":
                consumers.setdefault(value["node"], set()).add(tr.owners[node["id"]])
    refs = []
    for ref in plan.refs:
        owners = consumers.get(ref[0], set())
        if owners and all(tr._class(owner) in _VIDEO_NODES for owner in owners):
            tf_id = tr._new_id("keep", plan.node)
            tr._add(
                tf_id, "keep_image", plan.node, {"image": ref}, {"image": (plan.node, "images")}
            )
            ref = (tf_id, "image")
        refs.append(ref)
    return refs


def output_refs(tr: Translator, nid: str) -> list[Ref]:
    """The Takeflow output (one file) of a save node."""
    cls, inputs = tr._class(nid), tr._inputs(nid)
    if cls == "SaveVideo":
        video = tr_video(tr, *tr._source(nid, "video"))
        if video is None:
            return []
        tf_id = tr._new_id("save_video", nid)
        tr._add(tf_id, "video_as_mp4", nid, {"video": video}, {"video": (nid, "video")})
        return [(tf_id, "video")]
    frames = gather(tr, nid, tr.images(*tr._source(nid, "images")))
    if frames is None:
        return []
    ports: dict[str, tuple[str, str]] = {"images": (nid, "images"), "fps": (nid, "fps")}
    values: dict[str, Any] = {"images": frames, "fps": fps_of(tr, nid)}
    tf_id = tr._new_id(cls.lower(), nid)
    if cls == "SaveWEBM":
        values |= {"codec": str(inputs["codec"]), "crf": as_float(inputs["crf"])}
        ports |= {"codec": (nid, "codec"), "crf": (nid, "crf")}
        tr._add(tf_id, "frames_to_webm", nid, values, ports)
        return [(tf_id, "video")]
    if cls == "SaveAnimatedWEBP":
        values |= {
            "format": "webp",
            "lossless": bool(inputs["lossless"]),
            "quality": as_int(inputs["quality"]),
            "method": str(inputs["method"]),
        }
        ports |= {"lossless": (nid, "lossless"), "quality": (nid, "quality"),
                  "method": (nid, "method")}  # fmt: skip
    else:
        values |= {"format": "png", "compress_level": as_int(inputs["compress_level"])}
        ports["compress_level"] = (nid, "compress_level")
    tr._add(tf_id, "animated_image", nid, values, ports)
    return [(tf_id, "animation")]


def history_output(folders: ComfyFolders, plan: OutputPlan, files: list[tuple[str, bytes]]
                   ) -> dict[str, Any]:  # fmt: skip
    """Copy a save node's take file(s) (``(take path, bytes)``) to the output folder; its
    ``outputs`` entry as ComfyUI's: ``{"images": [...], "animated": [bool]}``."""
    saved = folders.save_files(plan.prefix, [(data, Path(p).suffix.lower()) for p, data in files])
    animated = plan.kind in ("SaveWEBM", "SaveVideo") or any(_frames(d) > 1 for _, d in files)
    return {
        "images": [{"filename": n, "subfolder": sub, "type": "output"} for n, sub in saved],
        "animated": [animated],
    }


def _frames(data: bytes) -> int:
    try:
        return int(getattr(Image.open(io.BytesIO(data)), "n_frames", 1))
    except OSError:
        return 1
