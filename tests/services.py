"""Real PostgreSQL and Redis servers on loopback, started and stopped by the tests themselves.

PostgreSQL refuses to run as root, so when the tests run as root (CI) the cluster is created and
started as the ``postgres`` user (``runuser``) in a temp dir owned by it. Each server listens on a
free loopback port with durability settings fit for tests (``fsync=off``; the code paths are the
production ones). ``bench/distributed.py`` uses the same helpers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """The directory of the PostgreSQL server binaries (``initdb``, ``pg_ctl``), if installed."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def redis_bin() -> str | None:
    return shutil.which("redis-server")


def missing_services() -> str | None:
    """Why the services cannot start here (``None`` when they can)."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if redis_bin() is None:
        return "redis-server is not installed"
    return None


@dataclass
class PostgresServer:
    """A throwaway cluster; ``url(db)`` gives a libpq URL, ``create_database`` a fresh database."""

    port: int
    root: Path
    user: str = "postgres"
    databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a PostgreSQL cluster in a temp dir on a free loopback port; remove it after."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="takeflow-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    port = free_port()
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            cwd=root,
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=64MB"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(root / "log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            cwd=root,
        )
        yield PostgresServer(port, root)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                cwd=root,
            )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RedisServer:
    """A redis-server process; ``stop``/``start`` simulate an outage on the same port."""

    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_bin()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="takeflow-redis-"))
    server = RedisServer(free_port(), root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- pytest fixtures (registered by tests/conftest.py through ``pytest_plugins``) ---------------


def _skip_or_fail_without_services() -> None:
    reason = missing_services()
    if reason is None:
        return
    if os.environ.get("TAKEFLOW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (TAKEFLOW_REQUIRE_SERVICES=1: scripts/install installs them)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole test session."""
    _skip_or_fail_without_services()
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database for one test (psycopg URL)."""
    return pg_server.url(pg_server.create_database())


@pytest.fixture
def redis_srv() -> Iterator[RedisServer]:
    """A redis-server for one test (tests may stop and restart it)."""
    _skip_or_fail_without_services()
    with redis_server() as server:
        yield server
