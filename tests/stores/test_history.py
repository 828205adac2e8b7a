"""One contract for a project's history, run against git (``ProjectRepository``) and the
in-memory twin (``MemoryProjectHistory``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from graph_runtime.errors import GitError
from graph_runtime.history import RECOVERY_TRAILER, MemoryProjectHistory, ProjectHistory
from stores.git_repo import ProjectRepository

SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Project:
    """A history and how to change a file of its working tree."""

    history: ProjectHistory
    write: Callable[[str, bytes], None]


@pytest.fixture(params=["git", "memory"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    if request.param == "memory":
        twin = MemoryProjectHistory()
        twin.write("project.json", b"{}")
        twin.commit(["."], "Initialise Takeflow project")
        return Project(twin, twin.write)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "project.json").write_text("{}")
    repo = ProjectRepository.create(folder)

    def write(rel: str, data: bytes) -> None:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)

    return Project(repo, write)


def test_a_commit_is_the_newest_with_its_message_and_files(project: Project) -> None:
    project.write("03_Renders/a/b/c/takes/take_001/take.json", b'{"n": 1}')
    project.write("02_Source_Creative/canvases/x.takeflow.json", b"{}")
    sha = project.history.commit(["03_Renders/a"], "take_001 of a/b/c\n\nTakeflow-Task: t1\n")
    assert SHA.match(sha)
    newest = project.history.recent_commits(1)[0]
    assert newest.sha == sha
    assert newest.message == "take_001 of a/b/c\n\nTakeflow-Task: t1"
    assert newest.files == ["03_Renders/a/b/c/takes/take_001/take.json"]  # only what was named
    assert newest.time > 0


def test_nothing_changed_returns_the_latest_commit_and_adds_none(project: Project) -> None:
    before = project.history.recent_commits(10)
    assert project.history.commit(["project.json"], "nothing") == before[0].sha
    assert project.history.recent_commits(10) == before


def test_a_path_that_names_no_file_is_a_git_error(project: Project) -> None:
    before = project.history.recent_commits(10)
    with pytest.raises(GitError, match="did not match any files"):
        project.history.commit(["03_Renders/nowhere"], "missing")
    assert project.history.recent_commits(10) == before


def test_history_is_newest_first_and_limited(project: Project) -> None:
    shas = []
    for i in range(3):
        project.write(f"03_Renders/s/takes/take_00{i}/v.txt", str(i).encode())
        shas.append(project.history.commit(["03_Renders"], f"take {i}"))
    assert len(set(shas)) == 3
    assert [c.sha for c in project.history.recent_commits(2)] == shas[::-1][:2]
    assert [c.message for c in project.history.recent_commits(50)][:3] == [
        "take 2",
        "take 1",
        "take 0",
    ]
    changed = project.history.recent_commits(1)[0].files
    assert changed == ["03_Renders/s/takes/take_002/v.txt"]


def test_concurrent_commits_all_land_and_name_every_caller(project: Project) -> None:
    def one(i: int) -> str:
        project.write(f"03_Renders/c/takes/take_{i:03d}/v.txt", b"x")
        return project.history.commit([f"03_Renders/c/takes/take_{i:03d}"], f"Takeflow-Task: t{i}")

    with ThreadPoolExecutor(8) as pool:
        shas = list(pool.map(one, range(16)))
    messages = {c.sha: c.message for c in project.history.recent_commits(50)}
    for i, sha in enumerate(shas):
        assert f"Takeflow-Task: t{i}" in messages[sha]  # the commit holding i's files says so
    files = {f for c in project.history.recent_commits(50) for f in c.files}
    assert {f"03_Renders/c/takes/take_{i:03d}/v.txt" for i in range(16)} <= files


def test_recover_commits_takes_left_uncommitted(project: Project) -> None:
    assert project.history.recover() is None
    project.write("03_Renders/r/takes/take_001/image.txt", b"stored, then the server died")
    sha = project.history.recover()
    assert sha is not None and SHA.match(sha)
    newest = project.history.recent_commits(1)[0]
    assert newest.sha == sha and RECOVERY_TRAILER in newest.message
    assert newest.files == ["03_Renders/r/takes/take_001/image.txt"]
    assert project.history.recover() is None
