"""The pieces of the request guard (``server.guard``): the linear JSON depth scan and the
``Host``/``Origin`` policy, with its settings from the CLI config and the home's config.json."""

from __future__ import annotations

import random

import pytest

from server.config import ServerConfig
from server.guard import (
    GuardPolicy,
    JSONTooDeepError,
    check_json_depth,
    json_depth_exceeds,
    normalize_origin,
)


def _reference_depth(data: bytes) -> int:
    """The deepest nesting, byte by byte (the obvious, slow way)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def test_depth_check_counts_brackets_outside_strings() -> None:
    check_json_depth(b'{"a": "' + b"[" * 1000 + b'"}', limit=2)  # brackets inside a string
    check_json_depth('{"a": "\\"[[[[", "b": [[1]]}', limit=3)  # an escaped quote stays inside
    check_json_depth('{"a\\\\": [[1]], "b": "[[[[[[\\\\\\"[["}', limit=3)  # \\ then \"
    with pytest.raises(JSONTooDeepError, match="nested deeper than 3 levels"):
        check_json_depth(b"[[[[1]]]]", limit=3)
    with pytest.raises(JSONTooDeepError):
        check_json_depth("[" + "{}," * 500 + '"x", ' + '{"a":' * 300 + "1" + "}" * 300 + "]")
    check_json_depth("[" + "{}," * 100_000 + "{}]")  # wide, not deep


def test_depth_check_agrees_with_a_byte_by_byte_walk() -> None:
    """Random bracket soups with strings holding brackets, quotes and escapes (backslashes
    only inside strings, as in any JSON a parser gets past), some left unterminated."""
    rng = random.Random(7)
    inside = [b"[", b"]", b"{", b"}", b"a", b"\\\\", b'\\"', b"[[[["]
    outside = [b"[", b"]", b"{", b"}", b",", b"1", b"[[[[", b"]]]]"]
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.2:
                text = b"".join(rng.choice(inside) for _ in range(rng.randint(0, 6)))
                parts.append(b'"' + text + b'"')
            else:
                parts.append(rng.choice(outside))
        if rng.random() < 0.1:
            parts.append(b'"[[[[[[[[[[[[')  # unterminated
        data = b"".join(parts)
        limit = rng.randint(1, 12)
        assert json_depth_exceeds(data, limit) == (_reference_depth(data) > limit), data


def test_policy_hosts_and_origins() -> None:
    loopback = GuardPolicy.for_server("127.0.0.1", auth=False)
    assert loopback.check_host and loopback.allowed_hosts == {"127.0.0.1"}
    named = GuardPolicy.for_server("gpu-box.lan", auth=True, allowed_hosts=["Studio.Example:443"])
    assert named.check_host and named.allowed_hosts == {"gpu-box.lan", "studio.example"}
    assert not GuardPolicy.for_server("0.0.0.0", auth=True).check_host  # tokens protect it
    assert GuardPolicy.for_server("0.0.0.0", auth=True, allowed_hosts=["a.example"]).check_host
    assert not GuardPolicy.for_server("127.0.0.1", auth=False, allowed_hosts=["*"]).check_host
    assert normalize_origin("HTTPS://Studio.Example") == "https://studio.example:443"
    assert normalize_origin("null") == normalize_origin("file://") == ""
    assert loopback.origin_allowed("http://127.0.0.1:8470", "127.0.0.1:8470")
    assert not loopback.origin_allowed("http://localhost:8470", "127.0.0.1:8470")
    assert not loopback.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8470")
    assert not loopback.origin_allowed("http://127.0.0.1:8470", "127.0.0.1")
    assert loopback.origin_allowed("http://[::1]", "[::1]:80")
    # behind a TLS proxy: Host without a port, Origin https on 443 (not on another port)
    assert loopback.origin_allowed("https://studio.example", "studio.example")
    assert not loopback.origin_allowed("https://studio.example:8443", "studio.example")
    assert not loopback.origin_allowed("http://evil.example", "studio.example")
    config = ServerConfig(allowed_origins=("https://studio.example",)).with_home_settings(
        {"server": {"allowed_hosts": ["studio.example"], "max_json_depth": 32}}
    )
    policy = config.guard_policy()
    assert policy.origin_allowed("https://studio.example", "127.0.0.1:1")
    assert policy.allowed_hosts == {"127.0.0.1", "studio.example"}
    assert policy.max_json_depth == 32
