"""Video as a value: an MP4 on local disk with its facts (fps, size, frame count, audio), encoded
and decoded through PyAV (FFmpeg's libraries) one frame at a time, so memory follows the chunk,
not the clip. Takes store the MP4 as-is (``video.mp4``) plus a poster PNG."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import av
from PIL import Image

from graph_runtime.errors import TakeflowError

if TYPE_CHECKING:
    from av.video.stream import VideoStream

CODEC = "libx264"  # H.264 through the x264 encoder bundled with PyAV's FFmpeg
PIXEL_FORMAT = "yuv420p"  # what every browser plays; needs even width and height
CRF = "18"  # visually lossless; extract_frame tests allow a small per-channel difference
PRESET = "veryfast"
MAX_SIDE = 4096
MAX_FRAMES = 100_000
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov")
VIDEO_CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}


class InvalidVideoError(TakeflowError):
    """A file that is no video PyAV can read (corrupt, truncated, no video stream)."""

    code = "invalid_video"
    http_status = 422


def video_dir() -> Path:
    """Where videos made by templates live until a take stores them (``TAKEFLOW_VIDEO_DIR``
    or the system temporary folder)."""
    root = Path(os.environ.get("TAKEFLOW_VIDEO_DIR") or Path(tempfile.gettempdir()))
    folder = root / "takeflow-video"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_video_path() -> Path:
    fd, name = tempfile.mkstemp(suffix=".mp4", dir=video_dir())
    os.close(fd)
    return Path(name)


@dataclass(frozen=True)
class Video:
    """A video value: the file plus what a take and the next node need to know about it."""

    path: Path
    fps: Fraction
    width: int
    height: int
    frame_count: int
    codec: str
    has_audio: bool = False

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps) if self.fps else 0.0

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def facts(self) -> dict[str, Any]:
        """JSON-safe facts for take.json and node events."""
        return {
            "fps": float(self.fps),
            "fps_rational": f"{self.fps.numerator}/{self.fps.denominator}",
            "frame_count": self.frame_count,
            "duration": round(self.duration, 6),
            "width": self.width,
            "height": self.height,
            "codec": self.codec,
            "pixel_format": PIXEL_FORMAT if self.codec == "h264" else None,
            "audio": self.has_audio,
        }

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Image.Image]:
        """Decoded RGB frames ``start`` (inclusive) to ``stop`` (exclusive), one at a time."""
        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if stop is not None and index >= stop:
                    break
                if index >= start:
                    yield frame.to_image()

    def chunks(self, size: int = 16) -> Iterator[list[Image.Image]]:
        """Decoded frames in lists of at most ``size``."""
        chunk: list[Image.Image] = []
        for image in self.frames():
            chunk.append(image)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def poster(self) -> Image.Image:
        """The first frame."""
        for image in self.frames(0, 1):
            return image
        raise InvalidVideoError(f"video {self.path.name} has no frames")

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def _open(path: Path | str | io.IOBase) -> Any:
    try:
        return av.open(path if isinstance(path, io.IOBase) else str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidVideoError(f"not a readable video: {exc}", field="file") from None


def probe(path: Path, name: str | None = None) -> Video:
    """Read a video file's facts (container header; counts frames when it does not say)."""
    label = name or path.name
    with _open(path) as container:
        if not container.streams.video:
            raise InvalidVideoError(f"{label} has no video stream", field="file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or stream.width <= 0 or stream.height <= 0:
            raise InvalidVideoError(f"{label}: no frame rate or size in its header", field="file")
        fps = Fraction(rate).limit_denominator(1001)
        count = int(stream.frames or 0)
        if count <= 0:
            try:
                count = sum(1 for _ in container.demux(stream) if _.size)
            except av.FFmpegError as exc:
                raise InvalidVideoError(f"{label} is damaged: {exc}", field="file") from None
        if count <= 0:
            raise InvalidVideoError(f"{label} has no frames", field="file")
        return Video(
            path,
            fps,
            stream.width,
            stream.height,
            count,
            stream.codec_context.name,
            bool(container.streams.audio),
        )


def check_decodes(video: Video, label: str) -> None:
    """Decode the first frame: a header alone does not prove the pictures are there."""
    try:
        next(video.frames(0, 1))
    except (av.FFmpegError, StopIteration) as exc:
        raise InvalidVideoError(
            f"{label}: its frames cannot be decoded ({exc})", field="file"
        ) from None


def check_size(width: int, height: int, field: str = "width") -> None:
    if width % 2 or height % 2:
        raise ValueError(
            f"input '{field}': H.264 yuv420p needs an even width and height, got {width}x{height}"
        )
    if not (2 <= width <= MAX_SIDE and 2 <= height <= MAX_SIDE):
        raise ValueError(f"input '{field}': each side must be 2..{MAX_SIDE}, got {width}x{height}")


def to_fps(value: float | Fraction, field: str = "fps") -> Fraction:
    if not 0 < float(value) <= 240:
        raise ValueError(f"input '{field}': frames per second must be in (0, 240], got {value}")
    return Fraction(value).limit_denominator(1001)


class VideoWriter:
    """Encodes frames one at a time into an H.264 MP4; ``close`` returns the ``Video``.
    Optionally copies the audio stream of ``audio_from`` untouched (packets, not re-encoded):
    all of it, or the packets starting in ``audio_window`` (seconds), moved to start at 0."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float | Fraction,
        path: Path | None = None,
        audio_from: Video | None = None,
        audio_window: tuple[float, float] | None = None,
    ) -> None:
        check_size(width, height)
        self._audio_window = audio_window
        self.fps = to_fps(fps)
        self.width, self.height = width, height
        self.path = path or new_video_path()
        self.count = 0
        self._container: Any = av.open(str(self.path), mode="w", format="mp4")
        stream = cast("VideoStream", self._container.add_stream(CODEC, rate=self.fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = PIXEL_FORMAT
        stream.options = {"crf": CRF, "preset": PRESET}
        self._stream = stream
        self._audio_source = audio_from if audio_from is not None and audio_from.has_audio else None
        self._audio: Any = None
        if self._audio_source is not None:
            with _open(self._audio_source.path) as src:
                self._audio = self._container.add_stream_from_template(src.streams.audio[0])

    def write(self, image: Image.Image) -> None:
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.LANCZOS)
        frame = av.VideoFrame.from_image(image.convert("RGB"))
        frame.pts = self.count
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1
        if self.count > MAX_FRAMES:
            raise ValueError(f"a video may hold at most {MAX_FRAMES} frames")

    def close(self) -> Video:
        if self.count == 0:
            self._container.close()
            raise ValueError("a video needs at least one frame")
        for packet in self._stream.encode():
            self._container.mux(packet)
        if self._audio_source is not None:
            with _open(self._audio_source.path) as src:
                audio_in = src.streams.audio[0]
                for packet in src.demux(audio_in):
                    if packet.dts is None or packet.pts is None:
                        continue
                    if self._audio_window is not None and packet.time_base:
                        start, end = self._audio_window
                        if not start <= float(packet.pts * packet.time_base) < end:
                            continue
                        offset = round(start / packet.time_base)
                        packet.pts, packet.dts = packet.pts - offset, packet.dts - offset
                    packet.stream = self._audio
                    self._container.mux(packet)
        self._container.close()
        return Video(
            self.path,
            self.fps,
            self.width,
            self.height,
            self.count,
            "h264",
            self._audio_source is not None,
        )

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self._container.close()
            self.path.unlink(missing_ok=True)


def encode(
    frames: Iterable[Image.Image],
    fps: float | Fraction,
    size: tuple[int, int] | None = None,
    audio_from: Video | None = None,
    on_frame: Callable[[int], None] | None = None,
    audio_window: tuple[float, float] | None = None,
) -> Video:
    """Stream ``frames`` into a new MP4 (size: the first frame's unless given)."""
    writer: VideoWriter | None = None
    try:
        for image in frames:
            if writer is None:
                width, height = size or image.size
                writer = VideoWriter(width, height, fps, None, audio_from, audio_window)
            writer.write(image)
            if on_frame is not None:
                on_frame(writer.count)
    except BaseException:
        if writer is not None:
            writer.__exit__(ValueError, None, None)
        raise
    if writer is None:
        raise ValueError("a video needs at least one frame")
    return writer.close()


def resample_indices(count: int, source_fps: Fraction, target_fps: Fraction) -> Iterator[int]:
    """For each output frame at ``target_fps`` (same duration), the source frame it shows."""
    out = max(1, math.floor(count * target_fps / source_fps))
    for j in range(out):
        yield min(count - 1, math.floor(j * source_fps / target_fps))
