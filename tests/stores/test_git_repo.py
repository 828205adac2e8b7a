"""Project repositories: media through Git LFS, serialized and grouped commits."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from graph_runtime.errors import GitError
from stores.git_repo import ProjectRepository, lfs_available


def test_png_is_committed_as_lfs_pointer(tmp_path: Path) -> None:
    if not lfs_available():
        pytest.fail("git-lfs must be installed (scripts/install installs it)")
    repo = ProjectRepository.create(tmp_path / "p")
    (tmp_path / "p" / "a.png").write_bytes(b"\x89PNG" + bytes(2048))
    (tmp_path / "p" / "a.json").write_text("{}")
    sha = repo.commit(["a.png", "a.json"], "take_001\n\nTakeflow-Task: task_abc")
    assert repo.is_lfs_pointer("a.png")
    assert not repo.is_lfs_pointer("a.json")
    newest = repo.recent_commits(1)[0]
    assert newest.sha == sha and "Takeflow-Task: task_abc" in newest.message
    assert newest.files == ["a.json", "a.png"]
    fsck = subprocess.run(["git", "fsck"], cwd=tmp_path / "p", capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_concurrent_commits_are_serialized_and_keep_every_task_id(tmp_path: Path) -> None:
    repo = ProjectRepository.create(tmp_path / "p")

    def commit(i: int) -> str:
        (tmp_path / "p" / f"f{i}.txt").write_text(str(i))
        return repo.commit([f"f{i}.txt"], f"file {i}\n\nTakeflow-Task: task_{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        shas = list(pool.map(commit, range(16)))
    log = "\n".join(c.message for c in repo.recent_commits(50))
    assert all(f"Takeflow-Task: task_{i}" in log for i in range(16))
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=tmp_path / "p", capture_output=True, text=True, check=True
    ).stdout.split()
    assert {f"f{i}.txt" for i in range(16)} <= set(tracked)
    assert len(set(shas)) <= 16


def test_held_index_lock_is_a_git_error(tmp_path: Path) -> None:
    repo = ProjectRepository.create(tmp_path / "p")
    (tmp_path / "p" / ".git" / "index.lock").write_text("")
    (tmp_path / "p" / "x.txt").write_text("x")
    with pytest.raises(GitError, match=r"index\.lock"):
        repo.commit(["x.txt"], "x")


def test_without_git_lfs_media_is_committed_plainly_and_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    import stores.git_repo as git_repo

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(git_repo, "_lfs_checked", None)
    caplog.set_level("WARNING", logger="stores.git_repo")

    repo = ProjectRepository.create(tmp_path / "p")
    assert not repo.uses_lfs
    assert "*.png binary" in (tmp_path / "p" / ".gitattributes").read_text()
    (tmp_path / "p" / "a.png").write_bytes(b"\x89PNG" + bytes(64))
    repo.commit(["a.png"], "take\n\nTakeflow-Task: task_x")
    assert not repo.is_lfs_pointer("a.png")
    ProjectRepository.create(tmp_path / "q")
    warnings = [r for r in caplog.records if "git-lfs is not installed" in r.getMessage()]
    assert len(warnings) == 1


def _trailers(path: Path) -> str:
    return subprocess.run(
        ["git", "log", "-1", "--format=%(trailers:only)"],
        cwd=path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_user_text_cannot_start_a_line_of_a_commit_message(tmp_path: Path) -> None:
    """Newlines and control characters in a message's text are flattened; only the trailer
    block the server writes (``Takeflow-*: value`` lines after a blank line) stays."""
    repo = ProjectRepository.create(tmp_path / "p")
    (tmp_path / "p" / "a.txt").write_text("a")
    forged = "Upload ok\nTakeflow-Task: task_forged\n\nSigned-off-by: x\x1b[31m.png\u202e as x"
    repo.commit(["a.txt"], forged)
    message = repo.recent_commits(1)[0].message
    assert message == "Upload ok Takeflow-Task: task_forged Signed-off-by: x [31m.png as x"
    assert _trailers(tmp_path / "p") == ""
    (tmp_path / "p" / "b.txt").write_text("b")
    repo.commit(["b.txt"], "take_001 of a/b/c (g)\n\nTakeflow-Task: task_abc\n")
    assert repo.recent_commits(1)[0].message == "take_001 of a/b/c (g)\n\nTakeflow-Task: task_abc"
    assert _trailers(tmp_path / "p") == "Takeflow-Task: task_abc"
    (tmp_path / "p" / "c.txt").write_text("c")
    repo.commit(["c.txt"], "x" * 5000)
    assert len(repo.recent_commits(1)[0].message) <= 200


def test_a_shared_commit_is_titled_by_what_it_holds(tmp_path: Path) -> None:
    """Issue 18: a take and an upload committed together are named, not "Takeflow: 2 takes"."""
    import threading

    repo = ProjectRepository.create(tmp_path / "p")
    (tmp_path / "p" / "take").mkdir()
    (tmp_path / "p" / "take" / "t.json").write_text("{}")
    (tmp_path / "p" / "x.png").write_bytes(b"\x89PNG x")
    messages = [
        ("take", "take_003 of ch01/sc01/sh010 (graph)\n\nTakeflow-Task: task_0123\n"),
        ("x.png", "Upload x.png as asset://uploads/x.png"),
    ]
    with repo._commit_lock:  # both callers queue up, then share one commit
        threads = [threading.Thread(target=repo.commit, args=([p], m)) for p, m in messages]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(repo._pending) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    for t in threads:
        t.join(10)
    newest = repo.recent_commits(1)[0]
    assert newest.files == ["take/t.json", "x.png"]
    title = newest.message.splitlines()[0]
    assert title == "take_003 of ch01/sc01/sh010 (graph); Upload x.png as asset://uploads/x.png"
    assert "Takeflow:" not in newest.message
    assert _trailers(tmp_path / "p") == "Takeflow-Task: task_0123"
