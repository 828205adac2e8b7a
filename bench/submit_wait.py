"""``POST /api/v1/functions/tasks?wait=30`` against submit + polling ``GET`` every 5 ms: the time
until a client holds the finished task, one-node tasks (``number``, with take and commit) one at
a time on a real server on loopback.

Usage: PYTHONPATH=$PWD .venv/bin/python bench/submit_wait.py [--tasks 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.server.harness import running_server

TASKS = "/api/v1/functions/tasks"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    body = {"template_id": "number", "inputs": {"value": 1}, "project_id": "film"}
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp) / "home") as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        for _ in range(3):  # warm up
            server.http.post(TASKS, params={"wait": "30"}, json=body)
        waited: list[float] = []
        polled: list[float] = []
        for _ in range(args.tasks):
            start = time.perf_counter()
            answer = server.http.post(TASKS, params={"wait": "30"}, json=body)
            assert answer.status_code == 200 and answer.json()["status"] == "completed"
            waited.append(time.perf_counter() - start)
            start = time.perf_counter()
            task_id = server.ok("POST", TASKS, json=body)["task_id"]
            while server.ok("GET", f"{TASKS}/{task_id}")["status"] != "completed":
                time.sleep(0.005)
            polled.append(time.perf_counter() - start)
    print(
        f"?wait=30: median {statistics.median(waited) * 1000:.0f} ms; "
        f"submit + GET every 5 ms: median {statistics.median(polled) * 1000:.0f} ms "
        f"({args.tasks} each)"
    )


if __name__ == "__main__":
    main()
