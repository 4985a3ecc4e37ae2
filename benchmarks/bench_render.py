"""Render-loop benchmarks (issue "Render"). Nothing is downloaded; no GPU needed.

1. Host overhead: a stub generator that returns its input, 512x512, 2D motion with colour
   coherence: time per frame excluding the encoder (target <= 3 ms).
2. Memory: peak RSS of a 1,000-frame preview render minus a 100-frame one (target <= 50 MB).
3. End of render: time from the last frame to the finished video for 1,000 frames (target < 1 s).
4. With the tiny model: render wall time / sum of generator calls (target <= 1.10).

    python benchmarks/bench_render.py [--only 1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dreamreel.anim.loop import LoopConfig, render
from dreamreel.anim.motion import Motion2D
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.generation import GenerationRequest
from dreamreel.settings import Settings, resolve_schedules
from dreamreel.testcard import make_test_card

SETTINGS = {
    "dreamreel_settings": 1, "mode": "2d", "width": 512, "height": 512, "seed": 1, "steps": 2,
    "prompts": {"0": "a red cat"}, "schedules": {"zoom": "0:(1.01)", "angle": "0:(0.5)", "translation_x": "0:(1)"},
}  # fmt: skip


class Stub:
    def generate(self, request: GenerationRequest) -> np.ndarray:
        return request.init_image if request.init_image is not None else make_test_card(request.width, request.height)


class NullSink:
    def write(self, image: np.ndarray, params: object) -> None:
        return None

    def close(self) -> None:
        return None


def host_overhead(frames: int = 200) -> None:
    settings = Settings.model_validate({**SETTINGS, "max_frames": frames})
    table = resolve_schedules(settings)
    timer = StageTimer()
    config = LoopConfig(width=512, height=512)
    prepare = InitPreparer(color_space="lab")
    start = time.perf_counter()
    render(config, table, Stub(), NullSink(), motion=Motion2D(512, 512), prepare=prepare, timer=timer)
    wall = time.perf_counter() - start
    per_frame = (wall - timer.seconds["encode"]) / frames * 1e3
    print(f"1. host overhead, 512x512 2D + LAB colour coherence + anti-blur + noise: {per_frame:.2f} ms/frame "
          f"(target <= 3 ms)")  # fmt: skip
    for line in timer.report(wall):
        print("     " + line)
    prepare = InitPreparer(color_space="rgb", add_noise=False, sharpen=False)
    timer = StageTimer()
    start = time.perf_counter()
    render(config, table, Stub(), NullSink(), motion=Motion2D(512, 512), prepare=prepare, timer=timer)
    per_frame = (time.perf_counter() - start) / frames * 1e3
    print(f"   the same with RGB colour coherence, no noise/anti-blur: {per_frame:.2f} ms/frame")


def _preview_rss(frames: int, folder: Path) -> tuple[int, float]:
    settings = folder / f"s{frames}.json"
    settings.write_text(json.dumps({**SETTINGS, "max_frames": frames, "color_coherence": None}))
    code = (
        "import resource; from pathlib import Path; from dreamreel.runner import RenderOptions, render_settings;"
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

    from dreamreel.runner import RenderOptions, render_settings
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
    wanted = set(parser.parse_args().only.split(","))
    if "1" in wanted:
        host_overhead()
    if wanted & {"2", "3"}:
        memory_and_join()
    if "4" in wanted:
        tiny_model_ratio()


if __name__ == "__main__":
    main()
