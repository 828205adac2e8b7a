"""The take store contract, run against the local filesystem, fsspec's memory filesystem, the
distributed store (PostgreSQL numbering lock on the local filesystem) and the in-memory twin
(``MemoryTakeStore``, what ``MemoryProject`` uses)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pytest

from graph_runtime.errors import StorageError, TakeNotFoundError, UnsafePathError
from graph_runtime.projects import MemoryTakeStore
from graph_runtime.takes import OutputFile, TakeStore
from stores.takes import FsspecTakeStore

SHOT = "ch01/sc02/sh030"


@pytest.fixture(params=["local", "memory", "postgres", "twin"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TakeStore]:
    if request.param == "twin":
        tree: dict[str, bytes] = {}
        twin = MemoryTakeStore("p", tree.__setitem__)
        twin.tree = tree  # type: ignore[attr-defined]  # what it wrote, for read_stored
        yield twin
    elif request.param == "local":
        yield FsspecTakeStore("p", str(tmp_path / "project"), fsspec.filesystem("file"))
    elif request.param == "memory":
        fs = fsspec.filesystem("memory")
        yield FsspecTakeStore("p", f"/mem-{uuid.uuid4().hex}", fs)
    else:
        from stores.postgres.state import PostgresState
        from stores.postgres.takes import PostgresTakeStore

        state = PostgresState(request.getfixturevalue("pg_url"), pool_size=24)
        root = str(tmp_path / "project")
        yield PostgresTakeStore("p", root, fsspec.filesystem("file"), state, "w1")
        state.close()


def read_stored(store: TakeStore, rel: str) -> bytes:
    """A file the store wrote, by project-relative path."""
    if isinstance(store, MemoryTakeStore):
        return store.tree[rel]  # type: ignore[attr-defined,no-any-return]
    assert isinstance(store, FsspecTakeStore)
    return bytes(store.fs.cat_file(f"{store.root}/{rel}"))


def png(name: str = "image", data: bytes = b"\x89PNG fake") -> OutputFile:
    return OutputFile(name, data, ".png", "image/png")


def test_first_take_is_numbered_one_and_active(store: TakeStore) -> None:
    take = store.create(SHOT, [png()], {"task_id": "t1", "seed": 7})
    assert take.take_id == "take_001" and take.active
    assert take.outputs["image"].path == f"03_Renders/{SHOT}/takes/take_001/image.png"
    listed = store.list(SHOT)
    assert [t.take_id for t in listed] == ["take_001"]
    assert listed[0].metadata["task_id"] == "t1" and listed[0].metadata["seed"] == 7
    assert listed[0].outputs["image"].size == len(b"\x89PNG fake")
    assert read_stored(store, take.outputs["image"].path) == b"\x89PNG fake"


def test_active_take_moves_and_lists_by_task(store: TakeStore) -> None:
    store.create(SHOT, [png()], {"task_id": "t1"})
    second = store.create(SHOT, [png()], {"task_id": "t2"})
    assert not second.active
    store.set_active(SHOT, "take_002")
    assert [t.active for t in store.list(SHOT)] == [False, True]
    assert [t.take_id for t in store.list(task_id="t2")] == ["take_002"]
    with pytest.raises(TakeNotFoundError, match="has no take take_009"):
        store.set_active(SHOT, "take_009")


def test_twenty_concurrent_takes_have_no_gaps_or_duplicates(store: TakeStore) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        takes = list(
            pool.map(lambda i: store.create(SHOT, [png()], {"task_id": f"t{i}"}), range(20))
        )
    assert sorted(t.number for t in takes) == list(range(1, 21))
    listed = store.list(SHOT)
    assert [t.number for t in listed] == list(range(1, 21))
    assert sorted(t.metadata["task_id"] for t in listed) == sorted(f"t{i}" for i in range(20))


def test_unsafe_shots_and_take_ids_are_refused(store: TakeStore) -> None:
    with pytest.raises(UnsafePathError, match="chapter/scene/shot"):
        store.create("../../etc", [png()], {})
    with pytest.raises(UnsafePathError, match="must look like 'take_001'"):
        store.get(SHOT, "../take_001")


def test_failed_write_leaves_no_visible_take(tmp_path: Path) -> None:
    class FullDisk(fsspec.implementations.local.LocalFileSystem):  # type: ignore[misc,name-defined]
        def pipe_file(self, path: str, value: bytes, **kwargs: object) -> None:
            if path.endswith("take.json"):
                raise OSError(28, "No space left on device")
            super().pipe_file(path, value, **kwargs)

    store = FsspecTakeStore("p", str(tmp_path / "project"), FullDisk())
    with pytest.raises(StorageError, match="No space left on device"):
        store.create(SHOT, [png()], {})
    assert store.list(SHOT) == []
    assert not list((tmp_path / "project" / "05_Cache" / "staging").glob("*"))
    take = FsspecTakeStore("p", str(tmp_path / "project"), fsspec.filesystem("file")).create(
        SHOT, [png()], {}
    )
    assert take.take_id == "take_001"


def test_metadata_sidecar_is_json(store: TakeStore) -> None:
    take = store.create(SHOT, [png(), OutputFile("caption", b"hi", ".txt", "text/plain")], {"x": 1})
    meta = json.loads(read_stored(store, f"{take.directory}/take.json"))
    assert meta["take_id"] == "take_001" and meta["x"] == 1
    assert set(meta["outputs"]) == {"image", "caption"}
