"""Node output cache on disk (survives restarts) with a small in-memory LRU in front."""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graph_runtime.caching import MemoryNodeCache

log = logging.getLogger(__name__)


class DiskNodeCache:
    """Pickled outputs under ``<root>/<key[:2]>/<key>.pkl``; the cache is local and trusted."""

    def __init__(self, root: Path, memory_entries: int = 128) -> None:
        self.root = root
        self._memory = MemoryNodeCache(memory_entries)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pkl"

    def get(self, key: str) -> Mapping[str, Any] | None:
        found = self._memory.get(key)
        if found is not None:
            return found
        try:
            with self._path(key).open("rb") as fh:
                found = pickle.load(fh)
        except FileNotFoundError:
            return None
        except Exception:  # a damaged entry is a miss, not a failure
            log.warning("discarding unreadable cache entry %s", key)
            return None
        if not isinstance(found, dict):
            return None
        self._memory.put(key, found)
        return found

    def contains(self, key: str) -> bool:
        return self._memory.contains(key) or self._path(key).is_file()

    def put(self, key: str, outputs: Mapping[str, Any]) -> None:
        self._memory.put(key, outputs)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            with tmp.open("wb") as fh:
                pickle.dump(dict(outputs), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            log.info("outputs for %s not cached on disk: %s", key, exc)
