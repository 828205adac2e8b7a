"""Ids and names are matched whole: a trailing newline (which ``$`` lets through) is refused
everywhere an id is checked (issue 19, F9)."""

from __future__ import annotations

import pytest

from graph_runtime.canvas import validate_shot
from graph_runtime.errors import UnsafePathError
from graph_runtime.projects import asset_relpath
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
