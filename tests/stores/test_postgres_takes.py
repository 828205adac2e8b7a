"""Take numbering across processes: a PostgreSQL row lock per shot, a move that refuses a target,
and no take from a worker that lost its lease."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fsspec
import pytest

from graph_runtime.takes import OutputFile
from graph_runtime.tasks import TaskRecord
from stores.postgres.state import LeaseLostError, PostgresState
from stores.postgres.takes import PostgresTakeStore

SHOT = "ch01/sc02/sh030"


def _png(i: int) -> OutputFile:
    return OutputFile("image", f"png {i}".encode(), ".png", "image/png")


def _make_takes(url: str, root: str, worker: str, tasks: list[str]) -> list[int]:
    """One worker process: its own connections, its own staging folder."""
    state = PostgresState(url, pool_size=4)
    store = PostgresTakeStore("p", root, fsspec.filesystem("file"), state, worker)
    try:
        return [store.create(SHOT, [_png(i)], {"task_id": t}).number for i, t in enumerate(tasks)]
    finally:
        state.close()


def test_forty_concurrent_takes_from_four_processes_are_numbered_1_to_40(
    pg_url: str, tmp_path: Path
) -> None:
    root = str(tmp_path / "project")
    jobs = {f"w{w}": [f"t{w}-{i}" for i in range(10)] for w in range(4)}
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_make_takes, pg_url, root, w, ts) for w, ts in jobs.items()]
        numbers = sorted(n for f in futures for n in f.result(timeout=90))
    assert numbers == list(range(1, 41))
    state = PostgresState(pg_url, pool_size=1)
    store = PostgresTakeStore("p", root, fsspec.filesystem("file"), state, "reader")
    listed = store.list(SHOT)
    assert [t.number for t in listed] == list(range(1, 41))
    expected = sorted(t for ts in jobs.values() for t in ts)
    assert sorted(t.metadata["task_id"] for t in listed) == expected
    assert all(not list(p.iterdir()) for p in (tmp_path / "project/05_Cache/staging").iterdir())
    state.close()


def test_an_orphan_take_folder_is_never_overwritten_or_reused(pg_url: str, tmp_path: Path) -> None:
    """A folder moved into place by a process that died before its commit keeps its number."""
    state = PostgresState(pg_url, pool_size=2)
    store = PostgresTakeStore("p", str(tmp_path / "project"), fsspec.filesystem("file"), state, "w")
    assert store.create(SHOT, [_png(1)], {"task_id": "a"}).number == 1
    orphan = tmp_path / f"project/03_Renders/{SHOT}/takes/take_002"
    orphan.mkdir()
    (orphan / "image.png").write_bytes(b"left by a crash")
    take = store.create(SHOT, [_png(2)], {"task_id": "b"})
    assert take.number == 3
    assert (orphan / "image.png").read_bytes() == b"left by a crash"
    with pytest.raises(FileExistsError, match="take folder already exists"):
        store._move_into_place(str(tmp_path / "x"), str(orphan))
    state.close()


def test_a_worker_that_lost_its_lease_stores_no_take(pg_url: str, tmp_path: Path) -> None:
    sweeper = PostgresState(pg_url, pool_size=2)
    worker = PostgresState(pg_url, pool_size=2)
    record = TaskRecord(task_id="t1", graph={}, project_id="p", shot=SHOT, user="u")
    sweeper.save(record)
    assert worker.claim("t1", "w1", lease_s=0.1) is not None
    time.sleep(0.3)
    assert sweeper.fail_expired("t1", {"code": "interrupted"}) is not None
    store = PostgresTakeStore(
        "p", str(tmp_path / "project"), fsspec.filesystem("file"), worker, "w1"
    )
    with pytest.raises(LeaseLostError):
        store.create(SHOT, [_png(1)], {"task_id": "t1"})
    assert store.list(SHOT) == []
    assert not list((tmp_path / "project/05_Cache/staging/w1").iterdir())
    worker.close()
    sweeper.close()
