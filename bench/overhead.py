"""Per-task overhead of Takeflow's runner vs bare Dagster and direct template calls.

Usage: .venv/bin/python bench/overhead.py [--tasks 100] [--rate-tasks 300]

Overhead = submission -> last event (task.completed), minus the templates' own time. All modes
run in one process, one after another, so they share the machine's state; the figures are
median / p95 in ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dagster import (
    DagsterInstance,
    DependencyDefinition,
    GraphDefinition,
    In,
    OpDefinition,
    Out,
    Output,
    in_process_executor,
)

from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import CanvasGraph
from graph_runtime.events import RecordingSink
from graph_runtime.templates import NullReporter
from nodes.builtin import number


def chain_graph(n: int) -> CanvasGraph:
    nodes: list[dict[str, Any]] = [
        {"id": "n0", "template": "number", "inputs": {"value": {"kind": "literal", "value": 1}}}
    ]
    for i in range(1, n):
        nodes.append(
            {
                "id": f"n{i}",
                "template": "number",
                "inputs": {"value": {"kind": "link", "node": f"n{i - 1}", "output": "value"}},
            }
        )
    return CanvasGraph.model_validate({"name": f"chain{n}", "nodes": nodes})


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def direct_calls(n: int, tasks: int) -> list[float]:
    out = []
    for _ in range(tasks):
        t = time.perf_counter()
        value = 1.0
        for _ in range(n):
            value = number(NullReporter(), {"value": value})["value"]
        out.append((time.perf_counter() - t) * 1000)
    return out


def bare_job(n: int) -> Any:
    def make(i: int) -> OpDefinition:
        def compute(context, inputs):  # type: ignore[no-untyped-def]
            value = inputs.get("x", 1.0)
            yield Output(number(NullReporter(), {"value": value})["value"], "result")

        return OpDefinition(
            compute_fn=compute, name=f"o{i}", ins={"x": In()} if i else {}, outs={"result": Out()}
        )

    ops = [make(i) for i in range(n)]
    deps = {f"o{i}": {"x": DependencyDefinition(f"o{i - 1}", "result")} for i in range(1, n)}
    return GraphDefinition(name=f"bare{n}", node_defs=ops, dependencies=deps).to_job(
        executor_def=in_process_executor
    )


def bare_runs(n: int, tasks: int, instance: DagsterInstance) -> list[float]:
    job = bare_job(n)
    job.execute_in_process(instance=instance)  # warm
    out = []
    for _ in range(tasks):
        t = time.perf_counter()
        job.execute_in_process(instance=instance)
        out.append((time.perf_counter() - t) * 1000)
    return out


def takeflow_runs(runtime: Any, n: int, tasks: int, project: str | None) -> list[float]:
    graph = chain_graph(n)
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    out = []
    for i in range(tasks + 1):
        doc = graph.model_dump(mode="json")
        doc["nodes"][0]["inputs"]["value"]["value"] = i  # defeat the node cache
        g = CanvasGraph.model_validate(doc)
        t = time.perf_counter()
        record = runtime.runner.submit(g, project_id=project)
        end = sink.wait_terminal(record.task_id, timeout=60)
        elapsed = (time.perf_counter() - t) * 1000
        assert end.type == "task.completed", end.data
        template_ms = sum(end.data["timings_ms"].values())
        if i:  # first run compiles the job
            out.append(elapsed - template_ms)
    runtime.runner.remove_sink(sink)
    return out


def sustained_rate(
    runtime: Any, submitters: int, total: int, project: str | None = None
) -> tuple[float, int]:
    graph = chain_graph(1)
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    ids: list[str] = []
    lock = threading.Lock()

    def submit(k: int) -> None:
        for i in range(total // submitters):
            doc = graph.model_dump(mode="json")
            doc["nodes"][0]["inputs"]["value"]["value"] = 10_000 + k * total + i
            record = runtime.runner.submit(CanvasGraph.model_validate(doc), project_id=project)
            with lock:
                ids.append(record.task_id)

    t = time.perf_counter()
    threads = [threading.Thread(target=submit, args=(k,)) for k in range(submitters)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for task_id in ids:
        sink.wait_terminal(task_id, timeout=120)
    elapsed = time.perf_counter() - t
    runs = len(runtime.instance.get_run_ids(limit=100_000))
    runtime.runner.remove_sink(sink)
    return len(ids) / elapsed, runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rate-tasks", type=int, default=320)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="takeflow-bench-"))

    stock_home = tmp / "stock-dagster"
    stock_home.mkdir()
    stock = DagsterInstance.from_config(str(stock_home))  # stock SQLite storage, per-run files
    ephemeral = DagsterInstance.ephemeral()
    runtime = open_runtime(tmp / "home", workers=args.workers)
    runtime.projects.create("bench")

    rows: list[tuple[str, int, list[float]]] = []
    for n in (1, 10):
        rows.append(("templates called directly", n, direct_calls(n, args.tasks)))
        rows.append(
            ("bare execute_in_process, stock SQLite instance", n, bare_runs(n, args.tasks, stock))
        )
        rows.append(
            ("bare execute_in_process, in-memory instance", n, bare_runs(n, args.tasks, ephemeral))
        )
        rows.append(
            (
                "Takeflow runner, persistent instance, no take",
                n,
                takeflow_runs(runtime, n, args.tasks, None),
            )
        )
        rows.append(
            (
                "Takeflow runner, + take + git commit (LFS)",
                n,
                takeflow_runs(runtime, n, args.tasks, "bench"),
            )
        )

    print(f"\nPer-task ms over {args.tasks} tasks (median / p95); runner workers={args.workers}")
    print(f"{'mode':<50} {'nodes':>5} {'median':>8} {'p95':>8}")
    base: dict[int, float] = {}
    for label, n, samples in rows:
        med, p95 = stats(samples)
        if label.startswith("bare execute_in_process, stock"):
            base[n] = med
        ratio = (
            f"  ({med / base[n]:.2f}x stock bare Dagster)"
            if n in base and "Takeflow" in label
            else ""
        )
        print(f"{label:<50} {n:>5} {med:>8.1f} {p95:>8.1f}{ratio}")

    rate, runs = sustained_rate(runtime, submitters=8, total=args.rate_tasks)
    print(
        f"\nSustained 1-node tasks with 8 submitters: {rate:.1f} tasks/s "
        f"({runs} runs now in the persistent Dagster instance)"
    )
    rate, runs = sustained_rate(runtime, submitters=8, total=args.rate_tasks // 2, project="bench")
    print(f"Same, each task also a take committed to git: {rate:.1f} tasks/s ({runs} runs)")
    runtime.close()


if __name__ == "__main__":
    main()
