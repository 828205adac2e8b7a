"""Node output cache: a 10-node graph run cold vs re-run with one input changed.

Usage: .venv/bin/python bench/cache.py [--reps 15] [--size 512]

Graph: noise a, b, c, d -> blend ab, cd -> blend abcd -> text overlay -> resize, plus a prompt
(10 nodes). "cold" changes every seed (nothing cached); "one change" changes the overlay text,
so only the prompt, overlay and resize run again. Figures: median / p95 ms, submit -> completed,
in one process, modes interleaved.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import CanvasGraph
from graph_runtime.events import RecordingSink


def lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def link(node: str, output: str = "image") -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def graph(seed: int, text: str, size: int) -> CanvasGraph:
    nodes: list[dict[str, Any]] = [
        {"id": n, "template": "noise_image",
         "inputs": {"width": lit(size), "height": lit(size), "seed": lit(seed + i)}}
        for i, n in enumerate("abcd")
    ]  # fmt: skip
    nodes += [
        {"id": "ab", "template": "blend", "inputs": {"base": link("a"), "overlay": link("b")}},
        {"id": "cd", "template": "blend", "inputs": {"base": link("c"), "overlay": link("d")}},
        {"id": "abcd", "template": "blend",
         "inputs": {"base": link("ab"), "overlay": link("cd"), "mode": lit("screen")}},
        {"id": "title", "template": "text_prompt", "inputs": {"text": lit(text)}},
        {"id": "label", "template": "text_overlay",
         "inputs": {"image": link("abcd"), "text": link("title", "text"), "size": lit(48)}},
        {"id": "final", "template": "resize",
         "inputs": {"image": link("label"), "width": lit(size // 2), "height": lit(size // 2)}},
    ]  # fmt: skip
    return CanvasGraph.model_validate({"name": "cache_bench", "nodes": nodes})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    runtime = open_runtime(Path(tempfile.mkdtemp(prefix="takeflow-cache-")) / "home", workers=1)
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    seeds = itertools.count(1, 10)
    texts = itertools.count()

    def run(g: CanvasGraph) -> tuple[float, list[str]]:
        start = time.perf_counter()
        record = runtime.runner.submit(g)
        end = sink.wait_terminal(record.task_id, 120)
        elapsed = (time.perf_counter() - start) * 1000
        assert end.type == "task.completed", end.data
        ran = [nid for nid in end.data["timings_ms"]]
        return elapsed, ran

    run(graph(next(seeds), "warm-up", args.size))
    cold: list[float] = []
    warm: list[float] = []
    recomputed: list[str] = []
    for _ in range(args.reps):
        seed = next(seeds)
        elapsed, _ = run(graph(seed, f"t{next(texts)}", args.size))
        cold.append(elapsed)
        elapsed, recomputed = run(graph(seed, f"t{next(texts)}", args.size))
        warm.append(elapsed)

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{statistics.median(xs):8.1f} {xs[min(len(xs) - 1, int(len(xs) * 0.95))]:8.1f}"

    print(f"10-node graph, {args.size}x{args.size} noise, {args.reps} pairs (ms: median, p95)")
    print(f"cold run (all nodes computed)     {fmt(cold)}")
    print(f"re-run with one input changed     {fmt(warm)}")
    ratio = statistics.median(cold) / statistics.median(warm)
    print(f"speed-up (median)                 {ratio:.1f}x")
    print(f"nodes recomputed on the re-run: {sorted(recomputed)}")
    runtime.close()


if __name__ == "__main__":
    main()
