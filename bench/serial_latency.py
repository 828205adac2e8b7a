"""Submit -> ``task.completed`` latency of one-node tasks run one at a time (one worker).

Usage: .venv/bin/python bench/serial_latency.py [--tasks 60]

With one task in flight there is no queueing, so the figure is the runner's own path (admission,
lifecycle, Dagster run, events) plus Dagster's per-run cost; compare two checkouts in turn on the
same machine (``PYTHONPATH=<other checkout> .venv/bin/python bench/serial_latency.py``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import single_node_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_runtime(f"{tmp}/home", workers=1)
        try:
            for i in range(5):  # warm: compiled job, instance, caches
                record = runtime.runner.submit(single_node_graph("number", {"value": -i}))
                runtime.runner.wait(record.task_id, 60)
            latencies = []
            for i in range(args.tasks):
                started = time.perf_counter()
                record = runtime.runner.submit(single_node_graph("number", {"value": i}))
                runtime.runner.wait(record.task_id, 60)
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            runtime.close()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(f"{args.tasks} one-node tasks, one at a time: median {statistics.median(latencies):.1f} "
          f"ms, p95 {p95:.1f} ms (submit -> completed)")  # fmt: skip


if __name__ == "__main__":
    main()
