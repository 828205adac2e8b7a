"""The canvas editor against ``takeflow serve --auth``, in a real browser (Debian's Chromium).

The editor asks for an access token when the API answers 401, keeps it in localStorage and
sends it as ``Authorization: Bearer`` on fetches and as ``?token=`` on the WebSocket and on
image URLs; a 403 shows the server's message; signing out forgets the token. Without ``--auth``
the editor never asks for, nor sends, a token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_auth import create_token
from tests.e2e.test_editor import (  # noqa: F401  (browser, web_dist: fixtures)
    SHOT,
    UI_TIMEOUT_MS,
    browser,
    drop_template,
    wait_image,
    web_dist,
)
from tests.server.harness import running_server

pytestmark = pytest.mark.e2e


class Traffic:
    """What the page sent: API requests' Authorization headers and WebSocket URLs."""

    def __init__(self, page: Any) -> None:
        self.api: list[tuple[str, str | None]] = []
        self.sockets: list[str] = []
        page.on("request", self._request)
        page.on("websocket", lambda ws: self.sockets.append(ws.url))

    def _request(self, request: Any) -> None:
        if "/api/" in request.url:
            self.api.append((request.url, request.headers.get("authorization")))


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:  # noqa: F811
    """``open_page(base_url)``: a fresh browser context's page; page errors fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(base: str) -> Any:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base)
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"the editor raised in the browser: {errors}"


def project_options(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all(
            "[data-testid=project-select] option", "els => els.map(e => e.value).filter(Boolean)"
        )
    )


def test_editor_signs_in_with_a_token_and_runs_a_graph(
    web_dist: Path,  # noqa: F811
    open_page: Any,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    token = create_token(home, "ana", "demo")
    with running_server(home, "--auth", cli=True, token=token) as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "demo", "name": "Demo"})
        assert 'id="app"' in httpx.get(f"{server.base}/", timeout=10).text  # static: no token
        page = open_page(server.base)
        traffic = Traffic(page)
        page.goto("/")
        page.wait_for_selector("[data-testid=editor][data-ready=true]")

        # the server answered 401: the editor asks for a token and lists nothing yet
        page.get_by_test_id("sign-in").wait_for()
        assert project_options(page) == []
        assert page.get_by_test_id("sign-out").count() == 0

        # a wrong token is refused with the server's reason and the box stays
        page.get_by_test_id("token-input").fill("tf_nope_not_a_token")
        page.get_by_test_id("token-submit").click()
        page.get_by_test_id("sign-in-message").wait_for()
        assert "not valid" in page.get_by_test_id("sign-in-message").inner_text()
        assert page.get_by_test_id("sign-in").is_visible()

        # the real one lets the editor in: ana's project is listed and chosen
        page.get_by_test_id("token-input").fill(token)
        page.get_by_test_id("token-submit").click()
        page.get_by_test_id("sign-in").wait_for(state="detached")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=project-select]').value === 'demo'"
        )
        assert project_options(page) == ["demo"]
        assert page.evaluate("localStorage.getItem('takeflow.token')") == token
        page.get_by_test_id("palette-item-gradient_image").wait_for()

        # run a small graph: its events come over the WebSocket, its image through <img src>
        page.get_by_test_id("shot-input").fill(SHOT)
        page.get_by_test_id("shot-input").press("Enter")
        sky = drop_template(page, "gradient_image", 120, 80)
        sky.get_by_test_id("input-width").fill("48")
        sky.get_by_test_id("input-height").fill("32")
        page.get_by_test_id("run-graph").click()
        wait_image(sky)
        status = page.get_by_test_id("run-status")
        assert status.get_attribute("data-status") == "completed"
        assert int(str(status.get_attribute("data-applied"))) >= 3  # folded from WS events
        src = str(sky.get_by_test_id("node-image").get_attribute("src"))
        assert src.startswith("/api/v1/projects/demo/files/") and f"token={token}" in src
        assert sky.get_by_test_id("node-image").evaluate("el => el.naturalWidth") == 48
        task_id = str(status.get_attribute("data-task"))
        take = page.locator(f"[data-testid^=take-take_][data-task='{task_id}'] img")
        take.wait_for()
        page.wait_for_function("el => el.naturalWidth > 0", arg=take.element_handle())

        # what went over the wire: every API call with the bearer token, the socket with ?token=
        bearer = f"Bearer {token}"
        first = next(i for i, (_, auth) in enumerate(traffic.api) if auth == bearer)
        fetched = [(url, auth) for url, auth in traffic.api[first:] if "token=" not in url]
        assert len(fetched) >= 4 and all(auth == bearer for _, auth in fetched), fetched
        assert traffic.sockets and all(f"/ws/ana?token={token}" in u for u in traffic.sockets)
        record = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
        assert record["status"] == "completed" and record["user_id"] == "ana"

        # another project is forbidden: the server's message is shown
        page.get_by_test_id("new-project").click()
        page.get_by_test_id("new-project-id").fill("other")
        page.get_by_test_id("create-project").click()
        forbidden = page.get_by_test_id("forbidden")
        forbidden.wait_for()
        assert "user 'ana' may not use project 'other'" in forbidden.inner_text()

        # the token survives a reload; signing out forgets it and asks again
        page.reload()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=project-select]').value === 'demo'"
        )
        assert page.get_by_test_id("sign-in").count() == 0
        page.get_by_test_id("sign-out").click()
        page.get_by_test_id("sign-in").wait_for()
        assert page.evaluate("localStorage.getItem('takeflow.token')") is None
        assert project_options(page) == []


def test_editor_without_auth_never_asks_for_or_sends_a_token(
    web_dist: Path,  # noqa: F811
    open_page: Any,
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "home", cli=True) as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "open", "name": "Open"})
        page = open_page(server.base)
        traffic = Traffic(page)
        page.goto("/")
        page.wait_for_selector("[data-testid=editor][data-ready=true]")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=project-select]').value === 'open'"
        )
        assert page.get_by_test_id("sign-in").count() == 0
        assert page.get_by_test_id("sign-out").count() == 0
        assert traffic.api and all(auth is None for _, auth in traffic.api)
        assert not any("token=" in url for url, _ in traffic.api)
