"""Image lists, animated WEBP/PNG (Pillow), WEBM (VP9/AV1 through PyAV), create_video with
another video's audio, video_as_mp4: each decoded back and checked."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from graph_runtime.templates import NullReporter, PortType
from nodes.animated import (
    Animation,
    animated_image,
    create_video,
    frames_to_webm,
    image_list,
    video_as_mp4,
)
from nodes.builtin import TEMPLATES
from nodes.values import media_facts, summarize, to_output_files
from nodes.video import Video, probe
from tests.nodes.test_video import clip_with_audio

R = NullReporter()
ANIMATED = {"format": "webp", "fps": 8.0, "loop": 0, "lossless": True, "quality": 80,
            "method": "fastest", "compress_level": 1}  # fmt: skip


def _frame(i: int, size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, ((i * 53) % 256, (i * 97) % 256, (200 - i * 31) % 256))


def _decoded(path: Path) -> tuple[int, float, tuple[int, int], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, float(stream.average_rate), (stream.width, stream.height), stream.name


def test_image_list_flattens_its_inputs_in_order() -> None:
    nested = [_frame(1), [_frame(2), _frame(3)]]
    out = image_list(R, {"image_1": _frame(0), "image_3": nested, "image_16": _frame(4)})
    assert out["count"] == 5
    assert [im.getpixel((0, 0)) for im in out["images"]] == [
        _frame(i).getpixel((0, 0)) for i in range(5)
    ]
    with pytest.raises(ValueError, match="image_1"):
        image_list(R, {})


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_animated_image_has_one_frame_per_image(fmt: str) -> None:
    frames = [_frame(i) for i in range(4)]
    animation = animated_image(R, {**ANIMATED, "images": frames, "format": fmt})["animation"]
    assert isinstance(animation, Animation)
    image = Image.open(io.BytesIO(animation.data))
    assert image.format == fmt.upper() and image.n_frames == 4 and image.is_animated
    assert image.size == (32, 24)
    for index, frame in enumerate(frames):
        image.seek(index)
        image.load()
        assert image.info["duration"] == pytest.approx(125, abs=1)  # 8 fps
        assert image.convert("RGB").getpixel((5, 5)) == frame.getpixel((5, 5))  # lossless
    files = to_output_files("animation", PortType.ANY, animation)
    assert [(f.name, f.extension, f.content_type) for f in files] == [
        ("animation", f".{fmt}", f"image/{fmt}")
    ]
    assert summarize(animation) == {"kind": "animation", **(media_facts(animation) or {})}
    assert media_facts(animation) == {"format": fmt, "animated": True, "frame_count": 4,
                                      "fps": 8.0, "duration": 0.5, "width": 32,
                                      "height": 24}  # fmt: skip


def test_animated_image_refuses_a_bad_fps_and_no_images() -> None:
    with pytest.raises(ValueError, match="fps"):
        animated_image(R, {**ANIMATED, "images": [_frame(0)], "fps": 0})
    with pytest.raises(ValueError, match="images"):
        animated_image(R, {**ANIMATED, "images": []})


@pytest.mark.parametrize(("codec", "name"), [("vp9", "vp9"), ("av1", "av1")])
def test_frames_to_webm_decodes_back(codec: str, name: str) -> None:
    frames = [_frame(i, (64, 48)) for i in range(6)]
    video = frames_to_webm(R, {"images": frames, "codec": codec, "fps": 12.0, "crf": 20.0})["video"]
    assert isinstance(video, Video) and video.path.suffix == ".webm"
    count, fps, size, _ = _decoded(video.path)
    assert (count, fps, size) == (6, 12.0, (64, 48))
    probed = probe(video.path)
    assert probed.codec in (name, "libdav1d", "libvpx-vp9")
    files = to_output_files("video", PortType.VIDEO, video)
    assert [(f.name, f.extension, f.content_type) for f in files] == [
        ("video", ".webm", "video/webm"),
        ("video_poster", ".png", "image/png"),
    ]


def test_create_video_with_another_videos_audio(tmp_path: Path) -> None:
    source = clip_with_audio(tmp_path / "source.mp4")
    frames = [_frame(i, (32, 32)) for i in range(5)]
    video = create_video(R, {"images": frames, "fps": 5.0, "audio": source})["video"]
    assert video.has_audio and probe(video.path).has_audio
    assert _decoded(video.path)[:3] == (5, 5.0, (32, 32))
    silent = create_video(R, {"images": frames, "fps": 10.0, "audio": None})["video"]
    assert not silent.has_audio and _decoded(silent.path)[:2] == (5, 10.0)
    with pytest.raises(ValueError, match="images"):
        create_video(R, {"images": [_frame(0, (33, 32))], "fps": 5.0})  # odd width


def test_video_as_mp4_keeps_an_mp4_and_reencodes_a_webm(tmp_path: Path) -> None:
    source = clip_with_audio(tmp_path / "source.mp4")
    assert video_as_mp4(R, {"video": source})["video"] is source
    webm = frames_to_webm(R, {"images": [_frame(i, (32, 32)) for i in range(3)],
                              "codec": "vp9", "fps": 6.0, "crf": 30.0})["video"]  # fmt: skip
    mp4 = video_as_mp4(R, {"video": webm})["video"]
    assert mp4.path.suffix == ".mp4" and mp4.codec == "h264"
    assert _decoded(mp4.path) == (3, 6.0, (32, 32), "h264")


def test_templates_are_registered() -> None:
    ids = {t.id: t for t in TEMPLATES}
    for name in ("keep_image", "image_list", "animated_image", "frames_to_webm", "create_video",
                 "video_as_mp4"):  # fmt: skip
        assert ids[name].category == "video"
    assert ids["create_video"].input("audio").type == PortType.VIDEO  # type: ignore[union-attr]
