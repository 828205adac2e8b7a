"""Scene assembly (``nodes.assembly``) of 10 shots vs one FFmpeg-library concat of the same
files: a PyAV stream copy (packets re-timed into one MP4, no decoding, no encoding, what
``ffmpeg -f concat -c copy`` does; no ffmpeg binary). The shots are already normalised (same
size, frame rate and encoder settings), the only case a stream copy can cut; assembly decodes,
letterboxes and re-encodes every frame, which is what lets it take stills and clips of other
sizes and rates (the "mixed" row). Figures: median / p95 ms over ``--repeats`` runs, after one
warm-up; the ratio is assembly median / concat median.

Usage:
    .venv/bin/python bench/video_assembly.py                       # 10 shots of 24 frames, 512x320
    .venv/bin/python bench/video_assembly.py --shots 10 --shot-frames 48 --repeats 5

``rows(args)`` returns the rows (``bench/video.py`` prints them with its own); ``args`` may lack
this script's options (defaults apply).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from PIL import Image  # noqa: E402

from bench.diffusion import stats  # noqa: E402
from nodes.assembly import assemble  # noqa: E402
from nodes.video import encode, probe  # noqa: E402

SIZE = (512, 320)
FPS = 24


def _clip(path: Path, frames: int, size: tuple[int, int], fps: float, seed: int) -> None:
    images = (
        Image.new("RGB", size, ((seed * 40 + i * 3) % 256, (seed * 90) % 256, 128))
        for i in range(frames)
    )
    video = encode(images, fps, size)
    video.path.replace(path)


def _still(path: Path, size: tuple[int, int], seed: int) -> None:
    Image.new("RGB", size, ((seed * 70) % 256, 60, 200)).save(path)


def _entry(folder: Path, name: str, kind: str) -> dict[str, Any]:
    path = folder / name
    return {
        "shot": f"ch01/sc01/sh{len(name):03d}",
        "take_id": "take_001",
        "kind": kind,
        "output": "video" if kind == "video" else "image",
        "file": name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _plan(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "scene": "ch01/sc01",
        "shot": "ch01/sc01/_cut",
        "width": SIZE[0],
        "height": SIZE[1],
        "fps_rational": f"{FPS}/1",
        "still_duration": 1.0,
        "shots": entries,
    }


def stream_copy_concat(paths: list[Path], out: Path) -> int:
    """One MP4 of ``paths`` back to back by stream copy (same codec parameters); returns the
    packets written."""
    written = 0
    with av.open(str(out), "w", format="mp4") as output:
        target: Any = None
        offset = 0  # in the inputs' (shared) time base
        for path in paths:
            with av.open(str(path)) as source:
                stream = source.streams.video[0]
                if target is None:
                    target = output.add_stream_from_template(stream)
                end = offset
                for packet in source.demux(stream):
                    if packet.dts is None or packet.pts is None:
                        continue  # the demuxer's final flush packet
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + (packet.duration or 0))
                    packet.stream = target
                    output.mux(packet)
                    written += 1
                offset = end
    return written


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Assembly of ``shots`` normalised clips, of a mixed set, and the stream-copy concat:
    ``{"label", "median_ms", "p95_ms", "ratio" (of the concat, or None), "frames"}`` each."""
    shots = int(getattr(args, "shots", 10))
    frames = int(getattr(args, "shot_frames", 24))
    repeats = int(getattr(args, "assembly_repeats", getattr(args, "repeats", 5)))
    with tempfile.TemporaryDirectory(prefix="takeflow-bench-assembly-") as tmp:
        folder = Path(tmp)
        names = []
        for i in range(shots):
            _clip(folder / f"n{i:02d}.mp4", frames, SIZE, FPS, i)
            names.append(f"n{i:02d}.mp4")
        normalised = _plan([_entry(folder, n, "video") for n in names])
        mixed_entries = []
        for i in range(shots):  # stills, other sizes, other rates
            if i % 3 == 0:
                _still(folder / f"m{i:02d}.png", (640, 640), i)
                mixed_entries.append(_entry(folder, f"m{i:02d}.png", "still"))
            else:
                size, fps = ((320, 240), FPS) if i % 3 == 1 else (SIZE, 30)
                _clip(folder / f"m{i:02d}.mp4", frames, size, fps, i)
                mixed_entries.append(_entry(folder, f"m{i:02d}.mp4", "video"))
        mixed = _plan(mixed_entries)

        def opener(rel: str) -> IO[bytes]:
            return (folder / rel).open("rb")

        outputs: list[Path] = []

        def run_assembly(plan: dict[str, Any]) -> Callable[[], Any]:
            def go() -> None:
                video, _ = assemble(plan, opener)
                outputs.append(video.path)

            return go

        concat_out = folder / "concat.mp4"
        paths = [folder / n for n in names]
        concat = _timed(lambda: stream_copy_concat(paths, concat_out), repeats)
        copied = probe(concat_out)
        assert copied.frame_count == shots * frames, copied  # the copy holds every frame
        assembled = _timed(run_assembly(normalised), repeats)
        cut = probe(outputs[-1])
        assert cut.frame_count == shots * frames and cut.fps == Fraction(FPS), cut
        mixed_ms = _timed(run_assembly(mixed), repeats)
        mixed_frames = probe(outputs[-1]).frame_count
        for path in outputs:
            path.unlink(missing_ok=True)
    base = stats(concat)[0]
    out = []
    for label, samples, count in (
        (f"PyAV stream-copy concat, {shots} shots", concat, shots * frames),
        (f"assembly, {shots} normalised shots", assembled, shots * frames),
        (f"assembly, {shots} mixed shots", mixed_ms, mixed_frames),
    ):
        med, p95 = stats(samples)
        ratio = None if samples is concat else med / base
        out.append(
            {"label": label, "median_ms": med, "p95_ms": p95, "ratio": ratio, "frames": count}
        )
    return out


def print_rows(found: list[dict[str, Any]]) -> None:
    for row in found:
        ratio = f"  x{row['ratio']:.2f} of concat" if row["ratio"] is not None else ""
        print(
            f"  {row['label']:<38} median {row['median_ms']:9.1f} ms   "
            f"p95 {row['p95_ms']:9.1f} ms  ({row['frames']} frames){ratio}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--shot-frames", type=int, default=24, help="frames per shot (24 fps)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"Scene assembly, {args.shots} shots of {args.shot_frames} frames at "
        f"{SIZE[0]}x{SIZE[1]}, {FPS} fps (ms: median, p95; {args.repeats} runs):"
    )
    print_rows(rows(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
