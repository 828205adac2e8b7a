"""The quick-start setup of ``takeflow serve --demo``: a ``demo`` project with example canvases
and, when diffusers is installed, the demo diffusion model.

The demo project starts with saved canvases, so that the editor and the Dagster UI have
something to show on first start: ``poster`` (builtin CPU templates, with a sample schedule
sidecar, stopped), ``dream`` (``image_generation`` with the demo model) and ``hires_fix``
(generate, upscale with the demo upscale model, image to image at 0.5), and two continuous
shots on the demo video model: ``shot_video`` (text to video into ``ch01/sc01/sh010``) and
``next_shot`` (``load_take`` of that shot's active take, its last frame, image to video into
``sh020``), ready to be assembled in the scene view. They are committed
to the project's repository like canvases the editor saves.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from typing import TYPE_CHECKING

from graph_runtime.errors import ProjectNotFoundError
from graph_runtime.projects import ProjectStore

if TYPE_CHECKING:
    from dagster_defs.runtime import Runtime

log = logging.getLogger(__name__)

DEMO_PROJECT = "demo"
CANVAS_DIR = "02_Source_Creative/canvases"
EXAMPLE_FILES = (
    "poster.takeflow.json",
    "poster.schedules.json",
    "dream.takeflow.json",
    "inpaint.takeflow.json",  # on the demo-inpaint model
    "outpaint.takeflow.json",
    "hires_fix.takeflow.json",
    "controlnet.takeflow.json",
    "lora.takeflow.json",
    "shot_video.takeflow.json",  # text_to_video on demo-video -> a take of ch01/sc01/sh010
    "next_shot.takeflow.json",  # load_take(sh010) -> last frame -> image_to_video -> sh020
)


def ensure_demo(runtime: Runtime, wait: bool = True) -> threading.Thread | None:
    """The demo project (with its example canvases) and, when available, the demo model.

    Building the model imports torch and diffusers (seconds): with ``wait=False`` it is built
    on the thread returned (None when the model is ready), and this process's lookups of the
    demo model wait for it (``nodes.diffusion.demo.prepare_demo_model``)."""
    ensure_demo_project(runtime)
    try:
        from nodes.diffusion.demo import ensure_demo_model, prepare_demo_model
    except (ImportError, AttributeError):
        return None
    if not wait:
        from server.demo.model import build_in_child

        return prepare_demo_model(runtime.home, lambda: build_in_child(runtime.home.path))
    try:
        ensure_demo_model(runtime.home)
    except Exception:  # the server is useful without the demo model
        log.exception("could not prepare the demo diffusion model")
    return None


def ensure_demo_project(runtime: Runtime) -> ProjectStore:
    """Create the ``demo`` project with its example canvases, unless it exists (then as is)."""
    try:
        return runtime.projects.get(DEMO_PROJECT)
    except ProjectNotFoundError:
        pass
    project = runtime.projects.create(DEMO_PROJECT, "Demo project")
    add_example_canvases(runtime, project)
    log.info("created project '%s'", DEMO_PROJECT)
    return project


def add_example_canvases(runtime: Runtime, project: ProjectStore) -> list[str]:
    """Copy the example canvases (and schedule sidecar) into a project and commit them through
    the project's commit queue (in distributed mode, one git writer across processes)."""
    source = resources.files(__package__).joinpath("canvases")
    added = []
    for name in EXAMPLE_FILES:
        project.write_file(f"{CANVAS_DIR}/{name}", source.joinpath(name).read_bytes())
        added.append(f"{CANVAS_DIR}/{name}")
    # a failed commit stays in the queue's backlog (the demo works without git; see /health)
    runtime.runner.histories.commit(project, added, "Add example canvases")
    return added
