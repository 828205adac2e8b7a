"""Many tasks in flight from concurrent clients: throughput, overhead, lost and duplicate events.

Starts a real server (subprocess, loopback). ``C`` clients each open a WebSocket, subscribe,
and submit their share of ``N`` tasks over HTTP as fast as they can (all ``N`` are in flight at
once), then wait for every ``task.completed``. Reported: throughput, submit -> completed
latency (includes queueing), per-task overhead (``task.started`` -> ``task.completed``
minus the template's own run time, i.e. Dagster + takes + git + events), and, per task, events
received over the socket vs stored in the log (lost = stored - received, duplicates = received
twice). Baseline in the same run: the same tasks through ``TaskRunner`` in process (no HTTP,
no WebSocket), same worker count.

    .venv/bin/python bench/concurrency.py [--tasks 100 1000] [--clients 10 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server.harness import ServerProcess

TEMPLATE = ("number", {"value": 1.0})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client_run(
    server: ServerProcess, name: str, count: int, project: str, results: dict[str, Any]
) -> None:
    """One client: subscribe to the tasks it submits, submit them all, await every terminal."""
    received: dict[str, list[dict[str, Any]]] = {}
    submitted_at: dict[str, float] = {}
    completed_at: dict[str, float] = {}
    async with (
        websockets.connect(f"{server.ws_base}/ws/{name}", max_size=2**24) as ws,
        httpx.AsyncClient(base_url=server.base, timeout=120) as http,
    ):
        pending: set[str] = set()
        done = asyncio.Event()

        async def reader() -> None:
            while True:
                message = json.loads(await ws.recv())
                if "seq" not in message:
                    continue
                task_id = message["data"]["task_id"]
                received.setdefault(task_id, []).append(message)
                if message["type"] in ("task.completed", "task.failed", "task.cancelled"):
                    completed_at[task_id] = time.perf_counter()
                    pending.discard(task_id)
                    if not pending and len(completed_at) == count:
                        done.set()

        read_task = asyncio.create_task(reader())
        for _ in range(count):
            t0 = time.perf_counter()
            response = await http.post(
                "/api/v1/functions/tasks",
                json={"template_id": TEMPLATE[0], "inputs": TEMPLATE[1], "project_id": project,
                      "user_id": name},
            )  # fmt: skip
            response.raise_for_status()
            task_id = response.json()["task_id"]
            submitted_at[task_id] = t0
            pending.add(task_id)
            # Subscribe after submitting: the server replays what was missed, then goes live.
            await ws.send(json.dumps({"type": "subscribe", "task_ids": [task_id]}))
        await asyncio.wait_for(done.wait(), 600)
        read_task.cancel()
        stored = {}
        for task_id in submitted_at:
            stored[task_id] = (await http.get(f"/api/v1/runs/{task_id}/events")).json()
    results[name] = {
        "received": received,
        "stored": stored,
        "latency": [completed_at[t] - submitted_at[t] for t in submitted_at],
    }


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    lost = dups = tasks = 0
    latencies: list[float] = []
    overheads: list[float] = []
    for r in results.values():
        latencies += r["latency"]
        for task_id, stored in r["stored"].items():
            tasks += 1
            got = Counter((e["seq"]) for e in r["received"].get(task_id, []))
            dups += sum(n - 1 for n in got.values() if n > 1)
            lost += sum(1 for e in stored if e["seq"] not in got)
            by_type = {e["type"]: e for e in stored}
            started, finished = by_type["task.started"], by_type["task.completed"]
            run_ms = sum(finished["data"].get("timings_ms", {}).values())
            overheads.append((finished["timestamp"] - started["timestamp"]) * 1000 - run_ms)
    return {"tasks": tasks, "lost": lost, "dups": dups, "latency": latencies, "overhead": overheads}


async def run_server_case(
    server: ServerProcess, tasks: int, clients: int, project: str
) -> tuple[float, dict[str, Any]]:
    results: dict[str, Any] = {}
    share = [tasks // clients + (1 if i < tasks % clients else 0) for i in range(clients)]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(client_run(server, f"c{i}", n, project, results) for i, n in enumerate(share) if n)
    )
    return time.perf_counter() - t0, analyse(results)


def baseline(tasks: int, workers: int) -> float:
    """The same tasks through the runner in process: submit all, wait for all."""
    from dagster_defs.runtime import open_runtime
    from graph_runtime.canvas import single_node_graph

    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_runtime(Path(tmp) / "home", workers=workers)
        try:
            runtime.projects.create("bench")
            graph = single_node_graph(TEMPLATE[0], TEMPLATE[1])
            t0 = time.perf_counter()
            ids = [runtime.runner.submit(graph, project_id="bench").task_id for _ in range(tasks)]
            for task_id in ids:
                runtime.runner.wait(task_id, timeout=600)
            return time.perf_counter() - t0
        finally:
            runtime.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"template {TEMPLATE[0]} with takes + git commits, {args.workers} runner workers")
    for tasks, clients in zip(args.tasks, args.clients, strict=True):
        base_s = baseline(tasks, args.workers)
        with (
            tempfile.TemporaryDirectory() as tmp,
            ServerProcess(Path(tmp) / "home", workers=args.workers) as server,
        ):
            project = f"bench{tasks}"
            server.ok("POST", "/api/v1/projects", json={"project_id": project})
            wall, stats = asyncio.run(run_server_case(server, tasks, clients, project))
        lat, over = stats["latency"], stats["overhead"]
        print(
            f"{tasks:>5} tasks / {clients:>3} clients: {tasks / wall:7.1f} tasks/s "
            f"(in-process baseline {tasks / base_s:7.1f} tasks/s, ratio {base_s / wall:.2f}) | "
            f"submit->completed p50 {statistics.median(lat) * 1000:7.1f} ms "
            f"p95 {pct(lat, 0.95) * 1000:7.1f} ms | per-task overhead p50 "
            f"{statistics.median(over):6.1f} ms p95 {pct(over, 0.95):6.1f} ms | "
            f"events lost {stats['lost']} duplicates {stats['dups']} "
            f"(tasks checked {stats['tasks']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
