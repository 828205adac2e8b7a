"""Server options, grouped in one model instead of a dozen keyword arguments."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from server.guard import DEFAULT_MAX_JSON_DEPTH, GuardPolicy

DEFAULT_PORT = 8470
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and protects itself.

    ``max_upload_bytes`` caps one uploaded asset; ``ws_queue_size`` bounds the events buffered
    for one WebSocket client before it is caught up from the durable log instead;
    ``ws_compression`` offers permessage-deflate (off: events are small, and deflate is paid
    per message and per connection, the largest cost of a fan-out to many clients);
    ``heartbeat_s`` is the idle interval between heartbeats; ``health_timeout_s`` bounds the
    data-flow check of ``GET /health``; ``web_dist`` is a built editor to serve at ``/``.
    ``auth`` requires bearer tokens (``server.auth``; forced on beyond loopback);
    ``max_body_bytes`` caps JSON bodies and ``max_graph_nodes`` graphs; ``trace_exporter`` is
    where ``serve`` sends spans; ``plugins`` are modules whose ``install(runtime)`` runs at
    start (extensions and test fault injection; none by default); ``template_fault_window_s``
    is how long a template that raised or hung keeps ``/health`` degraded unless it runs
    cleanly again. ``allowed_hosts`` / ``allowed_origins`` extend the ``Host`` and ``Origin``
    checks (``server.guard``; also ``server.allowed_hosts`` / ``server.allowed_origins`` in the
    home's ``config.json``); ``max_json_depth`` bounds the nesting of JSON bodies and messages.
    ``shutdown_grace_s`` is how long running tasks may finish after SIGTERM or SIGINT before
    they are ended as interrupted (default: ``runner.shutdown_grace_s`` of the home's
    ``config.json``, else 10 s).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_upload_bytes: int = 64 * MiB
    max_body_bytes: int = 1 * MiB
    max_graph_nodes: int = 500
    ws_queue_size: int = 1024
    ws_compression: bool = False
    heartbeat_s: float = 15.0
    health_timeout_s: float = 10.0
    max_batch_size: int = 1000
    web_dist: Path | None = None
    auth: bool = False
    trace_exporter: str = "none"
    plugins: tuple[str, ...] = ()
    template_fault_window_s: float = 300.0
    shutdown_grace_s: float | None = None
    comfy_port: int | None = None  # a second listener speaking ComfyUI's API (server.comfy)
    schedules: bool = True  # run the Dagster daemon while schedules are due (dagster_defs.ticker)
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH

    def with_home_settings(self, settings: Mapping[str, Any]) -> ServerConfig:
        """Add the ``server`` section of a home's ``config.json`` (allowed hosts and origins
        are added to the command line's; ``max_json_depth`` applies unless given there)."""
        section = settings.get("server") or {}
        if not isinstance(section, Mapping):
            return self
        hosts = tuple(str(h) for h in section.get("allowed_hosts") or ())
        origins = tuple(str(o) for o in section.get("allowed_origins") or ())
        depth = self.max_json_depth
        if depth == DEFAULT_MAX_JSON_DEPTH and "max_json_depth" in section:
            depth = int(section["max_json_depth"])
        return replace(
            self,
            allowed_hosts=(*self.allowed_hosts, *hosts),
            allowed_origins=(*self.allowed_origins, *origins),
            max_json_depth=depth,
        )

    def guard_policy(self) -> GuardPolicy:
        """The ``Host``/``Origin``/JSON checks of a server with this config."""
        return GuardPolicy.for_server(
            self.host,
            self.auth,
            self.allowed_hosts,
            self.allowed_origins,
            self.max_json_depth,
            max_body_bytes=self.max_body_bytes,
        )

    @staticmethod
    def default_web_dist() -> Path | None:
        """``web/dist`` of the source tree, when the editor was built."""
        dist = Path(__file__).resolve().parent.parent / "web" / "dist"
        return dist if (dist / "index.html").exists() else None


@dataclass(frozen=True)
class ServeOptions:
    """One ``serve`` start: the server's config plus how its runtime is opened.

    Both entry points (``takeflow serve`` and ``python -m server.app``) parse the same options
    (``add_serve_options``) into this one model (``from_args``).
    """

    config: ServerConfig = field(default_factory=ServerConfig)
    workers: int = 2
    demo: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            max_upload_bytes=args.max_upload_bytes,
            heartbeat_s=args.heartbeat,
            ws_queue_size=args.ws_queue_size,
            ws_compression=args.ws_compression,
            auth=args.auth,
            trace_exporter=args.trace_exporter,
            plugins=tuple(args.plugin),
            max_body_bytes=args.max_body_bytes,
            max_graph_nodes=args.max_graph_nodes,
            template_fault_window_s=args.template_fault_window,
            web_dist=args.web_dist,
            shutdown_grace_s=args.grace,
            comfy_port=args.comfy_port,
            schedules=not args.no_schedules,
            allowed_hosts=tuple(args.allowed_host),
            allowed_origins=tuple(args.allowed_origin),
            max_json_depth=args.max_json_depth,
        )
        return cls(config=config, workers=args.workers, demo=args.demo)


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``takeflow serve`` and ``python -m server.app`` (read by ``ServeOptions``)."""
    defaults = ServerConfig
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--workers", type=int, default=ServeOptions.workers)
    parser.add_argument(
        "--demo", action="store_true", help="create a 'demo' project (and demo model) if missing"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require bearer tokens (always on when --host is not loopback)",
    )
    parser.add_argument(
        "--trace-exporter",
        choices=("none", "console", "otlp"),
        default=defaults.trace_exporter,
        help="where finished trace spans go (trace ids are recorded either way)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and call its install(runtime) at start (repeatable)",
    )
    parser.add_argument("--max-upload-bytes", type=int, default=defaults.max_upload_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max-graph-nodes", type=int, default=defaults.max_graph_nodes)
    parser.add_argument(
        "--max-json-depth",
        type=int,
        default=defaults.max_json_depth,
        help="deepest nesting of arrays/objects a JSON body or WebSocket message may have",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host is NAME (besides loopback names and the bound "
        "address; '*': any); repeatable; see docs/security.md",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept state-changing requests and WebSockets from ORIGIN "
        "(e.g. https://studio.example); repeatable",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=defaults.heartbeat_s,
        help="seconds between WebSocket heartbeats when idle",
    )
    parser.add_argument(
        "--ws-queue-size",
        type=int,
        default=defaults.ws_queue_size,
        help="events buffered per WebSocket client before it is caught up from the log",
    )
    parser.add_argument(
        "--ws-compression",
        action="store_true",
        help="offer permessage-deflate on WebSockets (costs CPU per message and client)",
    )
    parser.add_argument(
        "--web-dist",
        type=Path,
        default=None,
        metavar="DIR",
        help="the built editor to serve at / (default: web/dist of the source tree)",
    )
    parser.add_argument(
        "--comfy-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve the ComfyUI-compatible API on PORT (e.g. 8188); see docs/comfyui.md",
    )
    parser.add_argument(
        "--template-fault-window",
        type=float,
        default=defaults.template_fault_window_s,
        help="seconds a template that failed or hung keeps /health degraded",
    )
    parser.add_argument(
        "--no-schedules",
        action="store_true",
        help="do not tick saved schedules (no Dagster daemon; see docs/deploy.md)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running tasks may finish before they are ended as "
        "interrupted (default: runner.shutdown_grace_s in the home's config.json, else 10)",
    )
