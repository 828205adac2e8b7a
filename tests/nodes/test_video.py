"""Video values and editing templates on real PyAV (H.264 through libx264), decoded back."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageChops

from graph_runtime.templates import NullReporter, PortType
from nodes.builtin import TEMPLATES
from nodes.values import media_facts, to_output_files
from nodes.video import InvalidVideoError, Video, probe
from nodes.video_templates import (
    concat,
    extract_frame,
    frames_to_video,
    resize_video,
    set_fps,
    trim,
    video_to_frames,
)

# H.264 at CRF 18 with 4:2:0 chroma: flat colour fields come back within this per channel
TOLERANCE = 8
R = NullReporter()


def _frame(i: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A distinct flat colour per frame (a single-colour field survives 4:2:0 chroma)."""
    return Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (255 - i * 13) % 256))


def _max_diff(a: Image.Image, b: Image.Image) -> int:
    extrema = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getextrema()
    return max(hi for _, hi in extrema)  # type: ignore[misc]


def _decode(path: Path) -> tuple[list[Image.Image], Fraction, tuple[int, int], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_image() for f in container.decode(stream)]
        return (
            frames,
            Fraction(stream.average_rate),
            (stream.width, stream.height),
            stream.codec_context.name,
        )


def _clip(count: int = 10, fps: float = 12.0) -> Video:
    frames = [_frame(i) for i in range(count)]
    return frames_to_video(R, {"images": frames, "frame_count": 0, "fps": fps})["video"]


def test_frames_to_video_decodes_back_with_its_count_fps_size_and_codec() -> None:
    frames = [_frame(i) for i in range(10)]
    video = _clip(10, 12.0)
    assert (video.frame_count, video.fps, video.size) == (10, Fraction(12), (64, 48))
    decoded, fps, size, codec = _decode(video.path)
    assert (len(decoded), fps, size, codec) == (10, Fraction(12), (64, 48), "h264")
    with av.open(str(video.path)) as container:
        assert container.streams.video[0].format.name == "yuv420p"
    assert all(_max_diff(a, b) <= TOLERANCE for a, b in zip(frames, decoded, strict=True))
    assert probe(video.path) == video
    assert video.duration == pytest.approx(10 / 12)


def test_cross_fade_and_odd_size_is_refused_by_name() -> None:
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    fade = frames_to_video(R, {"images": red, "end_image": blue, "frame_count": 5, "fps": 5.0})
    decoded, *_ = _decode(fade["video"].path)
    assert len(decoded) == 5
    assert _max_diff(decoded[0], red) <= TOLERANCE and _max_diff(decoded[-1], blue) <= TOLERANCE
    with pytest.raises(ValueError, match="even width and height"):
        frames_to_video(R, {"images": Image.new("RGB", (33, 32)), "frame_count": 2, "fps": 5.0})


def test_extract_frame_last_is_the_last_encoded_frame() -> None:
    frames = [_frame(i) for i in range(10)]
    video = _clip(10)
    last = extract_frame(R, {"video": video, "mode": "last", "index": 0, "time": 0.0})
    assert last["index"] == 9
    assert _max_diff(last["image"], frames[-1]) <= TOLERANCE
    assert _max_diff(last["image"], frames[-2]) > 3 * TOLERANCE  # the last, not a neighbour
    first = extract_frame(R, {"video": video, "mode": "first", "index": 0, "time": 0.0})
    assert _max_diff(first["image"], frames[0]) <= TOLERANCE
    by_index = extract_frame(R, {"video": video, "mode": "index", "index": 4, "time": 0.0})
    assert _max_diff(by_index["image"], frames[4]) <= TOLERANCE
    at_time = extract_frame(R, {"video": video, "mode": "time", "index": 0, "time": 0.5})
    assert at_time["index"] == 6 and _max_diff(at_time["image"], frames[6]) <= TOLERANCE
    with pytest.raises(ValueError, match="input 'index'"):
        extract_frame(R, {"video": video, "mode": "index", "index": 10, "time": 0.0})
    with pytest.raises(ValueError, match="input 'time'"):
        extract_frame(R, {"video": video, "mode": "time", "index": 0, "time": 1.0})


def test_trim_concat_resize_and_frame_rate() -> None:
    frames = [_frame(i) for i in range(10)]
    video = _clip(10, 12.0)
    cut = trim(R, {"video": video, "start": 0.25, "end": 0.5})["video"]  # frames 3..5
    decoded, *_ = _decode(cut.path)
    assert len(decoded) == 3 and _max_diff(decoded[0], frames[3]) <= TOLERANCE
    with pytest.raises(ValueError, match="input 'start'"):
        trim(R, {"video": video, "start": 2.0, "end": 0.0})

    small = resize_video(R, {"video": video, "width": 32, "height": 24, "resample": "bilinear"})
    assert _decode(small["video"].path)[2] == (32, 24)
    joined = concat(R, {"first": video, "second": cut})["video"]
    decoded, fps, size, _ = _decode(joined.path)
    assert (len(decoded), fps, size) == (13, Fraction(12), (64, 48))
    assert _max_diff(decoded[10], frames[3]) <= TOLERANCE
    with pytest.raises(ValueError, match="set_fps"):
        concat(R, {"first": video, "second": _clip(2, 24.0)})

    half = set_fps(R, {"video": video, "fps": 6.0, "mode": "resample"})["video"]
    decoded, fps, *_ = _decode(half.path)
    assert (len(decoded), fps) == (5, Fraction(6))  # same duration, every other frame
    assert _max_diff(decoded[1], frames[2]) <= TOLERANCE
    slow = set_fps(R, {"video": video, "fps": 6.0, "mode": "retime"})["video"]
    assert (slow.frame_count, slow.duration) == (10, pytest.approx(10 / 6))

    listed = video_to_frames(R, {"video": video, "start": 8, "count": 0})
    assert listed["frame_count"] == 2 and _max_diff(listed["images"][1], frames[9]) <= TOLERANCE


def clip_with_audio(path: Path) -> Video:
    """Ten 32x32 frames at 10 fps with 8 AAC frames (about 1 s) of mono silence at 8 kHz."""
    with av.open(str(path), "w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=10)
        vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        astream = out.add_stream("aac", rate=8000)
        for i in range(10):
            for packet in vstream.encode(av.VideoFrame.from_image(_frame(i, (32, 32)))):
                out.mux(packet)
        for packet in vstream.encode():
            out.mux(packet)
        for i in range(8):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in astream.encode(frame):
                out.mux(packet)
        for packet in astream.encode():
            out.mux(packet)
    return probe(path)


def test_audio_is_carried_through_resize(tmp_path: Path) -> None:
    path = tmp_path / "with_audio.mp4"
    source = clip_with_audio(path)
    assert source.has_audio
    resized = resize_video(R, {"video": source, "width": 16, "height": 16, "resample": "nearest"})
    assert resized["video"].has_audio and probe(resized["video"].path).has_audio
    assert _audio_seconds(resized["video"].path) == pytest.approx(_audio_seconds(path), abs=0.01)
    half = set_fps(R, {"video": source, "fps": 5.0, "mode": "resample"})["video"]
    assert half.has_audio and _audio_seconds(half.path) == pytest.approx(
        _audio_seconds(path), abs=0.01
    )
    cut = trim(R, {"video": source, "start": 0.2, "end": 0.6})["video"]
    assert cut.has_audio and cut.frame_count == 4
    assert 0.2 <= _audio_seconds(cut.path) <= 0.6  # the packets inside the cut, from 0


def _audio_seconds(path: Path) -> float:
    """Where the last audio packet ends (seconds), read from the file."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        end = 0.0
        for packet in container.demux(stream):
            if packet.pts is not None and packet.time_base:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        return end


def test_a_video_output_is_an_mp4_and_a_poster_with_its_facts() -> None:
    video = _clip(4)
    files = to_output_files("video", PortType.VIDEO, video)
    assert [(f.name, f.extension, f.content_type) for f in files] == [
        ("video", ".mp4", "video/mp4"),
        ("video_poster", ".png", "image/png"),
    ]
    assert files[0].data == video.path.read_bytes()
    facts = media_facts(video)
    assert facts is not None
    assert {k: facts[k] for k in ("fps", "frame_count", "duration", "codec")} == {
        "fps": 12.0, "frame_count": 4, "duration": pytest.approx(1 / 3), "codec": "h264"
    }  # fmt: skip


def test_webm_without_a_frame_count_in_its_header_is_probed(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(7):
            out.mux(stream.encode(av.VideoFrame.from_image(_frame(i, (32, 32)))))
        out.mux(stream.encode())
    video = probe(path)
    assert (video.frame_count, video.fps, video.codec, video.size) == (7, 10, "vp9", (32, 32))
    last = extract_frame(R, {"video": video, "mode": "last", "index": 0, "time": 0.0})
    assert _max_diff(last["image"], _frame(6, (32, 32))) <= 2 * TOLERANCE


def test_corrupt_and_non_video_files_are_refused(tmp_path: Path) -> None:
    good = _clip(4).path.read_bytes()
    for name, data in {"truncated.mp4": good[: len(good) // 3], "text.mp4": b"not a video"}.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidVideoError) as info:
            probe(path)
        assert info.value.code == "invalid_video"


def test_video_templates_are_registered_with_video_ports() -> None:
    ids = {t.id: t for t in TEMPLATES}
    for name in ("frames_to_video", "video_to_frames", "extract_frame", "trim", "concat",
                 "resize_video", "set_fps", "load_video"):  # fmt: skip
        assert ids[name].category == "video"
    assert ids["trim"].input("video").type == PortType.VIDEO  # type: ignore[union-attr]


_PEAK = """
import resource, sys
from PIL import Image
from nodes.video import encode
n = int(sys.argv[1])
frames = (Image.new("RGB", (512, 320), (i % 256, 64, 128)) for i in range(n))
encode(frames, 24)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(frames: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(frames)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_encoding_streams_memory_follows_the_frame_not_the_clip() -> None:
    """240 frames of 512x320 held in memory would be 118 MB; streamed, peak RSS barely moves."""
    small, large = _peak_kib(24), _peak_kib(240)
    print(json.dumps({"peak_kib_24": small, "peak_kib_240": large, "ratio": large / small}))
    assert large < small * 1.5 and large - small < 20 * 1024  # holding them: +55 MB


def test_a_video_input_must_be_linked() -> None:
    from graph_runtime.canvas import CanvasGraph
    from graph_runtime.errors import GraphValidationError
    from graph_runtime.registry import TemplateRegistry
    from graph_runtime.validation import validate_graph

    graph = CanvasGraph.model_validate(
        {"nodes": [
            {"id": "cut", "template": "trim"},
            {"id": "join", "template": "concat",
             "inputs": {"first": {"kind": "literal", "value": "clip.mp4"}}},
            {"id": "still", "template": "solid_image"},
            {"id": "bad", "template": "trim",
             "inputs": {"video": {"kind": "link", "node": "still", "output": "image"}}},
        ]}
    )  # fmt: skip
    with pytest.raises(GraphValidationError) as info:
        validate_graph(graph, TemplateRegistry(list(TEMPLATES)))
    issues = {(i.node_id, i.port): i for i in info.value.issues}
    assert issues["cut", "video"].code == "missing_input"
    assert "connect a node that makes one" in issues["cut", "video"].message
    assert issues["join", "first"].code == "invalid_type"
    assert "expects a video" in issues["join", "first"].message
    assert issues["bad", "video"].code == "type_mismatch"
