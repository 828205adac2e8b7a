"""`takeflow ui` in a subprocess for the tests that drive Dagster's own interfaces, and the
GraphQL and browser helpers they share."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def home_env(home: Path) -> dict[str, str]:
    """The environment of a process on the Takeflow home ``home`` (and its Dagster home)."""
    return {**os.environ, "TAKEFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        result = json.loads(response.read())
    assert "errors" not in result, result
    return dict(result["data"])


class Ui:
    """`python -m server.cli ui` on a home, in its own process group, read until it prints
    its URL; ``extra``: more arguments (``--no-daemon``)."""

    def __init__(self, home: Path, env: Mapping[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"ui-{self.port}.log"
        args = ["--port", str(self.port), "--startup-timeout", "120", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "--home", str(home), "ui", *args],
            cwd=REPO,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 150.0) -> Ui:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"takeflow ui exited with {self.proc.returncode}:\n{self.output()}")
            if "Dagster UI for" in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.5)
        pytest.fail(f"takeflow ui not ready in {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
