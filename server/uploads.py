"""Streaming multipart uploads into a project's ``01_Assets`` through its ``ProjectStore``.

The body is parsed as it arrives (python-multipart), written to a staged file (the project's
cache folder) and published as ``01_Assets/uploads/<uuid8>-<safe name>`` once complete, so an
upload that is too large or breaks off leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from graph_runtime.errors import StorageError, TakeflowError
from graph_runtime.projects import (
    ASSET_SCHEME,
    ProjectStore,
    StagedFile,
    asset_relpath,
    one_line,
)
from nodes.images import check_image_header
from nodes.video import VIDEO_EXTENSIONS, check_decodes, probe
from server.errors import RequestError, UnsupportedVideoError, UploadTooLargeError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
HEADER_BYTES = 1024 * 1024  # the start of an upload kept to check an image's header


def safe_filename(name: str) -> str:
    """One safe path segment: ``"../My photo (1).PNG"`` -> ``"My_photo_1_.PNG"``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip("._") or "upload"
    if len(base) > 100:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 100 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else base[:100]
    return base


@dataclass(frozen=True)
class StoredUpload:
    asset_id: str
    path: str
    size: int
    sha256: str
    filename: str
    content_type: str
    video: dict[str, Any] | None = None  # probed facts of an mp4/webm/mov upload

    def to_dict(self) -> dict[str, Any]:
        body = {
            "asset_id": self.asset_id,
            "uri": f"{ASSET_SCHEME}{self.asset_id}",
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "filename": self.filename,
            "content_type": self.content_type,
        }
        if self.video is not None:
            body["video"] = self.video
        return body


def _video_extension(filename: str, content_type: str) -> str | None:
    """``.mp4``/``.webm``/``.mov`` for a video upload, None for other files; another video
    type (``video/*`` or a known video extension) is refused."""
    ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext in VIDEO_EXTENSIONS:
        return ext
    if content_type.startswith("video/") or ext in (".avi", ".mkv", ".m4v", ".mpg", ".flv"):
        raise UnsupportedVideoError(
            f"video uploads must be .mp4, .webm or .mov files, not {filename!r} ({content_type})",
            field="file",
        )
    return None


class _FilePart:
    """Receives the bytes of the ``file`` field into a staged file, hashing and counting."""

    def __init__(self, project: ProjectStore, limit: int) -> None:
        self.project = project
        self.limit = limit
        self.handle: StagedFile | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.filename: str | None = None
        self.content_type = "application/octet-stream"
        self.done = False
        self.opened = False
        self.probe_copy: Path | None = None  # a video's local copy, probed before publishing
        self._copy: Any = None

    def open(self, video_extension: str | None = None) -> None:
        if video_extension is not None:
            self._copy = tempfile.NamedTemporaryFile(suffix=video_extension, delete=False)  # noqa: SIM115
            self.probe_copy = Path(self._copy.name)
        self.handle = self.project.stage_file()
        self.opened = True

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise UploadTooLargeError(
                f"the upload is larger than the limit of {self.limit} bytes", limit=self.limit
            )
        assert self.handle is not None
        self.handle.write(data)
        if self._copy is not None:
            self._copy.write(data)
        self.digest.update(data)
        if len(self.head) < HEADER_BYTES:
            self.head += data[: HEADER_BYTES - len(self.head)]

    def publish(self, rel: str) -> None:
        assert self.handle is not None
        self.handle.publish(rel)
        self.handle = None

    def probe_video(self) -> dict[str, Any] | None:
        """The facts of a video upload (duration, fps, size); refuses a corrupt one."""
        if self._copy is None or self.probe_copy is None:
            return None
        self._copy.close()
        video = probe(self.probe_copy, self.filename)
        check_decodes(video, self.filename or "upload")
        facts = video.facts()
        facts.pop("pixel_format", None)
        return facts

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.discard()
            self.handle = None
        self.drop_copy()

    def drop_copy(self) -> None:
        if self._copy is not None:
            self._copy.close()
            self._copy = None
        if self.probe_copy is not None:
            self.probe_copy.unlink(missing_ok=True)
            self.probe_copy = None


async def receive_upload(
    project: ProjectStore,
    content_type: str,
    body: AsyncIterator[bytes],
    limit: int,
    content_length: int | None = None,
) -> StoredUpload:
    """Stream the ``file`` field of a multipart body into the project's assets."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise RequestError("send the file as multipart/form-data with a 'file' field", field="file")
    if content_length is not None and content_length > limit + 64 * 1024:
        raise UploadTooLargeError(
            f"the upload is larger than the limit of {limit} bytes", limit=limit
        )
    part = _FilePart(project, limit)
    state: dict[str, Any] = {
        "headers": {},
        "field": None,
        "in_file": False,
        "header": b"",
        "value": b"",
    }

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header"].decode("latin-1").lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state["headers"].get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        is_file = name == "file" and b"filename" in opts and not part.done and not part.opened
        state["in_file"] = is_file
        if is_file:
            part.filename = opts[b"filename"].decode("utf-8", "replace")
            ptype = state["headers"].get("content-type")
            if ptype:
                part.content_type = ptype.decode("latin-1").split(";")[0].strip()
            part.open(_video_extension(part.filename, part.content_type))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            part.write(data[start:end])

    def on_part_end() -> None:
        if state["in_file"]:
            part.done = True
            state["in_file"] = False

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )

    try:
        # Storage writes run in a thread: a slow (remote) filesystem never stalls the event loop.
        async for chunk in body:
            await asyncio.to_thread(parser.write, chunk)
        await asyncio.to_thread(parser.finalize)
        if not part.done:
            raise RequestError(
                "the form has no complete 'file' field with a filename", field="file"
            )
        filename = safe_filename(part.filename or "upload")
        # a decompression bomb is refused from its header, before it is stored
        check_image_header(bytes(part.head), part.filename)
        # a video is probed (and its first frame decoded) before it is stored
        video = await asyncio.to_thread(part.probe_video)
        asset_id = f"uploads/{uuid.uuid4().hex[:8]}-{filename}"
        rel = asset_relpath(asset_id)
        await asyncio.to_thread(part.publish, rel)
        part.drop_copy()
    except TakeflowError:
        part.discard()
        raise
    except OSError as exc:  # the disk, not the request: 503 storage_error
        part.discard()
        raise StorageError(f"the upload could not be stored: {exc}") from exc
    except Exception as exc:
        part.discard()
        raise RequestError(f"the upload could not be read: {exc}", field="file") from exc
    return StoredUpload(
        asset_id,
        rel,
        part.size,
        part.digest.hexdigest(),
        one_line(part.filename or "", 255) or filename,  # shown and committed: one plain line
        part.content_type,
        video,
    )
