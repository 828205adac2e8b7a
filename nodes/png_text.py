"""PNG text chunks: how a take's image carries the graph that made it (ComfyUI writes its
``prompt``/``workflow`` the same way), so dropping the image on an editor recalls the graph.

The chunk is inserted into the encoded bytes (after ``IHDR``), the pixels untouched; the text is
ASCII JSON (``tEXt`` is Latin-1), so any PNG reader shows it.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TAKEFLOW_KEY = "takeflow"
PNG_META_FORMAT = "takeflow.png/v1"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _chunks(png: bytes) -> list[tuple[bytes, bytes, int]]:
    """``(type, data, end offset)`` of every chunk; ``ValueError`` when it is not a PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out, at = [], len(PNG_SIGNATURE)
    while at + 8 <= len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        end = at + 12 + length
        if end > len(png):
            raise ValueError("truncated PNG chunk")
        out.append((kind, png[at + 8 : at + 8 + length], end))
        at = end
    return out


def with_text(png: bytes, key: str, text: str) -> bytes:
    """``png`` with a ``tEXt`` chunk ``key`` = ``text`` right after its header; an earlier
    chunk of that key is replaced."""
    chunks = _chunks(png)
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("PNG without IHDR")
    body = key.encode("latin-1") + b"\0" + text.encode("latin-1")
    out = bytearray(png[: chunks[0][2]])
    out += _chunk(b"tEXt", body)
    start = chunks[0][2]
    for kind, data, end in chunks[1:]:
        if not (kind == b"tEXt" and data.split(b"\0", 1)[0] == key.encode("latin-1")):
            out += png[start:end]
        start = end
    return bytes(out)


def read_texts(png: bytes) -> dict[str, str]:
    """Every ``tEXt`` chunk of ``png``, key -> text."""
    found = {}
    for kind, data, _ in _chunks(png):
        if kind == b"tEXt" and b"\0" in data:
            key, text = data.split(b"\0", 1)
            found[key.decode("latin-1")] = text.decode("latin-1")
    return found


def with_takeflow_graph(png: bytes, meta: dict[str, Any]) -> bytes:
    """``png`` carrying ``meta`` (the graph that made it, ...) as ASCII JSON under
    ``takeflow``."""
    payload = {"format": PNG_META_FORMAT, **meta}
    return with_text(png, TAKEFLOW_KEY, json.dumps(payload, ensure_ascii=True, sort_keys=True))


def read_takeflow_graph(png: bytes) -> dict[str, Any] | None:
    """The ``takeflow`` chunk of ``png`` as JSON, or None when it has none."""
    text = read_texts(png).get(TAKEFLOW_KEY)
    return None if text is None else json.loads(text)
