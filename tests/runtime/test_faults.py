"""Faults end one task with a clear error, leave the others running, and heal when cleared."""

from __future__ import annotations

import errno
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import single_node_graph
from graph_runtime.events import RecordingSink
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import FunctionTemplate, OutputSpec, PortType
from nodes.builtin import TEMPLATES

SHOT = "ch01/sc01/sh010"


class FaultyFileSystem(LocalFileSystem):  # type: ignore[misc]
    """The local filesystem with a switchable 'disk full' on writes."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        super().pipe_file(path, value, **kwargs)


def image_task(runtime: Any, seed: int) -> Any:
    graph = single_node_graph("noise_image", {"width": 8, "height": 8, "seed": seed})
    return runtime.runner.submit(graph, project_id="demo", shot=SHOT)


def test_disk_full_fails_the_task_clearly_and_heals(runtime: Any, project: Any) -> None:
    faulty = FaultyFileSystem()
    project.use_filesystem(faulty)
    faulty.full = True
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    broken = image_task(runtime, 1)
    other = runtime.runner.submit(single_node_graph("number", {"value": 3}))  # no storage needed
    failed = sink.wait_terminal(broken.task_id, 30)
    assert failed.type == "task.failed"
    assert failed.data["code"] == "storage_error"
    assert "No space left on device" in failed.data["message"]
    assert runtime.runner.wait(other.task_id, 30).status == TaskStatus.COMPLETED
    assert "No space left" in (runtime.runner.storage_error or "")
    assert project.takes.list(SHOT) == []

    faulty.full = False
    healed = image_task(runtime, 2)
    assert runtime.runner.wait(healed.task_id, 30).status == TaskStatus.COMPLETED
    assert runtime.runner.storage_error is None
    assert [t.take_id for t in project.takes.list(SHOT)] == ["take_001"]


def test_git_lock_keeps_take_uncommitted_until_git_is_back(runtime: Any, project: Any) -> None:
    lock = project.path / ".git" / "index.lock"
    lock.write_text("")
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    first = image_task(runtime, 1)
    done = sink.wait_terminal(first.task_id, 30)
    assert done.type == "task.completed" and done.data["commit"] is None
    assert "index.lock" in (runtime.runner.git_error or "")
    assert (project.path / "03_Renders" / SHOT / "takes" / "take_001" / "image.png").exists()

    lock.unlink()
    second = image_task(runtime, 2)
    done = sink.wait_terminal(second.task_id, 30)
    assert done.data["commit"] is not None and runtime.runner.git_error is None
    files = project.repo.recent_commits(1)[0].files
    assert f"03_Renders/{SHOT}/takes/take_001/image.png" in files
    assert f"03_Renders/{SHOT}/takes/take_002/image.png" in files


def _spin(ctx: Any, inputs: Any) -> Any:
    while True:  # a hung template that never reports progress
        pass


SPIN = FunctionTemplate(
    id="spin",
    version="1.0.0",
    name="Spin",
    category="testing",
    description="hangs",
    inputs=(),
    outputs=(OutputSpec("value", PortType.TEXT),),
    fn=_spin,
    cacheable=False,
    timeout_s=0.5,
)


def test_hung_template_is_stopped_by_its_time_limit(runtime: Any) -> None:
    runtime.runner.registry = TemplateRegistry([*TEMPLATES, SPIN])
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    started = time.monotonic()
    hung = runtime.runner.submit(single_node_graph("spin", {}))
    other = runtime.runner.submit(single_node_graph("delay", {"seconds": 0.3, "steps": 3}))
    failed = sink.wait_terminal(hung.task_id, 30)
    assert time.monotonic() - started < 15
    assert failed.type == "task.failed" and failed.data["code"] == "template_timeout"
    assert failed.data["message"] == (
        "node 'node' (template 'spin') ran longer than its limit of 0.5 s and was stopped"
    )
    assert runtime.runner.wait(other.task_id, 30).status == TaskStatus.COMPLETED
    after = runtime.runner.submit(single_node_graph("number", {"value": 1}))
    assert runtime.runner.wait(after.task_id, 30).status == TaskStatus.COMPLETED


def test_restart_tidies_staging_lock_and_commits_stranded_takes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rt = open_runtime(home, workers=1)
    project = rt.projects.create("demo")
    record = rt.runner.submit(
        single_node_graph("solid_image", {"width": 4, "height": 4}), project_id="demo", shot=SHOT
    )
    assert rt.runner.wait(record.task_id, 30).status == TaskStatus.COMPLETED
    rt.close()
    # What a SIGKILL can leave: a half-staged take, a stale lock, a take stored but not committed.
    staging = project.path / "05_Cache" / "staging" / "dead"
    staging.mkdir(parents=True)
    (staging / "image.png").write_bytes(b"partial")
    stranded = project.path / "03_Renders" / SHOT / "takes" / "take_002"
    stranded.mkdir()
    meta = {"take_id": "take_002", "number": 2, "shot_id": SHOT}
    (stranded / "take.json").write_text(json.dumps(meta))
    (project.path / ".git" / "index.lock").write_text("")

    rt = open_runtime(home, workers=1)
    try:
        assert not staging.exists()
        assert not (project.path / ".git" / "index.lock").exists()
        assert "Takeflow-Recovery: yes" in project.repo.recent_commits(1)[0].message
        fsck = subprocess.run(["git", "fsck"], cwd=project.path, capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stderr
        nxt = rt.runner.submit(
            single_node_graph("solid_image", {"width": 4, "height": 4}),
            project_id="demo",
            shot=SHOT,
        )
        assert rt.runner.wait(nxt.task_id, 30).status == TaskStatus.COMPLETED
        assert [t.number for t in rt.projects.get("demo").takes.list(SHOT)] == [1, 2, 3]
    finally:
        rt.close()


def _hog(ctx: Any, inputs: Any) -> Any:
    hoard = []
    for _ in range(1500):  # up to 3 GB, 2 MB at a time
        hoard.append(bytearray(2 * 2**20))
        time.sleep(0.005)
    return {"value": f"kept {len(hoard)} chunks"}


HOG = FunctionTemplate(
    id="hog", version="1.0.0", name="Hog", category="testing", description="eats memory",
    inputs=(), outputs=(OutputSpec("value", PortType.TEXT),), fn=_hog, cacheable=False,
)  # fmt: skip


def test_memory_hog_is_stopped_and_the_server_goes_on(tmp_path: Path) -> None:
    from dagster_defs.limits import rss_bytes as _rss_bytes

    home = tmp_path / "home"
    rt = open_runtime(home, workers=2)
    rt.runner.registry = TemplateRegistry([*TEMPLATES, HOG])
    rt.runner.memory_limit_mb = _rss_bytes() / 2**20 + 300
    try:
        sink = RecordingSink()
        rt.runner.add_sink(sink)
        hog = rt.runner.submit(single_node_graph("hog", {}))
        other = rt.runner.submit(single_node_graph("delay", {"seconds": 0.5, "steps": 5}))
        failed = sink.wait_terminal(hog.task_id, 60)
        assert failed.type == "task.failed", failed.data
        assert failed.data["code"] == "template_memory_limit"
        assert "node 'node' (template 'hog') was stopped: the server used" in failed.data["message"]
        assert rt.runner.wait(other.task_id, 30).status == TaskStatus.COMPLETED
        after = rt.runner.submit(single_node_graph("number", {"value": 2}))
        assert rt.runner.wait(after.task_id, 30).status == TaskStatus.COMPLETED
    finally:
        rt.close()
