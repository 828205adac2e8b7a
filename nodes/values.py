"""Turning template output values into files (for takes) and short summaries (for events)."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

from graph_runtime.takes import OutputFile
from graph_runtime.templates import PortType
from nodes.animated import Animation
from nodes.images import ImageTooLargeError, open_image
from nodes.video import VIDEO_CONTENT_TYPES, Video


def to_output_file(name: str, port_type: PortType, value: Any) -> OutputFile:
    """Serialize one output value the way a take stores it."""
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return OutputFile(name, buf.getvalue(), ".png", "image/png")
    if port_type == PortType.TEXT and isinstance(value, str):
        return OutputFile(name, value.encode(), ".txt", "text/plain")
    if isinstance(value, bytes | bytearray):
        return OutputFile(name, bytes(value), ".bin", "application/octet-stream")
    data = json.dumps(value, indent=2, default=str).encode()
    return OutputFile(name, data, ".json", "application/json")


def to_output_files(name: str, port_type: PortType, value: Any) -> list[OutputFile]:
    """The files one output becomes: a video gives ``<name>.mp4`` (or its .webm/.mov) and a poster
    ``<name>_poster.png``; a list of images or videos (a mapped node's output) ``<name>_000.png``
    ... (or ``<name>_000.mp4`` and its poster ...); anything else one file."""
    if isinstance(value, Animation):  # nodes.animated: an animated .webp or .png, as encoded
        return [OutputFile(name, value.data, value.extension, value.content_type)]
    if isinstance(value, Video):
        poster = io.BytesIO()
        value.poster().save(poster, format="PNG")
        ext = value.path.suffix.lower()  # .mp4, or .webm / .mov as loaded or written
        ext = ext if ext in VIDEO_CONTENT_TYPES else ".mp4"
        return [
            OutputFile(name, value.read_bytes(), ext, VIDEO_CONTENT_TYPES[ext]),
            OutputFile(f"{name}_poster", poster.getvalue(), ".png", "image/png"),
        ]
    if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
        return [to_output_file(f"{name}_{i:03d}", port_type, v) for i, v in enumerate(value)]
    if isinstance(value, list) and value and all(isinstance(v, Video) for v in value):
        return [
            f for i, v in enumerate(value) for f in to_output_files(f"{name}_{i:03d}", port_type, v)
        ]
    return [to_output_file(name, port_type, value)]


def media_facts(value: Any) -> dict[str, Any] | None:
    """What take.json records about a video output (fps, frame count, duration, codec)."""
    return value.facts() if isinstance(value, Video | Animation) else None


def summarize(value: Any) -> Any:
    """A small JSON-safe description of a value for node events."""
    if isinstance(value, Video):
        return {"kind": "video", **value.facts()}
    if isinstance(value, Animation):
        return {"kind": "animation", **value.facts()}
    if isinstance(value, Image.Image):
        return {"kind": "image", "width": value.width, "height": value.height, "mode": value.mode}
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:197] + "..."
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, list):  # e.g. frames, or a mapped node's outputs: its length, its first
        return {
            "kind": "list",
            "length": len(value),
            **({"first": summarize(value[0])} if value else {}),
        }
    return {"kind": type(value).__name__}


def png_preview(image: Image.Image, max_side: int = 128) -> bytes:
    """A small PNG thumbnail for progress previews."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_markdown(output: OutputFile, max_side: int = 96) -> str | None:
    """A markdown image (inline data URI) of a PNG output: a preview the Dagster UI can show
    without reaching Takeflow's server."""
    if output.content_type != "image/png":
        return None
    import base64

    try:
        image = open_image(output.data, output.name)
    except ImageTooLargeError:
        return None
    thumb = png_preview(image, max_side)
    return f"![{output.name}](data:image/png;base64,{base64.b64encode(thumb).decode()})"
