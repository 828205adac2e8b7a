"""Dagster on PostgreSQL: stock dagster-postgres vs Takeflow's pooled storages, per 1-op run.

Usage: .venv/bin/python bench/pg_storage.py [--runs 40] [--url postgresql://...]

Without ``--url`` a throwaway PostgreSQL cluster is started on loopback (tests/services.py).
Each mode gets its own database; runs are ``execute_in_process`` of a 1-op job on a persistent
instance (the same path the runner takes). Prints median / p95 in ms and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from dagster import DagsterInstance, in_process_executor, job, op

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagster_defs.instance import instance_yaml
from dagster_defs.postgres_storage import storage_yaml


@op
def one() -> int:
    return 1


@job(executor_def=in_process_executor)
def one_op() -> None:
    one()


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def new_database(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def measure(home: Path, url: str, pooled: bool, runs: int) -> list[float]:
    home.mkdir(parents=True)
    text = instance_yaml(home, url)
    if not pooled:
        text = text.replace(storage_yaml(url, pooled=True), storage_yaml(url, pooled=False))
    (home / "dagster.yaml").write_text(text)
    instance = DagsterInstance.from_config(str(home))
    try:
        one_op.execute_in_process(instance=instance)  # warm-up (tables, imports)
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            assert one_op.execute_in_process(instance=instance).success
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        instance.dispose()


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.services import postgres_server

    with postgres_server() as pg:
        yield pg.url()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--url", help="a PostgreSQL server URL (default: start one on loopback)")
    args = parser.parse_args()
    with server(args.url) as base, tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, pooled in (("stock dagster-postgres", False), ("pooled, no NOTIFY", True)):
            url = new_database(base)
            results[name] = stats(measure(Path(tmp) / name.split()[0], url, pooled, args.runs))
    print(f"1-op run on PostgreSQL (loopback), {args.runs} runs each, ms")
    for name, (p50, p95) in results.items():
        print(f"  {name:24s} p50 {p50:7.1f}   p95 {p95:7.1f}")
    stock, pooled = results["stock dagster-postgres"][0], results["pooled, no NOTIFY"][0]
    print(f"  pooled / stock (p50): {pooled / stock:.2f}")


if __name__ == "__main__":
    main()
