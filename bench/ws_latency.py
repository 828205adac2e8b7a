"""WebSocket event latency: event stored on the server -> JSON received by a client.

Starts a real server (subprocess, loopback), subscribes N clients to one project and runs a
``delay`` task that reports progress many times a second. Each event carries the server's
``timestamp`` (taken when it is appended to the log); the client subtracts it from its receive
time (same machine clock). Baseline, in the same run: a bare ``websockets`` server pushing
timestamped messages at the same rate to the same number of clients.

    .venv/bin/python bench/ws_latency.py [--clients 1 10 100] [--steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server.harness import EventClient, ServerProcess


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def takeflow_latency(
    server: ServerProcess, clients: int, steps: int, seconds: float
) -> list[float]:
    latencies: list[float] = []

    async def follow(client: EventClient, task_id_box: asyncio.Future[str]) -> None:
        task_id = await task_id_box
        while True:
            raw = await asyncio.wait_for(client.ws.recv(), 60)
            now = time.time()
            message = json.loads(raw)
            if message.get("type") == "task.progress":
                latencies.append((now - message["timestamp"]) * 1000)
            if message.get("data", {}).get("task_id") == task_id and message["type"] in (
                "task.completed",
                "task.failed",
            ):
                return

    conns = [EventClient(f"{server.ws_base}/ws/bench{i}") for i in range(clients)]
    for c in conns:
        await c.__aenter__()
        await c.subscribe(project_ids=["bench"])
    box: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    followers = [asyncio.create_task(follow(c, box)) for c in conns]
    task_id = await asyncio.to_thread(
        server.submit, "delay", {"seconds": seconds, "steps": steps}, project_id="bench"
    )
    box.set_result(task_id)
    await asyncio.wait_for(asyncio.gather(*followers), 120)
    for c in conns:
        await c.close()
    return latencies


async def baseline_latency(clients: int, steps: int, seconds: float) -> list[float]:
    """A bare websockets server pushing ``steps`` timestamped messages to every client."""
    latencies: list[float] = []
    peers: set[object] = set()
    ready = asyncio.Event()

    async def handler(ws: websockets.ServerConnection) -> None:
        peers.add(ws)
        if len(peers) == clients:
            ready.set()
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        conns = [await websockets.connect(f"ws://127.0.0.1:{port}") for _ in range(clients)]
        await asyncio.wait_for(ready.wait(), 10)

        async def read(ws: websockets.ClientConnection) -> None:
            for _ in range(steps):
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                latencies.append((time.time() - message["timestamp"]) * 1000)

        readers = [asyncio.create_task(read(c)) for c in conns]
        for i in range(steps):
            body = json.dumps({"type": "task.progress", "seq": i, "timestamp": time.time()})
            websockets.broadcast(peers, body)  # type: ignore[arg-type]
            await asyncio.sleep(seconds / steps)
        await asyncio.gather(*readers)
        for c in conns:
            await c.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "home") as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "bench"})
        print(f"{'clients':>7} {'events':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
              f" | {'base p50':>8} {'base p95':>8} | {'p50 ratio':>9}")  # fmt: skip
        for n in args.clients:
            ours = asyncio.run(takeflow_latency(server, n, args.steps, args.seconds))
            base = asyncio.run(baseline_latency(n, args.steps, args.seconds))
            p50, p95 = statistics.median(ours), pct(ours, 0.95)
            b50, b95 = statistics.median(base), pct(base, 0.95)
            print(f"{n:>7} {len(ours):>7} {p50:>8.2f} {p95:>8.2f} {max(ours):>8.2f}"
                  f" | {b50:>8.2f} {b95:>8.2f} | {p50 / b50:>8.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
