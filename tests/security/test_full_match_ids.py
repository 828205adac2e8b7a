"""Ids and names are matched whole: a trailing newline (which ``$`` lets through) is refused
everywhere an id is checked (issue 19, F9)."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from graph_runtime.canvas import NODE_ID_PATTERN, validate_shot
from graph_runtime.errors import UnsafePathError
from graph_runtime.projects import asset_relpath
from graph_runtime.sweeps import INPUT_PATTERN
from graph_runtime.takes import check_project_id, check_shot, take_number
from graph_runtime.templates import FunctionTemplate
from server.canvases import canvas_relpath


def test_shot_with_a_trailing_newline_is_refused() -> None:
    assert check_shot("ch01/sc01/sh010") == "ch01/sc01/sh010"
    with pytest.raises(UnsafePathError) as exc:
        check_shot("ch01/sc01/sh010\n")
    assert exc.value.code == "unsafe_path" and exc.value.details["field"] == "shot_id"
    with pytest.raises(ValueError, match="chapter/scene/shot"):
        validate_shot("ch01/sc01/sh010\n")


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (check_project_id, "film"),
        (take_number, "take_001"),
        (asset_relpath, "asset://uploads/a.png"),
        (canvas_relpath, "main"),
    ],
    ids=["project_id", "take_id", "asset", "canvas"],
)
def test_ids_with_a_trailing_newline_are_refused(check: object, good: str) -> None:
    assert callable(check)
    check(good)
    with pytest.raises(UnsafePathError):
        check(good + "\n")


def test_template_ids_and_versions_are_matched_whole() -> None:
    def fn(ctx: object, inputs: object) -> dict[str, object]:
        return {}

    FunctionTemplate(id="ok", version="1.0.0", name="ok", category="t", description="",
                     inputs=(), outputs=(), fn=fn)  # fmt: skip
    for tid, version in (("ok\n", "1.0.0"), ("ok", "1.0.0\n")):
        with pytest.raises(ValueError):
            FunctionTemplate(id=tid, version=version, name="ok", category="t", description="",
                             inputs=(), outputs=(), fn=fn)  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "good"),
    [(NODE_ID_PATTERN, "node_1"), (INPUT_PATTERN, "gen.seed"),
     (r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", "nightly")],
    ids=["node id", "sweep input", "schedule name"],
)  # fmt: skip
def test_pydantic_patterns_refuse_a_trailing_newline(pattern: str, good: str) -> None:
    """pydantic matches ``Field(pattern=...)`` with Rust's regex, where ``$`` is the end of the
    text: the same ``^...$`` patterns are safe there (Python's ``re`` needs ``fullmatch``)."""
    checked = TypeAdapter(Annotated[str, Field(pattern=pattern)])
    assert checked.validate_python(good) == good
    with pytest.raises(ValidationError):
        checked.validate_python(good + "\n")
    assert re.match(pattern, good + "\n")  # why Python's re gets fullmatch instead
    assert not re.fullmatch(pattern, good + "\n")
