"""HTTP range requests (RFC 9110 section 14) for served files, so a browser can seek in a video:
one ``bytes=`` range gives 206 with ``Content-Range``; an unsatisfiable one 416. Litestar's
``File`` answers whole files only; the routes call ``ranged`` first and fall back to it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import IO, Any

from litestar import Response
from litestar.response import Stream

ACCEPT_RANGES = {"Accept-Ranges": "bytes"}
CHUNK = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) of a single-range header, None to serve the
    whole file (no header, a multi-range or another unit: a server may ignore those)."""
    if "," in header:
        return None
    match = _RANGE.match(header)
    if match is None:
        if header.strip().lower().startswith("bytes"):
            raise RangeNotSatisfiable(header)
        return None
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        raise RangeNotSatisfiable(header)
    if not first_s:  # a suffix: the last N bytes
        length = int(last_s)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - length), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


def _read(opener: Callable[[], IO[bytes]], first: int, last: int) -> Iterator[bytes]:
    with opener() as handle:
        handle.seek(first)
        left = last - first + 1
        while left > 0:
            data = handle.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def ranged(
    range_header: str | None,
    size: int,
    opener: Callable[[], IO[bytes]],
    media_type: str,
) -> Response[Any] | None:
    """A 206 (or 416) answer to a ``Range`` header; None when the whole file should be sent."""
    if not range_header:
        return None
    try:
        span = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(
            {
                "code": "range_not_satisfiable",
                "message": f"the range {range_header!r} is outside the file ({size} bytes)",
                "field": "Range",
            },
            status_code=416,
            headers={"Content-Range": f"bytes */{size}", **ACCEPT_RANGES},
        )
    if span is None:
        return None
    first, last = span
    return Stream(
        _read(opener, first, last),
        status_code=206,
        media_type=media_type,
        headers={
            "Content-Range": f"bytes {first}-{last}/{size}",
            "Content-Length": str(last - first + 1),
            **ACCEPT_RANGES,
        },
    )
