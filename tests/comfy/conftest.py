"""A real Takeflow server (``--demo``, tiny random-weight model) with the ComfyUI listener."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.comfy.client import ComfyClient
from tests.server.harness import ServerProcess, free_port, running_server


def wait_compat(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/system_stats", timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # listening, under --auth
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the ComfyUI listener at {base} did not answer")


@contextlib.contextmanager
def comfy_server(
    home: Path,
    *extra: str,
    config: dict[str, Any] | None = None,
    token: str | None = None,
    demo: Path | None = None,
) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    """``takeflow serve --demo --comfy-port``; ``demo``: a built demo model folder to copy
    into the home, so the server finds it current instead of building it again."""
    home.mkdir(parents=True, exist_ok=True)
    if demo is not None and not (home / "models" / "demo").exists():
        shutil.copytree(demo, home / "models" / "demo")
    settings = {"diffusion": {"preview_every": 1, "batch_window_ms": 0}, **(config or {})}
    (home / "config.json").write_text(json.dumps(settings))
    port = free_port()
    with running_server(home, "--demo", "--comfy-port", str(port), *extra, token=token) as srv:
        base = f"http://127.0.0.1:{port}"
        wait_compat(base)
        yield srv, ComfyClient(base, token)


@pytest.fixture(scope="module")
def comfy(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    with comfy_server(tmp_path_factory.mktemp("comfy") / "home", demo=demo_model_dir) as pair:
        yield pair


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's diffusers folder (tiny, random weights of seed 0, as ``--demo`` builds
    it), made once per session."""
    from nodes.diffusion.demo import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("comfy-demo") / "demo", "tiny", seed=0)


@pytest.fixture
def app_client(_isolated_home: Path, demo_model_dir: Path) -> Iterator[TestClient[Any]]:
    """The main app (ComfyUI API under ``/api``) in process, on a runtime with the demo model."""
    from dagster_defs.runtime import open_runtime
    from nodes.diffusion.demo import register_model
    from server.app import create_app
    from stores.home import TakeflowHome

    home = TakeflowHome.resolve(_isolated_home)
    register_model(home, "demo", demo_model_dir, demo=True)
    home.update_config(diffusion={"batch_window_ms": 0})
    runtime = open_runtime(_isolated_home, workers=1)
    try:
        with TestClient(create_app(runtime)) as test_client:
            yield test_client
    finally:
        runtime.close()
