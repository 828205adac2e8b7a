"""Soak: many tasks from WebSocket clients that randomly drop and reconnect, with faults.

    .venv/bin/python -m bench.soak [--tasks 1000] [--clients 50] [--timeout 900]

Starts the real server (``tests.server.harness``) with the test-only storage fault plugin.
Each client submits its share of tasks over HTTP (one in ten makes a take, so storage and git
are in play), follows them on ``/ws/{user}``, and every 0.3-4 s drops its connection and
reconnects with the last seq it saw of each unfinished task. One storage fault is injected
(the next take write fails like a full disk) and one long task is cancelled while it runs.
At the end every task's stored events are compared with what its client received:
events lost = 0, duplicates = 0, every task terminal. A baseline of the same mix from one
client that never disconnects is measured first, in the same run, for the latency ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.server.faults import set_storage_fault
from tests.server.harness import TERMINAL, ServerProcess

PROJECT = "soak"


@dataclass
class ClientState:
    user: str
    tasks: list[str] = field(default_factory=list)
    submitted_at: dict[str, float] = field(default_factory=dict)
    seqs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    terminal: dict[str, str] = field(default_factory=dict)
    ended_at: dict[str, float] = field(default_factory=dict)
    connections: int = 0
    ws: Any = None

    def last_seq(self, task_id: str) -> int:
        seen = self.seqs.get(task_id)
        return max(seen) if seen else 0

    def unfinished(self) -> list[str]:
        return [t for t in self.tasks if t not in self.terminal]


def _task_body(index: int, user: str) -> dict[str, Any]:
    if index % 10 == 0:  # makes a take: storage and git in the loop
        return {"template_id": "noise_image", "inputs": {"width": 8, "height": 8, "seed": index},
                "project_id": PROJECT, "shot_id": f"ch01/sc01/sh{index % 7:03d}",
                "user_id": user}  # fmt: skip
    return {"template_id": "number", "inputs": {"value": index}, "project_id": PROJECT,
            "user_id": user}  # fmt: skip


async def _listen(state: ClientState, ws: Any, lifetime: float | None) -> bool:
    """Receive until ``lifetime`` passes (True: a deliberate drop) or the socket ends."""
    try:
        async with asyncio.timeout(lifetime):
            async for raw in ws:
                message = json.loads(raw)
                if "seq" not in message:
                    continue
                task_id = message["data"]["task_id"]
                state.seqs[task_id].append(message["seq"])
                if message["type"] in TERMINAL:
                    state.terminal[task_id] = message["type"]
                    state.ended_at[task_id] = time.perf_counter()
    except TimeoutError:
        return True
    except websockets.ConnectionClosed:
        return False
    return False


async def run_client(
    server: ServerProcess,
    http: httpx.AsyncClient,
    state: ClientState,
    count: int,
    start_index: int,
    drops: bool,
    deadline: float,
    on_submit: Any = None,
) -> None:
    submitted = asyncio.Event()

    async def submitter() -> None:
        for k in range(count):
            index = start_index + k
            body = _task_body(index, state.user)
            response = await http.post("/api/v1/functions/tasks", json=body)
            response.raise_for_status()
            task_id = response.json()["task_id"]
            state.tasks.append(task_id)
            state.submitted_at[task_id] = time.perf_counter()
            ws = state.ws
            if ws is not None:
                with contextlib.suppress(websockets.ConnectionClosed):  # else: the reconnect
                    await ws.send(json.dumps({"type": "subscribe", "task_ids": [task_id]}))
            if on_submit is not None:
                await on_submit(task_id)
            await asyncio.sleep(random.uniform(0.0, 0.15))
        submitted.set()

    producer = asyncio.create_task(submitter())
    try:
        while not (submitted.is_set() and not state.unfinished()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{state.user}: {len(state.unfinished())} tasks unfinished")
            ws = await websockets.connect(f"{server.ws_base}/ws/{state.user}", max_size=2**24)
            state.connections += 1
            state.ws = ws
            open_tasks = state.unfinished()
            await ws.send(json.dumps({
                "type": "subscribe", "task_ids": open_tasks,
                "last_seq": {t: state.last_seq(t) for t in open_tasks},
            }))  # fmt: skip
            lifetime = random.uniform(0.3, 4.0) if drops else 2.0
            await _listen(state, ws, lifetime)
            state.ws = None
            await ws.close()
    finally:
        producer.cancel()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _stored(http: httpx.AsyncClient, task_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    limit = asyncio.Semaphore(8)

    async def one(task_id: str) -> tuple[str, list[dict[str, Any]]]:
        async with limit:
            response = await http.get(f"/api/v1/runs/{task_id}/events")
            response.raise_for_status()
            return task_id, response.json()

    return dict(await asyncio.gather(*(one(t) for t in task_ids)))


def _latencies(states: list[ClientState]) -> list[float]:
    return [
        s.ended_at[t] - s.submitted_at[t]
        for s in states
        for t in s.tasks
        if t in s.ended_at and t in s.submitted_at
    ]


async def soak(server: ServerProcess, tasks: int, clients: int, timeout: float) -> int:
    http = httpx.AsyncClient(base_url=server.base, timeout=60)
    deadline = time.monotonic() + timeout
    # -- baseline: the same mix from one client that never disconnects ---------------------
    base = ClientState("baseline")
    started = time.perf_counter()
    await run_client(server, http, base, 50, 0, False, deadline)
    base_wall = time.perf_counter() - started
    base_latency = _latencies([base])

    # -- the soak ------------------------------------------------------------------------
    states = [ClientState(f"client{i:02d}") for i in range(clients)]
    per = [tasks // clients + (1 if i < tasks % clients else 0) for i in range(clients)]
    total_submitted = 0
    fault_injected_after: int | None = None
    killed: dict[str, Any] = {}

    async def on_submit(task_id: str) -> None:
        nonlocal total_submitted, fault_injected_after
        total_submitted += 1
        if fault_injected_after is None and total_submitted >= tasks // 3:
            set_storage_fault(server.home, "ENOSPC", count=1)  # the next take write fails
            fault_injected_after = total_submitted

    async def kill_one() -> None:
        response = await http.post(
            "/api/v1/functions/tasks",
            json={"template_id": "delay", "inputs": {"seconds": 60, "steps": 600},
                  "project_id": PROJECT, "user_id": "killer"},
        )  # fmt: skip
        task_id = response.json()["task_id"]
        killed["task_id"] = task_id
        while (await http.get(f"/api/v1/functions/tasks/{task_id}")).json()["status"] != "running":
            await asyncio.sleep(0.1)
            if time.monotonic() > deadline:
                return
        await asyncio.sleep(0.5)
        killed["cancel"] = (await http.post(f"/api/v1/functions/tasks/{task_id}/cancel")).json()

    started = time.perf_counter()
    offsets = [sum(per[:i]) + 1000 for i in range(clients)]
    killer = asyncio.create_task(kill_one())
    await asyncio.gather(
        *(
            run_client(server, http, s, n, off, True, deadline, on_submit)
            for s, n, off in zip(states, per, offsets, strict=True)
        )
    )
    await killer
    wall = time.perf_counter() - started

    # -- compare with the durable log ----------------------------------------------------
    all_tasks = [t for s in states for t in s.tasks]
    stored = await _stored(http, all_tasks)
    lost = duplicates = delivered = 0
    out_of_order = 0
    for s in states:
        for task_id in s.tasks:
            received = s.seqs.get(task_id, [])
            expected = [e["seq"] for e in stored[task_id]]
            delivered += len(received)
            duplicates += len(received) - len(set(received))
            lost += len(set(expected) - set(received))
            out_of_order += int(received != sorted(received))
    statuses: Counter[str] = Counter()
    for task_id in [*all_tasks, killed.get("task_id", "")]:
        if task_id:
            status = (await http.get(f"/api/v1/functions/tasks/{task_id}")).json()["status"]
            statuses[status] += 1
            if task_id == killed.get("task_id"):
                killed["status"] = status
    storage_failed = [
        t for t in all_tasks
        if stored[t] and stored[t][-1]["type"] == "task.failed"
        and stored[t][-1]["data"].get("code") == "storage_error"
    ]  # fmt: skip
    metrics = (await http.get("/metrics")).text
    replayed = next(
        (float(line.split()[-1]) for line in metrics.splitlines()
         if line.startswith("takeflow_events_replayed_total")), 0.0,
    )  # fmt: skip
    health = (await http.get("/health")).json()
    await http.aclose()

    latency = _latencies(states)
    reconnects = sum(s.connections - 1 for s in states)
    terminal = sum(statuses[k] for k in ("completed", "failed", "cancelled"))
    print(
        f"soak: {len(all_tasks)} tasks from {clients} clients (+1 cancelled) in {wall:.1f} s "
        f"({len(all_tasks) / wall:.1f} tasks/s)"
    )
    print(
        f"  reconnects: {reconnects} (with last seq), events delivered: {delivered}, "
        f"replayed from the log: {replayed:.0f}"
    )
    print(f"  events lost: {lost}, duplicates: {duplicates}, out of order: {out_of_order}")
    print(f"  terminal: {terminal}/{sum(statuses.values())} {dict(statuses)}")
    print(
        f"  storage fault injected after {fault_injected_after} submissions: "
        f"{len(storage_failed)} task(s) failed with storage_error {storage_failed}"
    )
    print(
        f"  killed task {killed.get('task_id')}: cancel answered {killed.get('cancel')}, "
        f"ended {killed.get('status')}"
    )
    print(
        f"  submit->terminal event: p50 {_pct(latency, 0.5) * 1000:.0f} ms, "
        f"p95 {_pct(latency, 0.95) * 1000:.0f} ms"
    )
    print(
        f"  baseline (50 tasks, 1 client, no drops, {base_wall:.1f} s): "
        f"p50 {_pct(base_latency, 0.5) * 1000:.0f} ms, "
        f"p95 {_pct(base_latency, 0.95) * 1000:.0f} ms;"
        f" soak/baseline p50 x{_pct(latency, 0.5) / _pct(base_latency, 0.5):.1f}"
    )
    print(
        f"  health after: {health['status']} "
        f"({', '.join(c['name'] + '=' + c['status'] for c in health['checks'])})"
    )
    ok = lost == 0 and duplicates == 0 and terminal == sum(statuses.values())
    ok = ok and len(storage_failed) == 1 and killed.get("status") == "cancelled"
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="takeflow-soak-") as tmp:
        server = ServerProcess(
            Path(tmp) / "home", "--plugin", "tests.server.faults", "--heartbeat", "1"
        ).wait_ready()
        try:
            server.ok("POST", "/api/v1/projects", json={"project_id": PROJECT})
            return asyncio.run(soak(server, args.tasks, args.clients, args.timeout))
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
