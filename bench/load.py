"""A flood of submissions against a real server: admission, submit latency, queue depth, drain.

Starts ``takeflow`` (``python -m server.app --demo``, subprocess, loopback), measures the
sustainable rate (one-node ``solid_image`` tasks, each a take + git commit, submitted as a burst
and timed until the queue is empty), then offers open-loop load at 2x and 10x that rate for a
fixed time. Printed per load level: offered rate, accepted / refused (429) / other answers,
submit latency p50 / p99, queue depth over time, the time the queue takes to drain after the
flood, and the server's resident memory (start / peak), so that admission control shows as
refused requests, a bounded queue and bounded memory rather than minutes of backlog.

    .venv/bin/python bench/load.py [--duration 10] [--multipliers 2 10] [--workers 2]
        [--queue-limit 50] [--user-limit 0]

``--queue-limit`` / ``--user-limit`` write the server's admission settings into its home config
(``admission.max_queued`` / ``admission.max_queued_per_user``); 0 leaves them at their defaults
(10,000 / no limit). Every submission comes from one user (``api``).
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
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server.harness import ServerProcess

BODY = {
    "template_id": "solid_image",
    "inputs": {"width": 64, "height": 64, "color": "#336699"},
    "project_id": "demo",
    "shot_id": "ch01/sc01/load",
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def metrics(http: httpx.AsyncClient) -> dict[str, float]:
    """Queue depth, running and finished tasks from the server's Prometheus endpoint."""
    text = (await http.get("/metrics")).text
    found = {"queued": 0.0, "running": 0.0, "finished": 0.0}
    for line in text.splitlines():
        if line.startswith("takeflow_queue_depth "):
            found["queued"] = float(line.split()[-1])
        elif line.startswith("takeflow_tasks_running "):
            found["running"] = float(line.split()[-1])
        elif line.startswith("takeflow_tasks_finished_total"):
            found["finished"] += float(line.split()[-1])
    return found


async def wait_idle(http: httpx.AsyncClient, timeout: float) -> float:
    """Seconds until nothing is queued or running (``inf`` past ``timeout``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        m = await metrics(http)
        if m["queued"] == 0 and m["running"] == 0:
            return time.perf_counter() - start
        await asyncio.sleep(0.2)
    return float("inf")


async def sustainable_rate(http: httpx.AsyncClient, burst: int) -> float:
    """Tasks/s the server completes: a burst submitted at once, timed until the queue is empty."""
    await wait_idle(http, 60)
    before = (await metrics(http))["finished"]
    start = time.perf_counter()
    answers = await asyncio.gather(
        *(http.post("/api/v1/functions/tasks", json=BODY) for _ in range(burst))
    )
    accepted = sum(1 for a in answers if a.status_code < 300)
    await wait_idle(http, 300)
    done = (await metrics(http))["finished"] - before
    return max(done, accepted) / (time.perf_counter() - start)


async def flood(
    server: ServerProcess, http: httpx.AsyncClient, rate: float, duration: float
) -> dict[str, Any]:
    """Open-loop submissions at ``rate``/s for ``duration`` s; samples until the queue drains."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    samples: list[tuple[float, float, float]] = []  # (t, queue depth, rss MB)
    stop_sampling = asyncio.Event()
    start = time.perf_counter()

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            response = await http.post("/api/v1/functions/tasks", json=BODY)
            code = response.status_code
        except httpx.HTTPError:
            code = 0
        latencies.append((time.perf_counter() - t0) * 1000)
        codes[code] = codes.get(code, 0) + 1

    async def sampler() -> None:
        while not stop_sampling.is_set():
            m = await metrics(http)
            samples.append((time.perf_counter() - start, m["queued"], rss_mb(server.proc.pid)))
            await asyncio.sleep(0.5)

    sampling = asyncio.create_task(sampler())
    pending: list[asyncio.Task[None]] = []
    total = int(rate * duration)
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(one()))
    await asyncio.gather(*pending)
    flood_end = time.perf_counter()
    drain = await wait_idle(http, 600)
    stop_sampling.set()
    await sampling
    return {
        "offered": total,
        "codes": codes,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "samples": samples,
        "flood_s": flood_end - start,
        "drain_s": drain,
    }


def write_admission(home: Path, queue_limit: int, user_limit: int) -> None:
    settings: dict[str, Any] = {}
    if queue_limit:
        settings["max_queued"] = queue_limit
    if user_limit:
        settings["max_queued_per_user"] = user_limit
    if not settings:
        return
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["admission"] = settings
    config_path.write_text(json.dumps(config, indent=2))


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="takeflow-load-") as tmp:
        home = Path(tmp) / "home"
        write_admission(home, args.queue_limit, args.user_limit)
        with ServerProcess(home, "--demo", workers=args.workers) as server:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as http:
                rate = await sustainable_rate(http, args.burst)
                print(f"sustainable rate: {rate:.1f} tasks/s (burst of {args.burst}, "
                      f"{args.workers} workers, take + git commit each)")  # fmt: skip
                print(f"admission: max_queued={args.queue_limit or 'default (10,000)'}, "
                      f"max_queued_per_user={args.user_limit or 'unset'}")  # fmt: skip
                print()
                header = (
                    f"{'load':>5} {'offered/s':>9} {'sent':>5} {'accepted':>8} {'refused':>7} "
                    f"{'other':>5} {'p50 ms':>7} {'p99 ms':>7} {'max q':>6} {'drain s':>8} "
                    f"{'rss MB start/peak':>18}"
                )
                print(header)
                rows = []
                for multiplier in args.multipliers:
                    result = await flood(server, http, rate * multiplier, args.duration)
                    codes = result["codes"]
                    accepted = sum(n for c, n in codes.items() if 200 <= c < 300)
                    refused = codes.get(429, 0)
                    other = result["offered"] - accepted - refused
                    depths = [q for _, q, _ in result["samples"]] or [0.0]
                    rss = [r for _, _, r in result["samples"]] or [float("nan")]
                    print(
                        f"{multiplier:>4}x {rate * multiplier:>9.1f} {result['offered']:>5} "
                        f"{accepted:>8} {refused:>7} {other:>5} {result['p50']:>7.1f} "
                        f"{result['p99']:>7.1f} {max(depths):>6.0f} {result['drain_s']:>8.1f} "
                        f"{rss[0]:>8.0f}/{max(rss):<9.0f}"
                    )
                    rows.append((multiplier, result))
                print()
                for multiplier, result in rows:
                    timeline = " ".join(
                        f"{q:.0f}" for t, q, _ in result["samples"] if abs(t - round(t)) < 0.26
                    )
                    print(f"queue depth each second at {multiplier}x: {timeline}")
                answers = [r["p99"] for _, r in rows]
                if answers:
                    print(f"\nsubmit p99 across loads: median {statistics.median(answers):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--multipliers", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--queue-limit", type=int, default=50)
    parser.add_argument("--user-limit", type=int, default=0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
