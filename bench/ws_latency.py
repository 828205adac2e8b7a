"""WebSocket event latency: event stored on the server -> JSON received by a client.

Starts a real server (subprocess, loopback), subscribes N clients to one project and runs a
``delay`` task that reports progress many times a second. Each event carries the server's
``timestamp`` (taken when it is appended to the log); the client subtracts it from its receive
time (same machine clock). Baseline, in the same run: a bare ``websockets`` server pushing
timestamped messages at the same rate to the same number of clients.

The event rate is 100/s (``--steps`` over ``--seconds``) unless that would make more than
``--max-rate`` messages per second (events/s x clients): the 1,000-client row runs at 20
events/s. ``--before DIR`` also measures the server of another checkout (with its own
``.venv``), in the same run, e.g. the unchanged code:

    .venv/bin/python bench/ws_latency.py [--clients 1 10 100 1000] [--before /work/main]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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
        await c.subscribe(project_ids=["bench"], timeout=60)
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


def raise_fd_limit(clients: int) -> None:
    """Room for every client socket here and in the servers (they inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * clients + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def summary(latencies: list[float]) -> str:
    return f"{statistics.median(latencies):>8.2f} {pct(latencies, 0.95):>8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-rate", type=int, default=20_000, help="messages/s, all clients")
    parser.add_argument("--before", type=Path, help="another checkout to measure too")
    args = parser.parse_args()
    raise_fd_limit(max(args.clients))
    with tempfile.TemporaryDirectory() as tmp:
        servers = {"after": ServerProcess(Path(tmp) / "home")}
        if args.before is not None:
            servers["before"] = ServerProcess(
                Path(tmp) / "home-before",
                python=str(args.before / ".venv" / "bin" / "python"),
                cwd=args.before,
                env={"PYTHONDONTWRITEBYTECODE": "1"},
            )
        try:
            for server in servers.values():
                server.wait_ready()
                server.ok("POST", "/api/v1/projects", json={"project_id": "bench"})
            header = f"{'clients':>7} {'ev/s':>5} {'msgs':>6}"
            for name in ("before", "after"):
                if name in servers:
                    header += f" | {name + ' p50':>8} {name[:5] + ' p95':>8}"
            print(header + f" | {'base p50':>8} {'base p95':>8} | {'p95/base':>8}", flush=True)
            for n in args.clients:
                steps = max(1, min(args.steps, int(args.max_rate * args.seconds / n)))
                row = f"{n:>7} {steps / args.seconds:>5.0f} {steps * n:>6}"
                after: list[float] = []
                for name in ("before", "after"):
                    if name in servers:
                        ours = asyncio.run(takeflow_latency(servers[name], n, steps, args.seconds))
                        row += f" | {summary(ours)}"
                        after = ours
                base = asyncio.run(baseline_latency(n, steps, args.seconds))
                ratio = pct(after, 0.95) / pct(base, 0.95)
                print(f"{row} | {summary(base)} | {ratio:>7.1f}x", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
