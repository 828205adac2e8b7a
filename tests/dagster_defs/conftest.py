"""A demo project with a saved canvas (one uploaded asset, a schedule) for the code location."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def save_demo_canvas(project: Any) -> Path:
    """Copy the poster canvas and its schedules into the project, and upload its logo asset."""
    source = project.path / "02_Source_Creative"
    for name in ("poster.json", "poster.schedules.json"):
        shutil.copy(FIXTURES / name, source / name)
    logo = io.BytesIO()
    Image.new("RGB", (32, 32), (220, 40, 40)).save(logo, format="PNG")
    (project.path / "01_Assets" / "logo.png").write_bytes(logo.getvalue())
    return source / "poster.json"


@pytest.fixture
def demo_canvas(project: Any) -> Path:
    return save_demo_canvas(project)
