"""The ``callbacks`` section of ``config.json``: parsed once, refused with the key named; the
signature and the backoff figures a receiver and an operator rely on."""

from __future__ import annotations

import hashlib
import hmac
import re
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dagster_defs.runtime import Runtime
from server.callbacks import CallbackConfigError, CallbackSettings, CompletionCallbacks, sign


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"attempts": 0}, "callbacks.attempts"),
        ({"backoff_s": -1}, "callbacks.backoff_s"),
        ({"secret": "short"}, "callbacks.secret"),
        (
            {"projects": {"film": {"url": "http://x", "sekret": "y" * 16}}},
            "callbacks.projects.film.sekret",
        ),
        ({"retries": 3}, "callbacks.retries"),
    ],
)
def test_a_malformed_section_is_refused_naming_the_key(section: dict[str, Any], field: str) -> None:
    with pytest.raises(CallbackConfigError, match=re.escape(f"config.json {field}")) as caught:
        CallbackSettings.from_config({"callbacks": section})
    assert caught.value.code == "invalid_callback_config"


def _callbacks_of(config: dict[str, Any]) -> CompletionCallbacks:
    """What the server does at start with a home's config (only ``home.config()`` is read)."""
    runtime = SimpleNamespace(home=SimpleNamespace(config=lambda: config))
    return CompletionCallbacks(cast("Runtime", runtime))


def test_a_projects_default_url_is_checked_when_the_server_starts() -> None:
    projects = {"film": {"url": "http://10.0.0.1/h"}}
    with pytest.raises(CallbackConfigError, match=re.escape("projects.film.url needs a secret")):
        _callbacks_of({"callbacks": {"projects": projects}})
    refused = re.escape("projects.film.url: callback_url's host '10.0.0.1' is 10.0.0.1")
    with pytest.raises(CallbackConfigError, match=refused):
        _callbacks_of({"callbacks": {"secret": "0123456789abcdef", "projects": projects}})
    allowed = {"secret": "0123456789abcdef", "projects": projects, "allow_hosts": ["10.0.0.0/8"]}
    assert _callbacks_of({"callbacks": allowed}).resolve(None, "film") == "http://10.0.0.1/h"


def test_the_signature_is_hmac_sha256_of_the_timestamp_and_the_body() -> None:
    body = b'{"task_id":"t"}'
    expected = hmac.new(b"s" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s" * 16, "1700000000", body) == f"sha256={expected}"


def test_the_backoff_doubles_up_to_its_cap() -> None:
    settings = CallbackSettings(backoff_s=2, max_backoff_s=10)
    assert [settings.retry_delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
