"""``takeflow ui``: the Dagster UI (and daemon) on this Takeflow home."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("ui", help="open the Dagster UI (and daemon) on this Takeflow home")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument(
        "--no-daemon",
        action="store_true",
        help="no Dagster daemon: schedules and sensors do not tick from this UI (launches and "
        "re-executions from the UI still run; `takeflow serve` ticks schedules on its own)",
    )
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.set_defaults(fn=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from dagster_defs.ui_launcher import launch_ui
    from stores.home import TakeflowHome

    return launch_ui(
        TakeflowHome.resolve(args.home),
        host=args.host,
        port=args.port,
        daemon=not args.no_daemon,
        startup_timeout=args.startup_timeout,
    )
