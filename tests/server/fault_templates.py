"""A third-party template pack for fault tests: a template that raises and one that hangs.

Published under the ``takeflow.templates`` entry point by ``write_pack`` (a ``.dist-info`` in a
folder put on ``PYTHONPATH``), the way a real pack reaches the server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType

HANG_LIMIT_S = 1.0


def boom(ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Raises when ``explode`` is set (a model crashing), else answers."""
    ctx.progress(0.5, "thinking")
    if inputs["explode"]:
        raise RuntimeError("the model exploded")
    return {"value": "fine"}


def hang(ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Waits ``seconds`` without ever reporting progress (a hung driver call)."""
    deadline = time.monotonic() + inputs["seconds"]
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return {"value": "woke up"}


def _template(fn: Any, inputs: tuple[InputSpec, ...], **extra: Any) -> FunctionTemplate:
    return FunctionTemplate(
        id=fn.__name__, version="1.0.0", name=fn.__name__.title(), category="testing",
        description=fn.__doc__ or "", inputs=inputs, outputs=(OutputSpec("value", PortType.TEXT),),
        fn=fn, cacheable=False, **extra,
    )  # fmt: skip


TEMPLATES = (
    _template(boom, (InputSpec("explode", PortType.BOOLEAN, default=True),)),
    _template(
        hang,
        (InputSpec("seconds", PortType.FLOAT, default=3600.0, minimum=0.0, maximum=86400.0),),
        timeout_s=HANG_LIMIT_S,
    ),
)


def write_pack(folder: Path) -> Path:
    """Install this pack's metadata into ``folder`` (put it on ``PYTHONPATH``)."""
    dist = folder / "takeflow_faultpack-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: takeflow-faultpack\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[takeflow.templates]\nfaults = tests.server.fault_templates:TEMPLATES\n"
    )
    return folder
