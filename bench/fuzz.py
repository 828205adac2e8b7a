"""Fuzz every JSON route of both listeners and count the answers >= 500 (target: 0).

Starts ``takeflow serve --demo --comfy-port`` (loopback, no tokens, a throwaway home, the tiny
random-weight demo model, so mutated ComfyUI prompts that stay valid really run), then:

* schemathesis over every operation of ``/schema/openapi.json`` (positive and negative cases,
  half of them on the real ``demo`` project);
* depth / size / type mutations on every Takeflow JSON route and on the ComfyUI JSON routes of
  both listeners (compat port and ``/api`` of the main one);
* random mutations of ComfyUI's txt2img prompt, random queries on the ComfyUI GET routes;
* mutated WebSocket messages (after each, the socket must still answer a ping).

Prints the requests per route family and route, the statuses, the failures (>= 500 or no
answer) and the tracebacks in the server's log; exits 1 on any. The bounded version runs in the
test suite (``tests/server/test_fuzz.py``).

    .venv/bin/python bench/fuzz.py [--examples 25] [--prompts 300] [--queries 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfy.client import txt2img
from tests.comfy.conftest import wait_compat
from tests.server.fuzzing import FuzzReport, mutation_fuzz, schema_fuzz, websocket_fuzz
from tests.server.harness import free_port, running_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=25, help="schemathesis cases per operation")
    parser.add_argument("--prompts", type=int, default=300, help="mutated ComfyUI prompts")
    parser.add_argument("--queries", type=int, default=20, help="queries per ComfyUI GET route")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = FuzzReport()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        home = Path(tmp) / "home"
        with running_server(home, "--demo", "--comfy-port", str(port)) as server:
            comfy = f"http://127.0.0.1:{port}"
            wait_compat(comfy)
            started = time.monotonic()
            schema_fuzz(server.base, report, max_examples=args.examples, seed=args.seed)
            mutation_fuzz(
                server.base,
                comfy,
                report,
                prompt_rounds=args.prompts,
                query_rounds=args.queries,
                seed=args.seed,
                base_prompt=txt2img(),
            )
            websocket_fuzz(server.ws_base, report)
            elapsed = time.monotonic() - started
            log = server.log.read_text(errors="replace")
    errors = _traceback_ends(log)
    print(report.summary())
    print(f"{report.requests} requests in {elapsed:.0f} s; answers >= 500 or none: "
          f"{report.server_errors}; tracebacks in the server log: {len(errors)}")  # fmt: skip
    for where, error in errors:
        print(f"  traceback: {error}  (at {where})")
    return 1 if report.server_errors or errors else 0


def _traceback_ends(log: str) -> list[tuple[str, str]]:
    """For each traceback in the log: its last frame and the exception line."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and lines[j].startswith((" ", "\t")):
                j += 1
            frames = [x.strip() for x in lines[i + 1 : j] if x.strip().startswith("File ")]
            found.append((frames[-1] if frames else "?", lines[j] if j < len(lines) else "?"))
    return found


if __name__ == "__main__":
    raise SystemExit(main())
