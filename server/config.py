"""Server options, grouped in one model instead of a dozen keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8470
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and protects itself.

    ``max_upload_bytes`` caps one uploaded asset; ``ws_queue_size`` bounds the events buffered
    for one WebSocket client before it is caught up from the durable log instead;
    ``heartbeat_s`` is the idle interval between heartbeats; ``health_timeout_s`` bounds the
    data-flow check of ``GET /health``; ``web_dist`` is a built editor to serve at ``/``.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_upload_bytes: int = 64 * MiB
    max_body_bytes: int = 8 * MiB
    ws_queue_size: int = 1024
    heartbeat_s: float = 15.0
    health_timeout_s: float = 10.0
    max_batch_size: int = 1000
    web_dist: Path | None = None

    @staticmethod
    def default_web_dist() -> Path | None:
        """``web/dist`` of the source tree, when the editor was built."""
        dist = Path(__file__).resolve().parent.parent / "web" / "dist"
        return dist if (dist / "index.html").exists() else None
