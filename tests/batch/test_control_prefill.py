"""A video's ControlNet maps extracted ahead, in this process and as a Ray Data pass: only the maps missing
from the cache are computed, and the render then runs no detector."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.jobs.control_prefill import prefill
from dreamreel.jobs.render import RenderOptions
from dreamreel.settings import Settings


def _clip(path: Path, frames: int = 10) -> Path:
    raw = path.with_suffix(".rgb")
    rng = np.random.default_rng(0)
    raw.write_bytes(b"".join(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8).tobytes() for _ in range(frames)))
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
               "-r", "10", "-i", str(raw), "-c:v", "libx264", "-qp", "0", str(path)]  # fmt: skip
    subprocess.run(command, check=True)
    return path


def _settings(clip: Path) -> Settings:
    return Settings.model_validate({
        "mode": "video", "width": 64, "height": 48, "seed": 1, "video_input": {"path": str(clip)},
        "controlnet": [{"preprocessor": "canny", "resize_mode": "just_resize"}],
    })  # fmt: skip


def test_prefill_computes_only_the_missing_maps(tmp_path: Path) -> None:
    settings = _settings(_clip(tmp_path / "clip.mp4"))
    options = RenderOptions(control_cache=tmp_path / "cache", preview=False)
    assert prefill(settings, options, frames=[0, 1, 2]) == 3
    assert prefill(settings, options) == 7  # the other seven frames
    assert prefill(settings, options) == 0
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 10


@pytest.mark.slow
def test_prefill_on_ray_fills_the_same_cache(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from dreamreel.jobs.control_prefill import prefill_on_ray

    settings = _settings(_clip(tmp_path / "clip.mp4"))
    local, remote = tmp_path / "local", tmp_path / "remote"
    prefill(settings, RenderOptions(control_cache=local))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        assert prefill_on_ray(settings, RenderOptions(control_cache=remote)) == 10
        assert prefill_on_ray(settings, RenderOptions(control_cache=remote)) == 0
    finally:
        ray.shutdown()
    made = sorted(p.relative_to(remote) for p in remote.rglob("*.png"))
    assert made == sorted(p.relative_to(local) for p in local.rglob("*.png"))
    assert all((remote / p).read_bytes() == (local / p).read_bytes() for p in made)
