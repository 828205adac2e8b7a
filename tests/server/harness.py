"""A real Takeflow server in a subprocess on a free loopback port, and a real WebSocket client.

Shared by the server tests and the benchmarks. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import websockets

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"task.completed", "task.failed", "task.cancelled"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m server.app`` (or the ``takeflow serve`` CLI) with its own Takeflow home.

    With ``token`` (a server started with ``--auth``) its HTTP client, readiness probe included,
    sends ``Authorization: Bearer <token>``.
    """

    def __init__(
        self,
        home: Path,
        *extra: str,
        cli: bool = False,
        workers: int = 2,
        env: dict[str, str] | None = None,
        token: str | None = None,
        python: str = sys.executable,
        cwd: Path = REPO,
    ) -> None:
        """``python``/``cwd``: run another checkout's server (benchmarks compare against it)."""
        self.home = home
        self.token = token
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        if cli:
            argv = ["-m", "server.cli", "--home", str(home), "serve", "--port", str(self.port)]
            argv += ["--workers", str(workers), *extra]
        else:
            argv = ["-m", "server.app", "--home", str(home), "--port", str(self.port)]
            argv += ["--workers", str(workers), *extra]
        self.log = home.parent / f"server-{self.port}.log"
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TAKEFLOW_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [python, *argv],
            cwd=cwd,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        self.http = httpx.Client(base_url=self.base, timeout=30.0, headers=headers)

    def wait_ready(self, timeout: float = 90.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/api/v1/projects", timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_file.closed:  # ``stop`` closes it; the file on disk stays readable
            self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- conveniences ---------------------------------------------------------------------

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def submit(self, template_id: str, inputs: dict[str, Any], **fields: Any) -> str:
        body = {"template_id": template_id, "inputs": inputs, **fields}
        return str(self.ok("POST", "/api/v1/functions/tasks", json=body)["task_id"])

    def stored_events(self, task_id: str) -> list[dict[str, Any]]:
        return list(self.ok("GET", f"/api/v1/runs/{task_id}/events"))


@contextlib.contextmanager
def running_server(
    home: Path,
    *extra: str,
    cli: bool = False,
    env: dict[str, str] | None = None,
    token: str | None = None,
) -> Iterator[ServerProcess]:
    server = ServerProcess(home, *extra, cli=cli, env=env, token=token)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


class EventClient:
    """A WebSocket client that subscribes and collects events (``websockets`` package)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self.events: list[dict[str, Any]] = []
        self.control: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventClient:
        self.ws = await asyncio.wait_for(websockets.connect(self.url, max_size=2**24), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await asyncio.wait_for(self.ws.close(), 10)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def subscribe(self, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        """Subscribe and collect the replay; returns the ``subscribed`` acknowledgement."""
        await self.send({"type": "subscribe", **fields})
        return await self.next_control("subscribed", timeout)

    async def recv(self, timeout: float) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if "seq" in message:
            self.events.append(message)
        else:
            self.control.append(message)
        return message  # type: ignore[no-any-return]

    async def next_control(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message.get("type") == kind:
                return message

    async def until(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Receive until an event satisfies ``predicate`` (already-received events count)."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout}s; got {self.types()}")
            message = await self.recv(remaining)
            if "seq" in message and predicate(message):
                return message

    async def until_terminal(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return await self.until(
            lambda e: e["data"].get("task_id") == task_id and e["type"] in TERMINAL, timeout
        )

    def for_task(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["data"].get("task_id") == task_id]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]
