"""Finishing benchmarks (issue "Finishing a video"). Nothing is downloaded; no GPU needed.

Each case runs the job ``dreamreel upscale`` / ``dreamreel interpolate`` run (``jobs.finish.finish_video``:
decoding, the model, encoding into segments, the manifest, the join) on a 256x256 test video.

1. Upscale x2 of 100 frames with a Real-ESRGAN Compact of realesr-animevideov3's size (random weights,
   64 features, 16 convolutions, x2): stage wall / sum of upscaler calls (target <= 1.10).
2. RIFE x2 of 100 frames with an IFNet of the published 4.6 size (random weights): stage wall / sum of
   interpolator calls (target <= 1.10), and ms per frame pair of the IFNet at 256x256.
3. Peak RSS of a 1,000-frame Lanczos upscale minus a 100-frame one, each in a fresh process (target <= 50 MB).

    python benchmarks/bench_finish.py [--only 1,2,3] [--frames 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from dreamreel.generation import Image


def make_video(path: Path, frames: int, size: int = 256) -> Path:
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}x{size}:rate=25:duration={frames / 25}", "-c:v", "libx264", "-crf", "12",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


class Timed:
    """Wraps an upscaler or interpolator and adds up the time of its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.scale = getattr(inner, "scale", None)
        self.seconds = 0.0
        self.calls = 0

    def upscale(self, image: Image, scale: float) -> Image:
        start = time.perf_counter()
        try:
            return self.inner.upscale(image, scale)  # type: ignore[no-any-return]
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def sequence(self, frames: Sequence[Image], x: int) -> list[Image]:
        start = time.perf_counter()
        try:
            return self.inner.sequence(frames, x)  # type: ignore[no-any-return]
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += len(frames) - 1


def _run(video: Path, step: Any, out: Path) -> float:
    from dreamreel.jobs.finish import finish_video, open_source

    start = time.perf_counter()
    finish_video(open_source(video), [step], out)
    return time.perf_counter() - start


def upscale_case(folder: Path, frames: int, device: str) -> None:
    from dreamreel.finish._testing_upscale import write_tiny_compact
    from dreamreel.finish.stream import UpscaleStep
    from dreamreel.finish.upscale import Upscaler

    model = write_tiny_compact(folder / "realesr-animevideov3-size.pth", scale=2, num_conv=16, features=64)
    timed = Timed(Upscaler.from_file(model, device=device))
    wall = _run(make_video(folder / "in.mp4", frames), UpscaleStep(timed, 2.0), folder / "up.mp4")  # type: ignore[arg-type]
    print(
        f"1. upscale x2, {frames} frames 256x256 -> 512x512 (Compact 64x16): wall {wall:.2f} s / upscaler "
        f"{timed.seconds:.2f} s = {wall / timed.seconds:.3f} (target <= 1.10); {timed.seconds / frames * 1e3:.1f} "
        "ms per frame in the model"
    )


def rife_case(folder: Path, frames: int, device: str) -> None:
    import numpy as np

    from dreamreel.finish._testing_rife import write_tiny_flownet
    from dreamreel.finish.engines import RifeInterpolator
    from dreamreel.finish.rife import load_rife
    from dreamreel.finish.stream import InterpolateStep

    rife = load_rife(write_tiny_flownet(folder / "flownet.pkl", "4.6", published=True), device=device)
    a = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    b = np.roll(a, 3, axis=1)
    rife.interpolate(a, b, 0.5)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        rife.interpolate(a, b, 0.5)
        times.append(time.perf_counter() - start)
    timed = Timed(RifeInterpolator(rife))
    wall = _run(make_video(folder / "in.mp4", frames), InterpolateStep(timed, 2), folder / "rife.mp4")  # type: ignore[arg-type]
    print(
        f"2. RIFE 4.6 x2, {frames} frames 256x256: wall {wall:.2f} s / interpolator {timed.seconds:.2f} s = "
        f"{wall / timed.seconds:.3f} (target <= 1.10); IFNet at 256x256: {min(times) * 1e3:.1f} / "
        f"{sorted(times)[2] * 1e3:.1f} ms per frame pair (min / median of 5)"
    )


def _rss(frames: int, folder: Path) -> int:
    video = make_video(folder / f"in{frames}.mp4", frames)
    code = (
        "import resource; from pathlib import Path; from dreamreel.jobs.finish import finish_video, open_source;"
        "from dreamreel.finish.stream import UpscaleStep; from dreamreel.finish.upscale import LanczosUpscaler;"
        f"finish_video(open_source(Path({str(video)!r})), [UpscaleStep(LanczosUpscaler(), 2.0)], "
        f"Path({str(folder / f'out{frames}.mp4')!r}));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def memory_case(folder: Path, frames: int) -> None:
    small, large = _rss(frames, folder), _rss(frames * 10, folder)
    print(
        f"3. peak RSS, Lanczos upscale x2 of {frames * 10} frames minus {frames} frames: "
        f"{(large - small) / 1024:.1f} MB (target <= 50 MB; {small / 1024:.0f} MB and {large / 1024:.0f} MB)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="1,2,3", help="comma-separated parts to run")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    parts = {int(p) for p in args.only.split(",")}
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if 1 in parts:
            upscale_case(folder, args.frames, args.device)
        if 2 in parts:
            rife_case(folder, args.frames, args.device)
        if 3 in parts:
            memory_case(folder, args.frames)


if __name__ == "__main__":
    main()
