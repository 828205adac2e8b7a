"""Keep saved schedules ticking while ``takeflow serve`` runs: one Dagster daemon per home.

``ScheduleTicker`` is a thread of the server. While a schedule is due to tick (an enabled
schedule in a ``<canvas>.schedules.json`` sidecar, or one started from the Dagster UI) it runs
``dagster-daemon run`` on the home's instance, with a ``python_module`` workspace on the code
location, and restarts it when a sidecar (or a scheduled canvas) changes so that the daemon
sees the new definitions. The daemon's ticks, runs and heartbeats are Dagster's own: the UI
shows them as usual, and the runner adopts each scheduled run as a task.

Only the holder of the *ticker lock* runs a daemon, so every tick launches one run: a file lock
in the Dagster home (embedded mode; ``takeflow ui`` takes the same lock for its daemon) or a
PostgreSQL advisory lock (distributed mode: one ticker per cluster, whichever API replica holds
it; the others stand by and take over within ``poll_s`` when the holder dies, since the lock
goes with its database session). With no due schedule no daemon runs (it costs a code location
load and some CPU every few seconds).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from dagster_defs.location import LOCATION_ATTRIBUTE, LOCATION_MODULE, REPO_ROOT
from dagster_defs.location import LOCATION_NAME as CODE_LOCATION

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the cluster's ticker ("takeflow" in ASCII, as a bigint)
ADVISORY_KEY = 0x74616B65666C6F77
HEARTBEAT_FRESH_S = 120.0  # the daemon beats every 30 s; a loaded machine delays it
_PR_SET_PDEATHSIG = 1


class TickerLock(Protocol):
    """Who may run the daemon: ``acquire`` never blocks; ``held`` checks it is still ours."""

    def acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...
    def holder(self) -> str | None: ...


def identity(role: str) -> str:
    return f"{role} {socket.gethostname()}:{os.getpid()}"


class FileTickerLock:
    """``flock`` on ``<dagster home>/ticker.lock`` (released by the kernel if the process dies);
    the holder's identity is written into the file."""

    def __init__(self, path: Path, who: str) -> None:
        self.path = path
        self.who = who
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(self.who)
        handle.flush()
        self._file = handle
        return True

    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.truncate(0)
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> str | None:
        if self._file is not None:
            return self.who
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None


class PostgresTickerLock:
    """A session-level ``pg_try_advisory_lock`` on a connection of its own, named
    ``application_name`` = the holder's identity (so any replica can say who ticks)."""

    def __init__(self, database_url: str, who: str) -> None:
        self.database_url = database_url
        self.who = who
        self._conn: Any = None

    def _connect(self, name: str) -> Any:
        import psycopg

        return psycopg.connect(
            self.database_url, autocommit=True, application_name=name[:63], connect_timeout=5
        )

    def acquire(self) -> bool:
        if self._conn is not None and self.held():
            return True
        try:
            conn = self._connect(f"takeflow-ticker {self.who}")
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        except Exception as exc:  # database down: nobody can tick from here
            log.warning("schedules: cannot reach the database for the ticker lock: %s", exc)
            return False
        if got and got[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # ends the session, which releases the lock
            self._conn = None

    def holder(self) -> str | None:
        if self._conn is not None:
            return self.who
        query = (
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s"
        )
        try:
            with self._connect("takeflow-ticker probe") as conn:
                row = conn.execute(query, (ADVISORY_KEY,)).fetchone()
        except Exception:
            return None
        return str(row[0]).removeprefix("takeflow-ticker ") if row else None


def ticker_lock(dagster_home: Path, database_url: str | None, who: str) -> TickerLock:
    """The lock of this home's (or cluster's) ticker."""
    if database_url:
        return PostgresTickerLock(database_url, who)
    return FileTickerLock(dagster_home / "ticker.lock", who)


def daemon_command(workspace: Path) -> list[str]:
    """``dagster-daemon run`` (Dagster 1.13 has no ``dagster daemon``), through a wrapper that
    ends it with its parent (a killed server must not leave a second ticker behind)."""
    return [
        sys.executable,
        "-m",
        "dagster_defs.ticker",
        "--exec-daemon",
        "run",
        "-w",
        str(workspace),
    ]


def write_module_workspace(dagster_home: Path) -> Path:
    """``<dagster home>/ticker-workspace.yaml``: the code location, loaded by the daemon."""
    workspace = dagster_home / "ticker-workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_module:\n      module_name: {LOCATION_MODULE}\n"
        f"      attribute: {LOCATION_ATTRIBUTE}\n      working_directory: {REPO_ROOT}\n"
        f"      location_name: {CODE_LOCATION}\n"
    )
    return workspace


def dagster_environment(home_path: Path, dagster_home: Path) -> dict[str, str]:
    """The environment of a Dagster process on this home (this checkout importable)."""
    pythonpath = [str(REPO_ROOT), os.environ.get("PYTHONPATH")]
    return {
        **os.environ,
        "TAKEFLOW_HOME": str(home_path),
        "DAGSTER_HOME": str(dagster_home),
        "PYTHONPATH": os.pathsep.join(filter(None, pythonpath)),
    }


@dataclass(frozen=True)
class ScheduleScan:
    """What the saved sidecars ask for: how many enabled schedules, and a fingerprint of the
    sidecars and their canvases (a change means the daemon must reload the definitions)."""

    enabled: int
    fingerprint: tuple[tuple[str, int, int], ...]


def scan_schedules(project_paths: list[Path]) -> ScheduleScan:
    from dagster_defs.schedules import SCHEDULES_SUFFIX

    enabled = 0
    seen: list[tuple[str, int, int]] = []
    for root in project_paths:
        folder = root / "02_Source_Creative"
        for sidecar in [
            *folder.glob(f"*{SCHEDULES_SUFFIX}"),
            *(folder / "canvases").glob(f"*{SCHEDULES_SUFFIX}"),
        ]:
            name = sidecar.name.removesuffix(SCHEDULES_SUFFIX)
            canvases = [
                sidecar.with_name(name + ".json"),
                sidecar.with_name(name + ".takeflow.json"),
            ]
            for path in [sidecar, *canvases]:
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    seen.append((str(path), stat.st_mtime_ns, stat.st_size))
            if not any(c.exists() for c in canvases):
                continue
            try:
                doc = json.loads(sidecar.read_text())
                enabled += sum(1 for s in doc.get("schedules", []) if s.get("enabled", True))
            except (OSError, ValueError, AttributeError):
                continue  # the code location reports an invalid sidecar
    return ScheduleScan(enabled, tuple(sorted(seen)))


class ScheduleTicker:
    """Runs (and supervises) the home's Dagster daemon while schedules are due to tick.

    ``projects()`` lists the project folders; ``started_in_ui()`` counts schedules started from
    the Dagster UI (instance state ``RUNNING``). ``status()`` is what ``/health`` reports.
    """

    def __init__(
        self,
        home_path: Path,
        dagster_home: Path,
        lock: TickerLock,
        projects: Callable[[], list[Path]],
        started_in_ui: Callable[[], int] = lambda: 0,
        poll_s: float = 5.0,
        restart_min_s: float = 15.0,
    ) -> None:
        self.home_path = home_path
        self.dagster_home = dagster_home
        self.lock = lock
        self.projects = projects
        self.started_in_ui = started_in_ui
        self.poll_s = poll_s
        self.restart_min_s = restart_min_s
        self.log_path = dagster_home / "ticker-daemon.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._scheduled = 0
        self._last_error: str | None = None
        self._restarts = 0
        self._state = "idle"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="schedule-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._stop_daemon()
        self.lock.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # never let the thread die; health shows the error
                log.exception("schedules: ticker step failed")
                self._last_error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(self.poll_s)

    def tick(self) -> None:
        """One supervision step (the loop calls it every ``poll_s``)."""
        scan = scan_schedules(self.projects())
        due = scan.enabled or self.started_in_ui()
        self._scheduled = scan.enabled
        if not due:
            self._state = "idle"
            if self._proc is not None:
                log.warning("schedules: none left to tick; stopping the Dagster daemon")
                self._stop_daemon()
            self.lock.release()
            return
        if not (self.lock.held() or self.lock.acquire()):
            self._state = "standby"
            if self._proc is not None:
                log.warning("schedules: lost the ticker lock; stopping the Dagster daemon")
                self._stop_daemon()
            return
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self._last_error = (
                f"the Dagster daemon exited with {proc.returncode} (see {self.log_path})"
            )
            log.warning("schedules: %s; restarting it", self._last_error)
            self._proc = None
            self._restarts += 1
        changed = self._proc is not None and scan.fingerprint != self._fingerprint
        if changed and time.monotonic() - self._started_at >= self.restart_min_s:
            log.warning("schedules: saved schedules changed; restarting the Dagster daemon")
            self._stop_daemon()
        backoff = 5.0 if self._restarts else 0.0
        if self._proc is None and time.monotonic() - self._started_at >= backoff:
            self._fingerprint = scan.fingerprint
            self._start_daemon()
        self._state = "ticking"

    def _start_daemon(self) -> None:
        workspace = write_module_workspace(self.dagster_home)
        with self.log_path.open("wb") as out:
            proc = subprocess.Popen(
                daemon_command(workspace),
                cwd=REPO_ROOT,
                env=dagster_environment(self.home_path, self.dagster_home),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._proc = proc
            self._started_at = time.monotonic()
        log.warning("schedules: Dagster daemon started (pid %d, log %s)", proc.pid, self.log_path)

    def _stop_daemon(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_group(proc)

    # -- reporting --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``state``: ``ticking`` (this process holds the ticker lock and runs the daemon),
        ``standby`` (another process holds it), ``idle`` (no schedule due) or ``stopped``."""
        with self._lock:
            proc = self._proc
        running = proc is not None and proc.poll() is None
        stopped = self._stop.is_set() or self._thread is None
        state = "stopped" if stopped else self._state
        info: dict[str, Any] = {
            "state": state,
            "enabled_schedules": self._scheduled,
            "daemon_pid": proc.pid if running and proc else None,
            "daemon_age_s": round(time.monotonic() - self._started_at, 1) if running else None,
            "restarts": self._restarts,
        }
        if state in ("standby", "ticking"):
            info["holder"] = self.lock.holder()
        if self._last_error:
            info["last_error"] = self._last_error
        return info


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM to the process group (the daemon and its code server), SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def heartbeat_ages(instance: Any) -> dict[str, float]:
    """Seconds since each Dagster daemon's last heartbeat (the instance's own record)."""
    now = time.time()
    return {
        kind: round(now - beat.timestamp, 1)
        for kind, beat in instance.get_daemon_heartbeats().items()
    }


def schedules_started_in_ui(instance: Any) -> int:
    """Schedules the instance has as RUNNING (started from the Dagster UI or CLI)."""
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    states = instance.all_instigator_state(
        instigator_type=InstigatorType.SCHEDULE, instigator_statuses={InstigatorStatus.RUNNING}
    )
    return len(states)


def open_ticker(runtime: Any, poll_s: float = 5.0) -> ScheduleTicker:
    """The ticker of a server's runtime: the cluster's advisory lock in distributed mode."""
    from dagster_defs.settings import ClusterSettings

    home = runtime.home
    cluster = ClusterSettings.resolve(home.config())
    return ScheduleTicker(
        home.path,
        home.dagster_home,
        ticker_lock(
            home.dagster_home, cluster.database_url if cluster else None, identity("serve")
        ),
        projects=lambda: [p.path for p in runtime.projects.list()],
        started_in_ui=lambda: schedules_started_in_ui(runtime.instance),
        poll_s=poll_s,
    )


def _exec_daemon(argv: list[str]) -> None:
    """``python -m dagster_defs.ticker --exec-daemon ARGS``: become ``dagster-daemon ARGS``,
    asking the kernel for SIGTERM when the parent dies (Linux), so no orphan daemon ticks."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl
            raise SystemExit(1)
    binary = Path(sys.executable).parent / "dagster-daemon"
    os.execv(str(binary), [str(binary), *argv])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--exec-daemon"]:
        _exec_daemon(sys.argv[2:])
    raise SystemExit("usage: python -m dagster_defs.ticker --exec-daemon ARGS")
