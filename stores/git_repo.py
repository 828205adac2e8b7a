"""A project's git repository: media through Git LFS, one serialized (grouped) commit path."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # start without git; health reports it

import git

from graph_runtime.errors import GitError
from graph_runtime.history import RECOVERY_TRAILER, RENDERS_DIR, CommitInfo
from graph_runtime.projects import one_line
from graph_runtime.takes import GIT_IGNORED_DIRS

log = logging.getLogger(__name__)

# The only trailers a commit carries, written by Takeflow itself (e.g. ``Takeflow-Task: task_…``).
_TRAILER_RE = re.compile(r"Takeflow-[A-Za-z]+(?:-[A-Za-z]+)*: [A-Za-z0-9_.:-]{1,100}")
SUBJECT_LIMIT = 200


def split_message(message: str) -> tuple[str, list[str]]:
    """A commit message as (subject, trailers). The trailers are the last paragraph when every
    line of it is a ``Takeflow-*: value`` trailer; everything else is text and becomes the
    one-line subject, so text (user values included) can never start a line of the message."""
    paragraphs = message.strip().split("\n\n")
    trailers: list[str] = []
    if len(paragraphs) > 1:
        last = paragraphs[-1].strip().splitlines()
        if last and all(_TRAILER_RE.fullmatch(line) for line in last):
            trailers, paragraphs = last, paragraphs[:-1]
    return one_line(" ".join(paragraphs), SUBJECT_LIMIT), trailers


def build_message(messages: Sequence[str]) -> str:
    """One commit message for the messages of the callers sharing a commit: a title naming what
    it holds (their subjects, ``; ``-joined), each subject on its own line when there are
    several, and every caller's trailers in one block at the end."""
    parts = [split_message(m) for m in messages]
    subjects = list(dict.fromkeys(s for s, _ in parts if s)) or ["Takeflow commit"]
    trailers = list(dict.fromkeys(t for _, ts in parts for t in ts))
    title = one_line("; ".join(subjects), SUBJECT_LIMIT)
    blocks = [title]
    if len(subjects) > 1:
        blocks.append("\n".join(subjects))
    if trailers:
        blocks.append("\n".join(trailers))
    return "\n\n".join(blocks) + "\n"


LFS_PATTERNS = (
    "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif", "*.tif", "*.tiff", "*.exr", "*.psd",
    "*.mp4", "*.mov", "*.webm", "*.mkv", "*.wav", "*.mp3", "*.flac", "*.ogg",
    "*.safetensors", "*.ckpt", "*.pt", "*.pth", "*.bin", "*.onnx",
)  # fmt: skip

_lfs_checked: bool | None = None
_lfs_guard = threading.Lock()


def lfs_available() -> bool:
    """Whether ``git lfs`` works here; warns once in the log when it does not."""
    global _lfs_checked
    with _lfs_guard:
        if _lfs_checked is None:
            try:
                subprocess.run(["git", "lfs", "version"], check=True, capture_output=True)
                _lfs_checked = True
            except (OSError, subprocess.CalledProcessError):
                _lfs_checked = False
                log.warning("git-lfs is not installed: media will be committed as plain blobs")
        return _lfs_checked


class ProjectRepository:
    """Git access for one project folder (a ``ProjectHistory``). Concurrent commits are grouped,
    never raced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pending: list[tuple[list[str], str, Future[str]]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self.uses_lfs = False

    @classmethod
    def create(cls, path: Path) -> ProjectRepository:
        """Make ``path`` a repository with LFS attributes and ignores, and commit them."""
        path.mkdir(parents=True, exist_ok=True)
        repo = cls(path)
        if not (path / ".git").exists():
            repo._git("init", "-q", "-b", "main")
        repo.uses_lfs = lfs_available()
        if repo.uses_lfs:
            repo._git("lfs", "install", "--local")
            attrs = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
        else:
            attrs = "".join(f"{p} binary\n" for p in LFS_PATTERNS)
        (path / ".gitattributes").write_text(attrs)
        (path / ".gitignore").write_text("".join(f"/{d}/\n" for d in GIT_IGNORED_DIRS))
        repo.commit([".gitattributes", ".gitignore", "."], "Initialise Takeflow project")
        return repo

    def _git(self, *args: str) -> str:
        env_args = ["-c", "commit.gpgsign=false"]
        try:
            done = subprocess.run(
                ["git", *env_args, *args],
                cwd=self.path,
                check=True,
                capture_output=True,
                text=True,
                errors="replace",
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed") from exc
        except subprocess.CalledProcessError as exc:
            raise GitError(
                f"git {args[0]} failed in {self.path.name}: {exc.stderr.strip() or exc.stdout}"
            ) from exc
        return done.stdout

    def commit(self, paths: Sequence[str], message: str) -> str:
        """Commit ``paths`` (relative to the project); callers arriving together share a commit."""
        future: Future[str] = Future()
        with self._pending_lock:
            self._pending.append((list(paths), message, future))
        with self._commit_lock:
            if not future.done():
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    sha = self._commit_batch(batch)
                except Exception as exc:
                    for *_, f in batch:
                        f.set_exception(exc)
                else:
                    for *_, f in batch:
                        f.set_result(sha)
        return future.result()

    def _commit_batch(self, batch: list[tuple[list[str], str, Future[str]]]) -> str:
        paths = sorted({p for ps, _, _ in batch for p in ps})
        # The git CLI runs LFS clean filters; GitPython's index.add would store full blobs.
        self._git("add", "--", *paths)
        message = build_message([m for _, m, _ in batch])
        status = self._git("status", "--porcelain", "--untracked-files=no")
        if not status.strip():
            return self._git("rev-parse", "HEAD").strip()
        self._git("commit", "-q", "--no-verify", "-m", message)
        return self._git("rev-parse", "HEAD").strip()

    def recover(self) -> str | None:
        """At start-up (one writer per project): drop a stale ``index.lock`` left by a killed
        process and commit takes that were stored but never committed."""
        lock = self.path / ".git" / "index.lock"
        if lock.exists():
            log.warning("removing stale %s", lock)
            lock.unlink()
        renders = self.path / RENDERS_DIR
        if not renders.exists():
            return None
        pending = self._git("status", "--porcelain", "--", RENDERS_DIR).strip()
        if not pending:
            return None
        return self.commit(
            [RENDERS_DIR], f"Recover takes stored before an interruption\n\n{RECOVERY_TRAILER}\n"
        )

    def recent_commits(self, limit: int = 20) -> list[CommitInfo]:
        repo = git.Repo(self.path)
        try:
            commits = list(repo.iter_commits(max_count=limit))
        except ValueError:  # no commits yet
            return []
        return [
            CommitInfo(
                c.hexsha,
                str(c.message).strip(),
                float(c.committed_date),
                sorted(str(f) for f in c.stats.files),
            )
            for c in commits
        ]

    def is_lfs_pointer(self, rel_path: str) -> bool:
        """Whether HEAD stores ``rel_path`` as an LFS pointer rather than the file itself."""
        blob = self._git("cat-file", "-p", f"HEAD:{rel_path}")
        return blob.startswith("version https://git-lfs.github.com/spec/v1")
