"""``takeflow serve``: the Litestar server (the same options as ``python -m server.app``)."""

from __future__ import annotations

import argparse
from typing import Any

from server.config import add_serve_options


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="start the server on loopback")
    add_serve_options(p)
    p.set_defaults(fn=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import serve
    from server.config import ServeOptions

    return serve(args.home, ServeOptions.from_args(args))
