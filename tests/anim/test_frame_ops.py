"""The loop's frame operations: host (OpenCV) and torch (a device) give the same animation, and with torch
frames stay on the device between diffusions (the device path tested here on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from dreamreel.anim.loop import LoopConfig, render
from dreamreel.anim.motion import Motion2D
from dreamreel.anim.steps import InitPreparer
from dreamreel.anim.torch_chain import TorchOps
from dreamreel.errors import SettingsError
from dreamreel.generation import GenerationRequest, Image
from dreamreel.jobs.render import CHOICES, RenderOptions, render_settings
from dreamreel.settings import Settings, resolve_schedules
from dreamreel.testcard import make_test_card


def _data(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "dreamreel_settings": 1, "mode": "2d", "width": 64, "height": 64, "max_frames": 12, "fps": 8, "seed": 7,
        "steps": 4, "prompts": {"0": "a red cat"}, "diffusion_cadence": 2,
        "schedules": {"zoom": "0:(1.04)", "angle": "0:(1.5)", "translation_x": "0:(0.7)", "strength": "0:(0.6)",
                      "noise": "0:(0.03)", "contrast": "0:(0.99)"},
    }  # fmt: skip
    data.update(overrides)
    return data


def _settings(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / f"settings-{len(list(tmp_path.glob('settings-*')))}.json"
    path.write_text(json.dumps(_data(**overrides)))
    return path


def _frames(run: Path) -> np.ndarray:
    return np.stack([np.asarray(PILImage.open(p)) for p in sorted((run / "frames").glob("*.png"))]).astype(int)


def test_a_2d_preview_through_torch_matches_the_host_preview(tmp_path: Path) -> None:
    """The whole preview (warps and cadence blends, 12 frames fed back) through both paths: the warp's rare
    one-level differences (see test_torch_ops) are all that separates them (measured: max 2 levels, 0.001% of
    the values more than one level apart)."""
    settings = _settings(tmp_path)
    for ops in ("host", "torch"):
        report = render_settings(
            settings, RenderOptions(out=tmp_path / ops, preview=True, save_frames=True, frame_ops=ops)
        )
        assert report.finished and report.frames_written == 12
    host, device = _frames(tmp_path / "host"), _frames(tmp_path / "torch")
    diff = np.abs(host - device)
    assert diff.max() <= 3 and (diff > 1).mean() < 1e-3
    assert np.abs(host[0] - host[-1]).mean() > 5  # the camera moved: the comparison is not of still images


def test_a_tiny_model_render_through_torch_matches_the_host_render(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Diffusion from device tensors (generate_tensor), LAB colour coherence, contrast, noise and cadence
    tweens on torch, against the same render on the host: the images the model sees differ by the warp's
    rare level, which random weights may amplify but not into a different picture (measured: max 4 levels,
    mean 0.05, 0.3% of the values more than one level apart)."""
    settings = _settings(tmp_path, max_frames=5, color_coherence={"space": "lab"})
    for ops in ("host", "torch"):
        options = RenderOptions(out=tmp_path / ops, model=str(tiny_model_dir), save_frames=True, frame_ops=ops)
        assert render_settings(settings, options).finished
    host, device = _frames(tmp_path / "host"), _frames(tmp_path / "torch")
    assert np.array_equal(host[0], device[0])  # txt2img + colour reference: no warp yet, identical
    diff = np.abs(host - device)
    assert diff.mean() < 0.3 and np.percentile(diff, 99) <= 2 and diff.max() <= 12


class _CountingOps(TorchOps):
    def __init__(self) -> None:
        super().__init__("cpu")
        self.uploads = 0
        self.downloads = 0

    def upload(self, image: Image) -> torch.Tensor:
        self.uploads += 1
        return super().upload(image)

    def download(self, frame: torch.Tensor) -> Image:
        self.downloads += 1
        return super().download(frame)


class _DeviceStub:
    """Returns its init (a test card without one), as tensors, and remembers what it was given."""

    device = "cpu"

    def __init__(self) -> None:
        self.inits: list[Any] = []

    def generate(self, request: GenerationRequest) -> Image:
        raise AssertionError("the torch path must not ask for numpy images")

    def generate_tensor(self, request: GenerationRequest, init: torch.Tensor | None) -> torch.Tensor:
        self.inits.append(init)
        return init.clone() if init is not None else torch.from_numpy(make_test_card(request.width, request.height))


class _Sink:
    def __init__(self) -> None:
        self.frames: list[int] = []
        self.checkpoints: list[int] = []

    def write(self, image: Image, params: Any) -> None:
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8
        self.frames.append(params.frame)

    def checkpoint(self, state: Any) -> None:
        assert isinstance(state.anchor, np.ndarray)  # what a checkpoint saves is always on the host
        self.checkpoints.append(state.next_frame)

    def close(self) -> None:
        return None


def test_frames_stay_on_the_device_from_one_diffusion_to_the_next() -> None:
    """Each written frame crosses to the host once (for the sink); nothing is uploaded again: the anchor
    and the colour reference are the device frames the loop already has."""
    settings = Settings.model_validate(_data(max_frames=9))
    table = resolve_schedules(settings)
    ops, generator, sink = _CountingOps(), _DeviceStub(), _Sink()
    state = render(
        LoopConfig(width=64, height=64),
        table,
        generator,
        sink,
        motion=Motion2D(64, 64, ops=ops),
        prepare=InitPreparer(color_space="lab", ops=ops),
    )
    assert state.next_frame == 9 and sink.frames == list(range(9))
    assert sink.checkpoints == [1, 3, 5, 7, 9]  # after each cadence group
    assert (ops.uploads, ops.downloads) == (0, 9)
    assert all(isinstance(init, torch.Tensor) for init in generator.inits[1:])


def test_render_options_are_checked_wherever_they_come_from(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--segment-frames: is 0; use 1 or more"):
        RenderOptions(segment_frames=0)
    expected = r"--codec: is 'h246'; use one of h264, h265, vp9, gif\. Did you mean .*'h264'"
    with pytest.raises(SettingsError, match=expected):
        RenderOptions.from_values({"codec": "h246"})
    with pytest.raises(SettingsError, match="--crf: is 70; use 0 to 63"):
        RenderOptions(crf=70)
    with pytest.raises(SettingsError, match="--frames: is 0"):
        RenderOptions(max_frames=0)
    with pytest.raises(SettingsError, match="--frame-ops"):
        RenderOptions(frame_ops="gpu")
    options = RenderOptions.from_values({"out": str(tmp_path / "x"), "not_an_option": 1, "frame_ops": "torch"})
    assert options.out == tmp_path / "x" and options.frame_ops == "torch"


def test_torch_frame_ops_refuse_a_3d_render_before_anything_loads(tmp_path: Path) -> None:
    settings = _settings(tmp_path, mode="3d")
    with pytest.raises(SettingsError, match="--frame-ops: runs the 2D"):
        render_settings(settings, RenderOptions(out=tmp_path / "run", preview=True, frame_ops="torch"))
    assert not (tmp_path / "run").exists()


def test_the_command_line_offers_the_choices_the_options_accept() -> None:
    from dreamreel.cli import build_parser

    parser = build_parser()
    render = parser._subparsers._group_actions[0].choices["render"]  # type: ignore[union-attr]
    offered = {a.dest: tuple(a.choices) for a in render._actions if a.choices and a.dest in CHOICES}
    assert offered == CHOICES
