"""The assembly renderer on real files: letterboxing, frame-rate resampling, stills held, the
sha256 check, and memory that follows a frame, not the clip."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import pytest
from PIL import Image

import nodes.assembly as assembly_module
from graph_runtime.assembly import layout, planned_counts, still_frames, video_frames
from nodes.assembly import SourceChangedError, assemble, letterbox
from nodes.video import encode


def _near(pixel: Any, colour: tuple[int, int, int], tol: int = 10) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel[:3], colour, strict=True))


def test_letterbox_keeps_the_aspect_and_pads_black() -> None:
    wide = letterbox(Image.new("RGB", (100, 25), (255, 0, 0)), (64, 48))
    assert wide.size == (64, 48)
    assert wide.getpixel((32, 2)) == (0, 0, 0) and wide.getpixel((32, 24)) == (255, 0, 0)
    tall = letterbox(Image.new("RGB", (10, 40), (0, 0, 255)), (64, 48))
    assert tall.getpixel((2, 24)) == (0, 0, 0) and tall.getpixel((32, 24)) == (0, 0, 255)
    assert tall.getpixel((32, 0)) == (0, 0, 255)  # fits the height exactly: no bar on top


def test_frame_counts_follow_the_cut_rate() -> None:
    assert still_frames(2.0, Fraction(24)) == 48
    assert still_frames(0.01, Fraction(24)) == 1
    assert video_frames(10, Fraction(30), Fraction(24)) == 8
    assert video_frames(6, Fraction(12), Fraction(24)) == 12
    assert video_frames(48, Fraction(24000, 1001), Fraction(24)) == 48


def _files(tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """A still (wide, red) and a 10-frame 30 fps clip whose frame i is grey level 20*i."""
    still = io.BytesIO()
    Image.new("RGB", (80, 20), (220, 30, 30)).save(still, format="PNG")
    (tmp_path / "still.png").write_bytes(still.getvalue())
    frames = (Image.new("RGB", (48, 48), (20 * i, 20 * i, 20 * i)) for i in range(10))
    clip = encode(frames, 30)
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())

    def sha(name: str) -> str:
        return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()

    plan = {
        "scene": "ch01/sc01",
        "shot": "ch01/sc01/_cut",
        "width": 64,
        "height": 48,
        "fps_rational": "24/1",
        "still_duration": 0.25,
        "shots": [
            {"shot": "ch01/sc01/sh010", "take_id": "take_001", "kind": "still",
             "output": "image", "file": "still.png", "sha256": sha("still.png")},
            {"shot": "ch01/sc01/sh020", "take_id": "take_003", "kind": "video",
             "output": "video", "file": "clip.mp4", "sha256": sha("clip.mp4")},
        ],
    }  # fmt: skip

    def opener(rel: str) -> IO[bytes]:
        return (tmp_path / rel).open("rb")

    return plan, opener


def test_a_still_and_a_resampled_clip_cut_into_one_mp4(tmp_path: Path) -> None:
    plan, opener = _files(tmp_path)
    progress: list[tuple[int, int]] = []
    video, manifest = assemble(plan, opener, lambda done, total: progress.append((done, total)))
    # 0.25 s still at 24 fps = 6 frames; 10 frames at 30 fps = 8 frames at 24 fps
    assert (video.frame_count, video.fps, video.size) == (14, Fraction(24), (64, 48))
    expected = layout(plan, [6, 8])
    expected["audio"] = False
    for shot in expected["shots"]:
        shot["audio"] = False
    assert manifest == expected
    assert manifest["duration"] == round(14 / 24, 6)
    assert [s["start_frame"] for s in manifest["shots"]] == [0, 6]
    assert progress[-1] == (14, 14)
    assert planned_counts(plan) == [6, None]  # no recorded facts: probed when rendered

    with av.open(str(video.path)) as container:
        decoded = [f.to_image() for f in container.decode(video=0)]
    assert len(decoded) == 14
    assert _near(decoded[0].getpixel((32, 24)), (220, 30, 30))
    assert _near(decoded[0].getpixel((32, 2)), (0, 0, 0))  # letterbox bar
    # output frame j shows source frame floor(j * 30 / 24): 0, 1, 2, 3, 5, 6, 7, 8
    shown = [round(decoded[6 + j].getpixel((32, 24))[0] / 20) for j in range(8)]
    assert shown == [0, 1, 2, 3, 5, 6, 7, 8]
    assert _near(decoded[6].getpixel((2, 24)), (0, 0, 0))  # square clip: pillarbox
    # the same plan over the same files rebuilds the same bytes (same PyAV/x264 build)
    again, _ = assemble(plan, opener)
    assert again.read_bytes() == video.read_bytes()


def test_a_clip_at_the_cut_size_is_passed_through_without_letterboxing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoded frames already at the cut's size go to the encoder as they are (no RGB round
    trip; their I/P/B types are not imposed on the encoder)."""
    plan, opener = _files(tmp_path)
    clip = encode((Image.new("RGB", (64, 48), (30 * i, 30 * i, 30 * i)) for i in range(8)), 24)
    (tmp_path / "same.mp4").write_bytes(clip.read_bytes())
    digest = hashlib.sha256((tmp_path / "same.mp4").read_bytes()).hexdigest()
    plan["shots"] = [{**plan["shots"][1], "file": "same.mp4", "sha256": digest}]
    boxed: list[tuple[int, int]] = []
    real = assembly_module.letterbox
    monkeypatch.setattr(
        assembly_module,
        "letterbox",
        lambda image, size: boxed.append(image.size) or real(image, size),
    )
    video, manifest = assemble(plan, opener)
    assert boxed == [] and manifest["frame_count"] == 8
    with av.open(str(video.path)) as container:
        levels = [round(f.to_image().getpixel((32, 24))[0] / 30) for f in container.decode(video=0)]
    assert levels == list(range(8))


def test_a_changed_source_file_is_refused_before_encoding(tmp_path: Path) -> None:
    plan, opener = _files(tmp_path)
    (tmp_path / "still.png").write_bytes(b"\x89PNG changed")
    with pytest.raises(SourceChangedError) as info:
        assemble(plan, opener)
    assert info.value.code == "source_changed" and info.value.details["shot"] == "ch01/sc01/sh010"


_PEAK = """
import hashlib, resource, sys, tempfile
from pathlib import Path
from PIL import Image
from nodes.video import encode
from nodes.assembly import assemble
n = int(sys.argv[1])
frames = (Image.new("RGB", (512, 320), (i % 256, 64, 128)) for i in range(n))
clip = encode(frames, 24)
entry = {"shot": "a/b/c", "take_id": "take_001", "kind": "video", "output": "video",
         "file": str(clip.path), "sha256": hashlib.sha256(clip.read_bytes()).hexdigest()}
plan = {"scene": "a/b", "shot": "a/b/_cut", "width": 512, "height": 320, "fps_rational": "30/1",
        "still_duration": 1.0, "shots": [entry]}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
video, manifest = assemble(plan, lambda rel: open(rel, "rb"))
assert manifest["frame_count"] == n * 30 // 24, manifest
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(frames: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(frames)], capture_output=True, text=True, check=True
    )
    base, peak = out.stdout.strip().splitlines()[-1].split()
    return int(base), int(peak)


def test_assembly_memory_follows_the_frame_not_the_clip() -> None:
    """240 source frames of 512x320 (300 out at 30 fps) held would be ~150 MB; streamed, the
    peak is that of 24 frames."""
    (_, small), (_, large) = _peak_kib(24), _peak_kib(240)
    print(json.dumps({"peak_kib_24": small, "peak_kib_240": large, "ratio": large / small}))
    assert large < small * 1.5 and large - small < 20 * 1024


SINE_HZ, SINE_AMP = 440.0, 0.5


def _clip_with_sine(path: Path, frames: int, fps: int, size: tuple[int, int]) -> None:
    """An MP4 of ``frames`` grey frames with a mono 44.1 kHz AAC sine as long as the video."""
    import numpy as np

    rate = 44_100
    with av.open(str(path), "w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = size[0], size[1], "yuv420p"
        astream = out.add_stream("aac", rate=rate)
        astream.layout = "mono"
        for i in range(frames):
            image = Image.new("RGB", size, (100, 100, 100))
            frame = av.VideoFrame.from_image(image)
            frame.pts = i
            for packet in vstream.encode(frame):
                out.mux(packet)
        for packet in vstream.encode():
            out.mux(packet)
        total = round(frames / fps * rate)
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            t = (np.arange(start, start + n) / rate).astype(np.float64)
            samples = (SINE_AMP * np.sin(2 * np.pi * SINE_HZ * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in astream.encode(frame):
                out.mux(packet)
        for packet in astream.encode():
            out.mux(packet)


def _cut_audio(path: Path) -> Any:
    """The cut's audio track decoded: (channels x samples float32, sample rate)."""
    import numpy as np

    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
        stream = container.streams.audio[0]
        rate = stream.rate
        blocks = [f.to_ndarray() for f in container.decode(stream)]
    return np.concatenate(blocks, axis=1), rate


def test_a_sound_shot_keeps_its_audio_aligned_and_the_rest_is_silence(tmp_path: Path) -> None:
    """still (0.25 s) | 12 frames at 24 fps with a 440 Hz sine (0.5 s) | soundless clip (10
    frames at 30 fps: 8 at 24, 0.333 s). The cut's AAC track (48 kHz stereo) is silent over the
    still and the soundless clip (RMS < 0.01), carries the sine over the sound shot (RMS within
    10% of 0.5/sqrt(2), away from the 20 ms at its edges), and is as long as the video within
    one AAC frame (1024 samples)."""
    import numpy as np

    plan, opener = _files(tmp_path)
    _clip_with_sine(tmp_path / "sound.mp4", 12, 24, (64, 48))
    digest = hashlib.sha256((tmp_path / "sound.mp4").read_bytes()).hexdigest()
    sound = {"shot": "ch01/sc01/sh015", "take_id": "take_002", "kind": "video",
             "output": "video", "file": "sound.mp4", "sha256": digest}  # fmt: skip
    plan["shots"] = [plan["shots"][0], sound, plan["shots"][1]]
    video, manifest = assemble(plan, opener)
    assert video.has_audio and manifest["audio"] is True
    assert [s["audio"] for s in manifest["shots"]] == [False, True, False]
    assert [s["frame_count"] for s in manifest["shots"]] == [6, 12, 8]

    samples, rate = _cut_audio(video.path)
    assert rate == 48_000 and samples.shape[0] == 2
    assert abs(samples.shape[1] - round(manifest["duration"] * rate)) <= 1024

    def rms(start: float, end: float) -> float:
        part = samples[:, round(start * rate) : round(end * rate)]
        return float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))

    edge = 0.02
    still_end, sound_end = 6 / 24, 18 / 24
    assert rms(0, still_end - edge) < 0.01
    assert rms(still_end + edge, sound_end - edge) == pytest.approx(SINE_AMP / np.sqrt(2), rel=0.1)
    assert rms(sound_end + edge, manifest["duration"]) < 0.01
    # the sine's frequency survives the resampling (44.1 kHz mono -> 48 kHz stereo)
    mid = samples[0, round((still_end + edge) * rate) : round((sound_end - edge) * rate)]
    peak = np.argmax(np.abs(np.fft.rfft(mid))) * rate / len(mid)
    assert peak == pytest.approx(SINE_HZ, abs=5)

    again, _ = assemble(plan, opener)  # audio does not break the byte-for-byte rebuild
    assert again.read_bytes() == video.read_bytes()


def test_a_cut_without_sound_anywhere_has_no_audio_stream(tmp_path: Path) -> None:
    plan, opener = _files(tmp_path)
    video, manifest = assemble(plan, opener)
    assert not video.has_audio and manifest["audio"] is False
    assert [s["audio"] for s in manifest["shots"]] == [False, False]
    with av.open(str(video.path)) as container:
        assert not container.streams.audio
