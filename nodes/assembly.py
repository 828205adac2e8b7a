"""The ``assemble_scene`` template: the active take of each shot (a plan from
``graph_runtime.assembly``), cut into one H.264 MP4. A still is held for the still duration;
videos are scaled to fit and padded (letterbox, black) to one size and resampled to one frame
rate. Decoding and encoding stream one frame at a time; every source file is checked against
the sha256 the plan names, so a manifest rebuilds the same cut.

Audio: when any video shot has an audio track, the cut gets one AAC track (48 kHz stereo): each
sound shot's audio decoded, resampled and cut (or padded with silence) to its shot's span of the
timeline; stills and soundless shots are silence of their duration. No sound anywhere: no audio
stream."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Generator, Iterator, Mapping
from fractions import Fraction
from typing import IO, Any

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.video.frame import PictureType
from PIL import Image

from graph_runtime.assembly import (
    TEMPLATE_ID,
    layout,
    still_frames,
    video_frames,
)
from graph_runtime.errors import TakeflowError
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
)
from nodes.images import open_image
from nodes.video import PIXEL_FORMAT, InvalidVideoError, Video, VideoWriter, resample_indices

PAD_COLOUR = (0, 0, 0)
_HASH_CHUNK = 1 << 20
AUDIO_CODEC = "aac"
AUDIO_RATE = 48_000
AUDIO_LAYOUT = "stereo"
AUDIO_FORMAT = "fltp"
_AUDIO_CHUNK = 1024  # samples per AAC frame


class SourceChangedError(TakeflowError):
    """A shot's file no longer has the sha256 the plan (or manifest) names."""

    code = "source_changed"
    http_status = 409


Opener = Callable[[str], IO[bytes]]


def letterbox(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size`` (aspect kept) and centred on black."""
    image = image.convert("RGB")
    if image.size == size:
        return image
    width, height = size
    scale = min(width / image.width, height / image.height)
    fit = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", size, PAD_COLOUR)
    canvas.paste(
        image.resize(fit, Image.Resampling.LANCZOS),
        ((width - fit[0]) // 2, (height - fit[1]) // 2),
    )
    return canvas


def _check_hash(open_file: Opener, entry: Mapping[str, Any]) -> None:
    digest = hashlib.sha256()
    with open_file(entry["file"]) as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != entry["sha256"]:
        raise SourceChangedError(
            f"shot {entry['shot']}: {entry['file']} changed since it was planned "
            f"(sha256 {digest.hexdigest()[:12]}..., expected {entry['sha256'][:12]}...)",
            shot=entry["shot"],
            field="shots",
        )


def _video_facts(open_file: Opener, entry: Mapping[str, Any]) -> tuple[int, Fraction]:
    """The source clip's frame count and rate: from the take's facts, else its header or
    packets."""
    source = entry.get("source") or {}
    if source.get("frame_count") and source.get("fps_rational"):
        return int(source["frame_count"]), Fraction(str(source["fps_rational"]))
    with open_file(entry["file"]) as fh, av.open(fh, mode="r") as container:
        if not container.streams.video:
            raise InvalidVideoError(f"shot {entry['shot']}: {entry['file']} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        count = int(stream.frames or 0) or sum(1 for p in container.demux(stream) if p.size)
        if not rate or count <= 0:
            raise InvalidVideoError(f"shot {entry['shot']}: {entry['file']} has no frames")
        return count, Fraction(rate).limit_denominator(1001)


def _has_audio(open_file: Opener, entry: Mapping[str, Any]) -> bool:
    with open_file(entry["file"]) as fh, av.open(fh, mode="r") as container:
        return bool(container.streams.audio)


class _CutWriter(VideoWriter):
    """A ``VideoWriter`` that also takes decoded frames as they are (a clip already at the
    cut's size: no RGB round trip) and, with ``audio``, encodes one AAC track (48 kHz stereo)
    that the caller fills shot by shot up to a sample position (``audio_until``)."""

    def __init__(self, width: int, height: int, fps: Fraction, audio: bool = False) -> None:
        super().__init__(width, height, fps)
        self._track: Any = None
        self.samples = 0  # audio samples sent to the encoder
        self._pending = np.zeros((2, 0), dtype=np.float32)
        if audio:
            track = self._container.add_stream(AUDIO_CODEC, rate=AUDIO_RATE)
            track.layout = AUDIO_LAYOUT
            track.format = AUDIO_FORMAT
            self._track = track

    def _encode_audio(self, samples: np.ndarray) -> None:
        """Queue ``samples`` (2 x n float32) and encode every whole AAC frame."""
        self._pending = np.concatenate([self._pending, samples], axis=1)
        while self._pending.shape[1] >= _AUDIO_CHUNK:
            self._emit(self._pending[:, :_AUDIO_CHUNK])
            self._pending = self._pending[:, _AUDIO_CHUNK:]

    def _emit(self, block: np.ndarray) -> None:
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(block), format=AUDIO_FORMAT, layout=AUDIO_LAYOUT
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples
        frame.time_base = Fraction(1, AUDIO_RATE)
        self.samples += block.shape[1]
        for packet in self._track.encode(frame):
            self._container.mux(packet)

    def audio_until(self, end: int, source: Generator[np.ndarray] | None = None) -> None:
        """Fill the track up to sample ``end``: ``source``'s samples (2 x n blocks, cut where
        the span ends), then silence for whatever is left."""
        if self._track is None:
            return
        queued = self.samples + self._pending.shape[1]
        if source is not None:
            try:
                for block in source:
                    room = end - queued
                    if room <= 0:
                        break
                    block = block[:, :room]
                    self._encode_audio(block)
                    queued += block.shape[1]
            finally:
                source.close()  # the rest of a longer track is not decoded
        if end > queued:
            self._encode_audio(np.zeros((2, end - queued), dtype=np.float32))

    def close(self) -> Video:
        if self._track is None:
            return super().close()
        if self._pending.shape[1]:
            self._emit(self._pending)
            self._pending = self._pending[:, :0]
        for packet in self._track.encode():
            self._container.mux(packet)
        return dataclasses.replace(super().close(), has_audio=True)

    def write_frame(self, frame: av.VideoFrame) -> None:
        frame.pts = self.count
        frame.time_base = 1 / self.fps
        frame.pict_type = PictureType.NONE  # the source's I/P/B types would force the encoder's
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1


def _audio_blocks(open_file: Opener, entry: Mapping[str, Any]) -> Generator[np.ndarray]:
    """The shot's first audio track as 2 x n float32 blocks at 48 kHz, decoded and resampled
    one packet at a time; silence first when the track starts after 0. Mono goes to both
    channels at full level (FFmpeg's mono->stereo upmix would lower it 3 dB); more than two
    channels are downmixed by FFmpeg."""
    with open_file(entry["file"]) as fh, av.open(fh, mode="r") as container:
        stream = container.streams.audio[0]
        mono = stream.channels == 1
        resampler = AudioResampler(
            format=AUDIO_FORMAT, layout="mono" if mono else AUDIO_LAYOUT, rate=AUDIO_RATE
        )
        first = True
        for frame in container.decode(stream):
            if first and frame.pts is not None and frame.time_base and frame.pts > 0:
                lead = round(float(frame.pts * frame.time_base) * AUDIO_RATE)
                yield np.zeros((2, lead), dtype=np.float32)
            first = False
            for out in resampler.resample(frame):
                yield _stereo(out.to_ndarray())
        for out in resampler.resample(None):
            yield _stereo(out.to_ndarray())


def _stereo(block: np.ndarray) -> np.ndarray:
    block = block.astype(np.float32, copy=False)
    return np.repeat(block, 2, axis=0) if block.shape[0] == 1 else block


def _decoded(open_file: Opener, rel: str) -> Iterator[av.VideoFrame]:
    with open_file(rel) as fh, av.open(fh, mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)


def _video_stream(
    open_file: Opener, entry: Mapping[str, Any], count: int, rate: Fraction, fps: Fraction
) -> Iterator[av.VideoFrame]:
    """The clip at the cut's rate, same duration: source frames dropped or repeated."""
    wanted = iter(resample_indices(count, rate, fps))
    target = next(wanted, None)
    last: av.VideoFrame | None = None
    for index, frame in enumerate(_decoded(open_file, entry["file"])):
        if target is None:
            return
        last = frame
        while target == index:
            yield frame
            target = next(wanted, None)
    while target is not None and last is not None:  # a header that over-counted: hold the last
        yield last
        target = next(wanted, None)


def _fitted(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """A frame the encoder takes as is: at the cut's size in yuv420p, else letterboxed."""
    if (frame.width, frame.height) == size and frame.format.name == PIXEL_FORMAT:
        return frame
    return av.VideoFrame.from_image(letterbox(frame.to_image(), size)).reformat(format=PIXEL_FORMAT)


def assemble(
    plan: Mapping[str, Any],
    open_file: Opener,
    on_frame: Callable[[int, int], None] | None = None,
) -> tuple[Video, dict[str, Any]]:
    """Render a plan into one MP4; returns it and its manifest."""
    size = (int(plan["width"]), int(plan["height"]))
    fps = Fraction(str(plan["fps_rational"]))
    facts: list[tuple[int, Fraction] | None] = []
    counts: list[int] = []
    sound: list[bool] = []
    for entry in plan["shots"]:
        _check_hash(open_file, entry)
        if entry["kind"] == "video":
            count, rate = _video_facts(open_file, entry)
            facts.append((count, rate))
            counts.append(video_frames(count, rate, fps))
            sound.append(_has_audio(open_file, entry))
        else:
            facts.append(None)
            counts.append(still_frames(float(plan["still_duration"]), fps))
            sound.append(False)
    manifest = layout(plan, counts)
    manifest["audio"] = any(sound)
    for shot, has in zip(manifest["shots"], sound, strict=True):
        shot["audio"] = has
    total = int(manifest["frame_count"])
    writer = _CutWriter(size[0], size[1], fps, audio=any(sound))
    end_frame = 0
    with writer:
        for entry, fact, count, has in zip(plan["shots"], facts, counts, sound, strict=True):
            if fact is None:  # one converted frame, sent count times
                with open_file(entry["file"]) as fh:
                    still = letterbox(open_image(fh.read(), entry["file"]), size)
                held = av.VideoFrame.from_image(still).reformat(format=PIXEL_FORMAT)
                frames: Iterator[av.VideoFrame] = (held for _ in range(count))
            else:
                source = _video_stream(open_file, entry, fact[0], fact[1], fps)
                frames = (_fitted(frame, size) for frame in source)
            written = 0
            for frame in frames:
                writer.write_frame(frame)
                written += 1
                if on_frame is not None:
                    on_frame(writer.count, total)
            if written != count:
                raise InvalidVideoError(
                    f"shot {entry['shot']}: {entry['file']} gave {written} frames, expected {count}"
                )
            end_frame += count  # the shot's audio (or silence) up to its last frame's end
            end_sample = round(end_frame * AUDIO_RATE / fps)
            writer.audio_until(end_sample, _audio_blocks(open_file, entry) if has else None)
        video = writer.close()
    return video, manifest


def assemble_scene(ctx: ProgressReporter, inputs: Mapping[str, Any]) -> dict[str, Any]:
    plan = inputs["plan"]
    if not isinstance(plan, Mapping) or not plan.get("shots"):
        raise ValueError("input 'plan' takes an assembly plan with at least one shot")
    assets = ctx.services.get("assets")
    if assets is None or not hasattr(assets, "open_file"):
        raise RuntimeError("assemble_scene reads project files: run it in a project")
    step = 1

    def on_frame(done: int, total: int) -> None:
        nonlocal step
        step = max(1, total // 20)
        if done % step == 0 or done == total:
            ctx.progress(min(1.0, done / max(total, 1)), "assembling", f"frame {done} of {total}")

    video, manifest = assemble(plan, assets.open_file, on_frame)
    return {"video": video, "manifest": manifest}


TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id=TEMPLATE_ID,
        version="1.0.0",
        name="Assemble scene",
        category="video",
        description="Cut the active takes of a scene's shots into one MP4 (stills held, videos "
        "letterboxed and resampled); the plan comes from POST .../assemblies.",
        inputs=(
            InputSpec(
                "plan",
                PortType.JSON,
                "an assembly plan (graph_runtime.assembly.plan_assembly)",
                required=True,
            ),
        ),
        outputs=(
            OutputSpec("video", PortType.VIDEO, "the cut: H.264 MP4 (yuv420p)"),
            OutputSpec("manifest", PortType.JSON, "each shot's take, file, sha256 and timing"),
        ),
        fn=assemble_scene,
        cacheable=False,  # the cut is a new take each time; sources are checked by hash
    ),
)
