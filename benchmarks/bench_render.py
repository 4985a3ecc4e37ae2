"""Render-loop benchmarks (issue "Render"). Nothing is downloaded; no GPU needed.

1. Host critical path: a stub generator that returns its input after a sleep of ``--generator-ms``
   (default 40: a GPU diffusing a 512x512 frame in few steps; the host is free meanwhile, which is
   when the run directory's writer thread encodes and writes), 512x512, 2D motion, noise and
   anti-blur, into a real run directory (ffmpeg segments, pending frames, checkpoints): wall time
   minus generator time per frame, min / median of 5, with exact LAB colour coherence (target
   <= 10 ms), RGB and none (target <= 3 ms).
2. Memory: peak RSS of a 1,000-frame preview render minus a 100-frame one (target <= 50 MB).
3. End of render: time from the last frame to the finished video for 1,000 frames (target < 1 s).
4. With the tiny model: render wall time / sum of generator calls (target <= 1.10).

    python benchmarks/bench_render.py [--only 1,2,3,4] [--generator-ms MS]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dreamreel.anim.loop import LoopConfig, render

try:
    from dreamreel.anim.color import warm_up
except ImportError:  # before it existed
    warm_up = None  # type: ignore[assignment]
from dreamreel.anim.motion import Motion2D
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.generation import GenerationRequest
from dreamreel.jobs.render import settings_files
from dreamreel.keyframes import ScheduleTable
from dreamreel.media.rundir import RunDirectory, RunSink
from dreamreel.media.video import VideoOptions
from dreamreel.settings import Settings, resolve_schedules
from dreamreel.testcard import make_test_card

SETTINGS = {
    "dreamreel_settings": 1, "mode": "2d", "width": 512, "height": 512, "seed": 1, "steps": 2,
    "prompts": {"0": "a red cat"}, "schedules": {"zoom": "0:(1.01)", "angle": "0:(0.5)", "translation_x": "0:(1)"},
}  # fmt: skip


class Stub:
    """Returns its init (a test card at frame 0) after ``seconds`` of sleep (a GPU busy, the host idle)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def generate(self, request: GenerationRequest) -> np.ndarray:
        if self.seconds > 0:
            time.sleep(self.seconds)
        return request.init_image if request.init_image is not None else make_test_card(request.width, request.height)


VARIANTS = {
    "exact LAB + noise + anti-blur": {"color_space": "lab"},
    "RGB colour coherence + noise + anti-blur": {"color_space": "rgb"},
    "colour coherence off + noise + anti-blur": {"color_space": None},
}


def _run_once(
    table: ScheduleTable, settings: Settings, prepare: InitPreparer, generator_seconds: float, folder: Path
) -> tuple[float, float, StageTimer, StageTimer | None]:
    """One render into a real run directory: (critical path s/frame, close + finish s, timer, writer thread's timer)."""
    run = RunDirectory.create(folder, settings_files(settings), table, {})
    timer = StageTimer()
    sink = RunSink(run, VideoOptions(width=512, height=512, fps=15), segment_frames=60, loop_waiting=timer.waiting)
    config = LoopConfig(width=512, height=512)
    start = time.perf_counter()
    render(config, table, Stub(generator_seconds), sink, motion=Motion2D(512, 512), prepare=prepare, timer=timer)
    wall = time.perf_counter() - start
    start = time.perf_counter()
    sink.close()
    sink.finish(audio=None)
    tail = time.perf_counter() - start
    background = getattr(sink, "background", None)
    return (wall - timer.seconds["model"]) / table.max_frames, tail, timer, background


def host_overhead(frames: int = 120, repeats: int = 5, generator_ms: float = 0.0) -> None:
    """Critical path per frame (wall minus generator time: what delays the next diffusion) into a real run
    directory (RunSink: ffmpeg segments, pending frames, checkpoints after every cadence group)."""
    settings = Settings.model_validate({**SETTINGS, "max_frames": frames})
    table = resolve_schedules(settings)
    print(
        f"1. host critical path, 512x512 2D, {frames} frames into a run directory, stub generator {generator_ms:g} "
        f"ms, min / median of {repeats} (target <= 10 ms exact LAB, <= 3 ms RGB or off):"
    )
    for name, options in VARIANTS.items():
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(repeats):
                prepare = InitPreparer(**options)  # type: ignore[arg-type]
                if prepare.color_space is not None and warm_up is not None:
                    warm_up(prepare.color_space)  # at load, as the runner does
                results.append(_run_once(table, settings, prepare, generator_ms / 1e3, Path(tmp) / f"run{repeat}"))
        per_frame = sorted(r[0] * 1e3 for r in results)
        tails = sorted(r[1] for r in results)
        print(f"   {name:<42} {per_frame[0]:6.2f} / {statistics.median(per_frame):6.2f} ms/frame "
              f"(close + finish {statistics.median(tails):.2f} s)")  # fmt: skip
        median = sorted(results, key=lambda r: r[0])[len(results) // 2]
        wall = median[0] * frames + median[2].seconds["model"]
        for line in median[2].report(wall):
            print("        " + line)
        if median[3] is not None:
            print("        writer thread (off the critical path): " + ", ".join(
                f"{name} {seconds:.2f} s" for name, seconds in median[3].seconds.items()))  # fmt: skip


def _preview_rss(frames: int, folder: Path) -> tuple[int, float]:
    settings = folder / f"s{frames}.json"
    settings.write_text(json.dumps({**SETTINGS, "max_frames": frames, "color_coherence": None}))
    code = (
        "import resource; from pathlib import Path; from dreamreel.jobs.render import RenderOptions, render_settings;"
        f"r = render_settings(Path({str(settings)!r}), RenderOptions(out=Path({str(folder / f'run{frames}')!r}), "
        "preview=True, preset='veryfast'));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, r.timer.seconds['join'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


def memory_and_join() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small, _ = _preview_rss(100, Path(tmp))
        large, join = _preview_rss(1000, Path(tmp))
    print(
        f"2. peak RSS, 1,000-frame preview minus 100-frame preview: {(large - small) / 1024:.1f} MB (target <= 50 MB)"
    )
    print(f"3. end of render (join 1,000 frames of 512x512 into the video): {join:.2f} s (target < 1 s)")


def tiny_model_ratio(frames: int = 48) -> None:
    import torch

    from dreamreel.jobs.render import RenderOptions, render_settings
    from dreamreel.testing import save_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "tiny", controlnets=())
        settings = Path(tmp) / "s.json"
        settings.write_text(json.dumps({**SETTINGS, "width": 64, "height": 64, "max_frames": frames}))
        report = render_settings(settings, RenderOptions(out=Path(tmp) / "run", model=str(model), preset="veryfast"))
    loop = report.wall_seconds - report.timer.seconds["load"] - report.timer.seconds["join"]
    model = report.timer.seconds["model"]
    print(
        f"4. tiny model, {frames} frames at 64x64: loop wall {loop:.2f} s / generator calls {model:.2f} s = "
        f"{loop / model:.3f} (target <= 1.10)"
    )
    for line in report.timer.report(report.wall_seconds):
        print("     " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="1,2,3,4")
    parser.add_argument(
        "--generator-ms", type=float, default=40.0,
        help="stub generator sleep per call (part 1; 0: no generator time for the work behind the loop to hide in)",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=120, help="frames per render (part 1)")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    if "1" in wanted:
        host_overhead(args.frames, generator_ms=args.generator_ms)
    if wanted & {"2", "3"}:
        memory_and_join()
    if "4" in wanted:
        tiny_model_ratio()


if __name__ == "__main__":
    main()
