"""Takes on any fsspec filesystem: staged in the cache folder, then moved into place."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec

from graph_runtime.errors import StorageError, TakeNotFoundError, UnsafePathError
from graph_runtime.takes import (
    ACTIVE_TAKE_FILE,
    TAKE_ID_RE,
    TAKE_METADATA_FILE,
    OutputFile,
    StoredOutput,
    Take,
    check_shot,
    shot_takes_dir,
    take_id,
    take_number,
)
from stores.paths import resolved_inside

_locks: dict[tuple[int, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _shot_lock(fs: fsspec.AbstractFileSystem, path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((id(fs), path), threading.Lock())


class FsspecTakeStore:
    """Takes of one project rooted at ``root`` on ``fs`` (local by default, memory in tests)."""

    staging_dir = "05_Cache/staging"

    def __init__(self, project_id: str, root: str, fs: fsspec.AbstractFileSystem) -> None:
        self.project_id = project_id
        self.root = root.rstrip("/")
        self.fs = fs

    @contextlib.contextmanager
    def _numbered(self, takes_dir: str, metadata: Mapping[str, Any]) -> Iterator[int]:
        """The next take number of a shot, held exclusively until the block ends (the take is
        moved into place inside it). Here a process lock; distributed mode uses a database lock."""
        with _shot_lock(self.fs, self._abs(takes_dir)):
            yield self._next_number(takes_dir)

    def _move_into_place(self, staging: str, final: str) -> None:
        """Move a staged take to its numbered folder, refusing an existing target (fsspec's
        local ``mv`` would otherwise move the staging folder *inside* it)."""
        if self.fs.exists(final):
            raise OSError(17, f"take folder already exists: {final}")
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(staging, final, recursive=True)

    def _abs(self, rel: str) -> str:
        """``rel`` under the root, refusing one a symlink leads out of the project."""
        resolved_inside(self.root, rel)
        return f"{self.root}/{rel}"

    def _inside(self, path: str) -> bool:
        """Whether an absolute path found under the root (a glob match) resolves inside it."""
        try:
            resolved_inside(self.root, path[len(self.root) + 1 :])
        except UnsafePathError:
            return False
        return True

    def create(self, shot: str, files: Sequence[OutputFile], metadata: Mapping[str, Any]) -> Take:
        takes_dir = shot_takes_dir(shot)
        staging = self._abs(f"{self.staging_dir}/{uuid.uuid4().hex}")
        outputs: dict[str, tuple[str, int, str, str]] = {}
        try:
            self.fs.makedirs(staging, exist_ok=True)
            for f in files:
                filename = f"{f.name}{f.extension}"
                self.fs.pipe_file(f"{staging}/{filename}", f.data)
                outputs[f.name] = (
                    filename,
                    len(f.data),
                    f.content_type,
                    hashlib.sha256(f.data).hexdigest(),
                )
            with self._numbered(takes_dir, metadata) as number:
                tid = take_id(number)
                final_dir = f"{takes_dir}/{tid}"
                stored = {
                    name: StoredOutput(f"{final_dir}/{fn}", size, ctype, digest)
                    for name, (fn, size, ctype, digest) in outputs.items()
                }
                record = {
                    "take_id": tid,
                    "number": number,
                    "project_id": self.project_id,
                    "shot_id": shot,
                    "created_at": time.time(),
                    "outputs": {k: v.to_dict() for k, v in stored.items()},
                    **{k: v for k, v in metadata.items() if k not in ("outputs",)},
                }
                self.fs.pipe_file(
                    f"{staging}/{TAKE_METADATA_FILE}",
                    json.dumps(record, indent=2, sort_keys=True, default=str).encode(),
                )
                self._move_into_place(staging, self._abs(final_dir))
                active = number == 1 or not self.fs.exists(
                    self._abs(f"{takes_dir}/{ACTIVE_TAKE_FILE}")
                )
                if active:
                    self._write_active(takes_dir, tid)
        except OSError as exc:
            self._discard(staging)
            raise StorageError(f"could not store take for shot {shot}: {exc}") from exc
        except BaseException:  # e.g. a distributed worker's lost lease: leave nothing behind
            self._discard(staging)
            raise
        return Take(tid, number, self.project_id, shot, stored, record, active)

    def discard_staging(self) -> int:
        """Remove takes left half-written by an interrupted process; returns how many."""
        staging = self._abs(self.staging_dir)
        if not self.fs.exists(staging):
            return 0
        entries = self.fs.ls(staging, detail=False)
        for entry in entries:
            self._discard(entry)
        return len(entries)

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except OSError:
            pass

    def _next_number(self, takes_dir: str) -> int:
        path = self._abs(takes_dir)
        if not self.fs.exists(path):
            return 1
        numbers = [
            int(m.group(1))
            for entry in self.fs.ls(path, detail=False)
            if (m := TAKE_ID_RE.fullmatch(entry.rstrip("/").rsplit("/", 1)[-1]))
        ]
        return max(numbers, default=0) + 1

    def _write_active(self, takes_dir: str, tid: str) -> None:
        tmp = self._abs(f"{takes_dir}/.{ACTIVE_TAKE_FILE}.{uuid.uuid4().hex}")
        self.fs.pipe_file(tmp, json.dumps({"take_id": tid}).encode())
        self.fs.mv(tmp, self._abs(f"{takes_dir}/{ACTIVE_TAKE_FILE}"))

    def _active(self, takes_dir: str) -> str | None:
        path = self._abs(f"{takes_dir}/{ACTIVE_TAKE_FILE}")
        try:
            return str(json.loads(self.fs.cat_file(path))["take_id"])
        except (FileNotFoundError, KeyError, ValueError):
            return None

    def _load(self, meta_path: str, active_by_shot: dict[str, str | None]) -> Take:
        record = json.loads(self.fs.cat_file(meta_path))
        shot = record["shot_id"]
        if shot not in active_by_shot:
            active_by_shot[shot] = self._active(shot_takes_dir(shot))
        outputs = {k: StoredOutput(**v) for k, v in record.get("outputs", {}).items()}
        return Take(
            record["take_id"],
            record["number"],
            self.project_id,
            shot,
            outputs,
            record,
            active_by_shot[shot] == record["take_id"],
        )

    def list(self, shot: str | None = None, task_id: str | None = None) -> list[Take]:
        pattern = (
            f"{shot_takes_dir(shot)}/take_*/{TAKE_METADATA_FILE}"
            if shot
            else f"03_Renders/*/*/*/takes/take_*/{TAKE_METADATA_FILE}"
        )
        active: dict[str, str | None] = {}
        found = [p for p in self.fs.glob(self._abs(pattern)) if self._inside(p)]
        takes = [self._load(p, active) for p in found]
        if task_id is not None:
            takes = [t for t in takes if t.metadata.get("task_id") == task_id]
        return sorted(takes, key=lambda t: (t.shot, t.number))

    def get(self, shot: str, take_id_: str) -> Take:
        take_number(take_id_)
        path = self._abs(f"{shot_takes_dir(shot)}/{take_id_}/{TAKE_METADATA_FILE}")
        if not self.fs.exists(path):
            raise TakeNotFoundError(
                f"shot {shot} has no take {take_id_}", shot_id=shot, take_id=take_id_
            )
        return self._load(path, {})

    def set_active(self, shot: str, take_id_: str) -> Take:
        check_shot(shot)
        self.get(shot, take_id_)
        takes_dir = shot_takes_dir(shot)
        with _shot_lock(self.fs, self._abs(takes_dir)):
            self._write_active(takes_dir, take_id_)
        return self.get(shot, take_id_)
