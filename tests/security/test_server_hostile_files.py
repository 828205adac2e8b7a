"""Hostile files through the real server (issue 19): symlinks inside a project (F3),
decompression bombs under PIL's own limit (F4), newlines in upload names reaching commit
messages (F8) and a shot id with a trailing newline (F9). Each is refused with a stable code and
leaves nothing stored or committed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.images import png_bomb, small_png
from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e
SECRET = "TOP-SECRET-TOKEN-LINE"
MAX_PIXELS = 50_000_000  # set in the home config: below the default 64 MP


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-hostile") / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"images": {"max_pixels": MAX_PIXELS}}))
    with running_server(home) as srv:
        for pid in ("film", "other"):
            srv.ok("POST", "/api/v1/projects", json={"project_id": pid})
        theirs = srv.http.post(
            "/api/v1/projects/other/assets", files={"file": ("secret.png", small_png(color="blue"))}
        )
        mine = srv.http.post(
            "/api/v1/projects/film/assets", files={"file": ("mine.png", small_png())}
        )
        assert theirs.status_code == mine.status_code == 201
        srv.theirs = theirs.json()  # type: ignore[attr-defined]
        srv.mine = mine.json()  # type: ignore[attr-defined]
        (home / "secret.json").write_text(SECRET)
        film = home / "projects" / "film"
        (film / "01_Assets" / "passwd_link.png").symlink_to("/etc/passwd")
        (film / "01_Assets" / "other_link").symlink_to("../../other")
        (film / "01_Assets" / "secret.png").symlink_to(home / "secret.json")
        (film / "04_Project_Files" / "gitlink").symlink_to("../.git")
        (film / "04_Project_Files" / "tokens.json").symlink_to(home / "secret.json")
        (film / "01_Assets" / "inside.png").symlink_to(mine.json()["asset_id"])
        yield srv


def film(server: ServerProcess) -> Path:
    return server.home / "projects" / "film"


def snapshot(server: ServerProcess) -> dict[str, Any]:
    root = film(server)
    return {
        "takes": server.ok("GET", "/api/v1/projects/film/takes"),
        "commits": [c["sha"] for c in server.ok("GET", "/api/v1/projects/film/commits")],
        "files": sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if ".git" not in p.parts and "05_Cache" not in p.parts
        ),
    }


def wait_task(server: ServerProcess, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
        if status["status"] in ("completed", "failed", "cancelled"):
            return dict(status)
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def load(server: ServerProcess, asset: str, shot: str) -> Any:
    body = {"template_id": "load_asset", "inputs": {"asset": asset}, "project_id": "film",
            "shot_id": shot}  # fmt: skip
    return server.http.post("/api/v1/functions/tasks", json=body)


# -- F3: symlinks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "01_Assets/passwd_link.png",
        "04_Project_Files/tokens.json",
        "04_Project_Files/gitlink/config",
        "01_Assets/other_link/project.json",
    ],
)
def test_files_route_refuses_symlinks_that_leave_the_project(
    server: ServerProcess, path: str
) -> None:
    response = server.http.get(f"/api/v1/projects/film/files/{path}")
    assert response.status_code == 400, response.text[:200]
    assert response.json()["code"] == "unsafe_path" and response.json()["message"]
    assert "root:" not in response.text and SECRET not in response.text
    assert "[core]" not in response.text


def test_files_route_refuses_another_projects_file_through_a_symlink(
    server: ServerProcess,
) -> None:
    theirs = server.theirs["path"]  # type: ignore[attr-defined]
    response = server.http.get(f"/api/v1/projects/film/files/01_Assets/other_link/{theirs}")
    assert (response.status_code, response.json()["code"]) == (400, "unsafe_path")


def test_a_symlink_inside_the_project_is_followed(server: ServerProcess) -> None:
    """Decision: a link that resolves inside the project (and outside ``.git``) is served."""
    response = server.http.get("/api/v1/projects/film/files/01_Assets/inside.png")
    assert response.status_code == 200 and response.content == small_png()


def test_load_asset_refuses_another_projects_image_through_a_symlink(
    server: ServerProcess,
) -> None:
    before = snapshot(server)
    theirs = server.theirs["asset_id"]  # type: ignore[attr-defined]
    for asset in (f"asset://other_link/01_Assets/{theirs}", "asset://secret.png",
                  "asset://passwd_link.png"):  # fmt: skip
        response = load(server, asset, "sym/sym/x")
        if response.status_code == 200:  # refused when the task runs
            status = wait_task(server, response.json()["task_id"])
            assert status["status"] == "failed" and status["error"]["code"] == "unsafe_path"
        else:
            assert (response.status_code, response.json()["code"]) == (400, "unsafe_path")
    assert snapshot(server) == before
    assert not (film(server) / "03_Renders" / "sym").exists()


def test_load_asset_follows_a_symlink_inside_the_project(server: ServerProcess) -> None:
    response = load(server, "asset://inside.png", "sym/sym/inside")
    assert response.status_code == 200, response.text
    assert wait_task(server, response.json()["task_id"])["status"] == "completed"


# -- F4: decompression bombs -------------------------------------------------------------------


def test_upload_of_a_decompression_bomb_is_refused_and_stores_nothing(
    server: ServerProcess,
) -> None:
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    before = snapshot(server)
    response = server.http.post("/api/v1/projects/film/assets", files={"file": ("bomb.png", bomb)})
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["code"] == "image_too_large"
    assert "12000x12000" in body["message"] and body["limit"] == MAX_PIXELS
    assert snapshot(server) == before
    assert not list((film(server) / "05_Cache" / "uploads").glob("*"))


def test_load_asset_refuses_a_decompression_bomb_before_decoding(server: ServerProcess) -> None:
    (film(server) / "01_Assets" / "bomb.png").write_bytes(png_bomb())
    try:
        before = snapshot(server)
        response = load(server, "asset://bomb.png", "bomb/bomb/load")
        assert response.status_code == 200, response.text
        status = wait_task(server, response.json()["task_id"])
        assert status["status"] == "failed", status
        assert status["error"]["code"] == "image_too_large", status["error"]
        assert "12000x12000" in status["error"]["message"]
        assert snapshot(server) == before
    finally:
        (film(server) / "01_Assets" / "bomb.png").unlink()


# -- F8: commit messages -----------------------------------------------------------------------


def test_upload_name_cannot_forge_commit_trailers(server: ServerProcess) -> None:
    boundary = "BB"
    name = "ok\nTakeflow-Task: task_forged\n\nSigned-off-by: x.png"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + small_png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = server.http.post(
        "/api/v1/projects/film/assets",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    assert "\n" not in response.json()["filename"]
    message = subprocess.run(
        ["git", "log", "-1", "--format=%B"], cwd=film(server), capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    lines = message.strip().splitlines()
    assert len(lines) == 1, message
    assert lines[0].startswith("Upload ok Takeflow-Task: task_forged Signed-off-by: x.png as ")
    trailers = subprocess.run(
        ["git", "log", "-1", "--format=%(trailers)"], cwd=film(server), capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    assert trailers.strip() == ""


# -- F9: ids matched whole ---------------------------------------------------------------------


def test_shot_with_a_trailing_newline_is_refused(server: ServerProcess) -> None:
    before = snapshot(server)
    body = {"template_id": "noise_image", "inputs": {"width": 8, "height": 8},
            "project_id": "film", "shot_id": "ch01/sc01/sh010\n"}  # fmt: skip
    response = server.http.post("/api/v1/functions/tasks", json=body)
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] in ("unsafe_path", "invalid_request")
    assert "shot_id" in response.text
    listing = server.http.get(
        "/api/v1/projects/film/takes", params={"shot_id": "ch01/sc01/sh010\n"}
    )
    assert listing.status_code == 400 and listing.json()["code"] == "unsafe_path"
    assert snapshot(server) == before


def test_graph_name_cannot_forge_commit_trailers_of_a_take(server: ServerProcess) -> None:
    name = "g\nTakeflow-Task: task_forged\n\nSigned-off-by: mallory\n\nTakeflow-Task: task_x"
    graph = {"name": name, "nodes": [
        {"id": "n", "template": "solid_image",
         "inputs": {"width": {"kind": "literal", "value": 8}}}]}  # fmt: skip
    accepted = server.ok(
        "POST", "/api/v1/runs", json={"graph": graph, "project_id": "film", "shot_id": "g/g/g"}
    )
    assert wait_task(server, accepted["task_id"])["status"] == "completed"
    git_log = ["git", "log", "-1", "--format=%B%x00%(trailers:only)"]
    done = subprocess.run(git_log, cwd=film(server), capture_output=True, text=True, check=True)
    message, trailers = done.stdout.split("\0")
    assert message.strip().splitlines()[0].startswith("take_001 of g/g/g (g Takeflow-Task: ")
    assert trailers.strip() == f"Takeflow-Task: {accepted['task_id']}"
