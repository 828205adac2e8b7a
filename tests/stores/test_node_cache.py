"""One contract for the node output cache, run against the disk cache and the in-memory twin."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from graph_runtime.caching import MemoryNodeCache, NodeOutputCache
from stores.node_cache import DiskNodeCache

KEY = "ab" + "0" * 62


@pytest.fixture(params=["disk", "memory"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> NodeOutputCache:
    if request.param == "memory":
        return MemoryNodeCache(max_entries=64)
    return DiskNodeCache(tmp_path / "nodes", memory_entries=64)


def test_a_miss_is_none(cache: NodeOutputCache) -> None:
    assert cache.get(KEY) is None


def test_outputs_come_back_equal_images_included(cache: NodeOutputCache) -> None:
    image = Image.new("RGB", (8, 4), (10, 20, 30))
    cache.put(KEY, {"image": image, "seed": 7, "text": "ok", "meta": {"steps": [1, 2]}})
    found = cache.get(KEY)
    assert found is not None
    assert (found["seed"], found["text"], found["meta"]) == (7, "ok", {"steps": [1, 2]})
    assert found["image"].size == (8, 4) and found["image"].getpixel((0, 0)) == (10, 20, 30)


def test_a_put_replaces_and_keys_are_independent(cache: NodeOutputCache) -> None:
    other = "cd" + "1" * 62
    cache.put(KEY, {"value": 1})
    cache.put(other, {"value": 2})
    cache.put(KEY, {"value": 3})
    assert cache.get(KEY) == {"value": 3}
    assert cache.get(other) == {"value": 2}


def test_changing_the_callers_dict_after_put_changes_nothing(cache: NodeOutputCache) -> None:
    outputs = {"value": 1}
    cache.put(KEY, outputs)
    outputs["value"] = 99
    outputs["extra"] = True
    assert cache.get(KEY) == {"value": 1}


def test_threads_putting_and_getting_see_whole_entries(cache: NodeOutputCache) -> None:
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(40):
            key = f"{n:02d}{i:062d}"
            cache.put(key, {"n": n, "i": i})
            found = cache.get(key)
            if found != {"n": n, "i": i}:
                errors.append(f"{key}: {found}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []


# -- what only one of them does ---------------------------------------------------------------


def test_disk_cache_survives_a_restart_and_treats_damage_as_a_miss(tmp_path: Path) -> None:
    DiskNodeCache(tmp_path / "nodes").put(KEY, {"value": 1})
    assert DiskNodeCache(tmp_path / "nodes").get(KEY) == {"value": 1}
    (entry,) = (tmp_path / "nodes").rglob("*.pkl")
    entry.write_bytes(b"not a pickle")
    assert DiskNodeCache(tmp_path / "nodes").get(KEY) is None


def test_disk_cache_keeps_unpicklable_outputs_in_memory_only(tmp_path: Path) -> None:
    cache = DiskNodeCache(tmp_path / "nodes")
    cache.put(KEY, {"lock": threading.Lock()})
    assert cache.get(KEY) is not None
    assert not list((tmp_path / "nodes").rglob("*.pkl"))
    assert DiskNodeCache(tmp_path / "nodes").get(KEY) is None


def test_memory_twin_forgets_the_least_recently_used() -> None:
    cache = MemoryNodeCache(max_entries=2)
    cache.put("a", {"v": 1})
    cache.put("b", {"v": 2})
    assert cache.get("a") == {"v": 1}  # "a" is now the most recent
    cache.put("c", {"v": 3})
    assert cache.get("b") is None
    assert cache.get("a") == {"v": 1} and cache.get("c") == {"v": 3}
