"""``python -m server.demo.model HOME``: build and register the demo model of a Takeflow home.

``takeflow serve --demo`` runs it beside the server at a first start: importing torch and
diffusers and building the model take seconds of CPU, which a child process spends on another
core instead of holding the server's GIL while it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nodes.diffusion.demo import ensure_demo_model
from stores.home import TakeflowHome


def build_in_child(home: Path) -> None:
    """Run this module on ``home`` in a child process and wait for it. The child has its own
    session, so a Ctrl-C meant for the server does not cut a build short (the server waits)."""
    subprocess.run([sys.executable, "-m", __name__, str(home)], check=True, start_new_session=True)


def main(argv: list[str]) -> int:
    os.nice(10)  # background work: the server starting beside it comes first
    ensure_demo_model(TakeflowHome(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
