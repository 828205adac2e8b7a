"""A hostile web page in a real browser (Debian's Chromium) against the loopback default server.

The page is served from another origin (a second HTTP server on another port) and does what any
site the user has open could do: "simple" cross-site requests that need no CORS preflight
(``fetch`` with ``mode: "no-cors"``: a JSON task as ``text/plain`` and as a form, a multipart
upload, ComfyUI prompts on both ports) and cross-site WebSockets. Nothing may be submitted,
stored or committed, and no socket may open; ComfyUI's example-style client (JSON sent as a form,
no ``Origin``) keeps working.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.comfy.client import ComfyClient, txt2img
from tests.comfy.conftest import comfy_server
from tests.e2e.test_editor import browser  # noqa: F401 - fixture used by name
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.e2e

SHOT = "csrf/c/c"

ATTACK_PAGE = """<!doctype html><html><body><script>
window.results = {};
const settle = (name, url) => new Promise((done) => {
  let ws;
  try { ws = new WebSocket(url); } catch (e) { results[name] = 'throw'; done(); return; }
  const timer = setTimeout(() => { results[name] = results[name] || 'timeout'; done(); }, 5000);
  ws.onopen = () => {
    results[name] = 'open';
    ws.send(JSON.stringify({type: 'subscribe', project_ids: ['demo'], last_id: 0}));
  };
  ws.onmessage = (m) => { results[name + '_messages'] = (results[name + '_messages'] || 0) + 1; };
  ws.onerror = () => { results[name] = results[name] || 'error'; };
  ws.onclose = () => { clearTimeout(timer); results[name] = results[name] || 'closed'; done(); };
});
async function post(url, body, type) {
  const init = {mode: 'no-cors', method: 'POST', body};
  if (type) init.headers = {'Content-Type': type};
  try { await fetch(url, init); return 'sent'; } catch (e) { return 'failed: ' + e; }
}
window.attack = async (cfg) => {
  const png = Uint8Array.from(atob(cfg.png), (c) => c.charCodeAt(0));
  const form = new FormData();
  form.append('file', new Blob([png], {type: 'image/png'}), 'csrf.png');
  results.text = await post(cfg.tf + '/api/v1/functions/tasks', cfg.task, 'text/plain');
  results.form = await post(cfg.tf + '/api/v1/functions/tasks', cfg.task,
                            'application/x-www-form-urlencoded');
  results.run = await post(cfg.tf + '/api/v1/runs', cfg.run, 'text/plain');
  results.upload = await post(cfg.tf + '/api/v1/projects/demo/assets', form, null);
  results.comfy = await post(cfg.comfy + '/prompt', cfg.prompt,
                             'application/x-www-form-urlencoded');
  results.comfy_main = await post(cfg.tf + '/api/prompt', cfg.prompt, 'text/plain');
  await Promise.all([settle('ws_main', cfg.ws_main), settle('ws_comfy', cfg.ws_comfy)]);
  return results;
};
</script></body></html>
"""


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def attacker_site() -> Iterator[str]:
    """The hostile page on its own origin (another port of 127.0.0.1)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = ATTACK_PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    """``takeflow serve --demo --comfy-port`` (no ``--auth``: the loopback default)."""
    from nodes.diffusion.demo import build_random_pipeline

    root = tmp_path_factory.mktemp("attacks")
    demo = build_random_pipeline(root / "demo", "tiny", seed=0)
    with comfy_server(root / "home", demo=demo) as pair:
        yield pair


def _state(server: ServerProcess, comfy: ComfyClient) -> dict[str, Any]:
    """Everything an attack could have changed: takes, uploads, commits, ComfyUI queue."""
    http = server.http
    takes = http.get("/api/v1/projects/demo/takes", params={"shot_id": SHOT}).json()
    commits = http.get("/api/v1/projects/demo/commits", params={"limit": 50}).json()
    uploads = server.home / "projects" / "demo" / "01_Assets" / "uploads"
    return {
        "takes": takes,
        "commits": [c["sha"] for c in commits],
        "uploads": sorted(p.name for p in uploads.iterdir()) if uploads.exists() else [],
        "history": comfy.get("/history")[1],
        "queue": comfy.get("/queue")[1],
        "projects": http.get("/api/v1/projects").json(),
    }


def test_a_page_from_another_origin_can_neither_submit_upload_nor_listen(
    servers: tuple[ServerProcess, ComfyClient],
    browser: Any,  # noqa: F811
) -> None:
    server, comfy = servers
    before = _state(server, comfy)
    task = {
        "template_id": "noise_image",
        "inputs": {"width": 32, "height": 32},
        "project_id": "demo",
        "shot_id": SHOT,
    }
    graph = {"nodes": [{"id": "n", "template": "noise_image", "inputs": {}}]}
    config = {
        "tf": server.base,
        "comfy": comfy.base,
        "ws_main": f"{server.ws_base}/ws/anyone",
        "ws_comfy": f"{comfy.ws_base}/ws?clientId=attacker",
        "task": json.dumps(task),
        "run": json.dumps({"graph": graph, "project_id": "demo", "shot_id": SHOT}),
        "prompt": json.dumps({"prompt": txt2img(seed=3), "client_id": "attacker"}),
        "png": base64.b64encode(_png()).decode(),
    }
    with attacker_site() as site:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(site)
            results = page.evaluate("(cfg) => window.attack(cfg)", config)
        finally:
            context.close()
    assert results["text"] == results["upload"] == results["comfy"] == "sent", results
    time.sleep(2.0)  # an accepted task or prompt would have run by now (32 px, 2 steps)
    assert _state(server, comfy) == before
    assert results["ws_main"] != "open" and results["ws_comfy"] != "open", results
    assert "ws_main_messages" not in results and "ws_comfy_messages" not in results, results


def test_a_rebinding_host_is_refused_on_both_listeners(
    servers: tuple[ServerProcess, ComfyClient],
) -> None:
    server, comfy = servers
    for base, path in ((server.base, "/api/v1/projects"), (comfy.base, "/system_stats")):
        answer = httpx.get(f"{base}{path}", headers={"Host": "evil.example"}, timeout=10)
        assert answer.status_code == 421, answer.text
        assert answer.json()["code"] == "host_not_allowed"
        assert "evil.example" in answer.json()["message"]
        assert httpx.get(f"{base}{path}", headers={"Host": "localhost"}).status_code == 200


def test_comfyui_example_clients_still_work(servers: tuple[ServerProcess, ComfyClient]) -> None:
    """JSON posted as ``application/x-www-form-urlencoded`` with no ``Origin`` (urllib, as in
    ComfyUI's example scripts) on the compat listener and under ``/api`` of the main one."""
    server, comfy = servers
    prompt_ids = []
    for client in (comfy, ComfyClient(f"{server.base}/api")):
        answer = client.queue_prompt(txt2img(seed=11))
        assert answer["node_errors"] == {}
        prompt_ids.append(answer["prompt_id"])
    deadline = time.monotonic() + 90
    history: dict[str, Any] = {}
    while time.monotonic() < deadline and not all(p in history for p in prompt_ids):
        time.sleep(0.5)
        history = comfy.get("/history")[1]
    for prompt_id in prompt_ids:
        assert history[prompt_id]["status"]["status_str"] == "success", history.get(prompt_id)
