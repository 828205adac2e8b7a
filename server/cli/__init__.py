"""The ``takeflow`` command line: init, run, assemble, templates, serve, token, ui.

One module per command; each has ``register(subparsers)`` adding its parser and handler.
``main`` is the console entry point (``takeflow = "server.cli:main"``).
"""

from __future__ import annotations

import argparse

from graph_runtime.errors import TakeflowError
from server import worker  # distributed mode (docs/deploy.md)
from server.cli import assemble, init, run, serve, templates, tokens, ui
from server.cli.output import print_error

COMMANDS = (init, run, assemble, templates, serve, tokens, ui, worker)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="takeflow", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="Takeflow home (default: $TAKEFLOW_HOME or ~/.takeflow)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except TakeflowError as exc:
        print_error(exc)
        return 2


__all__ = ["build_parser", "main"]
