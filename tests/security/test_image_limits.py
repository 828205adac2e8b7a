"""A pixel budget per image, checked from the header before decoding (issue 19, F4)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.projects import MemoryProject, ProjectAssets
from nodes.builtin import load_asset
from nodes.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    check_image_header,
    configure_image_limits,
    max_image_pixels,
    open_image,
    set_max_image_pixels,
)
from tests.security.images import png_bomb, small_png

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def default_budget() -> Iterator[None]:
    yield
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


class _Ctx:
    def __init__(self, project: MemoryProject) -> None:
        self.services: dict[str, Any] = {"assets": ProjectAssets(project)}

    def progress(self, *args: Any) -> None:
        pass


def test_a_bomb_is_refused_from_its_header_naming_size_and_limit() -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000  # small on disk, 144 MP once decoded
    with pytest.raises(ImageTooLargeError) as exc:
        open_image(bomb, "asset://bomb.png")
    error = exc.value
    assert error.code == "image_too_large" and error.http_status == 413
    assert "'asset://bomb.png' is 12000x12000 (144,000,000 pixels)" in error.message
    assert "over the limit of 64,000,000 pixels" in error.message
    assert error.details == {
        "width": 12000, "height": 12000, "limit": 64_000_000, "image": "asset://bomb.png",
    }  # fmt: skip


def test_load_asset_refuses_a_bomb_and_loads_a_real_image() -> None:
    project = MemoryProject("p1")
    project.write_file("01_Assets/bomb.png", png_bomb())
    project.write_file("01_Assets/ok.png", small_png(16, 8))
    with pytest.raises(ImageTooLargeError, match="12000x12000"):
        load_asset(_Ctx(project), {"asset": "asset://bomb.png"})  # type: ignore[arg-type]
    image = load_asset(_Ctx(project), {"asset": "asset://ok.png"})["image"]  # type: ignore[arg-type]
    assert image.size == (16, 8) and image.mode == "RGB"


def test_the_budget_is_configurable() -> None:
    configure_image_limits({"images": {"max_pixels": 100}})
    assert max_image_pixels() == 100
    with pytest.raises(ImageTooLargeError, match="16x8"):
        open_image(small_png(16, 8))
    open_image(small_png(10, 10))
    configure_image_limits({})
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    for bad in (0, -5, "big", 1.5, True):
        with pytest.raises(ValueError, match=r"images\.max_pixels"):
            configure_image_limits({"images": {"max_pixels": bad}})


def test_beyond_pils_own_hard_limit_is_the_same_error() -> None:
    set_max_image_pixels(10**9)
    with pytest.raises(ImageTooLargeError, match="too large"):
        open_image(png_bomb(30000, 30000))


def test_upload_header_check() -> None:
    bomb = png_bomb()
    with pytest.raises(ImageTooLargeError):
        check_image_header(bomb[:4096], "bomb.png")  # the header is enough
    check_image_header(small_png(), "ok.png")
    check_image_header(b"plain text, not an image", "notes.txt")
    check_image_header(b"", "empty")


def test_peak_memory_stays_low_while_refusing_a_bomb(tmp_path: Path) -> None:
    """In a fresh process: load_asset on the 144 MP bomb fails without decoding it."""
    (tmp_path / "bomb.png").write_bytes(png_bomb())
    script = textwrap.dedent(
        f"""
        import json, resource
        from graph_runtime.projects import MemoryProject, ProjectAssets
        from nodes.builtin import load_asset
        project = MemoryProject("p1")
        project.write_file("01_Assets/bomb.png", open({str(tmp_path / "bomb.png")!r}, "rb").read())
        class Ctx:
            services = {{"assets": ProjectAssets(project)}}
            def progress(self, *a): pass
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_asset(Ctx(), {{"asset": "asset://bomb.png"}})
            code = None
        except Exception as exc:
            code = getattr(exc, "code", type(exc).__name__)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"code": code, "grew_kb": after - before}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == "image_too_large", result
    assert result["grew_kb"] < 50_000, result  # decoding it would take >= 432 MB
