"""The cluster ticker's lock: a session-level advisory lock on a connection of its own, so one
process in the cluster runs the Dagster daemon (``dagster_defs.ticker``) and any replica can
say which."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the cluster's ticker ("takeflow" in ASCII, as a bigint)
ADVISORY_KEY = 0x74616B65666C6F77


class PostgresTickerLock:
    """A session-level ``pg_try_advisory_lock`` on a connection of its own, named
    ``application_name`` = the holder's identity (so any replica can say who ticks)."""

    def __init__(self, database_url: str, who: str) -> None:
        self.database_url = database_url
        self.who = who
        self._conn: Any = None

    def _connect(self, name: str) -> Any:
        import psycopg

        return psycopg.connect(
            self.database_url, autocommit=True, application_name=name[:63], connect_timeout=5
        )

    def acquire(self) -> bool:
        if self._conn is not None and self.held():
            return True
        try:
            conn = self._connect(f"takeflow-ticker {self.who}")
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        except Exception as exc:  # database down: nobody can tick from here
            log.warning("schedules: cannot reach the database for the ticker lock: %s", exc)
            return False
        if got and got[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # ends the session, which releases the lock
            self._conn = None

    def holder(self) -> str | None:
        if self._conn is not None:
            return self.who
        query = (
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s"
        )
        try:
            with self._connect("takeflow-ticker probe") as conn:
                row = conn.execute(query, (ADVISORY_KEY,)).fetchone()
        except Exception:
            return None
        return str(row[0]).removeprefix("takeflow-ticker ") if row else None
