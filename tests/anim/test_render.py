"""The whole render: preview and tiny-model runs, run directory, stop and resume, SIGKILL recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image as PILImage

from dreamreel.anim.ffmpeg import probe
from dreamreel.keyframes import ScheduleTable
from dreamreel.runner import RenderOptions, render_settings, resume
from dreamreel.settings import load_settings


def settings_file(tmp_path: Path, **overrides: object) -> Path:
    data: dict[str, object] = {
        "dreamreel_settings": 1,
        "mode": "2d",
        "width": 64,
        "height": 64,
        "max_frames": 16,
        "fps": 8,
        "seed": 7,
        "steps": 2,
        "prompts": {"0": "a red cat", "8": "the blue dog"},
        "schedules": {"zoom": "0:(1.05)", "angle": "0:(2)", "strength": "0:(0.6)", "noise": "0:(0.02)"},
    }
    data.update(overrides)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    return path


def frames_of(video: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(video), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    meta = next(reader)
    width, height = meta["size"]
    return [np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy() for raw in reader]


def test_preview_render_writes_run_directory_and_video(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=12)
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, segment_frames=5))
    run = tmp_path / "run"
    assert report.finished and report.frames_written == 12
    info = probe(run / "video.mp4")
    assert info.frame_count == 12 and info.fps == pytest.approx(8) and (info.width, info.height) == (64, 64)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [s["frame_count"] for s in manifest["segments"]] == [5, 5, 2]
    assert load_settings(run / "settings.json").seed == 7
    assert load_settings(run / "settings_deforum.txt").seed == 7
    assert ScheduleTable.from_csv(run / "schedule.csv").max_frames == 12
    frames = frames_of(run / "video.mp4")
    assert len(frames) == 12
    assert np.abs(frames[0].astype(int) - frames[6].astype(int)).mean() > 5  # the camera moved


def test_a_finished_run_is_never_overwritten(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=3)
    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    with pytest.raises(Exception, match="--overwrite"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, overwrite=True))


def test_cadence_writes_every_frame_including_the_last(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, max_frames=10, diffusion_cadence=4)
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, segment_frames=3))
    assert report.finished
    assert len(frames_of(tmp_path / "run" / "video.mp4")) == 10


def test_stop_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    settings = settings_file(tmp_path)
    render_settings(settings, RenderOptions(out=tmp_path / "full", preview=True, segment_frames=4))
    calls = {"n": 0}

    def stop_after_two_groups() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    partial = render_settings(
        settings,
        RenderOptions(out=tmp_path / "part", preview=True, segment_frames=4),
        should_stop=stop_after_two_groups,
    )
    assert not partial.finished and partial.video is not None
    assert json.loads((tmp_path / "part" / "manifest.json").read_text())["status"] == "interrupted"
    assert len(frames_of(partial.video)) == 7  # a playable video of everything rendered so far
    resumed = resume(tmp_path / "part", RenderOptions())
    assert resumed.finished
    full = frames_of(tmp_path / "full" / "video.mp4")
    again = frames_of(tmp_path / "part" / "video.mp4")
    assert len(again) == len(full) == 16
    for index, (a, b) in enumerate(zip(full, again, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs"


def _cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dreamreel.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )


def _kill_when(process: subprocess.Popen[bytes], manifest: Path, condition: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"the render ended before the kill point {condition!r}: {err!r}")
        if manifest.exists():
            try:
                data = json.loads(manifest.read_text())
            except json.JSONDecodeError:
                data = None
            if data is not None and eval(condition, {}, {"n": data["next_frame"]}):  # noqa: S307 - test-only literal
                process.send_signal(signal.SIGKILL)
                process.communicate()
                return
        time.sleep(0.01)
    process.kill()
    process.communicate()
    raise AssertionError("timed out waiting for the kill point")


def _finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]


KILL_SETTINGS = {"max_frames": 14}


@pytest.fixture(scope="module")
def kill_case(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[Path, list[str], list[np.ndarray]]:
    """Settings, CLI options and the frames of an uninterrupted tiny-model render (built once)."""
    root = tmp_path_factory.mktemp("kill")
    settings = settings_file(root, **KILL_SETTINGS)
    common = ["--model", str(tiny_model_dir), "--segment-frames", "3"]
    _finish(_cli("render", str(settings), "--out", str(root / "reference"), *common))
    return settings, common, frames_of(root / "reference" / "video.mp4")


@pytest.mark.parametrize(
    "kill_at",
    [
        "n >= 3",  # after the first committed segment, with pending frames of the next one
        pytest.param("n == 0", marks=pytest.mark.slow),  # before any segment is committed
        pytest.param("n >= 9", marks=pytest.mark.slow),  # late, several segments in
    ],
)
def test_sigkill_then_resume_is_bit_identical(
    tmp_path: Path, kill_case: tuple[Path, list[str], list[np.ndarray]], kill_at: str
) -> None:
    settings, common, expected = kill_case
    run = tmp_path / "killed"
    process = _cli("render", str(settings), "--out", str(run), *common)
    _kill_when(process, run / "manifest.json", kill_at)
    _finish(_cli("render", "--resume", str(run)))
    actual = frames_of(run / "video.mp4")
    assert len(actual) == len(expected) == 14
    for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs after resuming from a kill at {kill_at}"


def test_colour_reference_image_pulls_frames_towards_it(tmp_path: Path) -> None:
    from PIL import Image

    reddish = np.zeros((64, 64, 3), np.uint8)
    reddish[..., 0] = np.linspace(150, 255, 64, dtype=np.uint8)[None, :]
    Image.fromarray(reddish).save(tmp_path / "ref.png")
    plain = settings_file(tmp_path, max_frames=4, color_coherence=None)
    render_settings(plain, RenderOptions(out=tmp_path / "plain", preview=True))
    matched = settings_file(
        tmp_path,
        max_frames=4,
        color_coherence={"space": "rgb", "reference": "image", "image": str(tmp_path / "ref.png")},
    )
    render_settings(matched, RenderOptions(out=tmp_path / "matched", preview=True))
    before = frames_of(tmp_path / "plain" / "video.mp4")[-1].reshape(-1, 3).mean(0)
    after = frames_of(tmp_path / "matched" / "video.mp4")[-1].reshape(-1, 3).mean(0)
    target = reddish.reshape(-1, 3).mean(0)
    assert np.abs(after - target).max() < 15  # matched to the reference's histogram
    assert np.abs(before - target).max() > 60  # and far from it without colour coherence


def test_colour_reference_video_needs_video_input(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, color_coherence={"reference": "video"})
    with pytest.raises(Exception, match="needs Video Input mode"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_optical_flow_cadence_renders_every_frame(tmp_path: Path) -> None:
    plain = settings_file(tmp_path, max_frames=7, diffusion_cadence=3)
    render_settings(plain, RenderOptions(out=tmp_path / "plain", preview=True, save_frames=True))
    flowing = settings_file(tmp_path, max_frames=7, diffusion_cadence=3, optical_flow_cadence="dis_medium")
    render_settings(flowing, RenderOptions(out=tmp_path / "flow", preview=True, save_frames=True))
    a, b = frames_of(tmp_path / "plain" / "video.mp4"), frames_of(tmp_path / "flow" / "video.mp4")
    assert len(a) == len(b) == 7
    # the diffused frames are the same (lossless PNGs: x264's lookahead makes decoded frames depend on their
    # neighbours, which differ here)
    first = [np.asarray(PILImage.open(tmp_path / run / "frames" / "000000000.png")) for run in ("plain", "flow")]
    assert np.array_equal(first[0], first[1])


def test_3d_preview_with_a_depth_model(tmp_path: Path) -> None:
    from dreamreel.testing import save_tiny_depth_model

    depth = save_tiny_depth_model(tmp_path / "depth")
    settings = settings_file(
        tmp_path, mode="3d", max_frames=4, schedules={"translation_z": "0:(10)", "rotation_3d_y": "0:(2)"}
    )
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, depth_model=str(depth)))
    assert report.finished and report.timer.calls["depth"] == 3  # depth of each warped frame
    frames = frames_of(tmp_path / "run" / "video.mp4")
    assert len(frames) == 4 and np.abs(frames[0].astype(int) - frames[3].astype(int)).mean() > 3


def test_settings_that_are_not_acted_on_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    settings = settings_file(
        tmp_path, max_frames=2, schedules={"model": '0:("a.safetensors")', "ddim_eta": "0:(0.2)"},
        color_coherence={"grayscale": True},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dreamreel"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True))
    for key in ("schedules.model", "schedules.ddim_eta", "color_coherence.grayscale"):
        assert f"{key} is set but not supported yet" in caplog.text
