"""Video to video: timing and audio kept, control maps for the right frame, caching, determinism, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from dreamreel.anim.loop import LoopConfig, LoopState, render
from dreamreel.anim.motion import StillMotion
from dreamreel.anim.protocols import NullProgress
from dreamreel.anim.steps import InitPreparer
from dreamreel.cli import main
from dreamreel.controlnet.units import ControlProvider
from dreamreel.errors import SettingsError
from dreamreel.generation import GenerationRequest
from dreamreel.media.ffmpeg import probe
from dreamreel.media.m2m import VideoFrames
from dreamreel.media.video_input import VideoSelection, open_video
from dreamreel.settings import Settings, resolve_schedules

FPS = 12
COLORS = [(20 * i, 255 - 20 * i, (90 * i) % 256) for i in range(12)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames at 12 fps, 64x48, frame i a flat colour COLORS[i], with 1 s of sine audio."""
    root = tmp_path_factory.mktemp("clip")
    raw = root / "frames.rgb"
    raw.write_bytes(b"".join(np.full((48, 64, 3), c, np.uint8).tobytes() for c in COLORS))
    target = root / "clip.mp4"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
        "-r", str(FPS), "-i", str(raw), "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
        "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest", str(target),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return target


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamreel.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("m2m-model") / "tiny", controlnets=("canny",))


class Recorder:
    """A generator that records requests and returns the init (or grey)."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> np.ndarray:
        self.requests.append(request)
        if request.init_image is not None:
            return request.init_image
        return np.full((request.height, request.width, 3), 128, np.uint8)


class Sink:
    def __init__(self) -> None:
        self.frames: list[int] = []

    def write(self, image: np.ndarray, params: object) -> None:
        self.frames.append(params.frame)  # type: ignore[attr-defined]

    def checkpoint(self, state: object) -> None:
        return None

    def close(self) -> None:
        return None


def test_each_frame_gets_its_own_input_and_control_map(clip: Path, tmp_path: Path) -> None:
    settings = Settings(
        mode="video", width=64, height=48, seed=1, video_input={"path": str(clip), "every_nth_frame": 2},
        controlnet=[{"preprocessor": "none", "resize_mode": "just_resize", "weight": "0:(1), 5:(0.5)"}],
        max_frames=6,
    )  # fmt: skip
    source = open_video(clip, VideoSelection(every_nth=2, width=64, height=48))
    assert source.frame_count == 6 and source.output_fps == pytest.approx(FPS / 2)
    table = resolve_schedules(settings)
    provider = ControlProvider(settings.controlnet, width=64, height=48, frames=6, cache_dir=tmp_path / "cache")
    recorder = Recorder()
    config = LoopConfig(width=64, height=48, loopback=False, frames=VideoFrames(source), controls=provider,
                        match_output_colors=False)  # fmt: skip
    sink = Sink()
    render(config, table, recorder, sink, motion=StillMotion(), prepare=InitPreparer(color_space=None),
           state=LoopState(), progress=NullProgress())  # fmt: skip
    assert sink.frames == list(range(6))
    for index, request in enumerate(recorder.requests):
        expected = np.array(COLORS[2 * index])
        assert np.abs(request.init_image.reshape(-1, 3).mean(0) - expected).max() < 3, index
        control = request.controls[0]
        assert np.abs(control.image.reshape(-1, 3).mean(0) - expected).max() < 3, index
    assert recorder.requests[0].controls[0].weight == 1.0 and recorder.requests[5].controls[0].weight == 0.5
    assert provider.detector_calls == 6


def test_m2m_cli_keeps_timing_and_audio_and_caches_maps(
    clip: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DREAMREEL_CACHE_DIR", str(tmp_path / "cache"))
    common = [
        str(clip), "--model", str(model), "--controlnet", f"canny:0.8:{model / 'controlnet-canny'}",
        "--size", "64x48", "--steps", "2", "--strength", "0.6", "--seed", "3",
    ]  # fmt: skip
    assert main(["m2m", *common, "--prompt", "a red cat", "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert "ControlNet detector calls: 12" in first and "flicker" in first
    info = probe(tmp_path / "a" / "video.mp4")
    source = probe(clip)
    assert info.frame_count == 12 and info.fps == pytest.approx(FPS)
    assert abs(info.video_duration - source.video_duration) <= 1 / FPS + 1e-6
    assert info.has_audio
    assert main(["m2m", *common, "--prompt", "the blue dog", "--out", str(tmp_path / "b")]) == 0
    assert "ControlNet detector calls: 0" in capsys.readouterr().out
    assert main(["m2m", *common, "--prompt", "a red cat", "--out", str(tmp_path / "c"), "--no-audio"]) == 0
    a = (tmp_path / "a" / "segments").iterdir()
    c_info = probe(tmp_path / "c" / "video.mp4")
    assert not c_info.has_audio
    assert sorted(p.read_bytes() for p in a) == sorted(p.read_bytes() for p in (tmp_path / "c" / "segments").iterdir())


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"", "empty"), (b"not a video at all" * 100, "video")],
)
def test_bad_input_videos_fail_before_any_model(
    tmp_path: Path, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "input.mp4"
    if content is not None:
        path.write_bytes(content)
    code = main(
        ["m2m", str(path), "--prompt", "x", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "o").exists()  # nothing was started


def test_control_inputs_shorter_than_the_render_are_errors(clip: Path, tmp_path: Path) -> None:
    from PIL import Image

    for index in range(3):
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / f"{index:03d}.png")
    folder = Settings(controlnet=[{"preprocessor": "none", "input": str(tmp_path)}]).controlnet
    with pytest.raises(SettingsError, match="holds 3 images but the render has 12 frames"):
        ControlProvider(folder, width=64, height=48, frames=12)
    video = Settings(controlnet=[{"preprocessor": "none", "input": str(clip)}]).controlnet
    with pytest.raises(SettingsError, match="has 12 frames but the render has 24"):
        ControlProvider(video, width=64, height=48, frames=24)
    assert ControlProvider(folder, width=64, height=48, frames=3).detector_calls == 0


def test_deforum_video_input_settings_render_through_dreamreel_render(
    clip: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from dreamreel.jobs.render import RenderOptions, render_settings

    monkeypatch.setenv("DREAMREEL_CACHE_DIR", str(tmp_path / "cache"))
    deforum = {
        "W": 64, "H": 48, "seed": 5, "sampler": "Euler a", "steps": 2, "animation_mode": "Video Input",
        "video_init_path": str(clip), "extract_nth_frame": 2, "extract_from_frame": 0, "extract_to_frame": -1,
        "prompts": {"0": "a red cat"}, "strength_schedule": "0: (0.5)", "fps": 30,
        "cn_1_enabled": True, "cn_1_module": "canny", "cn_1_model": str(model / "controlnet-canny"),
        "cn_1_weight": "0:(1), 3:(0.5)", "cn_1_resize_mode": "Just Resize",
    }  # fmt: skip
    settings = tmp_path / "deforum_settings.txt"
    settings.write_text(json.dumps(deforum))
    report = render_settings(settings, RenderOptions(out=tmp_path / "run", model=str(model)))
    assert report.finished and report.detector_calls == 6
    info = probe(tmp_path / "run" / "video.mp4")
    assert info.frame_count == 6 and info.fps == pytest.approx(FPS / 2) and info.has_audio  # fps from the input
    assert abs(info.video_duration - probe(clip).video_duration) <= 2 / FPS + 1e-6


def test_plan_of_a_video_input_run_counts_the_input_frames(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    settings = tmp_path / "video.json"
    settings.write_text(
        json.dumps(
            {
                "animation_mode": "Video Input",
                "video_init_path": str(clip),
                "extract_nth_frame": 3,
                "W": 64,
                "H": 48,
                "max_frames": 500,
                "prompts": {"0": "a cat"},
            }
        )
    )
    assert main(["plan", str(settings)]) == 0
    assert "VIDEO run: 4 frames at 4 fps (1.0 s)" in capsys.readouterr().out


def test_missing_default_controlnet_fails_before_anything_starts(
    clip: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    out = tmp_path / "run"
    code = main(
        ["m2m", str(clip), "--prompt", "x", "--model", str(model), "--controlnet", "openpose", "--out", str(out)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "lllyasviel/control_v11p_sd15_openpose" in error and "hf download" in error
    assert not out.exists()
