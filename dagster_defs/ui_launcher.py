"""Start the Dagster UI (and daemon) on a Takeflow home, sharing one code server.

The code server loads ``dagster_defs.code_location``; the webserver and the daemon both reach it
through ``<home>/dagster/workspace.yaml`` (``grpc_server``), so a code location reload in the
UI reaches the daemon too (within its 60 s refresh). ``launch_ui`` supervises the three
processes: when one stops, the others are stopped and it returns 1.

The daemon only ticks schedules and sensors (launches and re-executions from the UI go straight
to the run launcher, see ``dagster_defs.instance``). It runs only while ``takeflow ui`` holds the
home's ticker lock (``dagster_defs.ticker``): when ``takeflow serve`` already ticks the
schedules, the UI starts without a daemon of its own, so no tick launches two runs.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dagster_defs.instance import write_instance_config
from dagster_defs.location import LOCATION_ATTRIBUTE, LOCATION_MODULE, REPO_ROOT
from dagster_defs.location import LOCATION_NAME as CODE_LOCATION
from dagster_defs.ticker import (
    TickerLock,
    daemon_command,
    dagster_environment,
    identity,
    ticker_lock,
)
from stores.home import TakeflowHome


def launch_ui(
    home: TakeflowHome,
    host: str = "127.0.0.1",
    port: int = 3000,
    daemon: bool = True,
    startup_timeout: float = 120.0,
) -> int:
    """Run code server, webserver and (unless ``daemon`` is false) the daemon until one stops."""
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    write_instance_config(home.dagster_home)
    lock = _daemon_lock(home) if daemon else None
    code_port = _free_port("127.0.0.1")
    workspace = write_grpc_workspace(home, code_port)
    commands = _commands(code_port, workspace, host, port, daemon=lock is not None)
    supervisor = _Supervisor(dagster_environment(home.path, home.dagster_home))
    signal.signal(signal.SIGTERM, supervisor.stop_and_exit)
    try:
        for name, command in commands.items():
            proc = supervisor.start(name, command)
            if name == "code server" and not _wait_for_port(
                "127.0.0.1", code_port, proc, startup_timeout
            ):
                print("error: the code server did not start (see its output)", file=sys.stderr)
                return 1
        if not _wait_for_port(host, port, supervisor.procs["webserver"], startup_timeout):
            print("error: dagster-webserver did not start (see its output above)", file=sys.stderr)
            return 1
        print(f"Dagster UI for {home.path}: http://{host}:{port}", flush=True)
        dead = supervisor.wait_for_first_exit()
        print(f"error: {', '.join(dead)} stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        supervisor.stop()
        if lock is not None:
            lock.release()


def _daemon_lock(home: TakeflowHome) -> TickerLock | None:
    """The home's ticker lock for the UI's daemon, or None (and why) when another holds it."""
    from dagster_defs.settings import ClusterSettings

    cluster = ClusterSettings.resolve(home.config())
    lock = ticker_lock(home.dagster_home, cluster.database_url if cluster else None, identity("ui"))
    if lock.acquire():
        return lock
    print(
        f"schedules are ticked by {lock.holder() or 'another process'}: "
        "starting the UI without a daemon of its own",
        flush=True,
    )
    return None


def write_grpc_workspace(home: TakeflowHome, code_port: int) -> Path:
    """``<home>/dagster/workspace.yaml`` pointing the webserver and daemon at one code server."""
    workspace = home.dagster_home / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {code_port}\n      location_name: {CODE_LOCATION}\n"
    )
    return workspace


def _commands(
    code_port: int, workspace: Path, host: str, port: int, daemon: bool
) -> dict[str, list[str]]:
    dagster = [sys.executable, "-m", "dagster"]
    code_server = [
        *dagster,
        "code-server",
        "start",
        *("-h", "127.0.0.1", "-p", str(code_port)),
        *("-m", LOCATION_MODULE, "-a", LOCATION_ATTRIBUTE),
        *("-d", str(REPO_ROOT), "--location-name", CODE_LOCATION, "--log-level", "warning"),
    ]
    webserver = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        *("-h", host, "-p", str(port), "-w", str(workspace)),
    ]
    commands = {"code server": code_server, "webserver": webserver}
    if daemon:
        commands["daemon"] = daemon_command(workspace)
    return commands


class _Supervisor:
    """The started processes, stopped in reverse order (terminate, then kill after 10 s)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        self.procs[name] = subprocess.Popen(command, env=self.env, cwd=REPO_ROOT)
        return self.procs[name]

    def wait_for_first_exit(self) -> list[str]:
        while all(proc.poll() is None for proc in self.procs.values()):
            time.sleep(1)
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop_and_exit(self, *_: Any) -> None:
        self.stop()
        sys.exit(0)


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
