"""``dreamreel upscale`` and ``dreamreel interpolate`` on videos, run directories and PNGs; the finishing
steps of a render (native ``finish`` and Deforum's keys), resumable after ``kill -9``."""

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

from dreamreel.cli import main
from dreamreel.media.ffmpeg import probe


def _video(path: Path, *, frames: int = 12, fps: int = 12, size: str = "64x48", audio: bool = True) -> Path:
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc=size={size}:rate={fps}:duration={frames / fps}"]  # fmt: skip
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / fps}", "-c:a", "aac", "-shortest"]
    subprocess.run([*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _frames(video: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(video), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    width, height = next(reader)["size"]
    return [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]


def test_upscale_a_video_keeps_its_frames_timing_and_sound(tmp_path: Path) -> None:
    source = _video(tmp_path / "in.mp4")
    out = tmp_path / "big.mp4"
    assert main(["upscale", str(source), "--scale", "2", "--out", str(out), "--device", "cpu"]) == 0
    before, after = probe(source), probe(out)
    assert (after.width, after.height) == (128, 96)
    assert after.frame_count == before.frame_count == 12 and after.fps == pytest.approx(12)
    assert after.has_audio and after.duration == pytest.approx(before.duration, abs=1 / 12)
    assert not (tmp_path / "big.mp4.parts").exists()  # the work folder goes once the video is written


def test_upscale_with_an_upscaler_file_and_a_png_keeps_its_parameters(tmp_path: Path) -> None:
    from dreamreel.finish._testing_upscale import write_tiny_esrgan
    from dreamreel.pnginfo import png_text, read_info

    model = write_tiny_esrgan(tmp_path / "4x-Tiny.pth", scale=2)
    source = tmp_path / "still.png"
    PILImage.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(
        source, pnginfo=png_text({"parameters": "a red cat\nSteps: 20, Sampler: Euler a, Seed: 5, Size: 56x40"})
    )
    out = tmp_path / "still-x2.png"
    assert main(["upscale", str(source), "--model", str(model), "--scale", "2", "--out", str(out)]) == 0
    with PILImage.open(out) as image:
        assert image.size == (112, 80)
        assert image.text["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: 4x-Tiny"
    assert read_info(out).params["Seed"] == "5"  # the generation's parameters are kept
    video = _video(tmp_path / "in.mp4", frames=4, audio=False)
    assert main(["upscale", str(video), "--model", str(model), "--out", str(tmp_path / "v.mp4")]) == 0
    assert (probe(tmp_path / "v.mp4").width, probe(tmp_path / "v.mp4").frame_count) == (128, 4)


def test_interpolate_doubles_the_frame_rate_and_keeps_the_sound_in_sync(tmp_path: Path) -> None:
    source = _video(tmp_path / "in.mp4")
    out = tmp_path / "smooth.mp4"
    assert main(["interpolate", str(source), "--engine", "minterpolate", "--x", "2", "--out", str(out)]) == 0
    before, after = probe(source), probe(out)
    assert after.frame_count == (before.frame_count - 1) * 2 + 1 and after.fps == pytest.approx(24)
    assert after.has_audio and abs(after.duration - before.duration) <= 1 / 12
    slow = tmp_path / "slow.mp4"
    args = ["interpolate", str(source), "--engine", "minterpolate", "--slow-motion", "2", "--out", str(slow)]
    assert main(args) == 0
    assert probe(slow).fps == pytest.approx(12) and not probe(slow).has_audio  # twice as long: no sound


def test_interpolate_with_rife_weights_on_a_run_directory(tmp_path: Path) -> None:
    from dreamreel.finish._testing_rife import write_tiny_flownet

    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"dreamreel_settings": 1, "width": 64, "height": 48, "max_frames": 7, "fps": 7,
                                    "seed": 1, "schedules": {"zoom": "0:(1.05)"}}))  # fmt: skip
    run = tmp_path / "run"
    assert main(["render", str(settings), "--preview", "--out", str(run), "--segment-frames", "3"]) == 0
    flownet = write_tiny_flownet(tmp_path / "flownet.pkl", "4.6")
    out = tmp_path / "rife.mp4"
    assert main(["interpolate", str(run), "--model", str(flownet), "--x", "3", "--out", str(out)]) == 0
    assert probe(out).frame_count == 19 and probe(out).fps == pytest.approx(21)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["upscale", "missing.mp4", "--out", "o.mp4"], "INPUT"),
        (["upscale", "{video}", "--scale", "0", "--out", "o.mp4"], "--scale: is 0"),
        (["upscale", "{video}", "--model", "4x-NoSuch", "--out", "o.mp4"], "--model"),
        (["upscale", "{video}", "--out", "o.avi"], "--out"),
        (["interpolate", "{video}", "--out", "o.mp4"], "--engine"),
        (["interpolate", "{video}", "--engine", "rife", "--out", "o.mp4"], "--model"),
        (["interpolate", "{video}", "--engine", "minterpolat", "--out", "o.mp4"], "Did you mean"),
        (["interpolate", "{video}", "--engine", "film", "--model", "{video}", "--out", "o.mp4"], "TorchScript"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    video = _video(tmp_path / "in.mp4", frames=3, audio=False)
    assert main([a.replace("{video}", str(video)) for a in args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_kill_9_while_upscaling_then_the_same_command_finishes_with_the_same_bits(tmp_path: Path) -> None:
    source = _video(tmp_path / "in.mp4", frames=90, fps=30, size="96x64", audio=False)
    command = [sys.executable, "-m", "dreamreel.cli", "upscale", str(source), "--scale", "3", "--device", "cpu"]
    assert subprocess.run([*command, "--out", str(tmp_path / "whole.mp4")], check=False).returncode == 0
    out = tmp_path / "cut.mp4"
    process = subprocess.Popen([*command, "--out", str(out)])
    manifest = tmp_path / "cut.mp4.parts" / "finish.json"
    deadline = time.monotonic() + 60
    while not (manifest.is_file() and json.loads(manifest.read_text())["segments"]):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert subprocess.run([*command, "--out", str(out)], check=False).returncode == 0
    assert out.read_bytes() == (tmp_path / "whole.mp4").read_bytes()


def _deforum_settings(tmp_path: Path, flownet: Path, **overrides: object) -> Path:
    """A Deforum settings file with upscaling and RIFE interpolation after the render, and a soundtrack."""
    from importlib import resources

    raw = json.loads(resources.files("dreamreel.settings").joinpath("data/deforum_keys.json").read_text())
    audio = tmp_path / "tone.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=330:duration=3", "-c:a", "aac", str(audio)], check=True)  # fmt: skip
    raw.update({
        "W": 64, "H": 64, "max_frames": 10, "fps": 5, "seed": 3, "animation_mode": "2D", "zoom": "0:(1.04)",
        "prompts": {"0": "a red cat"}, "add_soundtrack": "File", "soundtrack_path": str(audio),
        "r_upscale_video": True, "r_upscale_factor": "x2", "r_upscale_model": "lanczos",
        "frame_interpolation_engine": "RIFE v4.6", "frame_interpolation_x_amount": 3,
        "dreamreel_interpolation_model": str(flownet),
    })  # fmt: skip
    raw.update(overrides)
    path = tmp_path / "deforum.txt"
    path.write_text(json.dumps(raw))
    return path


def test_a_deforum_file_with_upscaling_and_interpolation_renders_one_finished_video(tmp_path: Path) -> None:
    from dreamreel.finish._testing_rife import write_tiny_flownet
    from dreamreel.settings import load_settings
    from dreamreel.testing import save_tiny_model

    settings = _deforum_settings(tmp_path, write_tiny_flownet(tmp_path / "flownet.pkl", "4.6"))
    loaded = load_settings(settings).finish
    assert loaded is not None and loaded.order == ("interpolate", "upscale")  # Deforum's use_upscaled is off
    run = tmp_path / "run"
    model = save_tiny_model(tmp_path / "tiny", controlnets=())
    assert main(["render", str(settings), "--model", str(model), "--out", str(run), "--segment-frames", "4"]) == 0
    manifest = json.loads((run / "finish" / "finish.json").read_text())
    assert [step["step"] for step in manifest["describe"]["steps"]] == ["interpolate", "upscale"]
    assert manifest["describe"]["steps"][0]["engine"] == "rife"
    raw, finished = probe(run / "video.mp4"), probe(run / "video_finished.mp4")
    assert (finished.width, finished.height, finished.frame_count) == (128, 128, 28)  # (10 - 1) * 3 + 1
    assert finished.fps == pytest.approx(15) and finished.has_audio
    assert abs(finished.duration - raw.duration) <= 1 / 5  # the sound stays in sync: the same length
    # a preview finishes with the weights-free engines; a real render asks for the RIFE file
    again = _deforum_settings(tmp_path, tmp_path / "missing.pkl")
    assert main(["render", str(again), "--preview", "--out", str(tmp_path / "p2")]) == 0


def test_a_missing_interpolation_model_stops_the_render_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dreamreel.testing import save_tiny_model

    settings = _deforum_settings(tmp_path, tmp_path / "missing.pkl")
    model = save_tiny_model(tmp_path / "tiny", controlnets=())
    out = tmp_path / "run"
    assert main(["render", str(settings), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "dreamreel_interpolation_model" in err and "missing.pkl" in err and "Traceback" not in err
    assert not out.exists()


def test_kill_9_while_finishing_a_render_then_resume_gives_the_same_finished_video(tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({
        "dreamreel_settings": 1, "width": 96, "height": 64, "max_frames": 40, "fps": 10, "seed": 1,
        "schedules": {"zoom": "0:(1.03)", "angle": "0:(1)"},
        "finish": {"upscale": {"model": "lanczos", "scale": 3}, "interpolate": {"engine": "minterpolate", "x": 2}},
    }))  # fmt: skip
    command = [sys.executable, "-m", "dreamreel.cli", "render", str(settings), "--preview", "--segment-frames", "8"]
    assert subprocess.run([*command, "--out", str(tmp_path / "whole")], check=False).returncode == 0
    out = tmp_path / "cut"
    process = subprocess.Popen([*command, "--out", str(out)])
    manifest = out / "finish" / "finish.json"
    deadline = time.monotonic() + 120
    while not (manifest.is_file() and len(json.loads(manifest.read_text())["segments"]) >= 2):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resumed = subprocess.run([sys.executable, "-m", "dreamreel.cli", "render", "--resume", str(out)], check=False)
    assert resumed.returncode == 0
    whole = tmp_path / "whole" / "video_finished.mp4"
    assert (out / "video_finished.mp4").read_bytes() == whole.read_bytes()
