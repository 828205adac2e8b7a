"""A server plugin that records which heavy modules the server imported before serving.

Load it with ``--plugin tests.server.modules_probe`` and ``TAKEFLOW_MODULES_PROBE=FILE``: plugins
are installed after the runtime is open and the ``--demo`` setup has run, just before the app
serves, so ``FILE`` gets the JSON list of those of ``HEAVY`` in ``sys.modules`` at that point.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers")


def install(runtime: object) -> None:
    loaded = sorted(name for name in HEAVY if name in sys.modules)
    Path(os.environ["TAKEFLOW_MODULES_PROBE"]).write_text(json.dumps(loaded))
