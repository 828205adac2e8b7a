"""Take numbering across processes and machines: a PostgreSQL row lock per shot.

The take is staged in this worker's own staging folder, then, inside one transaction holding the
shot's ``takeflow_shot_takes`` row lock: the next number is ``max(last_number, highest folder on
disk) + 1`` (a folder moved into place by a process that died before its commit counts, so numbers
never repeat), the writer's fence is checked (a worker that lost its lease stores no take), the
folder is moved into place (refusing an existing target) and ``last_number`` is updated.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec

from graph_runtime.takes import Take, check_shot, shot_takes_dir
from stores.postgres.state import PostgresState
from stores.takes import FsspecTakeStore


class PostgresTakeStore(FsspecTakeStore):
    """``FsspecTakeStore`` whose numbering lock is a database row lock (shared filesystem)."""

    def __init__(
        self,
        project_id: str,
        root: str,
        fs: fsspec.AbstractFileSystem,
        state: PostgresState,
        worker_id: str,
    ) -> None:
        super().__init__(project_id, root, fs)
        self.state = state
        self.staging_dir = f"05_Cache/staging/{worker_id}"

    @contextlib.contextmanager
    def _shot_row(self, shot_dir: str) -> Iterator[tuple[Any, int]]:
        with self.state.transaction() as conn:
            conn.execute(
                "INSERT INTO takeflow_shot_takes (project_id, shot) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (self.project_id, shot_dir),
            )
            row = conn.execute(
                "SELECT last_number FROM takeflow_shot_takes WHERE project_id = %s AND shot = %s "
                "FOR UPDATE",
                (self.project_id, shot_dir),
            ).fetchone()
            assert row is not None
            yield conn, int(row[0])

    @contextlib.contextmanager
    def _numbered(self, takes_dir: str, metadata: Mapping[str, Any]) -> Iterator[int]:
        with self._shot_row(takes_dir) as (conn, last):
            number = max(last, self._next_number(takes_dir) - 1) + 1
            task_id = metadata.get("task_id")
            if task_id:
                self.state.check_fence(str(task_id))
            yield number
            conn.execute(
                "UPDATE takeflow_shot_takes SET last_number = %s "
                "WHERE project_id = %s AND shot = %s",
                (number, self.project_id, takes_dir),
            )

    def _move_into_place(self, staging: str, final: str) -> None:
        if not isinstance(self.fs, fsspec.implementations.local.LocalFileSystem):
            super()._move_into_place(staging, final)
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.lexists(final):  # every writer holds the shot's row lock here
            raise OSError(17, f"take folder already exists: {final}")
        os.rename(staging, final)  # atomic on one filesystem

    def set_active(self, shot: str, take_id_: str) -> Take:
        check_shot(shot)
        self.get(shot, take_id_)
        takes_dir = shot_takes_dir(shot)
        with self._shot_row(takes_dir):
            self._write_active(takes_dir, take_id_)
        return self.get(shot, take_id_)
