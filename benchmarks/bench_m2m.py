"""Video-to-video benchmarks (issue "ControlNet and video-to-video"), with a stub generator.

A 512x512 input (generated with the bundled ffmpeg), one canny ControlNet unit:
1. time per frame outside the generator and the detectors (target <= 5 ms);
2. detector calls per frame: exactly one per unit on the first run, zero on a cached second run;
3. peak RSS for 120 vs 1,200 input frames (target: flat).

    python benchmarks/bench_m2m.py [--frames 120] [--long 1200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from dreamreel.anim.loop import LoopConfig, render
from dreamreel.anim.motion import StillMotion
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.timing import StageTimer
from dreamreel.controlnet.units import ControlProvider
from dreamreel.generation import GenerationRequest
from dreamreel.media.m2m import VideoFrames
from dreamreel.media.video_input import VideoSelection, open_video
from dreamreel.settings import Settings, resolve_schedules


class Stub:
    def generate(self, request: GenerationRequest) -> np.ndarray:
        assert request.init_image is not None
        return request.init_image


class NullSink:
    def write(self, image: np.ndarray, params: object) -> None:
        return None

    def checkpoint(self, state: object) -> None:
        return None

    def close(self) -> None:
        return None


def make_video(path: Path, frames: int) -> Path:
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size=512x512:rate=24:duration={frames / 24}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def run(video: Path, frames: int, cache: Path) -> tuple[float, int, StageTimer]:
    settings = Settings(mode="video", width=512, height=512, max_frames=frames, video_input={"path": str(video)},
                        controlnet=[{"preprocessor": "canny"}])  # fmt: skip
    table = resolve_schedules(settings)
    source = open_video(video, VideoSelection(width=512, height=512))
    controls = ControlProvider(settings.controlnet, width=512, height=512, frames=frames, cache_dir=cache)
    config = LoopConfig(width=512, height=512, loopback=False, frames=VideoFrames(source), controls=controls)
    timer = StageTimer()
    start = time.perf_counter()
    render(
        config, table, Stub(), NullSink(), motion=StillMotion(), prepare=InitPreparer(color_space="lab"), timer=timer
    )
    wall = time.perf_counter() - start
    return wall, controls.detector_calls, timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--long", type=int, default=1200)
    parser.add_argument("--rss-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.rss_only:
            import resource

            video = make_video(folder / "in.mp4", args.rss_only)
            run(video, args.rss_only, folder / "cache")
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            return
        video = make_video(folder / "in.mp4", args.frames)
        wall, calls, timer = run(video, args.frames, folder / "cache")
        detector = timer.seconds["control"]
        outside = (wall - timer.seconds["model"] - detector) / args.frames * 1e3
        print(
            f"1. {args.frames} frames 512x512: {outside:.2f} ms/frame outside generator and detector (target <= 5 ms)"
        )
        for line in timer.report(wall):
            print("     " + line)
        print(f"2. detector calls per frame: first run {calls / args.frames:.2f}", end="")
        _, cached_calls, _ = run(video, args.frames, folder / "cache")
        print(f", cached second run {cached_calls / args.frames:.2f}")
    rss = {}
    for frames in (args.frames, args.long):
        out = subprocess.run([sys.executable, __file__, "--rss-only", str(frames)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        rss[frames] = int(out.split()[-1]) / 1024
    print(f"3. peak RSS: {args.frames} frames {rss[args.frames]:.0f} MB, {args.long} frames {rss[args.long]:.0f} MB")


if __name__ == "__main__":
    main()
