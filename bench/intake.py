"""Submission cost: HTTP submit latency and rate, distributed vs embedded, in one run.

Usage: .venv/bin/python bench/intake.py [--submits 400]

Distributed: two API replicas on a throwaway PostgreSQL, no worker (nothing drains, so only the
intake is measured: admission, the intake lock, limit counts, task row, ``task.submitted``,
turn and queue job in one transaction). Embedded: one server with no worker. Each with 1 client
(latency) and 20 concurrent clients (rate); prints p50 / p95 ms and submits/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.distributed.cluster import cluster
from tests.server.harness import ServerProcess
from tests.services import postgres_server


def measure(apis: list[ServerProcess], clients: int, submits: int) -> tuple[float, float, float]:
    for api in apis:  # warm-up
        for i in range(10):
            api.submit("number", {"value": i})
    took: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        api = apis[n % len(apis)]
        for i in range(submits // clients):
            started = time.perf_counter()
            api.submit("number", {"value": i})
            with lock:
                took.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(took)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95)], len(took) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submits", type=int, default=400)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with postgres_server() as pg, cluster(Path(tmp) / "d", pg, None, apis=2, workers=0) as c:
            for clients in (1, 20):
                rows.append(
                    ("distributed (2 APIs)", clients, measure(c.apis, clients, args.submits))
                )
        home = Path(tmp) / "e" / "home"
        home.mkdir(parents=True)
        with ServerProcess(home, workers=0) as api:
            api.wait_ready()
            for clients in (1, 20):
                rows.append(("embedded", clients, measure([api], clients, args.submits)))
    print(f"{'mode':22s} {'clients':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'submits/s':>10s}")
    for mode, clients, (p50, p95, rate) in rows:
        print(f"{mode:22s} {clients:7d} {p50:8.1f} {p95:8.1f} {rate:10.1f}")


if __name__ == "__main__":
    main()
