"""Which deployment a home runs as, read once from the environment and ``config.json``: a leaf
module (no Takeflow imports), so every door can ask without importing the distributed parts."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClusterSettings:
    """Distributed-mode settings (env beats ``config.json``'s ``distributed`` block)."""

    database_url: str
    redis_url: str | None = None
    lease_s: float = 10.0
    heartbeat_s: float = 2.0
    sweep_s: float = 1.0

    @classmethod
    def resolve(cls, config: Mapping[str, Any]) -> ClusterSettings | None:
        """The settings when a database is named (distributed mode); None: embedded."""
        block = dict(config.get("distributed") or {})
        url = os.environ.get("TAKEFLOW_DATABASE_URL") or block.get("database_url")
        if not url:
            return None
        lease = float(os.environ.get("TAKEFLOW_LEASE_S") or block.get("lease_s") or 10.0)
        return cls(
            database_url=url,
            redis_url=os.environ.get("TAKEFLOW_REDIS_URL") or block.get("redis_url"),
            lease_s=lease,
            heartbeat_s=float(block.get("heartbeat_s") or max(0.2, lease / 5)),
            sweep_s=float(block.get("sweep_s") or max(0.2, min(1.0, lease / 5))),
        )


def worker_identity() -> str:
    """This process, as leases and the workers table name it."""
    return f"{socket.gethostname()}-{os.getpid()}"
