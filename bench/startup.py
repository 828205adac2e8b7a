"""Start-up: process start -> first ``200`` on ``GET /health`` for ``takeflow serve --demo``.

Starts ``python -m server.cli --home HOME serve --demo --port PORT`` (the README quick start)
``N`` times on a fresh temporary home (the first start: creates the demo project and builds
the demo model into ``HOME/models/demo``) and ``N`` times on an existing home (a restart), and
times, in a fresh interpreter, ``import server.app``. ``--baseline-rev REV`` extracts
``git archive REV`` into a temporary folder and times that tree too, interleaved with the
current one (same venv, same machine state), e.g. the unchanged code:

    .venv/bin/python bench/startup.py [N] [--baseline-rev main]

Prints median and p95 seconds for each, then a README-ready table row.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.server.harness import free_port  # noqa: E402

HEALTH_TIMEOUT_S = 180.0


@dataclass
class Tree:
    """A checkout to start the server from (``PYTHONPATH`` set to it)."""

    label: str
    root: Path
    existing_home: Path | None = None
    fresh: list[float] = field(default_factory=list)
    restart: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)

    def env(self, home: Path | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(self.root), "PYTHONUNBUFFERED": "1"}
        if home is not None:
            env["TAKEFLOW_HOME"] = str(home)
        return env


def time_to_health(tree: Tree, home: Path) -> float:
    """Seconds from ``Popen`` to the first ``200`` on ``/health``; the server is then stopped."""
    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "--home", str(home), "serve", "--demo"]
    argv += ["--port", str(port)]
    log = home.parent / f"{home.name}-{port}.log"
    with log.open("wb") as out, httpx.Client(timeout=10.0) as http:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=tree.root, env=tree.env(home), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            while True:
                elapsed = time.perf_counter() - start
                if proc.poll() is not None:
                    raise RuntimeError(f"{tree.label}: server exited: {log.read_text()[-3000:]}")
                if elapsed > HEALTH_TIMEOUT_S:
                    raise TimeoutError(f"{tree.label}: no /health 200 in {HEALTH_TIMEOUT_S}s")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        return time.perf_counter() - start
                time.sleep(0.02)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import server.app; print(time.perf_counter() - t)"
)


def import_time(tree: Tree) -> float:
    """``import server.app`` in a fresh interpreter (seconds, interpreter start-up excluded)."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        cwd=tree.root,
        env=tree.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def archived(rev: str, into: Path) -> Iterator[Path]:
    """``git archive REV`` extracted under ``into``."""
    root = into / f"rev-{rev.replace('/', '_')}"
    root.mkdir()
    tar = into / "rev.tar"
    subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(tar), rev], check=True
    )
    with tarfile.open(tar) as archive:
        archive.extractall(root, filter="data")
    tar.unlink()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def fmt(samples: list[float]) -> str:
    median, p95 = stats(samples)
    return f"{median:.2f} / {p95:.2f}"


def run(trees: list[Tree], n: int, scratch: Path) -> None:
    for i in range(n):
        for tree in trees:  # interleaved: each round measures every tree once
            home = scratch / f"{tree.label}-fresh{i}" / "home"
            home.parent.mkdir()
            tree.fresh.append(time_to_health(tree, home))
            if tree.existing_home is None:
                tree.existing_home = home  # built by this first start, restarted below
            else:
                shutil.rmtree(home.parent, ignore_errors=True)
            tree.imports.append(import_time(tree))
            assert tree.existing_home is not None
            tree.restart.append(time_to_health(tree, tree.existing_home))
            print(
                f"round {i + 1}/{n} {tree.label}: fresh {tree.fresh[-1]:.2f}s, "
                f"restart {tree.restart[-1]:.2f}s, import {tree.imports[-1]:.2f}s",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=5, help="starts of each kind")
    parser.add_argument("--baseline-rev", help="also time `git archive REV` (interleaved)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="takeflow-startup-") as tmp:
        scratch = Path(tmp)
        with contextlib.ExitStack() as stack:
            trees = [Tree("current", REPO)]
            if args.baseline_rev:
                root = stack.enter_context(archived(args.baseline_rev, scratch))
                trees.insert(0, Tree(f"baseline {args.baseline_rev}", root))
            run(trees, args.n, scratch)
    print(f"\nseconds, median / p95 over {args.n} starts each ({os.cpu_count()} CPUs)")
    print(f"{'tree':<24} {'first start':>14} {'restart':>14} {'import server.app':>18}")
    for tree in trees:
        print(
            f"{tree.label:<24} {fmt(tree.fresh):>14} {fmt(tree.restart):>14} "
            f"{fmt(tree.imports):>18}"
        )
    print("\nREADME row:")
    print("| start-up, `serve --demo` to first /health 200 | first start | restart | import |")
    print("|---|---|---|---|")
    for tree in trees:
        cells = [f"{stats(s)[0]:.2f} s (p95 {stats(s)[1]:.2f})" for s in (tree.fresh, tree.restart)]
        print(f"| {tree.label} | {cells[0]} | {cells[1]} | {stats(tree.imports)[0]:.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
