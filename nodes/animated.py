"""Image sequences as files: a list of images gathered from single images, animated WEBP and PNG
(Pillow), WEBM (VP9 or AV1 through PyAV), a video from images with another video's audio, and a
video as H.264 MP4. They back ComfyUI's ``SaveAnimatedWEBP``, ``SaveAnimatedPNG``, ``SaveWEBM``,
``CreateVideo`` and ``SaveVideo`` (``server.comfy.translate_video``) and are canvas templates too.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import av
from PIL import Image

from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
)
from nodes.video import MAX_FRAMES, PIXEL_FORMAT, Video, VideoWriter, check_size, new_video_path
from nodes.video_templates import video_template

if TYPE_CHECKING:
    from av.video.stream import VideoStream

T = PortType
Inputs = Mapping[str, Any]
LIST_INPUTS = 16  # image_list's inputs: image_1 .. image_16 (each an image or a list)
MAX_FPS = 1000.0  # ComfyUI's save nodes accept 0.01..1000 frames per second
WEBP_METHODS = {"fastest": 0, "default": 4, "slowest": 6}  # libwebp's effort, 0..6
WEBM_CODECS = {"vp9": "libvpx-vp9", "av1": "libsvtav1"}  # encoders in PyAV's FFmpeg build
ANIMATED_TYPES = {"webp": "image/webp", "png": "image/png"}


@dataclass(frozen=True)
class Animation:
    """An animated image file (WEBP or APNG) held as bytes, with its facts."""

    data: bytes
    format: str  # webp | png
    frame_count: int
    fps: float
    width: int
    height: int

    @property
    def extension(self) -> str:
        return f".{self.format}"

    @property
    def content_type(self) -> str:
        return ANIMATED_TYPES[self.format]

    def facts(self) -> dict[str, Any]:
        """JSON-safe facts for take.json (``media.<output>``)."""
        return {
            "format": self.format,
            "animated": self.frame_count > 1,
            "frame_count": self.frame_count,
            "fps": self.fps,
            "duration": round(self.frame_count / self.fps, 6),
            "width": self.width,
            "height": self.height,
        }


def _frames(value: Any, name: str = "images") -> list[Image.Image]:
    """An image or a list of images (nested lists flattened), at least one."""
    found: list[Image.Image] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif isinstance(item, Image.Image):
            found.append(item)
        elif item is not None:
            raise ValueError(f"input '{name}' takes images, got {type(item).__name__}")
    if not found:
        raise ValueError(f"input '{name}' needs at least one image")
    if len(found) > MAX_FRAMES:
        raise ValueError(f"input '{name}': at most {MAX_FRAMES} frames, got {len(found)}")
    return found


def _fps(value: Any, field: str = "fps", maximum: float = MAX_FPS) -> float:
    fps = float(value)
    if not 0 < fps <= maximum:
        raise ValueError(
            f"input '{field}': frames per second must be in (0, {maximum:g}], got {fps}"
        )
    return fps


def _same_size(frames: list[Image.Image]) -> Iterator[Image.Image]:
    """The frames at the first one's size (a later frame of another size is scaled)."""
    size = frames[0].size
    for frame in frames:
        yield frame if frame.size == size else frame.resize(size, Image.Resampling.LANCZOS)


def keep_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    image = inputs["image"]
    if not isinstance(image, Image.Image):
        raise ValueError(f"input 'image' takes an image, got {type(image).__name__}")
    return {"image": image}


def image_list(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    images = [inputs.get(f"image_{i}") for i in range(1, LIST_INPUTS + 1)]
    found = _frames([i for i in images if i is not None], "image_1")
    return {"images": found, "count": len(found)}


def animated_image(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    frames = _frames(inputs["images"])
    fmt = str(inputs["format"])
    fps = _fps(inputs["fps"])
    duration = 1000.0 / fps  # milliseconds per frame
    first, *rest = [
        f if f.mode in ("RGB", "RGBA") else f.convert("RGB") for f in _same_size(frames)
    ]
    buf = io.BytesIO()
    options: dict[str, Any] = {"save_all": True, "append_images": rest, "duration": duration,
                               "loop": int(inputs["loop"])}  # fmt: skip
    if fmt == "webp":
        options |= {"lossless": bool(inputs["lossless"]), "quality": int(inputs["quality"]),
                    "method": WEBP_METHODS[str(inputs["method"])]}  # fmt: skip
        first.save(buf, format="WEBP", **options)
    else:
        options |= {"compress_level": int(inputs["compress_level"])}
        first.save(buf, format="PNG", **options)
    ctx.progress(1.0, "encoding", f"{len(frames)} frames")
    width, height = first.size
    return {"animation": Animation(buf.getvalue(), fmt, len(frames), fps, width, height)}


def _encode_webm(
    frames: Iterable[Image.Image], fps: float, codec: str, crf: float, ctx: ProgressReporter,
    total: int,
) -> Video:  # fmt: skip
    """Stream frames into a WEBM (VP9 through libvpx, AV1 through SVT-AV1), yuv420p."""
    path = new_video_path().with_suffix(".webm")
    rate = Fraction(fps).limit_denominator(1001)
    container: Any = av.open(str(path), mode="w", format="webm")
    count, size = 0, (0, 0)
    step = max(1, total // 20)
    try:
        stream: VideoStream | None = None
        for image in frames:
            if stream is None:
                size = image.size
                check_size(*size, field="images")
                stream = cast("VideoStream", container.add_stream(WEBM_CODECS[codec], rate=rate))
                stream.width, stream.height = size
                stream.pix_fmt = PIXEL_FORMAT
                level = str(round(crf))
                stream.options = (
                    {"crf": level, "b:v": "0", "deadline": "good", "cpu-used": "5"}
                    if codec == "vp9"
                    else {"crf": str(max(1, round(crf))), "preset": "10"}
                )  # SVT-AV1's crf is 1..63
            frame = av.VideoFrame.from_image(image.convert("RGB"))
            frame.pts = count
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
            if count % step == 0 or count == total:
                ctx.progress(
                    min(1.0, count / max(total, 1)), "encoding", f"frame {count} of {total}"
                )
        if stream is None:
            raise ValueError("input 'images' needs at least one image")
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        path.unlink(missing_ok=True)
        raise
    container.close()
    return Video(path, rate, size[0], size[1], count, codec)


def frames_to_webm(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    frames = _frames(inputs["images"])
    fps = _fps(inputs["fps"])
    video = _encode_webm(_same_size(frames), fps, str(inputs["codec"]), float(inputs["crf"]), ctx,
                         len(frames))  # fmt: skip
    return {"video": video}


def _write_mp4(
    frames: Iterable[Image.Image], fps: float, size: tuple[int, int], audio: Video | None,
    ctx: ProgressReporter, total: int,
) -> Video:  # fmt: skip
    step = max(1, total // 20)
    with VideoWriter(size[0], size[1], fps, audio_from=audio) as writer:
        for image in frames:
            writer.write(image)
            if writer.count % step == 0 or writer.count == total:
                ctx.progress(min(1.0, writer.count / max(total, 1)), "encoding",
                             f"frame {writer.count} of {total}")  # fmt: skip
        return writer.close()


def create_video(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    frames = _frames(inputs["images"])
    fps = _fps(inputs["fps"], maximum=240.0)
    audio = inputs.get("audio")
    if audio is not None and not isinstance(audio, Video):
        raise ValueError(
            f"input 'audio' takes a video (its audio track), got {type(audio).__name__}"
        )
    check_size(*frames[0].size, field="images")
    video = _write_mp4(_same_size(frames), fps, frames[0].size, audio, ctx, len(frames))
    return {"video": video}


def video_as_mp4(ctx: ProgressReporter, inputs: Inputs) -> dict[str, Any]:
    video = inputs["video"]
    if not isinstance(video, Video):
        raise ValueError(f"input 'video' takes a video, got {type(video).__name__}")
    if video.codec == "h264" and video.path.suffix.lower() == ".mp4":
        return {"video": video}  # already what a take and a browser play: kept as it is
    # re-encoded; AAC/MP3/Opus audio of an MP4 or MOV source is copied, a WEBM's is dropped
    audio = video if video.path.suffix.lower() in (".mp4", ".mov") else None
    return {"video": _write_mp4(video.frames(), float(video.fps), video.size, audio, ctx,
                                video.frame_count)}  # fmt: skip


_t = video_template


_IMAGES = InputSpec(
    "images", T.IMAGE, "an image or a list of images", required=True, accepts_list=True
)  # the whole list, not one run per frame (mapping)
_SAVE_FPS = InputSpec("fps", T.FLOAT, "frames per second", default=6.0, minimum=0.01,
                      maximum=MAX_FPS)  # fmt: skip

TEMPLATES: tuple[FunctionTemplate, ...] = (
    _t(keep_image, "Keep image",
       "The image unchanged: an image that also feeds a video or an animation stays a final "
       "output (a take file) of its own.",
       (InputSpec("image", T.IMAGE, required=True),), (OutputSpec("image", T.IMAGE),)),
    _t(image_list, "Image list",
       "Gather images (each input an image or a list) into one list, in input order.",
       tuple(InputSpec(f"image_{i}", T.IMAGE, "an image or a list of images", accepts_list=True)
             for i in range(1, LIST_INPUTS + 1)),
       (OutputSpec("images", T.IMAGE, "a list of images", is_list=True),
        OutputSpec("count", T.INTEGER))),
    _t(animated_image, "Animated image",
       "An animated WEBP or PNG (APNG) of the images, one frame each.",
       (_IMAGES,
        InputSpec("format", T.TEXT, default="webp", choices=tuple(ANIMATED_TYPES)),
        _SAVE_FPS,
        InputSpec("loop", T.INTEGER, "0: loop for ever", default=0, minimum=0, maximum=65535),
        InputSpec("lossless", T.BOOLEAN, "webp", default=True),
        InputSpec("quality", T.INTEGER, "webp", default=80, minimum=0, maximum=100),
        InputSpec("method", T.TEXT, "webp: encoder effort", default="default",
                  choices=tuple(WEBP_METHODS)),
        InputSpec("compress_level", T.INTEGER, "png: zlib level", default=4, minimum=0,
                  maximum=9)),
       (OutputSpec("animation", T.ANY, "an animated image file (.webp or .png in takes)"),)),
    _t(frames_to_webm, "Frames to WEBM", "Encode images as a WEBM (VP9 or AV1, yuv420p).",
       (_IMAGES,
        InputSpec("codec", T.TEXT, default="vp9", choices=tuple(WEBM_CODECS)),
        InputSpec("fps", T.FLOAT, "frames per second", default=24.0, minimum=0.01,
                  maximum=MAX_FPS),
        InputSpec("crf", T.FLOAT, "quality: lower is better and larger", default=32.0,
                  minimum=0.0, maximum=63.0)),
       (OutputSpec("video", T.VIDEO, "WEBM"),)),
    _t(create_video, "Create video",
       "Encode images as an H.264 MP4, optionally with the audio track of another video.",
       (_IMAGES,
        InputSpec("fps", T.FLOAT, "frames per second", default=30.0, minimum=0.01,
                  maximum=240.0),
        InputSpec("audio", T.VIDEO, "optional: a video whose audio track is copied")),
       (OutputSpec("video", T.VIDEO, "H.264 MP4 (yuv420p)"),)),
    _t(video_as_mp4, "Video as MP4",
       "The video as an H.264 MP4: kept as it is when it is one, else re-encoded.",
       (InputSpec("video", T.VIDEO, required=True),),
       (OutputSpec("video", T.VIDEO, "H.264 MP4 (yuv420p)"),)),
)  # fmt: skip
