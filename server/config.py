"""Server options, grouped in one model instead of a dozen keyword arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8470
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and protects itself.

    ``max_upload_bytes`` caps one uploaded asset; ``ws_queue_size`` bounds the events buffered
    for one WebSocket client before it is caught up from the durable log instead;
    ``heartbeat_s`` is the idle interval between heartbeats; ``health_timeout_s`` bounds the
    data-flow check of ``GET /health``; ``web_dist`` is a built editor to serve at ``/``.
    ``auth`` requires bearer tokens (``server.auth``; forced on beyond loopback);
    ``max_body_bytes`` caps JSON bodies and ``max_graph_nodes`` graphs; ``trace_exporter`` is
    where ``serve`` sends spans; ``plugins`` are modules whose ``install(runtime)`` runs at
    start (extensions and test fault injection; none by default); ``template_fault_window_s``
    is how long a template that raised or hung keeps ``/health`` degraded unless it runs
    cleanly again.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_upload_bytes: int = 64 * MiB
    max_body_bytes: int = 1 * MiB
    max_graph_nodes: int = 500
    ws_queue_size: int = 1024
    heartbeat_s: float = 15.0
    health_timeout_s: float = 10.0
    max_batch_size: int = 1000
    web_dist: Path | None = None
    auth: bool = False
    trace_exporter: str = "none"
    plugins: tuple[str, ...] = ()
    template_fault_window_s: float = 300.0
    comfy_port: int | None = None  # a second listener speaking ComfyUI's API (server.comfy)

    @staticmethod
    def default_web_dist() -> Path | None:
        """``web/dist`` of the source tree, when the editor was built."""
        dist = Path(__file__).resolve().parent.parent / "web" / "dist"
        return dist if (dist / "index.html").exists() else None


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``takeflow serve`` and ``python -m server.app``."""
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require bearer tokens (always on when --host is not loopback)",
    )
    parser.add_argument(
        "--trace-exporter",
        choices=("none", "console", "otlp"),
        default=ServerConfig.trace_exporter,
        help="where finished trace spans go (trace ids are recorded either way)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and call its install(runtime) at start (repeatable)",
    )
    parser.add_argument(
        "--comfy-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve the ComfyUI-compatible API on PORT (e.g. 8188); see docs/comfyui.md",
    )
    parser.add_argument("--max-body-bytes", type=int, default=ServerConfig.max_body_bytes)
    parser.add_argument("--max-graph-nodes", type=int, default=ServerConfig.max_graph_nodes)
    parser.add_argument(
        "--template-fault-window",
        type=float,
        default=ServerConfig.template_fault_window_s,
        help="seconds a template that failed or hung keeps /health degraded",
    )


def serve_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "auth": args.auth,
        "trace_exporter": args.trace_exporter,
        "plugins": tuple(args.plugin),
        "max_body_bytes": args.max_body_bytes,
        "max_graph_nodes": args.max_graph_nodes,
        "template_fault_window_s": args.template_fault_window,
        "comfy_port": args.comfy_port,
    }
