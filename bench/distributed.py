"""Distributed mode on one machine: per-task overhead and a 1,000-task run with a worker killed.

Usage: .venv/bin/python bench/distributed.py [--tasks 1000] [--clients 50] [--samples 40]

Starts a throwaway PostgreSQL and redis-server on loopback (tests/services.py), one API
process and two worker processes (``--concurrency 2`` each), and, in the same run, an embedded
server for comparison. Prints:
- 1-node task overhead (``task.submitted`` -> ``task.completed`` timestamps from the event log,
  minus the template's own time), p50 / p95 ms, without and with take + git commit;
- N tasks (take + git each) submitted over HTTP by C concurrent clients, one worker SIGKILLed
  halfway: tasks/s, submit latency (HTTP round trip under that load, ms), and from a WebSocket
  client following the project: events lost (stored but never delivered), duplicated, out of
  order (per-task seq going back), tasks ending ``interrupted`` (those running on the killed
  worker); the same load on the embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.distributed.cluster import cluster
from tests.server.harness import EventClient, ServerProcess, running_server
from tests.services import postgres_server, redis_server

SHOT = "ch01/sc01/sh010"


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def wait_done(api: ServerProcess, task_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record: dict[str, Any] = api.ok("GET", f"/api/v1/runs/{task_id}")
        if record["status"] in ("completed", "failed", "cancelled"):
            return record
        time.sleep(0.01)
    raise TimeoutError(task_id)


def overhead(api: ServerProcess, samples: int, take: bool) -> tuple[float, float]:
    """Sequential 1-node tasks; overhead from the stored events' timestamps."""
    fields: dict[str, Any] = {"project_id": "bench", "shot_id": SHOT} if take else {}
    out = []
    for i in range(samples + 3):
        task_id = api.submit("number", {"value": i}, **fields)
        wait_done(api, task_id)
        events = api.stored_events(task_id)
        done = events[-1]
        assert done["type"] == "task.completed", done
        template_ms = sum(done["data"].get("timings_ms", {}).values())
        if i >= 3:  # warm-up
            out.append((done["timestamp"] - events[0]["timestamp"]) * 1000 - template_ms)
    return stats(out)


class Follower:
    """A WebSocket client following the project in a background thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        self.ready.wait(30)

    async def _run(self) -> None:
        async with EventClient(self.url) as client:
            await client.subscribe(project_ids=["bench"])
            self.ready.set()
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await client.recv(0.2)
            self.events = list(client.events)

    def close(self) -> list[dict[str, Any]]:
        self.stop.set()
        self.thread.join(30)
        return self.events


def load(apis: list[ServerProcess], tasks: int, clients: int, kill: Any = None) -> dict[str, float]:
    follower = Follower(f"{apis[0].ws_base}/ws/bench")
    ids: list[str] = []
    submit_ms: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        api = apis[n % len(apis)]
        for i in range(n, tasks, clients):
            started = time.perf_counter()
            task_id = api.submit("number", {"value": i}, project_id="bench", shot_id=SHOT)
            took = (time.perf_counter() - started) * 1000
            with lock:
                ids.append(task_id)
                submit_ms.append(took)

    started = time.perf_counter()
    killer = None
    if kill is not None:
        killer = threading.Thread(target=lambda: (wait_for(ids, tasks // 2), kill()))
        killer.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    records = [wait_done(apis[0], t, timeout=600) for t in ids]
    elapsed = time.perf_counter() - started
    if killer is not None:
        killer.join()
    time.sleep(1.0)  # let the last events reach the follower
    got = follower.close()
    per_task: dict[str, list[int]] = defaultdict(list)
    for event in got:
        per_task[event["data"].get("task_id")].append(event["seq"])
    stored = {t: [e["seq"] for e in apis[0].stored_events(t)] for t in ids}
    lost = sum(len(set(s) - set(per_task.get(t, []))) for t, s in stored.items())
    dup = sum(len(s) - len(set(s)) for s in per_task.values())
    disorder = sum(any(b <= a for a, b in itertools.pairwise(s)) for s in per_task.values())
    submit_p50, submit_p95 = stats(submit_ms)
    return {
        "tasks/s": len(ids) / elapsed,
        "submit p50": submit_p50,
        "submit p95": submit_p95,
        "completed": sum(r["status"] == "completed" for r in records),
        "interrupted": sum((r.get("error") or {}).get("code") == "interrupted" for r in records),
        "lost": lost,
        "duplicated": dup,
        "out_of_order": disorder,
        "events": len(got),
    }


def wait_for(ids: list[str], count: int) -> None:
    while len(ids) < count:
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with (
            postgres_server() as pg,
            redis_server() as redis,
            cluster(Path(tmp) / "d", pg, redis, apis=1, workers=2, lease_s=3.0) as c,
        ):
            api = c.apis[0]
            api.ok("POST", "/api/v1/projects", json={"project_id": "bench"})
            plain = overhead(api, args.samples, take=False)
            with_take = overhead(api, args.samples, take=True)
            victim = c.workers[0]
            results["distributed"] = load(c.apis, args.tasks, args.clients, victim.kill)
        embedded_home = Path(tmp) / "e" / "home"
        with running_server(embedded_home) as api:
            api.ok("POST", "/api/v1/projects", json={"project_id": "bench"})
            e_plain = overhead(api, args.samples, take=False)
            e_take = overhead(api, args.samples, take=True)
            results["embedded"] = load([api], args.tasks, args.clients)
    print("1-node task overhead, ms (p50 / p95)")
    print(f"  distributed (2 workers)   {plain[0]:6.1f} / {plain[1]:6.1f}")
    print(f"  distributed + take + git  {with_take[0]:6.1f} / {with_take[1]:6.1f}")
    print(f"  embedded                  {e_plain[0]:6.1f} / {e_plain[1]:6.1f}")
    print(f"  embedded + take + git     {e_take[0]:6.1f} / {e_take[1]:6.1f}")
    print(f"{args.tasks} tasks (take + git) from {args.clients} clients")
    keys = ["tasks/s", "submit p50", "submit p95", "completed", "interrupted", "lost",
            "duplicated", "out_of_order", "events"]  # fmt: skip
    print("  " + " ".join(f"{k:>12s}" for k in ["mode", *keys]))
    for mode, r in results.items():
        print("  " + f"{mode:>12s} " + " ".join(f"{r[k]:12.1f}" for k in keys))
    print("  (distributed: one of the two workers SIGKILLed halfway; its running tasks end")
    print("   'interrupted', every other task completes on the survivor)")


if __name__ == "__main__":
    main()
