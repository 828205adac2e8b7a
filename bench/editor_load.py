"""The editor's weight and first load: the built bundle's size (raw and gzip -9) and the time from
navigation to an interactive editor on ``takeflow serve --demo`` (templates loaded, palette shown,
the demo project chosen), in Chromium (``/usr/bin/chromium``) through Playwright, each load in a
fresh browser context (no cache), after one untimed warm-up load.

    .venv/bin/python bench/editor_load.py [--runs 5] [--root CHECKOUT] [--build]

``--root`` measures another checkout (e.g. ``git archive main`` extracted, with ``web/dist``
built there, or ``--build`` to build it with ``npm run build``); the server runs from that
checkout (``PYTHONPATH``), so it serves that checkout's ``web/dist``. Prints the sizes and the
median and p95 of the load times in ms, then one README-ready line.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.server.harness import ServerProcess  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
INTERACTIVE = """() => {
  const ed = document.querySelector('[data-testid=editor]');
  const project = document.querySelector('[data-testid=project-select]');
  return ed?.dataset.ready === 'true' && project?.value === 'demo'
    && document.querySelectorAll('[data-testid^=palette-item-]').length > 0;
}"""


def bundle_sizes(dist: Path) -> dict[str, int]:
    """Raw and gzip -9 bytes of the built JavaScript and CSS under ``dist/assets``."""
    out: dict[str, int] = {}
    for ext in ("js", "css"):
        data = b"".join(p.read_bytes() for p in sorted((dist / "assets").glob(f"*.{ext}")))
        out[ext] = len(data)
        out[f"{ext}_gzip"] = len(gzip.compress(data, 9))
    return out


def load_times(base: str, runs: int) -> list[float]:
    """Milliseconds from ``goto`` to an interactive editor, one fresh context per load."""
    from playwright.sync_api import sync_playwright

    times: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for i in range(runs + 1):
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                page = context.new_page()
                start = time.perf_counter()
                page.goto(base + "/")
                page.wait_for_function(INTERACTIVE, polling="raf", timeout=60_000)
                elapsed = (time.perf_counter() - start) * 1000
                context.close()
                if i:  # the first load warms the server
                    times.append(elapsed)
        finally:
            browser.close()
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to measure")
    parser.add_argument("--build", action="store_true", help="npm run build in ROOT/web first")
    args = parser.parse_args()
    root = args.root.resolve()
    dist = root / "web" / "dist"
    if args.build or not (dist / "index.html").exists():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("npm is missing and web/dist is not built")
        subprocess.run([npm, "run", "build"], cwd=root / "web", check=True, timeout=600)
    sizes = bundle_sizes(dist)
    with tempfile.TemporaryDirectory(prefix="editor-load-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server = ServerProcess(home, "--demo", cli=True, cwd=root).wait_ready(timeout=180)
        try:
            times = load_times(server.base, args.runs)
        finally:
            server.stop()
    med, tail = statistics.median(times), p95(times)
    kb = {k: v / 1000 for k, v in sizes.items()}
    print(f"checkout: {root}")
    print(f"bundle js: {kb['js']:.2f} kB (gzip -9 {kb['js_gzip']:.2f} kB)")
    print(f"bundle css: {kb['css']:.2f} kB (gzip -9 {kb['css_gzip']:.2f} kB)")
    print(f"first load to interactive (ms, n={len(times)}): {[round(t) for t in times]}")
    print(f"median {med:.0f} ms, p95 {tail:.0f} ms")
    print(
        f"| editor | {kb['js']:.1f} kB js ({kb['js_gzip']:.1f} kB gzip) "
        f"| {med:.0f} ms median, {tail:.0f} ms p95 (n={len(times)}) |"
    )


if __name__ == "__main__":
    main()
