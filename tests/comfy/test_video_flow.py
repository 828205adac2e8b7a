"""ComfyUI's animated image and video nodes through the protocol against ``serve --demo
--comfy-port``: an IMAGE batch saved as an animated WEBP and as an MP4, an uploaded MP4 split
and put together again (MP4 with its audio, WEBM), the files listed by /history and the
``executed`` message, served by /view with their content type and ranges; refusals by node."""

from __future__ import annotations

import hashlib
import io
import urllib.parse
import urllib.request
import uuid
from email.message import Message
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from tests.comfy.client import ComfyClient, of_prompt, txt2img, until_done
from tests.server.harness import ServerProcess


def _run(client: ComfyClient, prompt: dict[str, Any]) -> tuple[str, list[Any]]:
    client_id = str(uuid.uuid4())
    ws = client.connect(client_id, timeout=120)
    try:
        answer = client.queue_prompt(prompt, client_id)
        assert answer["node_errors"] == {}, answer
        prompt_id = answer["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id, timeout=180), prompt_id)
    finally:
        ws.close()
    return prompt_id, messages


def _entry(client: ComfyClient, prompt_id: str) -> dict[str, Any]:
    status, history = client.get(f"/history/{prompt_id}")
    assert status == 200
    entry: dict[str, Any] = history[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry


def _view(client: ComfyClient, item: dict[str, str], range_: str | None = None
          ) -> tuple[int, Message, bytes]:  # fmt: skip
    query = urllib.parse.urlencode({k: item[k] for k in ("filename", "subfolder", "type")})
    request = urllib.request.Request(f"{client.base}/view?{query}")
    if range_:
        request.add_header("Range", range_)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers, response.read()


def _decode(data: bytes, tmp: Path, name: str) -> tuple[int, Fraction, tuple[int, int], str, bool]:
    path = tmp / name
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return (count, Fraction(stream.average_rate), (stream.width, stream.height),
                stream.codec_context.name, bool(container.streams.audio))  # fmt: skip


def _executed(messages: list[Any]) -> dict[str, Any]:
    return {
        m["data"]["node"]: m["data"]["output"]
        for m in messages
        if isinstance(m, dict) and m["type"] == "executed"
    }


def test_a_batch_as_an_animated_webp_and_an_mp4(
    comfy: tuple[ServerProcess, ComfyClient], tmp_path: Path
) -> None:
    server, client = comfy
    prompt = txt2img(seed=11, batch=4, size=64)
    prompt["9"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["8", 0],
            "filename_prefix": "ComfyUI",
            "fps": 6.0,
            "lossless": True,
            "quality": 80,
            "method": "default",
        },
    }
    prompt["10"] = {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": 8.0}}
    prompt["11"] = {"class_type": "SaveVideo",
                    "inputs": {"video": ["10", 0], "filename_prefix": "video/ComfyUI",
                               "format": "auto", "codec": "auto"}}  # fmt: skip
    prompt["12"] = {"class_type": "SaveAnimatedPNG",
                    "inputs": {"images": ["8", 0], "filename_prefix": "apng/ComfyUI",
                               "fps": 4.0, "compress_level": 1}}  # fmt: skip
    prompt["13"] = {"class_type": "SaveImage",  # the same batch as stills too
                    "inputs": {"images": ["8", 0], "filename_prefix": "frames"}}  # fmt: skip
    prompt_id, messages = _run(client, prompt)
    entry = _entry(client, prompt_id)
    stills = entry["outputs"]["13"]["images"]
    assert [i["filename"] for i in stills] == [f"frames_0000{n}_.png" for n in range(1, 5)]
    assert "animated" not in entry["outputs"]["13"]
    apng = entry["outputs"]["12"]
    assert apng["animated"] == [True] and apng["images"][0]["subfolder"] == "apng"
    status, headers, data = _view(client, apng["images"][0])
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.n_frames == 4 and image.info["duration"] == 250
    webp = entry["outputs"]["9"]
    assert webp["animated"] == [True]
    (item,) = webp["images"]
    assert item["type"] == "output" and item["subfolder"] == ""
    assert item["filename"].startswith("ComfyUI_") and item["filename"].endswith("_.webp")
    status, headers, data = _view(client, item)
    assert status == 200 and headers["Content-Type"] == "image/webp"
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP" and image.n_frames == 4 and image.size == (64, 64)
    frames = []
    for i in range(4):
        image.seek(i)
        frames.append(image.convert("RGB").tobytes())
    assert len(set(frames)) == 4  # four seeds, four pictures
    pngs = [Image.open(io.BytesIO(_view(client, i)[2])).convert("RGB").tobytes() for i in stills]
    assert pngs == frames  # lossless: the animation's frames are the batch, in order

    (video,) = entry["outputs"]["11"]["images"]
    assert entry["outputs"]["11"]["animated"] == [True]
    assert video["subfolder"] == "video" and video["filename"].endswith("_.mp4")
    status, headers, mp4 = _view(client, video)
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert headers.get("Accept-Ranges") == "bytes"
    assert _decode(mp4, tmp_path, "out.mp4") == (4, Fraction(8), (64, 64), "h264", False)
    status, headers, part = _view(client, video, "bytes=10-19")
    assert status == 206 and part == mp4[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(mp4)}"

    assert _executed(messages) == {
        "9": webp,
        "11": entry["outputs"]["11"],
        "12": apng,
        "13": entry["outputs"]["13"],
    }
    status, history = client.get("/history")
    assert history[prompt_id]["outputs"] == entry["outputs"]
    # the take holds the same files, with their facts
    takes = server.ok("GET", "/api/v1/projects/comfyui/takes",
                      params={"task_id": entry["takeflow"]["task_id"]})  # fmt: skip
    (take,) = takes
    names = sorted(Path(o["path"]).name for o in take["outputs"].values())
    assert any(n.endswith(".webp") for n in names) and any(n.endswith(".mp4") for n in names)
    media = take["metadata"]["media"]
    assert sorted((m.get("frame_count"), m.get("fps")) for m in media.values()) == [
        (4, 4.0), (4, 6.0), (4, 8.0)
    ]  # fmt: skip


def test_one_uploaded_image_is_a_one_frame_webp_not_animated(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = comfy
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 90)).save(buf, format="PNG")
    assert client.upload("still.png", buf.getvalue())[0] == 200
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "still.png"}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0],
              "filename_prefix": "still", "fps": 6.0, "lossless": True, "quality": 80,
              "method": "fastest"}},
    }  # fmt: skip
    prompt_id, _ = _run(client, prompt)
    output = _entry(client, prompt_id)["outputs"]["2"]
    assert output["animated"] == [False]  # as ComfyUI: one frame is not animated
    assert [i["filename"] for i in output["images"]] == ["still_00001_.webp"]
    status, _, data = _view(client, output["images"][0])
    image = Image.open(io.BytesIO(data))
    assert status == 200 and getattr(image, "n_frames", 1) == 1 and image.size == (40, 30)


def _clip_with_audio(path: Path, count: int = 12, fps: int = 12) -> bytes:
    """A 48x32 H.264 MP4 at 12 fps with an AAC track, distinct frames."""
    with av.open(str(path), "w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = 48, 32, "yuv420p"
        astream = out.add_stream("aac", rate=8000)
        for i in range(count):
            image = Image.new("RGB", (48, 32), ((i * 20) % 256, 80, 255 - i * 20))
            for packet in vstream.encode(av.VideoFrame.from_image(image)):
                out.mux(packet)
        for packet in vstream.encode():
            out.mux(packet)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32),
                                               format="fltp", layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in astream.encode(frame):
                out.mux(packet)
        for packet in astream.encode():
            out.mux(packet)
    return path.read_bytes()


def test_an_uploaded_mp4_split_and_put_together_again(
    comfy: tuple[ServerProcess, ComfyClient], tmp_path: Path
) -> None:
    server, client = comfy
    clip = _clip_with_audio(tmp_path / "shot.mp4")
    status, uploaded = client.upload("shot.mp4", clip)
    assert status == 200 and uploaded["name"] == "shot.mp4"
    _, info = client.get("/object_info/LoadVideo")
    assert "shot.mp4" in info["LoadVideo"]["input"]["required"]["file"][0]
    _, info = client.get("/object_info/LoadImage")  # as ComfyUI: images only
    assert "shot.mp4" not in info["LoadImage"]["input"]["required"]["image"][0]
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "shot.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CreateVideo",
              "inputs": {"images": ["2", 0], "fps": ["2", 2], "audio": ["2", 1]}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0],
              "filename_prefix": "roundtrip", "format": "mp4", "codec": "h264"}},
        "5": {"class_type": "SaveWEBM", "inputs": {"images": ["2", 0],
              "filename_prefix": "roundtrip", "codec": "vp9", "fps": 24.0, "crf": 32.0}},
    }  # fmt: skip
    prompt_id, messages = _run(client, prompt)
    entry = _entry(client, prompt_id)
    (mp4_item,) = entry["outputs"]["4"]["images"]
    (webm_item,) = entry["outputs"]["5"]["images"]
    # one counter per prefix, whatever the extension (ComfyUI's numbering)
    assert sorted([mp4_item["filename"], webm_item["filename"]]) == [
        "roundtrip_00001_.mp4", "roundtrip_00002_.webm"
    ] or sorted([mp4_item["filename"], webm_item["filename"]]) == [
        "roundtrip_00001_.webm", "roundtrip_00002_.mp4"
    ]  # fmt: skip
    status, headers, mp4 = _view(client, mp4_item)
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert _decode(mp4, tmp_path, "rt.mp4") == (12, Fraction(12), (48, 32), "h264", True)
    status, headers, webm = _view(client, webm_item)
    assert status == 200 and headers["Content-Type"] == "video/webm"
    count, fps, size, codec, audio = _decode(webm, tmp_path, "rt.webm")
    assert (count, fps, size, codec, audio) == (12, Fraction(24), (48, 32), "vp9", False)
    assert entry["outputs"]["5"]["animated"] == [True]
    assert _executed(messages) == {"4": entry["outputs"]["4"], "5": entry["outputs"]["5"]}
    # the upload went into the project as an asset, byte for byte
    asset = f"01_Assets/uploads/comfyui/{hashlib.sha256(clip).hexdigest()[:12]}-shot.mp4"
    response = server.http.get(f"/api/v1/projects/comfyui/files/{asset}")
    assert response.status_code == 200 and response.content == clip


def test_bad_video_inputs_are_refused_naming_the_node(
    comfy: tuple[ServerProcess, ComfyClient], tmp_path: Path
) -> None:
    _, client = comfy
    status, _ = client.upload("broken.mp4", b"\x00\x00\x00\x18ftypmp42 and nothing else")
    assert status == 200  # ComfyUI's upload stores any file; LoadVideo checks it
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "broken.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0],
              "filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"}},
    }  # fmt: skip
    status, answer = client.post("/prompt", {"prompt": prompt})
    assert status == 400 and answer["error"]["type"] == "prompt_outputs_failed_validation"
    error = answer["node_errors"]["1"]
    assert error["class_type"] == "LoadVideo" and error["dependent_outputs"] == ["2"]
    assert error["errors"][0]["extra_info"]["input_name"] == "file"
    # a video's frames into SaveImage (no per-frame mapping of image nodes here)
    prompt["1"]["inputs"]["file"] = "shot.mp4" if _has(client, "shot.mp4") else "broken.mp4"
    prompt["2"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}}
    prompt["3"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                         "filename_prefix": "x"}}  # fmt: skip
    status, answer = client.post("/prompt", {"prompt": prompt})
    assert status == 400 and answer["node_errors"]["3"]["class_type"] == "SaveImage"
    assert "GetVideoComponents" in answer["node_errors"]["3"]["errors"][0]["details"]
    # a value out of ComfyUI's range (SaveWEBM crf 0..63)
    prompt = txt2img(batch=2)
    prompt["9"] = {"class_type": "SaveWEBM", "inputs": {"images": ["8", 0],
                   "filename_prefix": "w", "codec": "vp9", "fps": 24.0, "crf": 99}}  # fmt: skip
    status, answer = client.post("/prompt", {"prompt": prompt})
    assert status == 400
    (error,) = answer["node_errors"]["9"]["errors"]
    assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "crf"


def _has(client: ComfyClient, name: str) -> bool:
    _, info = client.get("/object_info/LoadVideo")
    return name in info["LoadVideo"]["input"]["required"]["file"][0]
