"""A distributed Takeflow on one machine, for tests and bench/distributed.py: API replicas and
worker processes (real subprocesses) sharing one home folder (standing in for a shared
filesystem), a real PostgreSQL database and a real redis-server on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.server.harness import REPO, ServerProcess, free_port
from tests.services import PostgresServer, RedisServer


class WorkerProcess:
    """``python -m server.worker`` in a subprocess."""

    def __init__(self, home: Path, env: dict[str, str], queues: str | None, concurrency: int):
        self.home = home
        argv = [sys.executable, "-m", "server.worker", "--home", str(home)]
        argv += ["--concurrency", str(concurrency)]
        if queues:
            argv += ["--queues", queues]
        self.log = home.parent / f"worker-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            if b"takeflow worker" in self.log.read_bytes():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (a crashed machine)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: running tasks may finish
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def add_api(self) -> ServerProcess:
        api = ServerProcess(self.home, "--heartbeat", "0.5", workers=0, env=self.env)
        self.apis.append(api.wait_ready())
        return api

    def add_worker(self, queues: str | None = None, concurrency: int = 2) -> WorkerProcess:
        worker = WorkerProcess(self.home, self.env, queues, concurrency)
        self.workers.append(worker.wait_ready())
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for api in self.apis:
            with contextlib.suppress(Exception):
                api.stop()


@contextlib.contextmanager
def cluster(
    root: Path,
    pg: PostgresServer,
    redis: RedisServer | None,
    apis: int = 2,
    workers: int = 2,
    lease_s: float = 2.0,
    concurrency: int = 2,
    config: dict[str, Any] | None = None,
) -> Iterator[Cluster]:
    home = root / "home"
    home.mkdir(parents=True)
    if config is not None:
        (home / "config.json").write_text(json.dumps(config))
    env = {
        "TAKEFLOW_HOME": str(home),
        "TAKEFLOW_DATABASE_URL": pg.url(pg.create_database("cluster")),
        "TAKEFLOW_LEASE_S": str(lease_s),
    }
    if redis is not None:
        env["TAKEFLOW_REDIS_URL"] = redis.url
    c = Cluster(home, env)
    try:
        c.add_api()  # the first process creates the schemas; the rest start in parallel
        spare = [
            ServerProcess(home, "--heartbeat", "0.5", workers=0, env=env) for _ in range(apis - 1)
        ]
        started = [WorkerProcess(home, env, None, concurrency) for _ in range(workers)]
        c.apis += [a.wait_ready() for a in spare]
        c.workers += [w.wait_ready() for w in started]
        yield c
    finally:
        c.stop()


@dataclass
class ComfyCluster(Cluster):
    """A cluster whose API replicas also serve the ComfyUI API (``--comfy-port``)."""

    comfy_bases: list[str] = field(default_factory=list)  # one per API replica, in order


@contextlib.contextmanager
def comfy_cluster(
    root: Path,
    pg: PostgresServer,
    redis: RedisServer,
    demo: Path,
    apis: int = 2,
    workers: int = 1,
    config: dict[str, Any] | None = None,
) -> Iterator[ComfyCluster]:
    """API replicas started as ``serve --demo --comfy-port`` (``demo``: a built demo model
    folder copied into the home, so the first replica finds it current) and workers started
    once the first replica has registered the demo model in the shared ``config.json``."""
    home = root / "home"
    shutil.copytree(demo, home / "models" / "demo")
    (home / "config.json").write_text(json.dumps(config or {}))
    env = {
        "TAKEFLOW_HOME": str(home),
        "TAKEFLOW_DATABASE_URL": pg.url(pg.create_database("comfy")),
        "TAKEFLOW_REDIS_URL": redis.url,
    }
    c = ComfyCluster(home, env)

    def replica() -> ServerProcess:
        port = free_port()
        c.comfy_bases.append(f"http://127.0.0.1:{port}")
        argv = ("--heartbeat", "0.5", "--demo", "--comfy-port", str(port))
        return ServerProcess(home, *argv, workers=0, env=env)

    try:
        c.apis.append(replica().wait_ready())  # creates the schemas, registers the demo model
        spare = [replica() for _ in range(apis - 1)]
        started = [WorkerProcess(home, env, None, 2) for _ in range(workers)]
        c.apis += [a.wait_ready() for a in spare]
        c.workers += [w.wait_ready() for w in started]
        yield c
    finally:
        c.stop()
