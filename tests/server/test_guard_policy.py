"""The pieces of the request guard (``server.guard``): the linear JSON depth scan and the
``Host``/``Origin`` policy, with its settings from the CLI config and the home's config.json."""

from __future__ import annotations

import pytest

from server.config import ServerConfig
from server.guard import (
    GuardPolicy,
    JSONDepthScanner,
    JSONTooDeepError,
    check_json_depth,
    normalize_origin,
)


def test_depth_scan_counts_brackets_outside_strings_across_chunks() -> None:
    check_json_depth(b'{"a": "' + b"[" * 1000 + b'"}', limit=2)  # brackets inside a string
    check_json_depth('{"a": "\\"[[[[", "b": [[1]]}', limit=3)  # an escaped quote stays inside
    with pytest.raises(JSONTooDeepError, match="nested deeper than 3 levels"):
        check_json_depth(b"[[[[1]]]]", limit=3)
    scanner = JSONDepthScanner(limit=4)
    for chunk in (b'[{"x": "\\', b'"]]', b'"}, [[', b"[1]]]]"):  # escape split over chunks
        scanner.feed(chunk)
    assert scanner.depth == 0 and not scanner.in_string
    scanner.feed(b"[[[[")
    with pytest.raises(JSONTooDeepError):
        scanner.feed(b"[")


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
