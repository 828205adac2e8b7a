"""Distributed mode: one schedule ticker per cluster (a PostgreSQL advisory lock), whichever API
replica holds it; each tick makes one take, run by a worker; the standby takes over."""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from tests.dagster_defs.conftest import save_demo_canvas
from tests.distributed.cluster import Cluster, cluster
from tests.e2e.test_schedules_serve import SCHEDULE, SHOT, save_minutely_schedule
from tests.server.harness import ServerProcess
from tests.services import PostgresServer, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def schedules_check(api: ServerProcess) -> dict[str, Any]:
    report = api.http.get("/health", timeout=60).json()
    return dict(next(c for c in report["checks"] if c["name"] == "schedules")["details"])


def scheduled_runs(tf: Cluster) -> list[tuple[str, str]]:
    """(run id, scheduled execution time) of the schedule's Dagster runs."""
    query = (
        "SELECT r.run_id, t2.value FROM runs r"
        " JOIN run_tags t1 ON t1.run_id = r.run_id AND t1.key = 'dagster/schedule_name'"
        " JOIN run_tags t2 ON t2.run_id = r.run_id"
        " AND t2.key = '.dagster/scheduled_execution_time' WHERE t1.value = %s"
    )
    with psycopg.connect(tf.env["TAKEFLOW_DATABASE_URL"]) as conn:
        return [(str(a), str(b)) for a, b in conn.execute(query, (SCHEDULE,)).fetchall()]


def scheduled_takes(api: ServerProcess) -> list[dict[str, Any]]:
    takes = api.ok("GET", "/api/v1/projects/demo/takes", params={"shot_id": SHOT})
    return [t for t in takes if t["metadata"].get("schedule") == SCHEDULE]


def wait_for(what: str, probe: Any, timeout: float, tf: Cluster) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        if time.monotonic() > deadline:
            log = tf.home / "dagster" / "ticker-daemon.log"
            daemon = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            outputs = "\n".join(a.output() for a in tf.apis)
            pytest.fail(f"{what} not within {timeout}s:\n{outputs}\n{daemon}")
        time.sleep(1)
    return found


def test_one_ticker_per_cluster_one_take_per_tick_and_a_takeover(
    tmp_path: Path, pg_server: PostgresServer, redis_srv: RedisServer
) -> None:
    with cluster(tmp_path, pg_server, redis_srv, apis=2, workers=1) as tf:
        a, b = tf.apis
        a.ok("POST", "/api/v1/projects", json={"project_id": "demo", "name": "Demo"})
        project = SimpleNamespace(path=tf.home / "projects" / "demo")  # answers carry no paths
        save_minutely_schedule(save_demo_canvas(project))

        def roles() -> dict[str, dict[str, Any]] | None:
            found = {"a": schedules_check(a), "b": schedules_check(b)}
            states = sorted(d["state"] for d in found.values())
            return found if states == ["standby", "ticking"] else None

        # exactly one replica ticks; the other stands by and names the holder
        found = wait_for("one ticking replica and one standby", roles, 30, tf)
        holder_name = next(k for k, d in found.items() if d["state"] == "ticking")
        holder, standby = (a, b) if holder_name == "a" else (b, a)
        ticking = found[holder_name]
        assert found["a" if holder_name == "b" else "b"]["holder"] == ticking["holder"]
        assert f":{holder.proc.pid}" in ticking["holder"], ticking

        # the first tick makes one take (a worker runs it), with the schedule's tags
        takes = wait_for("a scheduled take", lambda: scheduled_takes(a), 150, tf)
        assert takes[0]["metadata"]["user_id"] == "scheduler"
        time.sleep(10)  # a second ticker would have launched its own run of that tick by now
        runs = scheduled_runs(tf)
        per_tick = collections.Counter(when for _, when in runs)
        assert per_tick and all(n == 1 for n in per_tick.values()), runs
        by_run = collections.Counter(t["metadata"]["dagster_run_id"] for t in scheduled_takes(a))
        assert all(n == 1 for n in by_run.values()), by_run
        assert set(by_run) <= {run for run, _ in runs}
        assert schedules_check(standby)["live"]

        # the holder dies (no clean-up): the standby takes the ticker over
        os.kill(holder.proc.pid, signal.SIGKILL)
        holder.proc.wait(timeout=10)
        tf.apis.remove(holder)

        def took_over() -> dict[str, Any] | None:
            details = schedules_check(standby)
            return details if details["state"] == "ticking" else None

        details = wait_for("the standby taking over", took_over, 30, tf)
        assert f":{standby.proc.pid}" in details["holder"], details


def test_the_advisory_lock_has_one_holder_named_by_its_session(pg_url: str) -> None:
    from stores.postgres.ticker_lock import PostgresTickerLock

    first = PostgresTickerLock(pg_url, "serve a:1")
    second = PostgresTickerLock(pg_url, "serve b:2")
    try:
        assert first.acquire() and first.held()
        assert not second.acquire()
        assert second.holder() == "serve a:1"
        first.release()  # as when the holder's process dies: its session ends
        assert second.acquire() and second.holder() == "serve b:2"
        assert not first.acquire() and first.holder() == "serve b:2"
    finally:
        first.release()
        second.release()
