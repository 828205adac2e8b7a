"""Where the Dagster code location lives: its name (in ``workspace.yaml``, the UI, the daemon
and the origins of runs Takeflow makes), the module and attribute that load it, and the folder
it loads from. Kept free of imports so the daemon wrapper starts fast."""

from __future__ import annotations

from pathlib import Path

LOCATION_NAME = "takeflow"
LOCATION_MODULE = "dagster_defs.code_location"  # as workspace.yaml names it
LOCATION_ATTRIBUTE = "takeflow_definitions"
REPO_ROOT = Path(__file__).resolve().parents[1]
