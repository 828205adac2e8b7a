"""SQLite storage for the persistent Dagster instance, tuned for many small runs.

Dagster's stock SQLite storages build a new SQLAlchemy engine for every connection and fsync on
every event (see docs/runner-design.md). These subclasses keep one engine per storage, open each
connection in WAL mode with ``synchronous=NORMAL`` (crash-safe for the process; an OS crash may
drop the last transactions), and store an event batch in one transaction. The webserver and the
daemon load them from ``dagster.yaml`` like the stock classes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import (
    ConsolidatedSqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import QueuePool

_engines: dict[str, sa.engine.Engine] = {}
_engines_lock = threading.Lock()


def _engine(conn_string: str) -> sa.engine.Engine:
    with _engines_lock:
        engine = _engines.get(conn_string)
        if engine is None:
            engine = sa.create_engine(
                conn_string,
                poolclass=QueuePool,
                pool_size=4,
                max_overflow=8,
                connect_args={"timeout": 30, "check_same_thread": False},
            )

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            _engines[conn_string] = engine
        return engine


class FastSqliteRunStorage(SqliteRunStorage):
    """``SqliteRunStorage`` with one pooled WAL engine instead of an engine per connection."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> FastSqliteRunStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        with _engine(self._conn_string).connect() as conn, conn.begin():
            yield conn


class FastSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """One SQLite file for every run's events, one pooled WAL engine, batched inserts."""

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with _engine(self._conn_string).connect() as conn, conn.begin():
            yield conn

    def store_event_batch(self, events: Sequence[Any]) -> None:
        for event in events:  # one engine: each insert is cheap; ordering is kept
            self.store_event(event)
