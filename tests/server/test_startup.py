"""Start-up stays light: torch and diffusers are imported at the first generation, not before
the server answers (``bench/startup.py`` times it; these tests only check what is imported)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from litestar.testing import TestClient

from nodes.diffusion.demo import prepare_demo_model
from server.app import create_app
from tests.server.harness import REPO, running_server

if TYPE_CHECKING:
    from dagster_defs.runtime import Runtime

HEAVY = ("torch", "diffusers", "transformers")

IMPORT_AND_OPEN = """
import sys
import server.app, server.cli
from dagster_defs.runtime import open_runtime
from server.app import create_app

runtime = open_runtime(sys.argv[1], workers=1)
try:
    create_app(runtime)
finally:
    runtime.close()
print(" ".join(name for name in sys.argv[2:] if name in sys.modules))
"""


def test_importing_the_server_and_opening_a_runtime_leave_torch_out(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_OPEN, str(tmp_path / "home"), *HEAVY],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == []


@pytest.mark.e2e
def test_serve_demo_first_start_serves_before_importing_torch(tmp_path: Path) -> None:
    """A first ``serve --demo`` builds the demo model beside the server, not before it."""
    home, probe = tmp_path / "home", tmp_path / "modules.json"
    plugin = ("--plugin", "tests.server.modules_probe")
    env = {"TAKEFLOW_MODULES_PROBE": str(probe)}
    with running_server(home, "--demo", *plugin, cli=True, env=env) as server:
        assert json.loads(probe.read_text()) == []
        assert server.http.get("/health").status_code == 200
    # stopping waits for the build: the model is there and registered
    assert (home / "models" / "demo" / "model_index.json").is_file()
    demo = json.loads((home / "config.json").read_text())["models"]["demo"]
    assert demo["demo"] is True and demo["path"] == str(home / "models" / "demo")


def test_health_says_while_the_demo_model_is_being_prepared(runtime: Runtime) -> None:
    gate = threading.Event()
    build = prepare_demo_model(runtime.home, lambda: gate.wait(30))
    assert build is not None
    try:
        with TestClient(create_app(runtime)) as client:
            report = client.get("/health")
            assert report.status_code == 200
            checks = {c["name"]: c for c in report.json()["checks"]}
            assert checks["demo_model"]["status"] == "ok"
            assert "preparing the demo model" in checks["demo_model"]["message"]
            gate.set()
            build.join(30)
            after = client.get("/health").json()
            assert "demo_model" not in {c["name"] for c in after["checks"]}
            assert after["status"] == "healthy"
    finally:
        gate.set()
