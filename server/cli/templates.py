"""``takeflow templates``: list the available templates (``--json`` for their descriptions)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("templates", help="list the available templates")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_templates)


def cmd_templates(args: argparse.Namespace) -> int:
    from nodes import discover_templates

    registry = discover_templates()
    if args.json:
        print(json.dumps([t.describe() for t in registry.latest()], indent=2))
        return 0
    for t in registry.latest():
        ports = ", ".join(f"{p.name}:{p.type.value}" for p in t.inputs)
        outs = ", ".join(f"{p.name}:{p.type.value}" for p in t.outputs)
        print(f"{t.ref:<28} {t.category:<10} ({ports}) -> ({outs})")
    return 0
