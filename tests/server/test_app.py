"""The app in process (Litestar's test client over a real runtime): editor files next to the API."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import TestClient

from server.app import create_app
from server.config import ServerConfig


def test_built_editor_is_served_at_the_root_beside_the_api(runtime: object, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html><body>takeflow editor</body></html>")
    (dist / "assets" / "app.js").write_text("console.log('editor')")
    app = create_app(runtime, ServerConfig(web_dist=dist))  # type: ignore[arg-type]
    with TestClient(app) as client:
        assert "takeflow editor" in client.get("/").text
        script = client.get("/assets/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert client.get("/api/v1/projects").json() == []
        assert client.get("/schema").headers["content-type"].startswith("text/html")
        missing = client.get("/api/v1/nothing")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
