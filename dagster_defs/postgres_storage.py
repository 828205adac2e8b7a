"""Dagster's run, event-log and schedule storage on PostgreSQL, pooled (distributed mode).

Stock dagster-postgres builds its engines with ``NullPool`` (a new connection, i.e. a TCP and auth
handshake, for every statement block) and sends ``NOTIFY run_events`` after every stored event,
"preserved to support version skew" although the Postgres event watcher polls. That costs
~150 ms per 1-op run (shared research note). These subclasses keep a ``QueuePool`` and drop the
per-event NOTIFY. The webserver and daemon load them from ``dagster.yaml`` like the stock classes.

Per-run costs removed after profiling a worker (``cProfile``, 1-op runs): ``pool_pre_ping`` (a
``SELECT 1`` round trip before every statement block: ~29 per run) is off; after a database
restart the first statement on a dead connection fails and SQLAlchemy then drops the whole pool
(``is_disconnect``), so a restart costs one failed call, not a stuck pool. The run storage's
``has_run_stats_index_cols`` (schema reflection, 2 queries, called for every run event) is cached
per storage, as dagster-postgres already caches its index checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.event_api import EventLogEntry
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.pool import QueuePool

POOL_SIZE = 4
MAX_OVERFLOW = 8


def _pooled(storage: Any) -> None:
    """Swap a storage's NullPool engine for a pooled one (keeps the same URL and auth hook)."""
    old = storage._engine
    storage._engine = create_pg_engine(
        storage.postgres_url,
        storage._token_provider,
        isolation_level="AUTOCOMMIT",
        poolclass=QueuePool,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=3600,
    )
    old.dispose()


def _kwargs(inst_data: ConfigurableClassData | None, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inst_data": inst_data,
        "postgres_url": pg_url_from_config(config),
        "should_autocreate_tables": config.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config),
    }


class PooledPostgresRunStorage(PostgresRunStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)

    def has_run_stats_index_cols(self) -> bool:
        """Cached once true (the columns exist once migrated; stock: reflection for every run
        event). Called by the stock constructor before ours runs, hence ``getattr``."""
        if getattr(self, "_stats_cols", False):
            return True
        self._stats_cols = super().has_run_stats_index_cols()
        return self._stats_cols

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresRunStorage:
        return cls(**_kwargs(inst_data, config_value))


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresScheduleStorage:
        return cls(**_kwargs(inst_data, config_value))


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresEventLogStorage:
        return cls(**_kwargs(inst_data, config_value))

    def store_event(self, event: EventLogEntry) -> None:
        """The stock ``store_event`` without its per-event ``NOTIFY`` (nothing listens)."""
        statement = self.prepare_insert_event(event)
        with self._connect() as conn:
            row = conn.execute(statement.returning(SqlEventLogStorageTable.c.id)).fetchone()
        event_id = int(row[0]) if row is not None else None
        dagster_event = event.dagster_event
        if (
            dagster_event is not None
            and dagster_event.event_type in ASSET_EVENTS
            and dagster_event.asset_key
        ):
            if event_id is None:
                raise DagsterInvariantViolationError(
                    "Cannot store asset event tags for null event id."
                )
            with self.index_transaction() as conn:
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)
        if dagster_event is not None and dagster_event.event_type in ASSET_CHECK_EVENTS:
            self.store_asset_check_event(event, event_id)


def sqlalchemy_url(url: str) -> str:
    """A libpq URL (``postgresql://``) for dagster-postgres, pinned to the psycopg2 driver."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgres", "postgresql", "postgresql+psycopg2"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql+psycopg2://{rest}"


def storage_yaml(database_url: str, pooled: bool = True) -> str:
    """The storage blocks of ``dagster.yaml`` for a shared PostgreSQL instance (``pooled=False``
    gives stock dagster-postgres, for comparison in ``bench/``)."""
    url = sqlalchemy_url(database_url)
    blocks = []
    for key, stock, ours in (
        ("run_storage", "dagster_postgres.run_storage", "PooledPostgresRunStorage"),
        ("event_log_storage", "dagster_postgres.event_log", "PooledPostgresEventLogStorage"),
        ("schedule_storage", "dagster_postgres.schedule_storage", "PooledPostgresScheduleStorage"),
    ):
        module = "dagster_defs.postgres_storage" if pooled else stock
        cls = ours if pooled else ours.removeprefix("Pooled")
        blocks.append(
            f'{key}:\n  module: {module}\n  class: {cls}\n  config:\n    postgres_url: "{url}"\n'
        )
    return "".join(blocks)


def check_url(url: str) -> None:
    """Fail early, naming the setting, when the database cannot be reached."""
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
