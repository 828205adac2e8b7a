"""The ``takeflow`` command line: init, run, templates, serve, token, ui."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from graph_runtime.errors import GraphValidationError, TakeflowError
from graph_runtime.events import TERMINAL_EVENTS, EventType, TaskEvent


class ProgressBars:
    """An event sink that draws one progress line per node on a terminal."""

    def __init__(self, task_id: str, nodes: list[str], stream: Any = sys.stderr) -> None:
        self.task_id = task_id
        self.stream = stream
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.state = {n: ("queued", 0.0, "") for n in nodes}
        self._lock = threading.Lock()
        self._drawn = False
        self.finished = threading.Event()
        self.terminal: TaskEvent | None = None

    def emit(self, event: TaskEvent) -> None:
        if event.task_id != self.task_id:
            return
        node = event.data.get("node_id")
        with self._lock:
            if event.type == EventType.NODE_STATE and node in self.state:
                state = event.data["state"]
                frac = 1.0 if state == "completed" else self.state[node][1]
                self.state[node] = (state, frac, "")
                self._draw(force=not self.interactive, node=node)
            elif event.type == EventType.TASK_PROGRESS and node in self.state:
                stage = event.data.get("stage") or ""
                self.state[node] = ("running", event.data.get("node_progress", 0.0), stage)
                self._draw()
            elif event.type in TERMINAL_EVENTS:
                self.terminal = event
                self.finished.set()

    def _draw(self, force: bool = False, node: str | None = None) -> None:
        if not self.interactive:
            if force and node:
                state, frac, _ = self.state[node]
                self.stream.write(f"  {node:<20} {state}\n")
            return
        if self._drawn:
            self.stream.write(f"\x1b[{len(self.state)}A")
        for name, (state, frac, stage) in self.state.items():
            filled = int(frac * 24)
            bar = "#" * filled + "-" * (24 - filled)
            self.stream.write(f"\x1b[2K  {name:<20} [{bar}] {frac * 100:5.1f}% {state} {stage}\n")
        self._drawn = True
        self.stream.flush()


def _print_errors(exc: TakeflowError) -> None:
    if isinstance(exc, GraphValidationError):
        print(f"error: the graph is invalid ({len(exc.issues)} problem(s)):", file=sys.stderr)
        for issue in exc.issues:
            where = (
                f"{issue.node_id}" + (f".{issue.port}" if issue.port else "")
                if issue.node_id
                else "graph"
            )
            print(f"  {where}: [{issue.code}] {issue.message}", file=sys.stderr)
    else:
        print(f"error: [{exc.code}] {exc.message}", file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from stores.home import TakeflowHome
    from stores.projects import ProjectCatalog

    home = TakeflowHome.resolve(args.home)
    folder = Path(args.project_dir).resolve()
    project_id = args.id or folder.name.lower().replace(" ", "-")
    project = ProjectCatalog(home.path).create(project_id, args.name, folder)
    print(f"created project '{project.id}' in {project.path} (home {home.path})")
    return 0


def _project_for(runtime: Any, project: str | None) -> str | None:
    if project is None:
        return None
    candidate = Path(project)
    if candidate.exists() and (candidate / "project.json").exists():
        found = runtime.projects.find_by_path(candidate)
        return str((found or runtime.projects.register(candidate)).id)
    return project


class BatchBar:
    """One progress line for a whole batch (an adapter of ``BatchProgress``)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream = stream or sys.stderr
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self._last_finished = -1
        self._lock = threading.Lock()

    def __call__(self, progress: Any) -> None:
        s = progress.summary()
        with self._lock:
            if self.interactive:
                bar = "#" * int(s["progress"] * 30)
                self.stream.write(
                    f"\r\x1b[2K  batch [{bar:-<30}] {s['progress'] * 100:5.1f}% "
                    f"{s['finished']}/{s['total']} done, {s['failed']} failed"
                )
                self.stream.flush()
            elif s["finished"] != self._last_finished:
                self._last_finished = s["finished"]
                self.stream.write(
                    f"  batch {s['finished']}/{s['total']} done ({s['progress'] * 100:.0f}%), "
                    f"{s['failed']} failed\n"
                )


def _run_sweep(args: argparse.Namespace, runtime: Any, graph: Any, project_id: str | None) -> int:
    """``takeflow run GRAPH --sweep FILE``: one task per combination, one progress line."""
    from dagster_defs.batches import BatchProgress, new_batch_id, submit_sweep
    from graph_runtime.sweeps import Sweep

    try:
        sweep = Sweep.parse(Path(args.sweep).read_text())
    except OSError as exc:
        print(f"error: cannot read sweep {args.sweep}: {exc}", file=sys.stderr)
        return 2
    progress = BatchProgress(new_batch_id(), on_change=BatchBar())
    progress.expected = sweep.size()
    runtime.runner.add_sink(progress)
    try:
        batch_id, task_ids = submit_sweep(
            runtime.runner,
            graph,
            sweep,
            project_id=project_id,
            shot=args.shot,
            batch_id=progress.batch_id,
        )
        print(f"batch {batch_id}: {len(task_ids)} task(s)", file=sys.stderr)
        done = progress.wait(timeout=args.timeout)
    finally:
        runtime.runner.remove_sink(progress)
    if progress.on_change is not None and getattr(progress.on_change, "interactive", False):
        print(file=sys.stderr)
    summary = progress.summary()
    print(
        f"batch {batch_id}: {summary['completed']} completed, {summary['failed']} failed, "
        f"{summary['cancelled']} cancelled of {summary['total']}" + ("" if done else " (timed out)")
    )
    if project_id:
        project = runtime.projects.get(project_id)
        by_task = {t.metadata.get("task_id"): t for t in project.takes.list()}
        for task_id in task_ids:
            take = by_task.get(task_id)
            if take is None:
                print(f"  {task_id}: no take")
                continue
            values = take.metadata.get("sweep", {}).get("values", {})
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            for name, out in take.outputs.items():
                print(f"  {take.take_id} {name} [{shown}]: {project.abs(out.path)}")
    return 0 if done and summary["completed"] == summary["total"] else 1


def cmd_run(args: argparse.Namespace) -> int:
    from dagster_defs.runtime import open_runtime
    from graph_runtime.canvas import CanvasGraph

    try:
        graph = CanvasGraph.model_validate_json(Path(args.graph).read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read graph {args.graph}: {exc}", file=sys.stderr)
        return 2
    runtime = open_runtime(args.home, workers=1)
    try:
        project_id = _project_for(runtime, args.project)
        if args.sweep:
            return _run_sweep(args, runtime, graph, project_id)
        plan = runtime.runner.plan(graph)
        record = None
        bars = None
        try:
            task_id = f"task_{__import__('uuid').uuid4().hex[:16]}"
            bars = ProgressBars(task_id, [n.node_id for n in plan.nodes])
            runtime.runner.add_sink(bars)
            record = runtime.runner.submit(
                graph, project_id=project_id, shot=args.shot, task_id=task_id
            )
        except TakeflowError as exc:
            _print_errors(exc)
            return 2
        record = runtime.runner.wait(record.task_id, timeout=args.timeout)
        print(f"task {record.task_id}: {record.status.value}")
        if record.error:
            _print_errors(TakeflowError(record.error.get("message", "failed")))
            return 1
        if project_id:
            project = runtime.projects.get(project_id)
            for take in project.takes.list(task_id=record.task_id):
                for name, out in take.outputs.items():
                    print(f"  {take.take_id} {name}: {project.abs(out.path)}")
        return 0 if record.status.value == "completed" else 1
    except TakeflowError as exc:
        _print_errors(exc)
        return 2
    finally:
        runtime.close()


def cmd_templates(args: argparse.Namespace) -> int:
    from graph_runtime.registry import TemplateRegistry

    registry = TemplateRegistry.discover()
    if args.json:
        print(json.dumps([t.describe() for t in registry.latest()], indent=2))
        return 0
    for t in registry.latest():
        ports = ", ".join(f"{p.name}:{p.type.value}" for p in t.inputs)
        outs = ", ".join(f"{p.name}:{p.type.value}" for p in t.outputs)
        print(f"{t.ref:<28} {t.category:<10} ({ports}) -> ({outs})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import serve
    from server.config import ServerConfig, serve_options

    config = ServerConfig(host=args.host, port=args.port, **serve_options(args))
    return serve(
        home=args.home,
        host=args.host,
        port=args.port,
        workers=args.workers,
        demo=args.demo,
        config=config,
    )


def cmd_token(args: argparse.Namespace) -> int:
    """``takeflow token create|list|revoke``: bearer tokens for ``serve --auth``."""
    from server.auth import ALL_PROJECTS, TokenStore
    from stores.home import TakeflowHome

    store = TokenStore(TakeflowHome.resolve(args.home).path)
    if args.token_command == "create":
        projects = [ALL_PROJECTS] if args.all_projects else list(args.project or [])
        token, entry = store.create(args.user, projects)
        print(
            f"token {entry['id']} for user '{entry['user']}' "
            f"(projects: {', '.join(entry['projects'])}); shown once, keep it secret:",
            file=sys.stderr,
        )
        print(token)
        return 0
    if args.token_command == "list":
        for entry in store.list():
            print(f"{entry['id']}  {entry['user']:<20} {', '.join(entry['projects'])}")
        return 0
    if store.revoke(args.token_id):
        print(f"revoked token {args.token_id}")
        return 0
    print(f"error: no token {args.token_id}", file=sys.stderr)
    return 1


def _wait_for_port(host: str, port: int, proc: Any, timeout: float) -> bool:
    import socket
    import time

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
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the Dagster UI (and daemon) on this Takeflow home, sharing one code server.

    The code server loads ``dagster_defs.definitions``; the webserver and the daemon both reach it
    through ``<home>/dagster/workspace.yaml`` (``grpc_server``), so a code location reload in the
    UI reaches the daemon too (within its 60 s refresh).
    """
    import os
    import signal
    import socket
    import subprocess
    import time

    from dagster_defs.instance import write_instance_config
    from stores.home import TakeflowHome

    home = TakeflowHome.resolve(args.home)
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    write_instance_config(home.dagster_home)
    repo_root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "TAKEFLOW_HOME": str(home.path),
        "DAGSTER_HOME": str(home.dagster_home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")])),
    }
    code_port = _free_port("127.0.0.1")
    workspace = home.dagster_home / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {code_port}\n      location_name: takeflow\n"
    )
    bindir = Path(sys.executable).parent
    dagster = [sys.executable, "-m", "dagster"]
    commands = {
        "code server": [
            *dagster,
            "code-server",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(code_port),
            "-m",
            "dagster_defs.definitions",
            "-a",
            "takeflow_definitions",
            "-d",
            str(repo_root),
            "--location-name",
            "takeflow",
            "--log-level",
            "warning",
        ],
        "webserver": [
            str(bindir / "dagster-webserver"),
            "-h",
            args.host,
            "-p",
            str(args.port),
            "-w",
            str(workspace),
        ],
    }
    if not args.no_daemon:
        commands["daemon"] = [*dagster, "daemon", "run", "-w", str(workspace)]
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def stop(*_: Any) -> None:
        for proc in reversed(list(procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop_and_exit(*_: Any) -> None:
        stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_and_exit)
    try:
        for name, command in commands.items():
            procs[name] = subprocess.Popen(command, env=env, cwd=repo_root)
            if name == "code server" and not _wait_for_port(
                "127.0.0.1", code_port, procs[name], args.startup_timeout
            ):
                print("error: the code server did not start (see its output)", file=sys.stderr)
                return 1
        if not _wait_for_port(args.host, args.port, procs["webserver"], args.startup_timeout):
            print("error: dagster-webserver did not start (see its output above)", file=sys.stderr)
            return 1
        print(f"Dagster UI for {home.path}: http://{args.host}:{args.port}", flush=True)
        while all(proc.poll() is None for proc in procs.values()):
            time.sleep(1)
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        print(f"error: {', '.join(dead)} stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="takeflow", description=__doc__)
    parser.add_argument("--home", help="Takeflow home (default: $TAKEFLOW_HOME or ~/.takeflow)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create a project folder (git repository with LFS)")
    p.add_argument("project_dir")
    p.add_argument("--id", help="project id (default: the folder name)")
    p.add_argument("--name")
    p.set_defaults(fn=cmd_init)

    p = sub.add_parser("run", help="run a graph JSON file and print the takes it made")
    p.add_argument("graph")
    p.add_argument("--project", help="project id or folder (omit to run without takes)")
    p.add_argument("--shot", help="chapter/scene/shot (default: the graph's context)")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument(
        "--sweep",
        metavar="FILE.json",
        help="run a batch: lists of values for node inputs (takeflow.sweep/v1, see docs)",
    )
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("templates", help="list the available templates")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_templates)

    p = sub.add_parser("serve", help="start the server on loopback")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8470)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--demo", action="store_true", help="create a 'demo' project (and demo model) if missing"
    )
    from server.config import add_serve_options

    add_serve_options(p)
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("token", help="bearer tokens for `serve --auth`")
    token_sub = p.add_subparsers(dest="token_command", required=True)
    t = token_sub.add_parser("create", help="create a token for a user and its projects")
    t.add_argument("--user", required=True)
    t.add_argument("--project", action="append", help="a project the token may use (repeatable)")
    t.add_argument("--all-projects", action="store_true", help="every project (an operator)")
    t.set_defaults(fn=cmd_token)
    t = token_sub.add_parser("list", help="tokens of this home (ids, users, projects)")
    t.set_defaults(fn=cmd_token)
    t = token_sub.add_parser("revoke", help="remove a token by its id")
    t.add_argument("token_id")
    t.set_defaults(fn=cmd_token)

    from server.worker import add_worker_parser  # distributed mode (docs/deploy.md)

    add_worker_parser(sub)

    p = sub.add_parser("ui", help="open the Dagster UI (and daemon) on this Takeflow home")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--no-daemon", action="store_true", help="do not run schedules")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.set_defaults(fn=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except TakeflowError as exc:
        _print_errors(exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
