"""Range header parsing (RFC 9110 section 14.1.2): one range served, others whole or refused."""

from __future__ import annotations

import pytest

from server.media_ranges import RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),  # a suffix longer than the file: all of it
        ("bytes=990-5000", (990, 999)),  # an end past the file is cut to the last byte
        ("BYTES = 5 - 6", (5, 6)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file (allowed by the RFC)
        ("items=0-1", None),  # another unit: ignored
    ],
)
def test_ranges(header: str, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=-0", "bytes=-", "bytes=a-b"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)
