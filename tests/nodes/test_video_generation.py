"""Video generation on the tiny random-weight LTX-Video model (CPU): the demo model, offline
loading, text_to_video / image_to_video decoded back, progress and previews, bad inputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from graph_runtime.errors import ModelNotFoundError
from graph_runtime.templates import NullReporter
from nodes.diffusion.requests import InvalidGenerationRequest
from nodes.diffusion.service import DIFFUSION, DiffusionService
from nodes.diffusion.video_demo import (
    DEMO_VIDEO_MODEL,
    build_random_video_pipeline,
    demo_video_ready,
    ensure_demo_video_model,
)
from nodes.diffusion.video_generation import image_content_hash
from nodes.diffusion.video_templates import image_to_video, text_to_video
from stores.home import TakeflowHome
from tests.nodes.conftest import service_for

SMALL = {"prompt": "a paper boat on a river", "negative_prompt": "", "model": DEMO_VIDEO_MODEL,
         "width": 64, "height": 96, "frames": 17, "fps": 12.0, "steps": 4, "cfg": 3.0,
         "seed": 7}  # fmt: skip


class Recorder(NullReporter):
    """Keeps every progress update (stage, message, whether it had a preview)."""

    def __init__(self, service: DiffusionService) -> None:
        super().__init__(services={DIFFUSION.name: service})
        self.updates: list[tuple[float, str, str, bytes | None]] = []

    def progress(
        self, fraction: float, stage: str = "", message: str = "", preview: bytes | None = None
    ) -> None:
        self.updates.append((fraction, stage, message, preview))


@pytest.fixture(scope="session")
def tiny_video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_video_pipeline(tmp_path_factory.mktemp("video") / "tiny-ltx")


@pytest.fixture
def video_home(diffusion_home: TakeflowHome, tiny_video_dir: Path) -> TakeflowHome:
    from nodes.diffusion.demo import register_model

    register_model(diffusion_home, DEMO_VIDEO_MODEL, tiny_video_dir, demo=True)
    return diffusion_home


@pytest.fixture
def video_service(video_home: TakeflowHome) -> Any:
    service = service_for(video_home, preview_every=2)
    yield service
    service.close()


def decode(path: Path) -> tuple[list[Image.Image], Fraction, tuple[int, int], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_image() for f in container.decode(stream)]
        rate = Fraction(stream.average_rate or 0)
        return frames, rate, (stream.width, stream.height), stream.codec_context.name


def test_demo_video_model_is_built_from_configs_registered_and_labelled(
    tmp_path: Path, _isolated_home: Path
) -> None:
    home = TakeflowHome.resolve(_isolated_home)
    assert not demo_video_ready(home)
    started = time.perf_counter()
    folder = ensure_demo_video_model(home)
    built = time.perf_counter() - started
    assert folder == home.path / "models" / DEMO_VIDEO_MODEL and demo_video_ready(home)
    entry = home.config()["models"][DEMO_VIDEO_MODEL]
    assert entry["demo"] is True and "demo" in entry["label"].lower()
    assert "random weights" in entry["label"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "LTXPipeline"
    assert index["transformer"] == ["diffusers", "LTXVideoTransformer3DModel"]
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights < 2 * 2**20, weights  # tiny: cheap to build at a server's first start
    assert built < 60  # seconds on CPU (about one here); a generous bound for a shared box
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    ensure_demo_video_model(home)  # current: not rebuilt
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp


def test_the_video_model_loads_offline_from_its_folder(
    video_home: TakeflowHome, video_service: DiffusionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    spec = video_service.models.resolve(DEMO_VIDEO_MODEL)
    entry = video_service.cache.get(spec, "cpu")
    assert type(entry.pipe).__name__ == "LTXPipeline"
    assert (entry.pipe.vae_spatial_compression_ratio, entry.pipe.vae_temporal_compression_ratio) \
        == (32, 8)  # fmt: skip
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_text_to_video_makes_the_requested_frames_at_the_fps_with_progress_and_previews(
    video_service: DiffusionService,
) -> None:
    ctx = Recorder(video_service)
    out = text_to_video(ctx, SMALL)
    video = out["video"]
    assert (video.frame_count, video.fps, video.size) == (17, Fraction(12), (64, 96))
    frames, fps, size, codec = decode(video.path)
    assert (len(frames), fps, size, codec) == (17, Fraction(12), (64, 96), "h264")
    assert out["seed"] == 7
    steps = [m for _, stage, m, _ in ctx.updates if stage == "denoising"]
    assert steps == [f"step {i} of 4" for i in range(1, 5)]
    previews = [p for _, stage, _, p in ctx.updates if p is not None]
    assert len(previews) == 1 and previews[0][:2] == b"\xff\xd8"  # step 2 of 4 (every 2)
    assert Image.open(io.BytesIO(previews[0])).size == (64, 96)
    stages = [stage for _, stage, _, _ in ctx.updates]
    assert "decoding" in stages
    assert any(m == "decoded chunk 1" for _, stage, m, _ in ctx.updates if stage == "decoding")
    encoded = [m for _, stage, m, _ in ctx.updates if stage == "encoding"]
    assert encoded[-1] == "frame 17 of 17" and len(encoded) >= 5
    fractions = [f for f, *_ in ctx.updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert ctx.metadata["demo"] is True and ctx.metadata["model"] == DEMO_VIDEO_MODEL
    # The same seed makes the same clip.
    again = decode(text_to_video(Recorder(video_service), SMALL)["video"].path)[0]
    assert [f.tobytes() for f in again] == [f.tobytes() for f in frames]


def test_image_to_video_conditions_on_the_image_and_records_it(
    video_service: DiffusionService,
) -> None:
    start = Image.new("RGB", (64, 96), (200, 40, 30))
    ctx = Recorder(video_service)
    out = image_to_video(ctx, {**SMALL, "image": start, "frames": 9, "fps": 8.0})
    frames, fps, size, _ = decode(out["video"].path)
    assert (len(frames), fps, size) == (9, Fraction(8), (64, 96))
    assert image_content_hash(out["first_frame"]) == image_content_hash(start)
    assert ctx.metadata["conditioning_image_sha256"] == image_content_hash(start)
    assert ctx.metadata["conditioning_frame_sha256"] == image_content_hash(start)
    # Another size: the image is scaled to the clip; the input's hash is still what was given.
    wide = Image.new("RGB", (200, 100), (10, 200, 30))
    ctx = Recorder(video_service)
    out = image_to_video(ctx, {**SMALL, "image": wide, "frames": 9})
    assert out["first_frame"].size == (64, 96)
    assert ctx.metadata["conditioning_image_sha256"] == image_content_hash(wide)
    assert ctx.metadata["conditioning_frame_sha256"] == image_content_hash(out["first_frame"])

    # The same start picture and seed make the same clip; another picture, another clip.
    def first(image: Image.Image) -> bytes:
        clip = image_to_video(Recorder(video_service), {**SMALL, "image": image, "frames": 9})
        return decode(clip["video"].path)[0][0].tobytes()

    assert first(wide) == decode(out["video"].path)[0][0].tobytes()
    assert first(start) != first(wide)


@pytest.mark.parametrize(
    ("change", "port", "message"),
    [
        ({"frames": 20}, "frames", r"input 'frames': LTX-Video makes 8k\+1 .* \(try 17 or 25"),
        ({"width": 100}, "width", r"input 'width': .* multiples of 32 .* \(try 96 or 128"),
        ({"height": 48}, "height", r"input 'height': .* multiples of 32"),
        ({"fps": 0.0}, "fps", r"input 'fps'"),
    ],
)
def test_bad_sizes_and_frame_counts_are_refused_naming_the_input(
    video_service: DiffusionService, change: dict[str, Any], port: str, message: str
) -> None:
    ctx = Recorder(video_service)
    with pytest.raises(InvalidGenerationRequest, match=message) as caught:
        text_to_video(ctx, {**SMALL, **change})
    assert caught.value.details["port"] == port
    assert caught.value.code == "invalid_generation_request"
    assert ctx.updates == []  # refused before any model is loaded


def test_image_to_video_needs_one_image_and_a_video_model(
    video_service: DiffusionService,
) -> None:
    with pytest.raises(InvalidGenerationRequest, match="input 'image'"):
        image_to_video(Recorder(video_service), {**SMALL, "image": None})
    with pytest.raises(ValueError, match="input 'image': image_to_video takes one image"):
        image_to_video(Recorder(video_service), {**SMALL, "image": [Image.new("RGB", (64, 96))]})
    with pytest.raises(InvalidGenerationRequest, match="input 'model': 'demo' is a "
                       "StableDiffusionPipeline, not an LTX-Video model"):  # fmt: skip
        text_to_video(Recorder(video_service), {**SMALL, "model": "demo"})
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        text_to_video(Recorder(video_service), {**SMALL, "model": "nope"})


@pytest.fixture(scope="session")
def tiny_video_file(tiny_video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's transformer and VAE as one file in the original LTX-Video key layout."""
    from diffusers import DiffusionPipeline

    from tests.nodes.ltx_export import save_ltx_single_file

    pipe = DiffusionPipeline.from_pretrained(tiny_video_dir, local_files_only=True)
    return save_ltx_single_file(pipe, tmp_path_factory.mktemp("ltx") / "tiny-ltx.safetensors")


def test_a_single_ltx_video_file_loads_offline_with_exact_weights_and_generates(
    video_home: TakeflowHome,
    video_service: DiffusionService,
    tiny_video_dir: Path,
    tiny_video_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    import torch
    from diffusers import DiffusionPipeline

    from nodes.diffusion.checkpoints import safetensors_keys

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    keys = safetensors_keys(tiny_video_file)
    assert "model.diffusion_model.patchify_proj.weight" in keys
    assert "vae.encoder.conv_in.conv.weight" in keys
    # The tiny file's own configs (real 0.9.0 files use the generated ones); T5 from that folder.
    models = dict(video_home.config()["models"])
    models["ltx-file"] = {"path": str(tiny_video_file), "config": str(tiny_video_dir)}
    video_home.update_config(models=models)
    spec = video_service.models.resolve("ltx-file")
    assert (spec.format, spec.arch) == ("single_file", "ltxv")
    loaded = video_service.cache.get(spec, "cpu").pipe
    reference = DiffusionPipeline.from_pretrained(tiny_video_dir, local_files_only=True)
    for name in ("transformer", "vae", "text_encoder"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert sorted(ours) == sorted(theirs), name
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    out = text_to_video(Recorder(video_service), {**SMALL, "model": "ltx-file"})
    assert decode(out["video"].path)[0][0].size == (64, 96)
    # Configs only in "config" (no weights, no T5), the T5 from the folder "text_encoder" names.
    configs = tiny_video_dir.parent / "tiny-ltx-configs"
    skip = shutil.ignore_patterns("*.safetensors", "text_encoder", "tokenizer")
    shutil.copytree(tiny_video_dir, configs, dirs_exist_ok=True, ignore=skip)
    models["ltx-parts"] = {"path": str(tiny_video_file), "config": str(configs),
                           "text_encoder": str(tiny_video_dir)}  # fmt: skip
    video_home.update_config(models=models)
    parts = video_service.models.resolve("ltx-parts")
    assert parts.text_encoder == tiny_video_dir and parts.describe()["text_encoder"]
    words = video_service.cache.get(parts, "cpu").pipe.text_encoder.state_dict()
    assert all(torch.equal(words[k], v) for k, v in reference.text_encoder.state_dict().items())


def test_generated_ltx_config_has_the_published_shapes_and_a_missing_text_encoder_is_named(
    video_home: TakeflowHome, video_service: DiffusionService, tiny_video_file: Path
) -> None:
    import torch
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    models = dict(video_home.config()["models"])
    models["ltx-bare"] = {"path": str(tiny_video_file)}
    video_home.update_config(models=models)
    spec = video_service.models.resolve("ltx-bare")
    assert spec.config == video_home.path / "models" / ".configs" / "ltxv"
    with torch.device("meta"):  # the 2B shapes, without allocating them
        transformer = LTXVideoTransformer3DModel.from_config(
            LTXVideoTransformer3DModel.load_config(spec.config, subfolder="transformer")
        )
        vae = AutoencoderKLLTXVideo.from_config(
            AutoencoderKLLTXVideo.load_config(spec.config, subfolder="vae")
        )
    params = sum(p.numel() for p in transformer.parameters())
    assert 1.8e9 < params < 2.1e9, params  # LTX-Video 2B
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
    # The generated folder has configs only: the T5 encoder must be named.
    with pytest.raises(
        ModelNotFoundError,
        match=r"an LTX-Video single file holds no text encoder; set \"text_encoder\"",
    ) as e:
        text_to_video(Recorder(video_service), {**SMALL, "model": "ltx-bare"})
    assert e.value.code == "model_load_failed"


def test_a_cancel_stops_the_clip_at_the_next_step_and_frees_the_pipeline(
    video_service: DiffusionService,
) -> None:
    from graph_runtime.errors import TaskCancelledError

    class CancelAtStep2(Recorder):
        def progress(self, fraction: float, stage: str = "", message: str = "",
                     preview: bytes | None = None) -> None:  # fmt: skip
            super().progress(fraction, stage, message, preview)
            if message == "step 2 of 4":
                self.cancelled = True
            self.check_cancelled()

    ctx = CancelAtStep2(video_service)
    with pytest.raises(TaskCancelledError):
        text_to_video(ctx, SMALL)
    assert [m for _, s, m, _ in ctx.updates if s == "denoising"] == ["step 1 of 4", "step 2 of 4"]
    assert not any(s == "encoding" for _, s, _, _ in ctx.updates)
    out = text_to_video(Recorder(video_service), {**SMALL, "frames": 9})  # the lock was released
    assert out["video"].frame_count == 9


def test_an_image_template_given_the_video_model_names_the_model_input(
    video_service: DiffusionService,
) -> None:
    from nodes.diffusion.service import GenerationRequest

    request = GenerationRequest(prompt="x", model=DEMO_VIDEO_MODEL, width=64, height=64, steps=2)
    with pytest.raises(InvalidGenerationRequest, match=r"input 'model': 'demo-video' is an "
                       "LTX-Video model: it makes video; use text_to_video") as caught:  # fmt: skip
        video_service.generate(request, NullReporter())
    assert caught.value.details["port"] == "model"
