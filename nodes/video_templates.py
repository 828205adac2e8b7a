"""Video editing templates on the ``Video`` value: frames <-> video, extract a frame, trim,
concat, resize, frame rate. Each streams frames (decode one, encode one) and reports progress."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from PIL import Image

from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
    TemplateFn,
)
from nodes.video import (
    MAX_SIDE,
    InvalidVideoError,
    Video,
    check_decodes,
    encode,
    new_video_path,
    probe,
    resample_indices,
    to_fps,
)

T = PortType
Inputs = Mapping[str, Any]
MAX_LIST_FRAMES = 1000  # video_to_frames holds its frames in memory: a bounded list

_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def _progress(ctx: ProgressReporter, total: int, stage: str) -> Any:
    step = max(1, total // 20)

    def on_frame(done: int) -> None:
        if done % step == 0 or done == total:
            ctx.progress(min(1.0, done / max(total, 1)), stage, f"frame {done} of {total}")

    return on_frame


def _video(inputs: Inputs, name: str = "video") -> Video:
    value = inputs[name]
    if not isinstance(value, Video):
        raise ValueError(f"input '{name}' takes a video, got {type(value).__name__}")
    return value


def frames_to_video(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    images = inputs["images"]
    frames: list[Image.Image] = list(images) if isinstance(images, list | tuple) else [images]
    if not frames or not all(isinstance(f, Image.Image) for f in frames):
        raise ValueError("input 'images' takes an image or a list of images")
    end = inputs.get("end_image")
    count = int(inputs["frame_count"]) or (len(frames) if len(frames) > 1 or end is None else 24)
    fps = to_fps(float(inputs["fps"]))
    size = frames[0].size

    def stream() -> Iterator[Image.Image]:
        for i in range(count):
            if end is not None:  # a cross-fade from the first image to end_image
                t = i / max(count - 1, 1)
                a = frames[0].convert("RGB")
                yield Image.blend(a, end.convert("RGB").resize(size), t)
            else:  # the list in order, held or cycled to frame_count
                yield frames[min(i, len(frames) - 1) if len(frames) < count else i]

    video = encode(stream(), fps, size, on_frame=_progress(ctx, count, "encoding"))
    return {"video": video}


def video_to_frames(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    video = _video(inputs)
    start = int(inputs["start"])
    count = int(inputs["count"]) or video.frame_count - start
    if start >= video.frame_count:
        raise ValueError(f"input 'start': {start} is past the last frame ({video.frame_count - 1})")
    if count > MAX_LIST_FRAMES:
        raise ValueError(
            f"input 'count': at most {MAX_LIST_FRAMES} frames as a list (memory); got {count}"
        )
    images = list(video.frames(start, start + count))
    return {"images": images, "frame_count": len(images)}


def extract_frame(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    video = _video(inputs)
    mode = inputs["mode"]
    if mode == "first":
        index = 0
    elif mode == "index":
        index = int(inputs["index"])
        field = "index"
    elif mode == "time":
        index = math.floor(float(inputs["time"]) * video.fps + 1e-9)
        field = "time"
    else:  # last: decode to the end, keeping one frame (the header's count may be off)
        last: Image.Image | None = None
        for last in video.frames():  # noqa: B007
            pass
        if last is None:
            raise InvalidVideoError("the video has no frames")
        return {"image": last, "index": video.frame_count - 1}
    if mode != "first" and not 0 <= index < video.frame_count:
        raise ValueError(
            f"input '{field}': frame {index} is outside the video (0..{video.frame_count - 1}, "
            f"{video.duration:.3f} s)"
        )
    for image in video.frames(index, index + 1):
        return {"image": image, "index": index}
    raise InvalidVideoError(f"frame {index} could not be decoded")


def trim(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    video = _video(inputs)
    start = round(float(inputs["start"]) * video.fps)
    end_s = float(inputs["end"])
    stop = round(end_s * video.fps) if end_s > 0 else video.frame_count
    stop = min(stop, video.frame_count)
    if start >= stop:
        raise ValueError(
            f"input 'start': the cut is empty (frames {start}..{stop} of {video.frame_count})"
        )
    out = encode(
        video.frames(start, stop),
        video.fps,
        audio_from=video,  # the audio packets that start inside the cut
        audio_window=(float(start / video.fps), float(stop / video.fps)),
        on_frame=_progress(ctx, stop - start, "trim"),
    )
    return {"video": out}


def concat(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    first, second = _video(inputs, "first"), _video(inputs, "second")
    if first.fps != second.fps:
        raise ValueError(
            f"input 'second': its frame rate {float(second.fps):g} differs from the first's "
            f"{float(first.fps):g}; put a set_fps node before it"
        )

    def stream() -> Iterator[Image.Image]:
        yield from first.frames()
        for image in second.frames():  # the second is scaled to the first's size
            yield image if image.size == first.size else image.resize(first.size)

    total = first.frame_count + second.frame_count
    out = encode(stream(), first.fps, first.size, on_frame=_progress(ctx, total, "concat"))
    return {"video": out}


def resize_video(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    video = _video(inputs)
    size = (int(inputs["width"]), int(inputs["height"]))
    method = _RESAMPLE[inputs["resample"]]
    frames = (image.resize(size, method) for image in video.frames())
    out = encode(
        frames,
        video.fps,
        size,
        audio_from=video,
        on_frame=_progress(ctx, video.frame_count, "resize"),
    )
    return {"video": out}


def set_fps(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    video = _video(inputs)
    fps = to_fps(float(inputs["fps"]))
    if inputs["mode"] == "retime":  # same frames, played faster or slower
        out = encode(video.frames(), fps, on_frame=_progress(ctx, video.frame_count, "retime"))
        return {"video": out}
    indices = list(resample_indices(video.frame_count, video.fps, fps))

    def stream() -> Iterator[Image.Image]:  # same duration: frames dropped or repeated
        wanted = iter(indices)
        target = next(wanted, None)
        for index, image in enumerate(video.frames()):
            while target == index:
                yield image
                target = next(wanted, None)
            if target is None:
                return

    out = encode(
        stream(),
        fps,
        video.size,
        audio_from=video,
        on_frame=_progress(ctx, len(indices), "resample"),
    )  # same duration: the audio as it was
    return {"video": out}


def load_video(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    assets = ctx.services.get("assets")
    if assets is None:
        raise RuntimeError("no asset resolver is configured for this run (is a project set?)")
    data: bytes = assets.read(inputs["asset"])
    path = new_video_path().with_suffix("." + str(inputs["asset"]).rsplit(".", 1)[-1].lower())
    path.write_bytes(data)
    video = probe(path, str(inputs["asset"]))
    check_decodes(video, str(inputs["asset"]))
    return {"video": video, "frame_count": video.frame_count, "fps": float(video.fps)}


def video_template(
    fn: TemplateFn,
    name: str,
    description: str,
    inputs: tuple[InputSpec, ...],
    outputs: tuple[OutputSpec, ...],
) -> FunctionTemplate:
    """A version-1.0.0 template of category ``video``, its id the function's name."""
    return FunctionTemplate(
        id=fn.__name__,
        version="1.0.0",
        name=name,
        category="video",
        description=description,
        inputs=inputs,
        outputs=outputs,
        fn=fn,
    )


_t = video_template
_VIDEO_IN = InputSpec("video", T.VIDEO, required=True)
_VIDEO_OUT = OutputSpec("video", T.VIDEO, "H.264 MP4 (yuv420p)")
_FPS = InputSpec("fps", T.FLOAT, "frames per second", default=24.0, minimum=0.01, maximum=240.0)
_SIDE = {"minimum": 2, "maximum": MAX_SIDE, "multiple_of": 2}

TEMPLATES: tuple[FunctionTemplate, ...] = (
    _t(frames_to_video, "Frames to video",
       "Encode an image, a list of images, or a cross-fade to end_image, as an MP4.",
       (InputSpec("images", T.IMAGE, "an image or a list of images (video_to_frames)",
                  required=True, accepts_list=True),
        InputSpec("end_image", T.IMAGE, "optional: cross-fade from images to this"),
        InputSpec("frame_count", T.INTEGER, "0: one per image (24 for a single image)",
                  default=0, minimum=0, maximum=100_000),
        _FPS),
       (_VIDEO_OUT,)),
    _t(video_to_frames, "Video to frames", "Decode frames as a list of images (bounded).",
       (_VIDEO_IN, InputSpec("start", T.INTEGER, default=0, minimum=0),
        InputSpec("count", T.INTEGER, "0: to the end", default=0, minimum=0,
                  maximum=MAX_LIST_FRAMES)),
       (OutputSpec("images", T.IMAGE, "a list of images", is_list=True),
        OutputSpec("frame_count", T.INTEGER))),
    _t(extract_frame, "Extract frame",
       "One frame as an image: the first, the last, by index, or at a time in seconds.",
       (_VIDEO_IN,
        InputSpec("mode", T.TEXT, default="last", choices=("first", "last", "index", "time")),
        InputSpec("index", T.INTEGER, "mode index: frame number from 0", default=0, minimum=0),
        InputSpec("time", T.FLOAT, "mode time: seconds from the start", default=0.0,
                  minimum=0.0)),
       (OutputSpec("image", T.IMAGE), OutputSpec("index", T.INTEGER))),
    _t(trim, "Trim video", "Keep the frames from start to end (seconds; end 0: to the end).",
       (_VIDEO_IN, InputSpec("start", T.FLOAT, default=0.0, minimum=0.0),
        InputSpec("end", T.FLOAT, default=0.0, minimum=0.0)),
       (_VIDEO_OUT,)),
    _t(concat, "Concatenate videos",
       "The second video after the first (same frame rate; scaled to the first's size).",
       (InputSpec("first", T.VIDEO, required=True), InputSpec("second", T.VIDEO, required=True)),
       (_VIDEO_OUT,)),
    _t(resize_video, "Resize video", "Scale every frame to an exact (even) size; keeps audio.",
       (_VIDEO_IN,
        InputSpec("width", T.INTEGER, default=512, **_SIDE),  # type: ignore[arg-type]
        InputSpec("height", T.INTEGER, default=512, **_SIDE),  # type: ignore[arg-type]
        InputSpec("resample", T.TEXT, default="lanczos", choices=tuple(_RESAMPLE))),
       (_VIDEO_OUT,)),
    _t(set_fps, "Set frame rate",
       "resample: keep the duration (drop or repeat frames); retime: keep the frames.",
       (_VIDEO_IN, _FPS,
        InputSpec("mode", T.TEXT, default="resample", choices=("resample", "retime"))),
       (_VIDEO_OUT,)),
    _t(load_video, "Load video", "Load an uploaded mp4/webm/mov by its asset:// reference.",
       (InputSpec("asset", T.ASSET, "asset://<id> of an uploaded video", required=True),),
       (_VIDEO_OUT, OutputSpec("frame_count", T.INTEGER), OutputSpec("fps", T.FLOAT))),
)  # fmt: skip
