"""Where the Dagster code location lives: its name (in ``workspace.yaml``, the UI, the daemon
and the origins of runs Takeflow makes) and the folder ``dagster_defs.definitions`` loads
from. Kept free of imports so the daemon wrapper starts fast."""

from __future__ import annotations

from pathlib import Path

LOCATION_NAME = "takeflow"
REPO_ROOT = Path(__file__).resolve().parents[1]
