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
per storage, as dagster-postgres already caches its index checks; so are the other schema
probes (``has_backfill_id_column``: 3 catalog queries per run created) and the snapshot checks
(``has_execution_plan_snapshot`` fetched and unzipped the whole snapshot for every run); snapshots
are content-addressed and never change, so a positive answer is kept.

Step-level events are written in groups (``EventGroups``): a run's step, engine and log events
wait in memory and go to the database in one multi-row ``INSERT`` together with the next run-level
event (``RUN_START``, ``RUN_SUCCESS``, ``RUN_FAILURE`` ...), before any asset event, before any
read of the event log in this process, and at most ``FLUSH_AFTER_S`` after they were emitted. A
1-op run writes 3 statements to ``event_logs`` instead of ~12; every event of a run is stored
before its ``RUN_SUCCESS``/``RUN_FAILURE``, so before Takeflow's ``task.completed``. What a
SIGKILLed worker loses is at most ``FLUSH_AFTER_S`` of step events of the run it was in (the run
itself is then marked failed by the sweeper).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dagster import EventLogEntry
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster._time import datetime_from_timestamp
from dagster_postgres.event_log.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)

POOL_SIZE = 4
MAX_OVERFLOW = 8
FLUSH_AFTER_S = 0.1
_SCHEMA_PROBES = (  # stock: catalog reflection on every call (the first, for every run event)
    "has_run_stats_index_cols",
    "has_backfill_id_column",
    "has_bulk_actions_selector_cols",
    "has_bulk_action_job_name_column",
    "has_backfill_tags_table",
)
F = TypeVar("F", bound=Callable[..., Any])


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


def _cached_probe(name: str) -> Callable[..., bool]:
    """A schema probe answered from the database once it said yes (migrations only add).
    The stock constructor calls some before ours runs, hence state kept in ``__dict__``."""
    stock = getattr(PostgresRunStorage, name)

    def probe(self: Any) -> bool:
        known: set[str] = self.__dict__.setdefault("_probes", set())
        if name in known:
            return True
        found = bool(stock(self))
        if found:
            known.add(name)
        return found

    probe.__name__ = name
    return probe


class PooledPostgresRunStorage(PostgresRunStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)

    def has_job_snapshot(self, job_snapshot_id: str) -> bool:
        return self._known_snapshot(job_snapshot_id, super().has_job_snapshot)

    def has_execution_plan_snapshot(self, execution_plan_snapshot_id: str) -> bool:
        return self._known_snapshot(execution_plan_snapshot_id, self._has_snapshot_id)

    def _known_snapshot(self, snapshot_id: str, ask: Callable[[str], bool]) -> bool:
        """Snapshots are content-addressed and immutable: once stored, always stored."""
        snapshots = self.__dict__.setdefault("_snapshots", set())
        if snapshot_id in snapshots:
            return True
        found = ask(snapshot_id)
        if found and len(snapshots) < 10_000:
            snapshots.add(snapshot_id)
        return found

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresRunStorage:
        return cls(**_kwargs(inst_data, config_value))


for _probe in _SCHEMA_PROBES:
    setattr(PooledPostgresRunStorage, _probe, _cached_probe(_probe))


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresScheduleStorage:
        return cls(**_kwargs(inst_data, config_value))


def _flushed_first(method: F) -> F:
    """A read of the event log that first writes this process's waiting events."""

    @functools.wraps(method)
    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.groups.flush_all()
        return method(self, *args, **kwargs)

    return read  # type: ignore[return-value]


class EventGroups:
    """Step-level events waiting to be written with their run's next run-level event.

    Writes of this process's events go one at a time (``write_lock``), so a run's events reach
    the table in the order they were emitted even when the late flusher and the run's own
    thread write at once."""

    def __init__(self, write: Callable[[list[EventLogEntry]], None], after_s: float) -> None:
        self._write = write
        self._after_s = after_s
        self._pending: dict[str, list[EventLogEntry]] = {}
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self.write_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = False

    def add(self, event: EventLogEntry) -> None:
        with self._lock:
            if not self._closed:
                self._pending.setdefault(event.run_id, []).append(event)
                self._since.setdefault(event.run_id, time.monotonic())
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_late, name="dagster-event-groups", daemon=True
                    )
                    self._flusher.start()
                self._wake.notify()
                return
        with self.write_lock:  # closed: no grouping any more
            self._write([event])

    def take(self, run_id: str) -> list[EventLogEntry]:
        """The run's waiting events, removed; call with ``write_lock`` held and write them."""
        with self._lock:
            self._since.pop(run_id, None)
            return self._pending.pop(run_id, [])

    def flush(self, run_id: str) -> None:
        with self.write_lock:
            events = self.take(run_id)
            if events:
                self._write(events)

    def flush_all(self) -> None:
        with self._lock:
            runs = list(self._pending)
        for run_id in runs:
            self.flush(run_id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        self.flush_all()

    def _flush_late(self) -> None:
        """Write the events of any run that has waited ``after_s`` (a long step's start)."""
        while True:
            with self._lock:
                while not self._since and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                now = time.monotonic()
                late = [r for r, t in self._since.items() if now - t >= self._after_s]
                if not late:
                    self._wake.wait(self._after_s - (now - min(self._since.values())))
                    continue
            for run_id in late:
                try:
                    self.flush(run_id)
                except Exception:  # the database is away: the run's next run-level event retries
                    log.exception("could not write Dagster events of run %s", run_id)


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)
        self.groups = EventGroups(self._insert, FLUSH_AFTER_S)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresEventLogStorage:
        return cls(**_kwargs(inst_data, config_value))

    def store_event(self, event: EventLogEntry) -> None:
        """The stock ``store_event`` without its per-event ``NOTIFY`` (nothing listens), with
        step-level events grouped (see the module's docstring)."""
        dagster_event = event.dagster_event
        if dagster_event is None or not (
            dagster_event.is_job_event
            or dagster_event.event_type in ASSET_EVENTS
            or dagster_event.event_type in ASSET_CHECK_EVENTS
        ):
            self.groups.add(event)
            return
        with self.groups.write_lock:
            waiting = self.groups.take(event.run_id)
            if dagster_event.is_job_event:
                self._insert([*waiting, event])
                if self.handles_run_events_in_store_event:
                    self._instance.run_storage.handle_run_event(
                        event.run_id, dagster_event, datetime_from_timestamp(event.timestamp)
                    )
                return
            self._insert(waiting)
            statement = self.prepare_insert_event(event)
            with self._connect() as conn:
                row = conn.execute(statement.returning(SqlEventLogStorageTable.c.id)).fetchone()
        event_id = int(row[0]) if row is not None else None
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

    @property
    def handles_run_events_in_store_event(self) -> bool:
        """A run-level event's new run status is written here, so the instance skips its read
        of the whole run after each one (it needs that only for run retries: then it's its)."""
        return self.has_instance and not self._instance.run_retries_enabled

    def _insert(self, events: list[EventLogEntry]) -> None:
        """Non-asset events in one statement (SQLAlchemy's insertmanyvalues), in order."""
        if events:
            with self._connect() as conn:
                conn.execute(
                    SqlEventLogStorageTable.insert(), [self._event_to_row(e) for e in events]
                )

    def dispose(self) -> None:
        self.groups.close()
        super().dispose()

    get_records_for_run = _flushed_first(PostgresEventLogStorage.get_records_for_run)
    get_stats_for_run = _flushed_first(PostgresEventLogStorage.get_stats_for_run)
    get_step_stats_for_run = _flushed_first(PostgresEventLogStorage.get_step_stats_for_run)
    get_event_records = _flushed_first(PostgresEventLogStorage.get_event_records)
    get_logs_for_all_runs_by_log_id = _flushed_first(
        PostgresEventLogStorage.get_logs_for_all_runs_by_log_id
    )
    get_maximum_record_id = _flushed_first(PostgresEventLogStorage.get_maximum_record_id)
    fetch_run_status_changes = _flushed_first(PostgresEventLogStorage.fetch_run_status_changes)


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
