"""``takeflow worker``: a distributed-mode worker process (one per GPU).

It serves queue jobs from the given queues, ``concurrency`` at a time, each in a thread of this
one process, so templates share its warm imports and its diffusion service (cross-request
batching keeps working). Next to the queue it keeps its task leases (heartbeat; cancel requests
come back with it), sweeps tasks whose worker died, and enforces template time limits.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import TYPE_CHECKING

from dagster_defs.queue import CPU_QUEUE, GPU_QUEUE, detect_vram_gb, worker_queues
from graph_runtime.errors import TakeflowError
from stores.postgres.jobs import make_app

if TYPE_CHECKING:
    from dagster_defs.deployment import QueueServing

log = logging.getLogger(__name__)


class NotDistributedError(TakeflowError):
    code = "not_distributed"


def keep_leases(worker: QueueServing, interval_s: float, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        try:
            worker.keep_leases()
        except Exception:  # database briefly away: the lease has slack (lease_s > heartbeat)
            log.exception("heartbeat failed")


def run_worker(
    home: str | None, queues: list[str] | None, concurrency: int, vram_gb: float | None = None
) -> int:
    """Run until SIGINT/SIGTERM (graceful: running tasks finish first). ``queues`` as given to
    ``--queues`` (``gpu``: every GPU tier that fits ``vram_gb``, detected when not given);
    None serves every queue."""
    if queues is not None:
        memory = vram_gb if vram_gb is not None else detect_vram_gb()
        queues = worker_queues(queues, memory)
    from dagster_defs.runtime import open_runtime  # Dagster: not for `takeflow --help`

    runtime = open_runtime(home, workers=0)
    try:
        if runtime.cluster is None:
            raise NotDistributedError(
                "takeflow worker needs distributed mode: set TAKEFLOW_DATABASE_URL "
                '(or "distributed": {"database_url": ...} in <home>/config.json)'
            )
        cluster = runtime.cluster
        worker, settings = cluster.worker, cluster.settings
        worker.register(queues or ["*"])
        stop = threading.Event()
        beat = (worker, settings.heartbeat_s, stop)
        threading.Thread(target=keep_leases, args=beat, daemon=True).start()
        sweeper = worker.sweeper()
        threading.Thread(target=sweeper.run_forever, args=(stop,), daemon=True).start()
        runtime.runner.limits.start()  # template time and memory limits
        app = make_app(settings.database_url, run_task=worker.run_task)
        print(
            f"takeflow worker {worker.worker_id}: queues {','.join(queues or ['all'])}, "
            f"concurrency {concurrency}",
            flush=True,
        )
        try:
            app.run_worker(
                queues=queues,
                concurrency=concurrency,
                name=worker.worker_id,
                update_heartbeat_interval=settings.heartbeat_s,
                stalled_worker_timeout=3 * settings.lease_s,
                fetch_job_polling_interval=1.0,
            )
        finally:
            stop.set()
    finally:
        runtime.close()
    return 0


def _worker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queues",
        help=f"comma-separated queues to serve, e.g. {CPU_QUEUE},{GPU_QUEUE} (default: all); "
        f"{GPU_QUEUE} means the GPU queues of every memory tier that fits --vram-gb",
    )
    p.add_argument(
        "--vram-gb",
        type=float,
        help="this worker's GPU memory in GB, for the GPU queues it serves (default: detected "
        "from CUDA device 0; all tiers when there is none)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="tasks at once in this process")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run tasks from the queue (distributed mode)")
    _worker_options(p)
    p.set_defaults(fn=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    return run_worker(getattr(args, "home", None), queues, args.concurrency, args.vram_gb)


def main(argv: list[str] | None = None) -> int:
    """``python -m server.worker`` (tests and benches): the same as ``takeflow worker``."""
    parser = argparse.ArgumentParser(prog="python -m server.worker")
    parser.add_argument("--home")
    _worker_options(parser)
    logging.basicConfig(level=logging.WARNING)
    return cmd_worker(parser.parse_args(argv))


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
