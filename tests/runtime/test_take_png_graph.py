"""A take's PNG carries the graph that made it (a ``takeflow`` tEXt chunk), and the take's
stored hash is that of the file as kept."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from graph_runtime.tasks import TaskStatus
from nodes.png_text import read_takeflow_graph, read_texts, with_text
from tests.conftest import load_graph
from tests.runtime.test_runner import SHOT, run


def test_the_take_png_carries_the_graph_that_ran_and_its_hash_matches(
    runtime: Any, project: Any
) -> None:
    graph = load_graph("poster")
    record, _ = run(runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    (take,) = project.takes.list(SHOT)
    out = take.outputs["image"]
    data = Path(project.abs(out.path)).read_bytes()
    assert hashlib.sha256(data).hexdigest() == out.sha256

    meta = read_takeflow_graph(data)
    assert meta is not None and meta["format"] == "takeflow.png/v1"
    assert meta["seeds"] == {"grain": 42} and "task_id" not in meta  # same graph, same bytes
    ran = graph.model_dump(mode="json")
    assert meta["graph"] == {k: v for k, v in ran.items() if k != "context"}
    assert meta["graph_hash"] == take.metadata["graph_hash"]
    assert take.metadata["graph"] == ran  # take.json: the graph with its context
    # Pillow reads the chunk as any PNG reader would, and the pixels are intact
    with Image.open(project.abs(out.path)) as image:
        assert image.size == (512, 512) and "takeflow" in image.text


def test_with_text_replaces_a_key_and_refuses_what_is_not_a_png() -> None:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    once = with_text(buf.getvalue(), "k", "one")
    twice = with_text(once, "k", "two")
    assert read_texts(twice) == {"k": "two"}
    assert Image.open(io.BytesIO(twice)).getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ValueError):
        with_text(b"GIF89a", "k", "v")
